//! # sparq — sparse and quantized inference kernels
//!
//! The kernels that make small and medium LLMs fast on CPUs (and, soon, GPUs), usable from any
//! Rust inference engine.
//!
//! ## Architecture in one page
//! - **Formats** ([`quant`], [`DType`]): GGUF-compatible storage formats — F32, F16, BF16,
//!   Q8_0, Q4_0, Q4_1 (+ Q8_1 for activations) — as `#[repr(C)]` blocks identical to ggml's,
//!   with reference quantizers bit-exact with ggml (tested against the `gguf` Python package).
//! - **Ops** ([`matmul`]): a public function validates shapes once and returns [`Result`];
//!   then it calls the backend table. Each op has a `reference` module: the scalar f64 spec.
//! - **Weights** ([`Weights`]) are a value format ([`DType`]) in a layout ([`matmul::Layout`]):
//!   GGUF rows, or sparq's tiles ([`PackedWeights`], [`matmul::tiled`]: Q8_0/Q4_0/Q4_1 repacked
//!   once into 16-row tiles that one kernel streams at every `m`; `model::Llama::load` uses them).
//!   Each level's kernel table lists named entries (format, layout, smallest `m`) → kernel, so
//!   a new format or layout is one kernel body and one line per family.
//! - **CPU backend** ([`backend::cpu`]): instruction-set levels ([`Isa`]: scalar, portable,
//!   AVX2, AVX-512, AVX-512 VNNI) are detected once at run time — no `-C target-cpu` needed.
//!   Kernel bodies are written once over a small SIMD vocabulary and instantiated per level
//!   inside `#[target_feature]` entry points collected in one table per level.
//!   `SPARQ_MAX_ISA=avx2` caps the level; `SPARQ_REQUIRE_ISA=avx512vnni` fails if it is absent.
//! - **CUDA backend** (feature `cuda`, on by default): the driver is loaded at run time, so the
//!   same binary runs everywhere; today it discovers devices, kernels come next.
//!
//! ## Example
//! ```
//! use sparq::{quant, Cpu, DType, Scratch, Weights};
//! let (n, k, m) = (8, 64, 2);
//! let w_f32: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 - 3.0).collect();
//! let bytes = quant::quantize(DType::Q4_1, &w_f32)?;
//! let w = Weights::new(DType::Q4_1, n, k, &bytes)?;
//! let x = vec![0.5f32; m * k];
//! let mut y = vec![0f32; m * n];
//! let cpu = Cpu::new(2)?;
//! cpu.matmul(&w, &x, m, &mut y, &mut Scratch::default())?;
//! # Ok::<(), sparq::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

pub mod attention;
pub mod backend;
mod dtype;
pub mod error;
pub mod kv_cache;
pub mod matmul;
pub mod model;
pub mod ops;
pub mod quant;
pub mod sparse;

pub use attention::AttnParams;
pub use backend::cpu::{AttnScratch, Cpu, Isa, Scratch, isa_report};
pub use dtype::{DType, DTypeInfo};
pub use error::{Error, Result};
pub use kv_cache::{KvCache, KvCacheConfig, KvDtype, SeqId};
pub use matmul::{Layout, Weights, tiled::PackedWeights};

/// The README's Rust blocks run as doctests, so its API screenful cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
