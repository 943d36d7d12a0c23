//! Flash-style attention over paged KV blocks: one body for prefill and decode.
//!
//! A task is one KV head, a run of its sequence's blocks and a set of query rows (the query
//! heads of that KV head's group, at one or more positions), each row with its own inclusive
//! key-position range (causal limit, sliding window). Blocks are the key tiles: for each block
//! the body computes the rows' scores against its tokens, folds them into a running max `m`,
//! denominator `l` and unnormalised output `acc` (the online softmax), then adds the block's
//! values weighted by the probabilities. The score matrix never exists beyond one block.
//! Callers merge tasks that split one row's keys by log-sum-exp and normalise (`acc / l`).
//!
//! Keys and values are read in their storage format (f32, f16, int8 with a per-token scale) and
//! widened in registers — no dequantized copy. Tokens outside a row's range, and slots past the
//! sequence's end, are never loaded into arithmetic, so stale or NaN slots cannot leak.

use super::formats::{FloatFormat, F16, F32};
use crate::backend::cpu::simd::Simd;
use crate::kv_cache::storage::LayerView;

/// How a KV storage format is read: `LANES` elements at a time, or one.
pub(crate) trait KvFormat {
    const BYTES: usize;
    /// Int8: each token's elements are multiplied by its scale.
    const SCALED: bool;
    fn load<S: Simd>(s: S, x: &[u8]) -> S::F;
    fn get(x: &[u8], i: usize) -> f32;
}

impl KvFormat for F32 {
    const BYTES: usize = 4;
    const SCALED: bool = false;
    #[inline(always)]
    fn load<S: Simd>(s: S, x: &[u8]) -> S::F {
        <F32 as FloatFormat>::load(s, x)
    }
    #[inline(always)]
    fn get(x: &[u8], i: usize) -> f32 {
        <F32 as FloatFormat>::get(x, i)
    }
}

impl KvFormat for F16 {
    const BYTES: usize = 2;
    const SCALED: bool = false;
    #[inline(always)]
    fn load<S: Simd>(s: S, x: &[u8]) -> S::F {
        <F16 as FloatFormat>::load(s, x)
    }
    #[inline(always)]
    fn get(x: &[u8], i: usize) -> f32 {
        <F16 as FloatFormat>::get(x, i)
    }
}

/// Symmetric int8 with a per-(token, head) f32 scale.
pub(crate) struct I8;

impl KvFormat for I8 {
    const BYTES: usize = 1;
    const SCALED: bool = true;
    #[inline(always)]
    fn load<S: Simd>(s: S, x: &[u8]) -> S::F {
        s.load_i8(x)
    }
    #[inline(always)]
    fn get(x: &[u8], i: usize) -> f32 {
        x[i] as i8 as f32
    }
}

/// Which keys a task reads: one head of a run of one sequence's blocks.
#[derive(Clone, Copy)]
pub(crate) struct KvSpan<'a> {
    pub layer: LayerView<'a>,
    pub head: usize,
    /// block ids; `blocks[0]` holds positions `first_pos ..`
    pub blocks: &'a [u32],
    pub first_pos: usize,
    /// the sequence's length: slots at or past it are never read
    pub len: usize,
    /// `Some(c)`: scores become `c · tanh(score / c)`.
    pub softcap: Option<f32>,
}

/// A task's query rows and running softmax state.
pub(crate) struct AttnRows<'a> {
    /// (rows, head_dim) queries, already multiplied by the softmax scale
    pub q: &'a [f32],
    /// (rows) inclusive key-position ranges
    pub lo: &'a [usize],
    pub hi: &'a [usize],
    /// (rows) running max of the scores (−∞ before any key)
    pub m: &'a mut [f32],
    /// (rows) running Σ exp(score − m)
    pub l: &'a mut [f32],
    /// (rows, head_dim) running Σ exp(score − m) · v
    pub acc: &'a mut [f32],
    /// (rows, block_size) one block's scores, then probabilities
    pub s: &'a mut [f32],
}

