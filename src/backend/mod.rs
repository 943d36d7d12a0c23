//! Backends: the CPU (SIMD chosen at run time) and CUDA (loaded at run time).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
