//! Flash-style attention over paged KV blocks: one body for prefill and decode.
//!
//! A task is one KV head, a run of its sequence's blocks and a set of query rows (the query
//! heads of that KV head's group, at one or more positions), each row with its own inclusive
//! key-position range (causal limit, sliding window). Blocks are the key tiles: for each block
//! the body computes the rows' scores against its tokens (keys are stored transposed per block,
//! so that is `head_dim` broadcast multiply-adds over `block_size` tokens at a time), folds them into a running max `m`,
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

/// Largest argument [`exp`] takes below: `e^-87 ≈ 1.6e-38` is still a normal f32.
const EXP_MIN: f32 = -87.0;

/// `e^x` for `x ≤ 0` (softmax arguments), as `2ⁿ · p(r)` with `x = n·ln2 + r`, `|r| ≤ ln2/2`
/// and `p` the degree-6 Taylor polynomial (truncation `< r⁷/5040 < 2⁻²⁴`): within 3 ulp of
/// `e^x` on `[-87, 0]` (tested against f64). Arguments below −87 give `e^-87`; callers zero
/// masked lanes themselves.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::F) -> S::F {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = s.max(x, s.splat(EXP_MIN));
    let n = s.round_to_i32(s.mul(x, s.splat(std::f32::consts::LOG2_E)));
    let nf = s.to_f32(n);
    let r = s.mul_add(nf, s.splat(-LN2_HI), x);
    let r = s.mul_add(nf, s.splat(-LN2_LO), r);
    let mut p = s.splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = s.mul_add(p, r, s.splat(c));
    }
    s.mul(p, s.bits_to_f32(s.ishl(s.iadd(n, s.isplat(127)), 23)))
}

/// Scores of `NR` query rows against one block's `block_size` tokens: `q` is (NR, head_dim),
/// `keys` the block's (head_dim, block_size) transposed keys, `out` (NR, block_size).
#[inline(always)]
fn scores<S: Simd, K: KvFormat, const NR: usize>(s: S, q: &[f32], keys: &[u8], k_scale: &[f32], out: &mut [f32]) {
    let hd = q.len() / NR;
    let bs = out.len() / NR;
    for tc in (0..bs).step_by(S::LANES) {
        // Two accumulators per row (even and odd d) halve the dependency chains.
        let (mut even, mut odd) = ([s.zero(); NR], [s.zero(); NR]);
        let mut d = 0;
        while d + 1 < hd {
            let k0 = K::load(s, &keys[(d * bs + tc) * K::BYTES..]);
            let k1 = K::load(s, &keys[((d + 1) * bs + tc) * K::BYTES..]);
            for j in 0..NR {
                even[j] = s.mul_add(s.splat(q[j * hd + d]), k0, even[j]);
                odd[j] = s.mul_add(s.splat(q[j * hd + d + 1]), k1, odd[j]);
            }
            d += 2;
        }
        if d < hd {
            let k = K::load(s, &keys[(d * bs + tc) * K::BYTES..]);
            for j in 0..NR {
                even[j] = s.mul_add(s.splat(q[j * hd + d]), k, even[j]);
            }
        }
        for j in 0..NR {
            let a = s.mul_add(odd[j], s.splat(1.0), even[j]);
            let a = if K::SCALED { s.mul(a, s.load(&k_scale[tc..])) } else { a };
            s.store(a, &mut out[j * bs + tc..]);
        }
    }
}

/// `acc[j] += Σ_t p[j][t] · v[t]` for `NR` rows over tokens `t_lo..t_hi` of one block: `p` is
/// (NR, block_size), `values` the block's (block_size, head_dim), `acc` (NR, head_dim).
#[inline(always)]
fn accumulate<S: Simd, K: KvFormat, const NR: usize>(
    s: S,
    p: &[f32],
    values: &[u8],
    v_scale: &[f32],
    tokens: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    let (hd, bs) = (acc.len() / NR, p.len() / NR);
    let full = hd / S::LANES * S::LANES;
    for dc in (0..full).step_by(S::LANES) {
        let mut a: [S::F; NR] = std::array::from_fn(|j| s.load(&acc[j * hd + dc..]));
        for t in tokens.clone() {
            let v = K::load(s, &values[(t * hd + dc) * K::BYTES..]);
            let vs = if K::SCALED { v_scale[t] } else { 1.0 };
            for (j, a) in a.iter_mut().enumerate() {
                *a = s.mul_add(s.splat(p[j * bs + t] * vs), v, *a);
            }
        }
        for (j, a) in a.into_iter().enumerate() {
            s.store(a, &mut acc[j * hd + dc..]);
        }
    }
    for d in full..hd {
        for t in tokens.clone() {
            let v = K::get(&values[t * hd * K::BYTES..], d) * if K::SCALED { v_scale[t] } else { 1.0 };
            for j in 0..NR {
                acc[j * hd + d] += p[j * bs + t] * v;
            }
        }
    }
}

