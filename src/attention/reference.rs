//! The specification: gather the sequence's stored keys and values, then dense softmax
//! attention in f64. Safe, scalar, obvious.

use super::{AttnParams, key_range};
use crate::Result;
use crate::kv_cache::{KvCache, SeqId};

/// The reference result and the magnitudes the f32 error bound depends on.
#[derive(Debug, Clone)]
pub struct RefAttention {
    /// (n_q, n_heads, head_dim)
    pub out: Vec<f64>,
    /// (n_q · n_heads) largest `scale · Σᵢ |qᵢ kᵢ|` over the keys each row sees
    pub score_mag: Vec<f64>,
    /// (n_q · n_heads) largest `|v|` element over the keys each row sees
    pub v_max: Vec<f64>,
    /// (n_q · n_heads) largest `|k|` element over the keys each row sees
    pub k_max: Vec<f64>,
    /// (n_q · n_heads) keys each row sees
    pub n_keys: Vec<usize>,
}

/// Attention of the last `q.len() / (n_heads · head_dim)` tokens of `seq`, as
/// [`crate::Cpu::attention_prefill`] defines it (decode is the case `n_q = 1`).
pub fn attention_f64(cache: &KvCache, layer: usize, seq: SeqId, q: &[f32], p: &AttnParams) -> Result<RefAttention> {
    let (hd, g) = (p.head_dim, p.n_heads / p.n_kv_heads);
    let n_q = q.len() / (p.n_heads * hd);
    let len = cache.len(seq)?;
    let kv = (0..len).map(|pos| cache.read(seq, layer, pos)).collect::<Result<Vec<_>>>()?;
    let rows = n_q * p.n_heads;
    let mut r = RefAttention { out: vec![0.0; rows * hd], score_mag: vec![0.0; rows], v_max: vec![0.0; rows], k_max: vec![0.0; rows], n_keys: vec![0; rows] };
    for t in 0..n_q {
        let pos = len - n_q + t;
        let (lo, hi) = key_range(pos, p.window);
        for h in 0..p.n_heads {
            let (row, kvh) = (t * p.n_heads + h, h / g);
            let qv = &q[row * hd..(row + 1) * hd];
            let head = |x: &[f32]| x[kvh * hd..(kvh + 1) * hd].iter().map(|&v| v as f64).collect::<Vec<_>>();
            let mut scores = Vec::new();
            for (k, v) in &kv[lo..=hi] {
                let (k, v) = (head(k), head(v));
                let dot: f64 = qv.iter().zip(&k).map(|(&a, b)| a as f64 * b).sum();
                let mag: f64 = qv.iter().zip(&k).map(|(&a, b)| (a as f64 * b).abs()).sum::<f64>() * p.scale as f64;
                let s = dot * p.scale as f64;
                let s = match p.softcap {
                    Some(c) => c as f64 * (s / c as f64).tanh(),
                    None => s,
                };
                r.k_max[row] = k.iter().fold(r.k_max[row], |a, x| a.max(x.abs()));
                scores.push((s, v));
                r.score_mag[row] = r.score_mag[row].max(mag);
            }
            let max = scores.iter().map(|(s, _)| *s).fold(f64::NEG_INFINITY, f64::max);
            let denom: f64 = scores.iter().map(|(s, _)| (s - max).exp()).sum();
            for (s, v) in &scores {
                let w = (s - max).exp() / denom;
                for (o, x) in r.out[row * hd..(row + 1) * hd].iter_mut().zip(v) {
                    *o += w * x;
                    r.v_max[row] = r.v_max[row].max(x.abs());
                }
            }
            r.n_keys[row] = scores.len();
        }
    }
    Ok(r)
}

/// Bound on `|f32 kernel − reference|` for one output element of a row, both reading the same
/// stored keys and values. Derivation (ε = f32::EPSILON, S = `score_mag`, T = `n_keys`):
/// - each score: a head_dim-term f32 dot product plus the pre-scaling of q, so
///   `|ŝ − s| ≤ δ = (head_dim + 2)·ε·S`; soft-capping is 1-Lipschitz (plus ≤ 2ε·S rounding);
/// - each weight `exp(s − m)`: its argument is off by ≤ 2δ + ε·|s − m| ≤ 2δ + 2ε·S (m is an
///   f32 score too), the vectorized exp adds ≤ 3 ulp relative (tested per level): weights are
///   off by a factor `e^{±η}`, `η = 2δ + 2ε·S + 4ε`; a ratio of such sums moves the output by ≤ `(e^{2η} − 1)·max|v|`;
/// - accumulating T weighted values and their weights, rescaled at most once per block and
///   once per merge, adds ≤ `(T + 2·T/block_size + 8)·ε·max|v|` (each term relative ≤ ε per add;
///   the kernel rescales once per chunk of whole blocks, so at most once per block).
pub fn f32_error_bound(head_dim: usize, block_size: usize, score_mag: f64, v_max: f64, n_keys: usize) -> f64 {
    bound(head_dim, block_size, score_mag, 0.0, v_max, n_keys)
}

