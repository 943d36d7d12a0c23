//! Int8 storage as attention reads it: integer dot products, no dequantized copy.

use super::{CHUNK_TOKENS, KvFormat, LiveBlock, prefetch_span, wide};
use crate::backend::cpu::simd::Simd;
use crate::kv_cache::storage::stored_head_dim;
use crate::kv_cache::{KvDtype, MAX_INT8_HEAD_DIM};

/// Symmetric int8 with a per-(token, head) f32 scale, stored in the layout of
/// `kv_cache::storage` and read with integer dot products:
/// - scores: each query row quantized to int8 once per task (`q ≈ q_scale · q̂`, `q_scale =
///   max|q| / 127`), exact integer sums over quads of dimensions with 8-bit products
///   (`vpdpbusd`: four per 32-bit lane, unsigned × signed) of the excess-128 keys and the
///   queries, `Σ (kᵢ + 128) q̂ᵢ − 128 Σ q̂ᵢ = Σ q̂ᵢ kᵢ` (the row's `128 Σ q̂ᵢ` computed once), then
///   one multiply by `q_scale · k_scale[t]`;
/// - values: per chunk, each row's weights `p[t] · v_scale[t]` quantized to i16 (scale = their
///   max / 32767), exact integer sums `Σ ŵₜ vₜ` over pairs of tokens with 16-bit products
///   (`vpdpwssd`, two per lane), then one multiply-add into the f32 accumulator.
///
/// So a score step is one 64-byte load and `NR` multiply-adds per 4 · LANES products, where i16
/// queries would take two widening loads and `2 · NR` multiply-adds (measured against them:
/// decode, ctx 4096, KV in cache, 2 threads, alternating binaries, median µs: SmolLM2 geometry
/// 39.2 → 30.0, Llama-8B 149 → 125 with AVX-512 VNNI; without VNNI, where `dot_u8` widens
/// even and odd bytes, 31.6 → 33.8 and 143 → 161 on AVX-512, unchanged on AVX2). Perplexity
/// of SmolLM2 on alice29.txt (ctx 512) with an int8 cache: 16.5706 → 16.5722 (f32 cache
/// 16.5529). The value weights stay 16-bit: 8-bit ones would bound a chunk's error by
/// `CHUNK_TOKENS · 0.51 / 255 · v_max` (13% of `v_max`), not 0.1%. The query and
/// weight roundings add an error stated in `attention::reference::int8_kernel_error_bound`.
/// Sums stay exact in i32: `head_dim ≤ 512` (the cache refuses more for int8) bounds a score's
/// `|Σ (k + 128) q̂| ≤ 512 · 255 · 127 < 2³¹`, and a chunk's `|Σ ŵ v| ≤ 64 · 32767 · 127`.
///
/// `G`: bytes of four quads of dimensions of a block's keys, `16 · block_size`, so the score
/// loop's offsets are constants (see `i8_scores`); the backend picks it once per call.
pub(crate) struct I8<const G: usize>;

/// The i16 range of the value weights (±32767: never −32768, so no pair product overflows).
pub(crate) const I16_LEVELS: f32 = 32767.0;
/// The int8 range of the queries (±127, as the cache's own quantization).
pub(crate) const I8_LEVELS: f32 = 127.0;

