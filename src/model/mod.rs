//! Running real models: the GGUF file format, a Llama-family forward pass built only on
//! sparq's primitives, and sampling.

pub mod act_sparsity;
pub mod gguf;
pub mod gguf_write;
pub mod llama;
pub mod sampler;
pub mod synthetic;

pub use act_sparsity::{ActSparsity, Site};
pub use gguf::Gguf;
pub use gguf_write::GgufWriter;
pub use llama::{Config, Llama, Session, WeightLayout};
pub use sampler::{Sampler, SamplerConfig};
pub use synthetic::{Uniform, synthetic_llama};
