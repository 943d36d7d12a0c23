//! f32 / f16 / bf16 storage as attention reads it: vectors widened to f32 in registers.

use super::{KvFormat, LiveBlock, prefetch_span, wide};
use crate::backend::cpu::kernels::formats::FloatFormat;
use crate::backend::cpu::simd::Simd;
use std::ops::Range;

/// f32 / f16 (and bf16): keys `(head_dim, block_size)`, values `(block_size, head_dim)`, each
/// vector widened to f32 and multiplied-added; the queries transposed, (head_dim) × NR.
impl<K: FloatFormat> KvFormat for K {
    const BYTES: usize = <K as FloatFormat>::BYTES;
    const SCALED: bool = false;
    fn query_slots(head_dim: usize) -> usize {
        head_dim
    }
    #[inline(always)]
    fn prepare_queries<S: Simd, const NR: usize>(_: S, q: &[f32], qt: &mut [f32]) {
        let hd = q.len() / NR;
        for (d, qt) in qt[..hd * NR].chunks_exact_mut(NR).enumerate() {
            for (j, x) in qt.iter_mut().enumerate() {
                *x = q[j * hd + d];
            }
        }
    }
    #[inline(always)]
    fn scores<S: Simd, const NR: usize>(s: S, qt: &[f32], keys: &[u8], ahead: &[u8], _: &[f32], out: &mut [f32], col: usize) {
        let qt = qt.as_chunks::<NR>().0;
        if ahead.is_empty() {
            float_scores::<S, K, NR, false>(s, qt, keys, ahead, out, col)
        } else {
            float_scores::<S, K, NR, true>(s, qt, keys, ahead, out, col)
        }
    }
    #[inline(always)]
    fn accumulate<S: Simd, const NR: usize>(s: S, p: &[f32], blocks: &[LiveBlock], acc: &mut [f32]) {
        for b in blocks {
            if b.ahead.is_empty() {
                float_accumulate::<S, K, NR, false>(s, p, b.col, b.values, b.ahead, b.tokens.clone(), acc);
            } else {
                float_accumulate::<S, K, NR, true>(s, p, b.col, b.values, b.ahead, b.tokens.clone(), acc);
            }
        }
    }
}

/// Scores against f32/f16 keys: `qt` is the rows' queries transposed, (head_dim) × NR; `keys`
/// the block's (head_dim, block_size) transposed keys.
/// (Exact-length views, so the inner loop carries no bounds checks — ~12 compare-and-branch
/// pairs per 6 multiply-adds before; alone this measured within noise, together with the rest
/// of that step ×1.1–1.45.)
#[inline(always)]
fn float_scores<S: Simd, K: FloatFormat, const NR: usize, const PF: bool>(s: S, qt: &[[f32; NR]], keys: &[u8], ahead: &[u8], out: &mut [f32], col: usize) {
    let row = keys.len() / qt.len(); // bytes of one d's block_size keys
    let ct = out.len() / NR;
    for tc in (0..row / K::BYTES).step_by(S::LANES) {
        let at = tc * K::BYTES;
        // Two accumulators per row (even and odd d) halve the dependency chains.
        let (mut even, mut odd) = ([s.zero(); NR], [s.zero(); NR]);
        let (pairs, q_pairs) = (keys.chunks_exact(2 * row), qt.chunks_exact(2));
        let (k_last, q_last) = (pairs.remainder(), q_pairs.remainder());
        for (i, (k, q)) in pairs.zip(q_pairs).enumerate() {
            if PF && tc == 0 {
                prefetch_span(s, ahead, i * 2 * row, 2 * row);
            }
            let (k0, k1) = k.split_at(row);
            let (k0, k1) = (K::load(s, &k0[at..]), K::load(s, &k1[at..]));
            for j in 0..NR {
                even[j] = s.mul_add(s.splat(q[0][j]), k0, even[j]);
                odd[j] = s.mul_add(s.splat(q[1][j]), k1, odd[j]);
            }
        }
        if let [q] = q_last {
            if PF && tc == 0 {
                prefetch_span(s, ahead, keys.len() - row, row);
            }
            let k = K::load(s, &k_last[at..]);
            for j in 0..NR {
                even[j] = s.mul_add(s.splat(q[j]), k, even[j]);
            }
        }
        for j in 0..NR {
            s.store(s.add(odd[j], even[j]), &mut out[j * ct + col + tc..]);
        }
    }
}

