//! Running real models: the GGUF file format, a Llama-family forward pass built only on
//! sparq's primitives, and sampling.

pub mod gguf;
pub mod llama;
pub mod sampler;

pub use gguf::Gguf;
pub use llama::{Config, Llama, Session};
pub use sampler::{Sampler, SamplerConfig};
