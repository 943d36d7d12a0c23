//! Flash-style attention over paged KV blocks: one body for prefill and decode.
//!
//! A task is one KV head, a run of its sequence's blocks and a set of query rows (the query
//! heads of that KV head's group, at one or more positions), each row with its own inclusive
//! key-position range (causal limit, sliding window). Chunks of whole blocks (64 tokens) are the
//! key tiles: for each chunk the body computes the rows' scores against its tokens (keys are
//! stored transposed per block, so that is `head_dim` broadcast multiply-adds over `block_size`
//! tokens at a time), folds them into a running max `m`, denominator `l` and unnormalised output
//! `acc` (the online softmax), then adds the chunk's values weighted by the probabilities, tokens
//! outermost with the accumulators in registers. The score matrix never exists beyond one chunk.
//! Callers merge tasks that split one row's keys by log-sum-exp and normalise (`acc / l`).
//!
//! Keys and values are read in their storage format (f32, f16, int8 with a per-token scale) and
//! widened in registers — no dequantized copy. Tokens outside a row's range, and slots past the
//! sequence's end, are never loaded into arithmetic, so stale or NaN slots cannot leak.

use super::formats::{FloatFormat, F16, F32};
use super::math::exp;
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
    /// (rows, head_dim) scratch: the queries transposed by chunks of rows
    pub qt: &'a mut [f32],
    /// (rows) inclusive key-position ranges
    pub lo: &'a [usize],
    pub hi: &'a [usize],
    /// (rows) running max of the scores (−∞ before any key)
    pub m: &'a mut [f32],
    /// (rows) running Σ exp(score − m)
    pub l: &'a mut [f32],
    /// (rows, head_dim) running Σ exp(score − m) · v
    pub acc: &'a mut [f32],
    /// (rows, chunk_blocks(block_size) · block_size) one chunk's scores, then probabilities
    pub s: &'a mut [f32],
}

/// Keys whose scores are computed before one online-softmax update (whole blocks): each row's
/// max, rescale and horizontal sums are paid once per this many keys rather than once per block.
/// (Same-process A/B against one block per update, 2 threads: decode 1.1–1.45× with the other
/// changes of that step; Llama-8B prefill 2048, 64 rows of 128, is 10% faster at 64 tokens than
/// with the chunk shrunk to keep scores and accumulators within L1.)
pub(crate) const CHUNK_TOKENS: usize = 64;

/// Blocks per chunk; a task's score buffer holds `rows · chunk_blocks(bs) · bs` values.
pub(crate) fn chunk_blocks(block_size: usize) -> usize {
    (CHUNK_TOKENS / block_size).max(1)
}

/// Scores of `NR` query rows against one block's `block_size` tokens: `qt` is the rows'
/// queries transposed, (head_dim) × NR, `keys` the block's (head_dim, block_size) transposed
/// keys, `out` (NR, chunk tokens) of which columns `col .. col + block_size` are written.
/// (Exact-length views, so the inner loop carries no bounds checks — ~12 compare-and-branch
/// pairs per 6 multiply-adds before; alone this measured within noise, together with the rest
/// of that step ×1.1–1.45.)
#[inline(always)]
fn scores<S: Simd, K: KvFormat, const NR: usize>(
    s: S,
    qt: &[[f32; NR]],
    keys: &[u8],
    k_scale: &[f32],
    out: &mut [f32],
    col: usize,
) {
    let row = keys.len() / qt.len(); // bytes of one d's block_size keys
    let ct = out.len() / NR;
    for tc in (0..row / K::BYTES).step_by(S::LANES) {
        let at = tc * K::BYTES;
        // Two accumulators per row (even and odd d) halve the dependency chains.
        let (mut even, mut odd) = ([s.zero(); NR], [s.zero(); NR]);
        let (pairs, q_pairs) = (keys.chunks_exact(2 * row), qt.chunks_exact(2));
        let (k_last, q_last) = (pairs.remainder(), q_pairs.remainder());
        for (k, q) in pairs.zip(q_pairs) {
            let (k0, k1) = k.split_at(row);
            let (k0, k1) = (K::load(s, &k0[at..]), K::load(s, &k1[at..]));
            for j in 0..NR {
                even[j] = s.mul_add(s.splat(q[0][j]), k0, even[j]);
                odd[j] = s.mul_add(s.splat(q[1][j]), k1, odd[j]);
            }
        }
        if let [q] = q_last {
            let k = K::load(s, &k_last[at..]);
            for j in 0..NR {
                even[j] = s.mul_add(s.splat(q[j]), k, even[j]);
            }
        }
        for j in 0..NR {
            let a = s.add(odd[j], even[j]);
            let a = if K::SCALED { s.mul(a, s.load(&k_scale[tc..])) } else { a };
            s.store(a, &mut out[j * ct + col + tc..]);
        }
    }
}