/// Σ q[i]·row[i] over `head_dim` elements of a stored row.
#[inline(always)]
fn dot<S: Simd, K: KvFormat>(s: S, q: &[f32], row: &[u8]) -> f32 {
    let (n, full) = (q.len(), q.len() / S::LANES * S::LANES);
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut i = 0;
    while i + 2 * S::LANES <= full {
        a0 = s.mul_add(s.load(&q[i..]), K::load(s, &row[i * K::BYTES..]), a0);
        a1 = s.mul_add(s.load(&q[i + S::LANES..]), K::load(s, &row[(i + S::LANES) * K::BYTES..]), a1);
        i += 2 * S::LANES;
    }
    if i < full {
        a0 = s.mul_add(s.load(&q[i..]), K::load(s, &row[i * K::BYTES..]), a0);
    }
    let mut sum = s.sum(s.mul_add(a1, s.splat(1.0), a0));
    for j in full..n {
        sum += q[j] * K::get(row, j);
    }
    sum
}

/// `acc += w · row` over `head_dim` elements.
#[inline(always)]
fn axpy<S: Simd, K: KvFormat>(s: S, w: f32, row: &[u8], acc: &mut [f32]) {
    let (n, full) = (acc.len(), acc.len() / S::LANES * S::LANES);
    let wv = s.splat(w);
    for i in (0..full).step_by(S::LANES) {
        let v = s.mul_add(wv, K::load(s, &row[i * K::BYTES..]), s.load(&acc[i..]));
        s.store(v, &mut acc[i..]);
    }
    for j in full..n {
        acc[j] += w * K::get(row, j);
    }
}

/// Folds every block of `kv` into the rows' state (see the module documentation).
#[inline(always)]
pub(crate) fn attend<S: Simd, K: KvFormat>(s: S, kv: &KvSpan, rows: &mut AttnRows) {
    let l = &kv.layer;
    let (hd, bs) = (l.head_dim, l.block_size);
    let row_bytes = hd * K::BYTES;
    let n_rows = rows.lo.len();
    let (lo_all, hi_all) = (rows.lo.iter().copied().min().unwrap_or(0), rows.hi.iter().copied().max().unwrap_or(0));
    for (bi, &block) in kv.blocks.iter().enumerate() {
        let p0 = kv.first_pos + bi * bs;
        // Tokens of this block that exist and that some row may see.
        let t_lo = lo_all.max(p0) - p0;
        let t_end = (hi_all + 1).min(kv.len).min(p0 + bs);
        if t_end <= p0 + t_lo {
            continue;
        }
        let t_hi = t_end - p0;
        let slot0 = (block as usize * l.n_kv_heads + kv.head) * bs;
        let keys = &l.k[slot0 * row_bytes..(slot0 + bs) * row_bytes];
        let values = &l.v[slot0 * row_bytes..(slot0 + bs) * row_bytes];

        // Scores, −∞ where a row may not look.
        for t in t_lo..t_hi {
            let key = &keys[t * row_bytes..(t + 1) * row_bytes];
            let k_scale = if K::SCALED { l.k_scale[slot0 + t] } else { 1.0 };
            let pos = p0 + t;
            for r in 0..n_rows {
                rows.s[r * bs + t] = if rows.lo[r] <= pos && pos <= rows.hi[r] {
                    let raw = dot::<S, K>(s, &rows.q[r * hd..(r + 1) * hd], key) * k_scale;
                    match kv.softcap {
                        Some(c) => c * (raw / c).tanh(),
                        None => raw,
                    }
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
        // Online softmax: rescale the state once per block, scores become probabilities.
        for r in 0..n_rows {
            let sr = &mut rows.s[r * bs + t_lo..r * bs + t_hi];
            let block_max = sr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if block_max == f32::NEG_INFINITY {
                continue;
            }
            if block_max > rows.m[r] {
                let alpha = (rows.m[r] - block_max).exp();
                rows.l[r] *= alpha;
                rows.acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= alpha);
                rows.m[r] = block_max;
            }
            let m = rows.m[r];
            let mut sum = 0.0;
            for x in sr.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            rows.l[r] += sum;
        }
        for t in t_lo..t_hi {
            let value = &values[t * row_bytes..(t + 1) * row_bytes];
            let v_scale = if K::SCALED { l.v_scale[slot0 + t] } else { 1.0 };
            for r in 0..n_rows {
                let p = rows.s[r * bs + t];
                if p > 0.0 {
                    axpy::<S, K>(s, p * v_scale, value, &mut rows.acc[r * hd..(r + 1) * hd]);
                }
            }
        }
    }
}
