//! Synthetic Llama-family models: the shapes of a real model, pseudo-random weights. For benches
//! and tests that must run where no model file has been fetched; the numbers they produce mean
//! nothing, the time they take does.

use super::gguf::Value;
use super::gguf_write::GgufWriter;
use super::llama::Config;
use crate::{DType, Result, quant};

impl Config {
    /// SmolLM2-135M's hyper-parameters.
    pub fn smollm2_135m() -> Config {
        Config {
            n_layers: 30,
            dim: 576,
            hidden_dim: 1536,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            context_length: 8192,
            rope_base: 100_000.0,
            norm_eps: 1e-5,
        }
    }
}

/// A GGUF file of a Llama model with config `c`: matrices in `dtype`, the (tied) token embedding
/// in `embd_dtype`, norms in F32, values uniform in ±`1/√k` from `seed`.
pub fn synthetic_llama(c: &Config, dtype: DType, embd_dtype: DType, seed: u64) -> Result<Vec<u8>> {
    let mut rng = Uniform::new(seed);
    let mut values = |len: usize, scale: f32| -> Vec<f32> { (0..len).map(|_| rng.next_f32() * scale).collect() };
    let mut w = GgufWriter::new();
    let u32v = |v: usize| Value::U32(v as u32);
    w.metadata("general.architecture", Value::String("llama".into()))?
        .metadata("llama.block_count", u32v(c.n_layers))?
        .metadata("llama.embedding_length", u32v(c.dim))?
        .metadata("llama.feed_forward_length", u32v(c.hidden_dim))?
        .metadata("llama.attention.head_count", u32v(c.n_heads))?
        .metadata("llama.attention.head_count_kv", u32v(c.n_kv_heads))?
        .metadata("llama.context_length", u32v(c.context_length))?
        .metadata("llama.vocab_size", u32v(c.vocab_size))?
        .metadata("llama.rope.freq_base", Value::F32(c.rope_base as f32))?
        .metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(c.norm_eps))?;
    let kv_dim = c.n_kv_heads * c.head_dim;
    let mut matrix = |w: &mut GgufWriter, name: &str, n: usize, k: usize, dtype: DType| -> Result<()> {
        let data = quant::quantize(dtype, &values(n * k, 1.0 / (k as f32).sqrt()))?;
        w.tensor(name, &[k, n], dtype, data)?;
        Ok(())
    };
    let ones = |n: usize| bytemuck::cast_slice::<f32, u8>(&vec![1.0f32; n]).to_vec();
    matrix(&mut w, "token_embd.weight", c.vocab_size, c.dim, embd_dtype)?;
    for l in 0..c.n_layers {
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        w.tensor(&name("attn_norm"), &[c.dim], DType::F32, ones(c.dim))?;
        w.tensor(&name("ffn_norm"), &[c.dim], DType::F32, ones(c.dim))?;
        for (s, n, k) in [
            ("attn_q", c.dim, c.dim),
            ("attn_k", kv_dim, c.dim),
            ("attn_v", kv_dim, c.dim),
            ("attn_output", c.dim, c.dim),
            ("ffn_gate", c.hidden_dim, c.dim),
            ("ffn_up", c.hidden_dim, c.dim),
            ("ffn_down", c.dim, c.hidden_dim),
        ] {
            matrix(&mut w, &name(s), n, k, dtype)?;
        }
    }
    w.tensor("output_norm.weight", &[c.dim], DType::F32, ones(c.dim))?;
    Ok(w.to_bytes())
}

/// A small deterministic generator (xorshift64) of values uniform in [-1, 1) in steps of 2⁻²³:
/// the synthetic models' weights, and inputs for tests and benches outside proptest.
#[derive(Clone, Debug)]
pub struct Uniform(u64);

impl Uniform {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Uniform {
        Uniform(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number, uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// `len` values from `seed`'s sequence, times `scale`.
    pub fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
        let mut rng = Uniform::new(seed);
        (0..len).map(|_| rng.next_f32() * scale).collect()
    }
}