/// [`f32_error_bound`] with `score_err` more error in each score.
fn bound(head_dim: usize, block_size: usize, score_mag: f64, score_err: f64, v_max: f64, n_keys: usize) -> f64 {
    let eps = f32::EPSILON as f64;
    let delta = (head_dim as f64 + 4.0) * eps * score_mag + (1.0 + 2.0 * eps) * score_err;
    let eta = 2.0 * delta + 2.0 * eps * score_mag + 4.0 * eps;
    let t = n_keys as f64;
    v_max * ((2.0 * eta).exp() - 1.0 + (t + 2.0 * t / block_size as f64 + 8.0) * eps)
}

/// Bound on `|int8 kernel − reference|` for one output element, both reading the same int8
/// cache: [`f32_error_bound`]'s derivation plus the kernel's two quantizations
/// (`backend::cpu::kernels::attend::I8`):
/// - queries, to int8 (`L₈ = 127` levels): each element of a row `q · scale` is off by ≤ 0.51 ·
///   `q_absmax` / L₈ (half a level, plus the f32 rounding of `x · L₈ / max`, ≤ 2ε · L₈ < 0.01
///   level), so each score by ≤ `δ_q` = that · `head_dim · k_max` — added to each score's error
///   in the f32 derivation (the dot product itself is exact in i32, then 3 roundings, fewer than
///   the f32 path's). This is the same order as the int8 keys' own error ([`int8_error_bound`]):
///   the kernel's total error against the f32 cache is at most about twice the storage's;
/// - weights, to i16 (`L = 32767` levels): per chunk of `CHUNK_TOKENS` keys, each weight
///   `p · v_scale` is off by ≤ 0.51 level of (the chunk's largest weight) / L and multiplies an
///   int8 value `≤ 127`, and `127 · v_scale ≤ v_max`, so a chunk's share of the numerator moves
///   by ≤ `CHUNK_TOKENS · 0.51 / L · v_max · max p` over the chunk; after the online softmax's
///   rescaling those maxima sum to at most the denominator (each is one of its terms), so the
///   output moves by ≤ `CHUNK_TOKENS · 0.51 / L · v_max` — 0.1% of `v_max`, a quarter of int8
///   storage's own `v_max / 254`.
///
/// `q_absmax`: the row's largest `|q| · scale`; `k_max`, `v_max`: the largest stored `|k|`,
/// `|v|` elements the row sees.
pub fn int8_kernel_error_bound(head_dim: usize, block_size: usize, score_mag: f64, q_absmax: f64, k_max: f64, v_max: f64, n_keys: usize) -> f64 {
    use crate::backend::cpu::kernels::attend::{CHUNK_TOKENS, I8_LEVELS, I16_LEVELS};
    let score_err = 0.51 * q_absmax / I8_LEVELS as f64 * head_dim as f64 * k_max;
    bound(head_dim, block_size, score_mag, score_err, v_max, n_keys) + CHUNK_TOKENS as f64 * 0.51 / I16_LEVELS as f64 * v_max
}

/// Extra error of an int8 cache against the same data stored in f32, per output element.
/// Each stored element is off by ≤ `max|row| / 254` (half a step of `max|row| / 127`), so each
/// score by ≤ `δ₈ = scale · Σ|qᵢ| · k_absmax / 254` and each value by ≤ `v_absmax / 254`,
/// where the maxima are over all the keys' and values' elements:
/// `|o₈ − o| ≤ (e^{2δ₈} − 1)·v_absmax + v_absmax / 254`.
pub fn int8_error_bound(scale: f32, q_abs_sum: f64, k_absmax: f64, v_absmax: f64) -> f64 {
    let delta = scale as f64 * q_abs_sum * k_absmax / 254.0;
    ((2.0 * delta).exp() - 1.0) * v_absmax + v_absmax / 254.0
}
