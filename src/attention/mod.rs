//! Attention over the paged KV cache: causal prefill and batched decode, flash-style.
//!
//! Shapes: queries and outputs are `(n_q, n_heads, head_dim)` row-major f32; keys and values
//! live in a [`KvCache`]. Query heads `h` read KV head `h / (n_heads / n_kv_heads)` (grouped-
//! or multi-query attention). The queries are always a sequence's *last* `n_q` tokens, whose keys
//! and values the caller has already written: query `i` sits at position `len − n_q + i` and sees
//! keys `max(0, pos − window + 1) ..= pos`.
//!
//! ```
//! use sparq::{AttnParams, AttnScratch, Cpu, KvCache, KvCacheConfig, KvDtype};
//! // One layer, 2 KV heads of 64 (GQA: 8 query heads), up to 256 tokens in 16-token blocks.
//! let (n_heads, n_kv_heads, head_dim) = (8, 2, 64);
//! let config = KvCacheConfig { n_layers: 1, n_kv_heads, head_dim, block_size: 16, n_blocks: 16, max_seq_len: 256, dtype: KvDtype::F16 };
//! let mut cache = KvCache::new(config)?;
//! let seq = cache.new_sequence();
//! for pos in cache.append(seq, 3)? {
//!     // (n_kv_heads, head_dim) keys and values of token `pos`, normally from the K/V projections.
//!     let kv = vec![0.1 * pos as f32; n_kv_heads * head_dim];
//!     cache.write(seq, 0, pos, &kv, &kv)?;
//! }
//! // Decode: the last token's query, (1, n_heads, head_dim), attends to all 3 positions.
//! let q = vec![0.5f32; n_heads * head_dim];
//! let mut out = vec![0f32; q.len()];
//! let cpu = Cpu::new(2)?;
//! let p = AttnParams::new(n_heads, n_kv_heads, head_dim);
//! cpu.attention_decode(&cache, 0, &[seq], &q, &mut out, &p, &mut AttnScratch::default())?;
//! // Every value row was 0.1·pos, so the output is a convex mix of 0.0, 0.1 and 0.2.
//! assert!(out.iter().all(|&o| (0.0..=0.2001).contains(&o)));
//! # Ok::<(), sparq::Error>(())
//! ```
//!
//! This module holds what every backend shares: [`AttnParams`], the shape checks and the
//! reference ([`mod@reference`]). The CPU's ops are `Cpu::attention_prefill` and
//! `Cpu::attention_decode` (`backend/cpu/attention.rs`: tasks, kernels, the log-sum-exp merge).

pub mod reference;

use crate::error::{check_finite, shape_err};
use crate::kv_cache::{KvCache, SeqId, SeqView};
use crate::{Error, Result};

/// What attention computes, besides the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads: divides `n_heads` (equal: multi-head; fewer: grouped-query; 1: multi-query).
    pub n_kv_heads: usize,
    /// Elements per head, for queries, keys and values alike.
    pub head_dim: usize,
    /// Multiplies `q · k` (usually `1 / √head_dim`).
    pub scale: f32,
    /// `Some(c)`: scores become `c · tanh(score / c)` (Gemma-2 style soft-capping).
    pub softcap: Option<f32>,
    /// `Some(w)`: each query sees only the `w` most recent positions, itself included.
    pub window: Option<usize>,
}

impl AttnParams {
    /// Plain causal attention with scale `1 / √head_dim`.
    pub fn new(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttnParams {
        AttnParams { n_heads, n_kv_heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), softcap: None, window: None }
    }

    pub(crate) fn validate(&self, op: &'static str, cache: &KvCache) -> Result<()> {
        let c = cache.config();
        let bad = |detail: String| Err(Error::Invalid { what: op, detail });
        if self.n_kv_heads != c.n_kv_heads || self.head_dim != c.head_dim {
            return bad(format!("params have {} KV heads of {}, the cache {} of {}", self.n_kv_heads, self.head_dim, c.n_kv_heads, c.head_dim));
        }
        if self.n_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!("n_heads = {} is not a positive multiple of n_kv_heads = {}", self.n_heads, self.n_kv_heads));
        }
        if !self.scale.is_finite() || self.softcap.is_some_and(|c| !(c.is_finite() && c > 0.0)) || self.window == Some(0) {
            return bad(format!("scale must be finite, softcap positive and finite, window ≥ 1: {self:?}"));
        }
        Ok(())
    }
}

// The checks every backend's attention runs before any kernel; they return the sequences'
// views of the cache, which the kernels then read as given.

/// Prefill: `q` and `out` are `(n_q, n_heads, head_dim)` with `n_q` at most the sequence's
/// length, `q` finite, the params consistent with the cache.
pub(crate) fn check_prefill<'c>(cache: &'c KvCache, layer: usize, seq: SeqId, q: &[f32], out: &[f32], p: &AttnParams) -> Result<SeqView<'c>> {
    const OP: &str = "attention_prefill";
    p.validate(OP, cache)?;
    let view = cache.view(seq, layer)?;
    let row = p.n_heads * p.head_dim;
    let n_q = q.len() / row;
    if !q.len().is_multiple_of(row) || out.len() != q.len() || n_q > view.len {
        return shape_err(OP, format!("q ({}) and out ({}) must be (n_q ≤ {}, {} · {})", q.len(), out.len(), view.len, p.n_heads, p.head_dim));
    }
    check_finite(OP, &[q])?;
    Ok(view)
}

/// Decode: `q` and `out` are `(seqs, n_heads, head_dim)`, every sequence non-empty, `q`
/// finite, the params consistent with the cache.
pub(crate) fn check_decode<'c>(cache: &'c KvCache, layer: usize, seqs: &[SeqId], q: &[f32], out: &[f32], p: &AttnParams) -> Result<Vec<SeqView<'c>>> {
    const OP: &str = "attention_decode";
    p.validate(OP, cache)?;
    let row = p.n_heads * p.head_dim;
    if q.len() != seqs.len() * row || out.len() != q.len() {
        return shape_err(OP, format!("q ({}) and out ({}) must be ({} seqs, {row})", q.len(), out.len(), seqs.len()));
    }
    check_finite(OP, &[q])?;
    let views = seqs.iter().map(|&s| cache.view(s, layer)).collect::<Result<Vec<_>>>()?;
    if let Some(b) = views.iter().position(|v| v.len == 0) {
        return Err(Error::Invalid { what: OP, detail: format!("sequence {b} is empty: write its token first") });
    }
    Ok(views)
}

/// The inclusive key positions a query at `pos` sees.
pub(crate) fn key_range(pos: usize, window: Option<usize>) -> (usize, usize) {
    (window.map_or(0, |w| (pos + 1).saturating_sub(w)), pos)
}