/// Largest block size [`accumulate`] takes (the cache allows 16 and 32).
const MAX_BLOCK: usize = 32;

/// `acc[j] += Σ_t p[j][col + t] · v[t]` for `NR` rows over tokens `tokens` of one block: `p` is
/// (NR, chunk tokens), `values` the block's (block_size, head_dim), `acc` (NR, head_dim).
#[inline(always)]
fn accumulate<S: Simd, K: KvFormat, const NR: usize>(
    s: S,
    p: &[f32],
    col: usize,
    values: &[u8],
    v_scale: &[f32],
    tokens: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    let (hd, ct) = (acc.len() / NR, p.len() / NR);
    // Each token's NR weights side by side, int8's value scale folded in.
    let mut weights = [[0f32; NR]; MAX_BLOCK];
    for (i, t) in tokens.clone().enumerate() {
        let scale = if K::SCALED { v_scale[t] } else { 1.0 };
        for (j, w) in weights[i].iter_mut().enumerate() {
            *w = p[j * ct + col + t] * scale;
        }
    }
    let weights = &weights[..tokens.len()];
    let values = &values[tokens.start * hd * K::BYTES..tokens.end * hd * K::BYTES];
    let full = hd / S::LANES * S::LANES;
    // Column passes of up to 4 vectors (2 on 16-register ISAs): NR × 4 accumulators stay in
    // registers while each token's weights are broadcast once per pass.
    let wide = if S::LANES >= 16 { 4 } else { 2 };
    let mut dc = 0;
    while dc < full {
        if full - dc >= wide * S::LANES {
            if wide == 4 {
                accumulate_cols::<S, K, NR, 4>(s, weights, values, acc, dc);
            } else {
                accumulate_cols::<S, K, NR, 2>(s, weights, values, acc, dc);
            }
            dc += wide * S::LANES;
        } else {
            accumulate_cols::<S, K, NR, 1>(s, weights, values, acc, dc);
            dc += S::LANES;
        }
    }
    for d in full..hd {
        for (w, v) in weights.iter().zip(values.chunks_exact(hd * K::BYTES)) {
            let v = K::get(v, d);
            for j in 0..NR {
                acc[j * hd + d] += w[j] * v;
            }
        }
    }
}