/// Calls `f::<NR>` on consecutive chunks of up to 4 rows (the register tile).
macro_rules! by_row_chunks {
    ($n_rows:expr, |$r0:ident, $nr:ident| $body:expr) => {{
        let mut $r0 = 0;
        while $r0 < $n_rows {
            match $n_rows - $r0 {
                1 => { const $nr: usize = 1; $body }
                2 => { const $nr: usize = 2; $body }
                3 => { const $nr: usize = 3; $body }
                _ => { const $nr: usize = 4; $body }
            }
            $r0 += ($n_rows - $r0).min(4);
        }
    }};
}

/// Folds every block of `kv` into the rows' state (see the module documentation).
#[inline(always)]
pub(crate) fn attend<S: Simd, K: KvFormat>(s: S, kv: &KvSpan, rows: &mut AttnRows) {
    let l = &kv.layer;
    let (hd, bs) = (l.head_dim, l.block_size);
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
        let slot0 = (kv.head * l.n_blocks + block as usize) * bs;
        let bytes = bs * hd * K::BYTES;
        let keys = &l.k[slot0 * hd * K::BYTES..][..bytes];
        let values = &l.v[slot0 * hd * K::BYTES..][..bytes];
        // The next block of this head (usually adjacent): its keys and values, line by line.
        if let Some(&next) = kv.blocks.get(bi + 1) {
            let at = (kv.head * l.n_blocks + next as usize) * bs * hd * K::BYTES;
            for line in (0..bytes).step_by(64) {
                s.prefetch(&l.k[at + line..]);
                s.prefetch(&l.v[at + line..]);
            }
        }
        let (k_scale, v_scale) =
            if K::SCALED { (&l.k_scale[slot0..slot0 + bs], &l.v_scale[slot0..slot0 + bs]) } else { (&[][..], &[][..]) };

        by_row_chunks!(n_rows, |r0, NR| scores::<S, K, NR>(
            s,
            &rows.q[r0 * hd..(r0 + NR) * hd],
            keys,
            k_scale,
            &mut rows.s[r0 * bs..(r0 + NR) * bs]
        ));

        // Online softmax: mask, rescale the state once per block, scores become probabilities.
        for r in 0..n_rows {
            let sr = &mut rows.s[r * bs..(r + 1) * bs];
            let (lo, hi) = (rows.lo[r].max(p0), rows.hi[r].min(t_end - 1));
            if lo > hi {
                sr.fill(0.0);
                continue;
            }
            let whole = lo == p0 && hi == p0 + bs - 1;
            let visible = lo - p0..hi - p0 + 1;
            if let Some(c) = kv.softcap {
                sr[visible.clone()].iter_mut().for_each(|x| *x = c * (*x / c).tanh());
            }
            if !whole {
                // Slots outside the row's range may hold anything (even NaN): never use them.
                for (t, x) in sr.iter_mut().enumerate() {
                    if !visible.contains(&t) {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            let mut vmax = s.splat(f32::NEG_INFINITY);
            for tc in (0..bs).step_by(S::LANES) {
                vmax = s.max(vmax, s.load(&sr[tc..]));
            }
            let block_max = s.reduce_max(vmax);
            if block_max > rows.m[r] {
                let alpha = (rows.m[r] - block_max).exp();
                rows.l[r] *= alpha;
                rows.acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= alpha);
                rows.m[r] = block_max;
            }
            let m = s.splat(rows.m[r]);
            let mut sum = s.zero();
            for tc in (0..bs).step_by(S::LANES) {
                let p = exp(s, s.mul_add(s.splat(-1.0), m, s.load(&sr[tc..])));
                s.store(p, &mut sr[tc..]);
                sum = s.mul_add(p, s.splat(1.0), sum);
            }
            let mut sum = s.sum(sum);
            if !whole {
                for (t, x) in sr.iter_mut().enumerate() {
                    if !visible.contains(&t) {
                        sum -= *x;
                        *x = 0.0;
                    }
                }
            }
            rows.l[r] += sum;
        }
        by_row_chunks!(n_rows, |r0, NR| accumulate::<S, K, NR>(
            s,
            &rows.s[r0 * bs..(r0 + NR) * bs],
            values,
            v_scale,
            t_lo..t_hi,
            &mut rows.acc[r0 * hd..(r0 + NR) * hd]
        ));
    }
}