impl<const G: usize> KvFormat for I8<G> {
    const BYTES: usize = 1;
    const SCALED: bool = true;
    fn query_slots(head_dim: usize) -> usize {
        head_dim.div_ceil(4) + 2
    }
    /// `qt`: (head_dim / 4) × NR quads of int8 as i32 (head_dim padded with zeros), then the NR
    /// rows' scales, then their `128 Σ q̂` as i32.
    #[inline(always)]
    fn prepare_queries<S: Simd, const NR: usize>(s: S, q: &[f32], qt: &mut [f32]) {
        let hd = q.len() / NR;
        let (quads, full) = (hd.div_ceil(4), hd / S::LANES * S::LANES);
        let (packed, rest) = qt[..NR * (quads + 2)].split_at_mut(NR * quads);
        let (scales, bias) = rest.split_at_mut(NR);
        let packed: &mut [i32] = bytemuck::cast_slice_mut(packed);
        let bias: &mut [i32] = bytemuck::cast_slice_mut(bias);
        // One row's levels, consecutive (so quads of them are the packed lanes), zero-padded.
        let mut levels = [0i8; MAX_INT8_HEAD_DIM + 3];
        for (j, row) in q.chunks_exact(hd).enumerate() {
            let mut max = s.zero();
            for d in (0..full).step_by(S::LANES) {
                max = s.max(max, s.abs(s.load(&row[d..])));
            }
            let max = row[full..].iter().fold(s.reduce_max(max), |a, x| a.max(x.abs()));
            scales[j] = max / I8_LEVELS;
            let inv = if max > 0.0 { I8_LEVELS / max } else { 0.0 };
            for d in (0..full).step_by(S::LANES) {
                s.store_i8(s.round_nearest(s.mul(s.load(&row[d..]), s.splat(inv))), &mut levels[d..]);
            }
            for d in full..hd {
                levels[d] = (row[d] * inv).round_ties_even() as i8;
            }
            bias[j] = 128 * levels[..hd].iter().map(|&x| x as i32).sum::<i32>();
            for (i, quad) in levels[..4 * quads].chunks_exact(4).enumerate() {
                packed[i * NR + j] = i32::from_le_bytes([quad[0] as u8, quad[1] as u8, quad[2] as u8, quad[3] as u8]);
            }
        }
    }
    /// `keys`: the block's (head_dim / 4, block_size, 4) excess-128 int8 keys.
    #[inline(always)]
    fn scores<S: Simd, const NR: usize>(s: S, qt: &[f32], keys: &[u8], ahead: &[u8], k_scale: &[f32], out: &mut [f32], col: usize) {
        if ahead.is_empty() {
            i8_scores::<S, NR, G, false>(s, qt, keys, ahead, k_scale, out, col)
        } else {
            i8_scores::<S, NR, G, true>(s, qt, keys, ahead, k_scale, out, col)
        }
    }
    /// Each block's `values`: (block_size / 2, head_dim, 2) int8.
    #[inline(always)]
    fn accumulate<S: Simd, const NR: usize>(s: S, p: &[f32], blocks: &[LiveBlock], acc: &mut [f32]) {
        let (hd, ct) = (acc.len() / NR, p.len() / NR);
        // The chunk's value scales, zero at tokens no row may see (their scales may be NaN).
        // (Whole blocks by vectors, then the unseen tokens zeroed: a `copy_from_slice` of a
        // run-time length was a `memcpy` call per block.)
        let mut v_scale = [0f32; CHUNK_TOKENS];
        for b in blocks {
            let bs = b.v_scale.len();
            for t in (0..bs).step_by(S::LANES) {
                s.store(s.load(&b.v_scale[t..]), &mut v_scale[b.col + t..]);
            }
            if b.tokens.len() < bs {
                v_scale[b.col..b.col + b.tokens.start].fill(0.0);
                v_scale[b.col + b.tokens.end..b.col + bs].fill(0.0);
            }
        }
        // Each row's weights p · v_scale as i16 (so pairs of tokens are one i32), and their scale.
        let mut w = [[0i32; CHUNK_TOKENS / 2]; NR];
        let mut w_scale = [0f32; NR];
        for j in 0..NR {
            let (p, w) = (&p[j * ct..][..ct], bytemuck::cast_slice_mut::<i32, i16>(&mut w[j]));
            let mut max = s.zero();
            for tc in (0..ct).step_by(S::LANES) {
                max = s.max(max, s.mul(s.load(&p[tc..]), s.load(&v_scale[tc..])));
            }
            let max = s.reduce_max(max);
            w_scale[j] = max / I16_LEVELS;
            let inv = s.splat(if max > 0.0 { I16_LEVELS / max } else { 0.0 });
            for tc in (0..ct).step_by(S::LANES) {
                let x = s.mul(s.mul(s.load(&p[tc..]), s.load(&v_scale[tc..])), inv);
                s.store_i16(s.round_nearest(x), &mut w[tc..]);
            }
        }
        let full = hd / S::LANES * S::LANES;
        let mut dc = 0;
        while dc < full {
            if full - dc >= wide::<S>() * S::LANES {
                if wide::<S>() == 4 {
                    i8_accumulate_cols::<S, NR, 4>(s, &w, &w_scale, blocks, acc, dc);
                } else {
                    i8_accumulate_cols::<S, NR, 2>(s, &w, &w_scale, blocks, acc, dc);
                }
                dc += wide::<S>() * S::LANES;
            } else {
                i8_accumulate_cols::<S, NR, 1>(s, &w, &w_scale, blocks, acc, dc);
                dc += S::LANES;
            }
        }
        let hd_s = stored_head_dim(KvDtype::I8, hd);
        for d in full..hd {
            for (j, w) in w.iter().enumerate() {
                let w: &[i16] = bytemuck::cast_slice(w);
                let mut dot = 0i32;
                for b in blocks {
                    for t in b.tokens.clone() {
                        dot += w[b.col + t] as i32 * b.values[(t / 2) * 2 * hd_s + 2 * d + t % 2] as i8 as i32;
                    }
                }
                acc[j * hd + d] += dot as f32 * w_scale[j];
            }
        }
    }
}