/// `acc[j] += Σ_t p[j][col + t] · v[t]` for `NR` rows over tokens `tokens` of one block: `p` is
/// (NR, chunk tokens), `values` the block's (block_size, head_dim), `acc` (NR, head_dim).
#[inline(always)]
fn float_accumulate<S: Simd, K: FloatFormat, const NR: usize, const PF: bool>(
    s: S,
    p: &[f32],
    col: usize,
    values: &[u8],
    ahead: &[u8],
    tokens: Range<usize>,
    acc: &mut [f32],
) {
    let (hd, ct) = (acc.len() / NR, p.len() / NR);
    // Each row's weights of these tokens, broadcast straight from the probabilities.
    let mut weights = [&[][..]; NR];
    for (j, w) in weights.iter_mut().enumerate() {
        *w = &p[j * ct + col + tokens.start..j * ct + col + tokens.end];
    }
    let values = &values[tokens.start * hd * K::BYTES..tokens.end * hd * K::BYTES];
    let ahead = ahead.get(tokens.start * hd * K::BYTES..).unwrap_or(&[]);
    let full = hd / S::LANES * S::LANES;
    // Column passes of up to 4 vectors (2 on 16-register ISAs): NR × 4 accumulators stay in
    // registers while each token's weights are broadcast once per pass.
    let mut dc = 0;
    while dc < full {
        if full - dc >= wide::<S>() * S::LANES {
            if wide::<S>() == 4 {
                float_accumulate_cols::<S, K, NR, 4, PF>(s, &weights, values, ahead, acc, dc);
            } else {
                float_accumulate_cols::<S, K, NR, 2, PF>(s, &weights, values, ahead, acc, dc);
            }
            dc += wide::<S>() * S::LANES;
        } else {
            float_accumulate_cols::<S, K, NR, 1, PF>(s, &weights, values, ahead, acc, dc);
            dc += S::LANES;
        }
    }
    for d in full..hd {
        for (t, v) in values.chunks_exact(hd * K::BYTES).enumerate() {
            let v = K::get(v, d);
            for j in 0..NR {
                acc[j * hd + d] += weights[j][t] * v;
            }
        }
    }
}

/// [`float_accumulate`] for columns `dc .. dc + W · LANES`, tokens outermost: `weights` NR rows
/// of (tokens), `values` (tokens, head_dim).
#[inline(always)]
fn float_accumulate_cols<S: Simd, K: FloatFormat, const NR: usize, const W: usize, const PF: bool>(
    s: S,
    weights: &[&[f32]; NR],
    values: &[u8],
    ahead: &[u8],
    acc: &mut [f32],
    dc: usize,
) {
    let hd = acc.len() / NR;
    let width = S::LANES * K::BYTES;
    // Plain loops, not `array::from_fn`: its closure is not always inlined into the
    // `#[target_feature]` entry point, and then every vector goes through the stack.
    let mut a = [[s.zero(); W]; NR];
    for (j, a) in a.iter_mut().enumerate() {
        for (i, a) in a.iter_mut().enumerate() {
            *a = s.load(&acc[j * hd + dc + i * S::LANES..]);
        }
    }
    for (t, row) in values.chunks_exact(hd * K::BYTES).enumerate() {
        if PF {
            prefetch_span(s, ahead, (t * hd + dc) * K::BYTES, W * width);
        }
        let row = &row[dc * K::BYTES..][..W * width];
        let mut v = [s.zero(); W];
        for (i, v) in v.iter_mut().enumerate() {
            *v = K::load(s, &row[i * width..]);
        }
        for (a, w) in a.iter_mut().zip(weights) {
            let w = s.splat(w[t]);
            for i in 0..W {
                a[i] = s.mul_add(w, v[i], a[i]);
            }
        }
    }
    for (j, a) in a.iter().enumerate() {
        for (i, &a) in a.iter().enumerate() {
            s.store(a, &mut acc[j * hd + dc + i * S::LANES..]);
        }
    }
}