/// [`accumulate`] for columns `dc .. dc + W · LANES`, tokens outermost: `weights` (tokens) × NR,
/// `values` (tokens, head_dim).
#[inline(always)]
fn accumulate_cols<S: Simd, K: KvFormat, const NR: usize, const W: usize>(
    s: S,
    weights: &[[f32; NR]],
    values: &[u8],
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
    for (w, row) in weights.iter().zip(values.chunks_exact(hd * K::BYTES)) {
        let row = &row[dc * K::BYTES..][..W * width];
        let mut v = [s.zero(); W];
        for (i, v) in v.iter_mut().enumerate() {
            *v = K::load(s, &row[i * width..]);
        }
        for (a, &w) in a.iter_mut().zip(w) {
            let w = s.splat(w);
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

/// Folds every block of `kv` into the rows' state (see the module documentation), a chunk of
/// [`chunk_blocks`] blocks at a time.
#[inline(always)]
pub(crate) fn attend<S: Simd, K: KvFormat>(s: S, kv: &KvSpan, rows: &mut AttnRows) {
    let l = &kv.layer;
    let (hd, bs) = (l.head_dim, l.block_size);
    let n_rows = rows.lo.len();
    let per_chunk = chunk_blocks(bs);
    let ct = per_chunk * bs;
    let (lo_all, hi_all) = (rows.lo.iter().copied().min().unwrap_or(0), rows.hi.iter().copied().max().unwrap_or(0));
    let bytes = bs * hd * K::BYTES;
    // Each chunk of rows' queries transposed, (head_dim) × NR, for `scores`.
    by_row_chunks!(n_rows, |r0, NR| {
        let (q, qt) = (&rows.q[r0 * hd..(r0 + NR) * hd], &mut rows.qt[r0 * hd..(r0 + NR) * hd]);
        for (d, qt) in qt.chunks_exact_mut(NR).enumerate() {
            for (j, x) in qt.iter_mut().enumerate() {
                *x = q[j * hd + d];
            }
        }
    });
    // The first slot of one of this head's blocks.
    let slot_of = |block: u32| (kv.head * l.n_blocks + block as usize) * bs;
    for (ci, chunk) in kv.blocks.chunks(per_chunk).enumerate() {
        let p0 = kv.first_pos + ci * ct;
        // Tokens of this chunk that exist and that some row may see.
        let t_lo = lo_all.max(p0) - p0;
        let t_end = (hi_all + 1).min(kv.len).min(p0 + chunk.len() * bs);
        if t_end <= p0 + t_lo {
            continue;
        }
        let t_hi = t_end - p0;
        // The chunk's blocks that hold some of those tokens, with their token range.
        let live = |b: usize| (t_lo.max(b * bs) - b * bs)..(t_hi.min((b + 1) * bs).max(b * bs) - b * bs);

        for (b, &block) in chunk.iter().enumerate() {
            // The next block (usually adjacent): its keys and values, line by line. One block
            // ahead measured best (same-process A/B, 2 threads, KV cold): +6–14% f32, up to
            // +30% int8 over no prefetch; a whole chunk ahead was slower than none.
            if let Some(&next) = kv.blocks.get(ci * per_chunk + b + 1) {
                let at = slot_of(next) * hd * K::BYTES;
                for line in (0..bytes).step_by(64) {
                    s.prefetch(&l.k[at + line..]);
                    s.prefetch(&l.v[at + line..]);
                }
            }
            if live(b).is_empty() {
                continue;
            }
            let slot0 = slot_of(block);
            let keys = &l.k[slot0 * hd * K::BYTES..][..bytes];
            let k_scale = if K::SCALED { &l.k_scale[slot0..slot0 + bs] } else { &[][..] };
            by_row_chunks!(n_rows, |r0, NR| scores::<S, K, NR>(
                s,
                rows.qt[r0 * hd..(r0 + NR) * hd].as_chunks::<NR>().0,
                keys,
                k_scale,
                &mut rows.s[r0 * ct..(r0 + NR) * ct],
                b * bs
            ));
        }

        // Online softmax: mask, rescale the state once per chunk, scores become probabilities.
        for r in 0..n_rows {
            let sr = &mut rows.s[r * ct..(r + 1) * ct];
            let (lo, hi) = (rows.lo[r].max(p0), rows.hi[r].min(t_end - 1));
            if lo > hi {
                sr.fill(0.0);
                continue;
            }
            let whole = lo == p0 && hi == p0 + ct - 1;
            let visible = lo - p0..hi - p0 + 1;
            if let Some(c) = kv.softcap {
                sr[visible.clone()].iter_mut().for_each(|x| *x = c * (*x / c).tanh());
            }
            if !whole {
                // Slots outside the row's range may hold anything (even NaN): never use them.
                sr[..visible.start].fill(f32::NEG_INFINITY);
                sr[visible.end..].fill(f32::NEG_INFINITY);
            }
            let mut vmax = s.splat(f32::NEG_INFINITY);
            for tc in (0..ct).step_by(S::LANES) {
                vmax = s.max(vmax, s.load(&sr[tc..]));
            }
            let chunk_max = s.reduce_max(vmax);
            if chunk_max > rows.m[r] {
                let alpha = (rows.m[r] - chunk_max).exp();
                rows.l[r] *= alpha;
                rows.acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= alpha);
                rows.m[r] = chunk_max;
            }
            let m = s.splat(rows.m[r]);
            let mut sum = s.zero();
            for tc in (0..ct).step_by(S::LANES) {
                let p = exp(s, s.mul_add(s.splat(-1.0), m, s.load(&sr[tc..])));
                s.store(p, &mut sr[tc..]);
                sum = s.add(p, sum);
            }
            if !whole {
                // Masked slots came out as e^-87, not 0: zero them and sum again.
                sr[..visible.start].fill(0.0);
                sr[visible.end..].fill(0.0);
                sum = s.zero();
                for tc in (0..ct).step_by(S::LANES) {
                    sum = s.add(s.load(&sr[tc..]), sum);
                }
            }
            rows.l[r] += s.sum(sum);
        }

        for (b, &block) in chunk.iter().enumerate() {
            let tokens = live(b);
            if tokens.is_empty() {
                continue;
            }
            let slot0 = slot_of(block);
            let values = &l.v[slot0 * hd * K::BYTES..][..bytes];
            let v_scale = if K::SCALED { &l.v_scale[slot0..slot0 + bs] } else { &[][..] };
            by_row_chunks!(n_rows, |r0, NR| accumulate::<S, K, NR>(
                s,
                &rows.s[r0 * ct..(r0 + NR) * ct],
                b * bs,
                values,
                v_scale,
                tokens.clone(),
                &mut rows.acc[r0 * hd..(r0 + NR) * hd]
            ));
        }
    }
}