/// [`I8`]'s scores of one block: `G` is the bytes of four quads of dimensions of its keys,
/// `16 · block_size` (a constant, so that every offset in the loop is one and its loads carry no
/// bounds checks); `PF`: whether `ahead` is prefetched.
#[inline(always)]
fn i8_scores<S: Simd, const NR: usize, const G: usize, const PF: bool>(
    s: S,
    qt: &[f32],
    keys: &[u8],
    ahead: &[u8],
    k_scale: &[f32],
    out: &mut [f32],
    col: usize,
) {
    debug_assert_eq!(k_scale.len() * 16, G, "the call chose I8<G> by the cache's block size");
    let quads = qt.len() / NR - 2;
    let (packed, rest) = qt.split_at(NR * quads);
    let (q_scale, bias) = rest.split_at(NR);
    let (q_fours, q_rest) = bytemuck::cast_slice::<f32, i32>(packed).as_chunks::<NR>().0.as_chunks::<4>();
    let bias: &[i32] = bytemuck::cast_slice(bias);
    let row = G / 4; // bytes of one quad of dimensions
    let (fours, k_rest) = keys.as_chunks::<G>();
    let ct = out.len() / NR;
    for v in 0..G / 16 / S::LANES {
        let (tc, at) = (v * S::LANES, v * 4 * S::LANES);
        // Four accumulators per row (quads of dimensions mod 4) quarter the dependency chains.
        let mut a = [[s.izero(); NR]; 4];
        for (i, (k, q)) in fours.iter().zip(q_fours).enumerate() {
            // This token vector's share of the step's `4 · row` bytes, so the token vectors
            // together prefetch the block ahead.
            if PF {
                prefetch_span(s, ahead, i * 4 * row + 4 * at, 16 * S::LANES);
            }
            let mut kv = [s.izero(); 4];
            for (c, kv) in kv.iter_mut().enumerate() {
                *kv = s.iload(&k[c * row + at..]);
            }
            for c in 0..4 {
                for j in 0..NR {
                    a[c][j] = s.dot_u8(a[c][j], kv[c], s.isplat(q[c][j]));
                }
            }
        }
        if PF && !q_rest.is_empty() {
            prefetch_span(s, ahead, q_fours.len() * 4 * row + q_rest.len() * at, q_rest.len() * 4 * S::LANES);
        }
        // (Into the first accumulators only: indexing them by a run-time quad would keep all of
        // them in memory.)
        for (c, q) in q_rest.iter().enumerate() {
            let k = s.iload(&k_rest[c * row + at..]);
            for j in 0..NR {
                a[0][j] = s.dot_u8(a[0][j], k, s.isplat(q[j]));
            }
        }
        let k_scale = s.load(&k_scale[tc..]);
        for j in 0..NR {
            let sum = s.iadd(s.iadd(a[0][j], a[1][j]), s.iadd(a[2][j], a[3][j]));
            let dot = s.to_f32(s.isub(sum, s.isplat(bias[j])));
            s.store(s.mul(dot, s.mul(k_scale, s.splat(q_scale[j]))), &mut out[j * ct + col + tc..]);
        }
    }
}

/// The value side of [`I8`] for columns `dc .. dc + W · LANES`, pairs of tokens outermost:
/// `w` (NR) × (chunk tokens / 2) packed i16 weights, scaled by `w_scale`.
#[inline(always)]
fn i8_accumulate_cols<S: Simd, const NR: usize, const W: usize>(
    s: S,
    w: &[[i32; CHUNK_TOKENS / 2]; NR],
    w_scale: &[f32; NR],
    blocks: &[LiveBlock],
    acc: &mut [f32],
    dc: usize,
) {
    let hd = acc.len() / NR;
    let row = 2 * stored_head_dim(KvDtype::I8, hd); // bytes of a pair of tokens
    let width = 2 * S::LANES;
    let mut a = [[s.izero(); W]; NR];
    for b in blocks {
        let pf = !b.ahead.is_empty();
        // (Indexed, not `chunks_exact(row)`: no division by a run-time length per block.)
        for tp in b.tokens.start / 2..b.tokens.end.div_ceil(2) {
            if pf {
                prefetch_span(s, b.ahead, tp * row + 2 * dc, W * width);
            }
            let pair = &b.values[tp * row + 2 * dc..][..W * width];
            let mut v = [s.izero(); W];
            for (i, v) in v.iter_mut().enumerate() {
                *v = s.load_i8_pairs(&pair[i * width..]);
            }
            let t = b.col / 2 + tp;
            for (a, w) in a.iter_mut().zip(w) {
                let w = s.isplat(w[t]);
                for i in 0..W {
                    a[i] = s.dot_i16(a[i], w, v[i]);
                }
            }
        }
    }
    for (j, a) in a.iter().enumerate() {
        let scale = s.splat(w_scale[j]);
        for (i, &a) in a.iter().enumerate() {
            let at = j * hd + dc + i * S::LANES;
            s.store(s.mul_add(s.to_f32(a), scale, s.load(&acc[at..])), &mut acc[at..]);
        }
    }
}
