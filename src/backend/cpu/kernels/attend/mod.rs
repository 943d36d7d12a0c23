//! Flash-style attention over paged KV blocks: one body for prefill and decode.
//!
//! A task is one KV head, a run of its sequence's blocks and a set of query rows (the query heads
//! of that KV head's group, at one or more positions), each row with its own inclusive key-position
//! range (causal limit, sliding window). Chunks of whole blocks (64 tokens) are the key tiles,
//! taken a group at a time: a task scores the keys of as many chunks as its score buffer holds
//! (decode: up to [`MAX_GROUP_CHUNKS`], prefill: one) before it reads their values, so that each
//! stream comes from memory in long runs (see `attention::DECODE_GROUP_SCORES`). For each group
//! the body computes the rows' scores against its tokens (keys are stored so that this is
//! broadcast multiply-adds of each query element, or pair of elements, over `block_size` tokens
//! at a time — no horizontal sums), folds them once into a running max `m`, denominator `l` and
//! unnormalised output `acc` (the online softmax), then adds each chunk's values weighted by the
//! probabilities, tokens outermost with the accumulators in registers. The score matrix never
//! exists beyond one group. Callers merge tasks that split one row's keys by log-sum-exp and
//! normalise (`acc / l`).
//!
//! Keys and values are read in their storage format, with no dequantized copy: f32 and f16
//! widened in registers; int8 with integer dot products (see [`I8`]). The scores of
//! tokens outside a row's range, and of slots past the sequence's end, are overwritten before
//! the softmax and their weights are exactly zero; the values of such slots meet no float
//! arithmetic (int8 ones enter integer sums with weight zero, their scales are never read) —
//! so stale or NaN slots cannot leak.

mod float;
mod int8;

pub(crate) use int8::{I8, I8_LEVELS, I16_LEVELS};

use super::math::exp;
use crate::backend::cpu::simd::Simd;
use crate::kv_cache::storage::{LayerView, stored_head_dim};
use std::ops::Range;

/// How attention reads a KV storage format: each task's queries prepared once, then one block's
/// scores at a time and one chunk's weighted values at a time.
pub(crate) trait KvFormat {
    const BYTES: usize;
    /// Int8: each token has a scale for its keys and one for its values.
    const SCALED: bool;
    /// f32 slots of prepared queries per row (at most [`query_scratch`]).
    fn query_slots(head_dim: usize) -> usize;
    /// `q`: `NR` rows of (head_dim) scaled queries; `qt`: their `NR · query_slots` prepared form.
    fn prepare_queries<S: Simd, const NR: usize>(s: S, q: &[f32], qt: &mut [f32]);
    /// Scores of `NR` rows against one block's `block_size` tokens: `keys` the block's keys,
    /// `out` (NR, chunk tokens) of which columns `col .. col + block_size` are written.
    /// `ahead`: the keys of the block [`PREFETCH_BYTES`] on, at most a chunk (or empty),
    /// prefetched line by line inside the loop as `keys` is read.
    fn scores<S: Simd, const NR: usize>(s: S, qt: &[f32], keys: &[u8], ahead: &[u8], k_scale: &[f32], out: &mut [f32], col: usize);
    /// `acc[j] += Σ_t p[j][t] · v[t]` over the chunk's live blocks: `p` is (NR, chunk tokens),
    /// zero wherever row `j` must not see token `t`; `acc` (NR, head_dim).
    fn accumulate<S: Simd, const NR: usize>(s: S, p: &[f32], blocks: &[LiveBlock], acc: &mut [f32]);
}

/// One block of a chunk on the value side: its values, int8 scales, the tokens some row may see
/// (the others may hold anything, NaN included) and its first column in the chunk.
pub(crate) struct LiveBlock<'a> {
    values: &'a [u8],
    /// the values of the block [`PREFETCH_BYTES`] on, at most a chunk (or empty), prefetched
    /// while `values` is read, as `KvFormat::scores` does with keys
    ahead: &'a [u8],
    v_scale: &'a [f32],
    tokens: Range<usize>,
    col: usize,
}

impl LiveBlock<'static> {
    const NONE: LiveBlock<'static> = LiveBlock { values: &[], ahead: &[], v_scale: &[], tokens: 0..0, col: 0 };
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
    /// (group, rows, chunk_blocks(block_size) · block_size): the scores, then probabilities, of a
    /// group of chunks — as many whole chunks as it holds, up to [`MAX_GROUP_CHUNKS`], one at least
    pub s: &'a mut [f32],
}

/// Keys per tile (whole blocks): scores, the int8 value weights' scale and the value pass are
/// computed a chunk at a time. (Before groups, each chunk was one online-softmax update.
/// Same-process A/B against one block per update, 2 threads: decode 1.1–1.45× with the other
/// changes of that step; Llama-8B prefill 2048, 64 rows of 128, is 10% faster at 64 tokens than
/// with the chunk shrunk to keep scores and accumulators within L1.)
pub(crate) const CHUNK_TOKENS: usize = 64;

/// How far ahead each of a task's streams (keys, values) is prefetched, in bytes of that stream,
/// rounded up to whole blocks and at most one chunk: more than one core's latency × bandwidth
/// here (~250 ns × 20–30 GB/s). Every format spreads the prefetches through its hot loops, one
/// per cache line read (the same bytes of the block that far on, [`prefetch_span`]), rather than
/// a block's worth at its start: a burst of prefetches overruns the core's miss queues, and the
/// transfer then adds to the compute instead of overlapping it (a synthetic stream with as much
/// arithmetic per line ran at 15–20 GB/s with 8–16 KiB bursts, 34–54 with one prefetch per
/// line). Measured against one block ahead at its start (KV from memory, ctx 4096, 2 threads,
/// alternating binaries, median µs): SmolLM2 geometry f32 176 → 159, f16 100 → 90; Llama-8B
/// f32 1278 → 946, f16 610 → 500; ctx 1024 f16 29 → 24 (SmolLM2), 135 → 118 (Llama-8B); decode
/// of the SmolLM2 model at ~1100 tokens of context, f16 cache, 3.49 → 3.27 ms per token. The
/// cost in cache (the KV of one layer resident, which decode never sees: a token streams all
/// the weights between two reads of a layer's cache), since [`prefetch_span`]: f32 +3%, f16
/// +18–22%; prefill unchanged (only its first group of rows prefetches). Int8, which used to
/// burst whole blocks ([`prefetch_whole`]) because the old counted prefetch loop cost its tight
/// loops 22–30% in cache, moved into its loops with [`prefetch_span`] (ctx 4096 from memory,
/// median µs: SmolLM2 geometry 45.1 → 45.9, Llama-8B 249 → 229; ctx 1024 14.2 → 13.5, 69.5 →
/// 65.6; in cache 38.5 → 39.3 and 180 → 157).
///
/// The distance was 4 KiB until a sweep with one thread, where a core's own miss handling
/// limits the stream at every phase of this VM's memory bandwidth (with two threads the shared
/// bandwidth often does, and masks it): 4, 8, 16 KiB and one chunk, ctx 4096, from memory,
/// median µs — best at 8 KiB or one chunk, whichever is less, for every format and geometry
/// (Llama-8B f16 642 → 603, int8 384 → 350; the others within ±4%; 16 KiB worse everywhere).
/// Against 4 KiB, alternating binaries: one thread Llama-8B f16 637 → 579, int8 374 → 334,
/// the others ±2.5%; two threads medians ±6% (phases mixed), minima 1–11% lower (int8
/// Llama-8B 213 → 189); in cache +3–5%.
///
/// All those prefetches went into L1. They now go into L2 (`Simd::prefetch`), which on the
/// Zen 4 VM let transfer and compute overlap at last: ctx 4096, 2 threads, paired, ×0.68–0.93
/// for int8 and f32, and for Llama-8B's f16 (the measurements are at `x86::prefetch_l2`).
const PREFETCH_BYTES: usize = 8192;

/// Most blocks in a chunk (the smallest block size the cache allows is 16).
const MAX_CHUNK_BLOCKS: usize = CHUNK_TOKENS / 16;

/// Blocks per chunk; a task's score buffer holds `rows · chunk_blocks(bs) · bs` values.
pub(crate) fn chunk_blocks(block_size: usize) -> usize {
    (CHUNK_TOKENS / block_size).max(1)
}

/// f32 slots of prepared queries per row that every format fits in: the float formats keep the
/// `head_dim` values; int8 packs them four to a slot, then a scale slot and a bias slot.
pub(crate) fn query_scratch(head_dim: usize) -> usize {
    head_dim.max(head_dim.div_ceil(4) + 2)
}

/// Vectors per column pass of the value side: NR × this many accumulators stay in registers
/// (4 on 32-register ISAs, 2 on 16-register ones).
#[inline(always)]
const fn wide<S: Simd>() -> usize {
    if S::LANES >= 16 { 4 } else { 2 }
}

/// Prefetches the cache lines of `ahead[from..from + len]`, `len ≤` [`MAX_PREFETCH_SPAN`]: the
/// same bytes of a block further on as one step of a hot loop reads of the current one. Four
/// predictable compares (folded away where `len` is a constant) rather than a counted loop,
/// whose trip-count arithmetic (a division, saturation, an unrolled remainder) cost more
/// instructions than the multiply-adds of an f16 step. Together with broadcasting the value
/// weights straight from the probabilities (no per-block transposed copy), in cache, ctx 4096,
/// alternating binaries, median µs: SmolLM2 geometry f32 96 → 64, f16 61.5 → 48; Llama-8B f32
/// 437 → 335, f16 378 → 303; from memory at a ~45 GB/s phase f16 77.6 → 74.6 and 458 → 425, f32
/// unchanged (streaming). (Every call site stays within `ahead`, rounded up to whole lines; a
/// prefetch past it would only be wasted.)
#[inline(always)]
fn prefetch_span<S: Simd>(s: S, ahead: &[u8], from: usize, len: usize) {
    debug_assert!(len <= MAX_PREFETCH_SPAN);
    for line in 0..MAX_PREFETCH_SPAN / 64 {
        if line * 64 < len {
            s.prefetch(ahead, from + line * 64);
        }
    }
}

/// The most bytes one loop step reads of one stream: a pair of dimensions of a block's f32 keys
/// (the cache's largest block is 32 tokens), four vectors of 16 f32 values, or int8's four
/// quads of dimensions of one token vector (`16 · LANES`).
const MAX_PREFETCH_SPAN: usize = 2 * 32 * 4;

/// Prefetches all of `block` at once, line by line: a task's first blocks, which no earlier
/// block prefetches, while its queries are prepared. (Bounds-checked slicing: when int8 burst
/// every block this way, the loop made unchecked measured 20–25% slower from memory.)
#[inline(always)]
fn prefetch_whole<S: Simd>(s: S, block: &[u8]) {
    for line in (0..block.len()).step_by(64) {
        s.prefetch(&block[line..], 0);
    }
}

/// One block of a chunk that some row may see: its first slot, the first slot of the block
/// prefetched while it is read (if any), the tokens some row may see and its first column.
#[derive(Clone, Copy)]
struct ChunkBlock {
    slot: usize,
    ahead: Option<usize>,
    tokens: (usize, usize),
    col: usize,
}

impl ChunkBlock {
    const NONE: ChunkBlock = ChunkBlock { slot: 0, ahead: None, tokens: (0, 0), col: 0 };
}

/// Calls `f::<NR>` on consecutive chunks of up to 4 rows (the register tile).
macro_rules! by_row_chunks {
    ($n_rows:expr, |$r0:ident, $nr:ident| $body:expr) => {{
        let mut $r0 = 0;
        while $r0 < $n_rows {
            match $n_rows - $r0 {
                1 => {
                    const $nr: usize = 1;
                    $body
                }
                2 => {
                    const $nr: usize = 2;
                    $body
                }
                3 => {
                    const $nr: usize = 3;
                    $body
                }
                _ => {
                    const $nr: usize = 4;
                    $body
                }
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
    let hd_s = stored_head_dim(l.dtype, hd);
    let bytes = bs * hd_s * K::BYTES;
    let ahead_blocks = PREFETCH_BYTES.div_ceil(bytes).min(per_chunk);
    // The first slot of one of this head's blocks.
    let slot_of = |block: u32| (kv.head * l.n_blocks + block as usize) * bs;
    // The task's first blocks, which no earlier block prefetches (keys first: read first); the
    // query preparation below overlaps their transfer.
    for pool in [l.k, l.v] {
        for &block in &kv.blocks[..ahead_blocks.min(kv.blocks.len())] {
            prefetch_whole(s, &pool[slot_of(block) * hd_s * K::BYTES..][..bytes]);
        }
    }
    // Each chunk of rows' queries in the form `scores` reads.
    let qs = K::query_slots(hd);
    by_row_chunks!(n_rows, |r0, NR| K::prepare_queries::<S, NR>(s, &rows.q[r0 * hd..(r0 + NR) * hd], &mut rows.qt[r0 * qs..(r0 + NR) * qs]));
    // Keys of a group of chunks, then their values (see `AttnRows::s`): each stream read in runs
    // of a group rather than alternating every chunk.
    let group = (rows.s.len() / (n_rows * ct)).clamp(1, MAX_GROUP_CHUNKS);
    let mut pending = [Pending::NONE; MAX_GROUP_CHUNKS];
    for (gi, run) in kv.blocks.chunks(group * per_chunk).enumerate() {
        let mut n_pending = 0;
        for (cj, chunk) in run.chunks(per_chunk).enumerate() {
            let ci = gi * group + cj;
            let p0 = kv.first_pos + ci * ct;
            // Tokens of this chunk that exist and that some row may see.
            let t_lo = lo_all.max(p0) - p0;
            let t_end = (hi_all + 1).min(kv.len).min(p0 + chunk.len() * bs);
            if t_end <= p0 + t_lo {
                continue;
            }
            let slab = n_pending * n_rows * ct;
            let t_hi = t_end - p0;
            // The chunk's blocks that hold some of those tokens: their first slot, the first slot of
            // the block `ahead_blocks` on (if any), their token range and first column — worked out
            // once for both streams. (Plain `match`es, not `Option::map_or` with a closure: that was
            // not inlined into the `#[target_feature]` entry point, a call per block and stream.)
            let mut live = [ChunkBlock::NONE; MAX_CHUNK_BLOCKS];
            let mut n_live = 0;
            for (b, &block) in chunk.iter().enumerate() {
                let tokens = (t_lo.max(b * bs) - b * bs, t_hi.min((b + 1) * bs).max(b * bs) - b * bs);
                if tokens.0 >= tokens.1 {
                    continue;
                }
                #[allow(clippy::manual_map, reason = "a closure may stay a call here, as `map_or`'s did (above)")]
                let ahead = match kv.blocks.get(ci * per_chunk + b + ahead_blocks) {
                    Some(&a) => Some(slot_of(a)),
                    None => None,
                };
                live[n_live] = ChunkBlock { slot: slot_of(block), ahead, tokens, col: b * bs };
                n_live += 1;
            }
            pending[n_pending] = Pending { p0, t_end, live, n_live };
            n_pending += 1;
            let live = &live[..n_live];

            for &ChunkBlock { slot: slot0, ahead, col, .. } in live {
                let ahead = match ahead {
                    Some(a) => {
                        if K::SCALED {
                            // The block ahead's key scales: a line (`block_size` f32) of a stream no in-loop
                            // prefetch covers; its value scales likewise in the value pass (both here, before
                            // groups: KV from memory, 2 threads, alternating binaries, median µs: ctx 4096
                            // SmolLM2 geometry 48.2 → 45.3, Llama-8B 269 → 258; ctx 1024 16.6 → 15.7, 85 → 78).
                            s.prefetch(bytemuck::cast_slice(&l.k_scale[a..a + bs]), 0);
                        }
                        &l.k[a * hd_s * K::BYTES..][..bytes]
                    }
                    None => &[][..],
                };
                let keys = &l.k[slot0 * hd_s * K::BYTES..][..bytes];
                let k_scale = if K::SCALED { &l.k_scale[slot0..slot0 + bs] } else { &[][..] };
                by_row_chunks!(n_rows, |r0, NR| K::scores::<S, NR>(
                    s,
                    &rows.qt[r0 * qs..(r0 + NR) * qs],
                    keys,
                    if r0 == 0 { ahead } else { &[] },
                    k_scale,
                    &mut rows.s[slab + r0 * ct..slab + (r0 + NR) * ct],
                    col
                ));
            }
        }

        softmax_group(s, rows, &pending[..n_pending], ct, kv.softcap);
        for (k, &Pending { ref live, n_live, .. }) in pending[..n_pending].iter().enumerate() {
            let live = &live[..n_live];
            let slab = k * n_rows * ct;

            let mut blocks = [LiveBlock::NONE; MAX_CHUNK_BLOCKS];
            for (&ChunkBlock { slot: slot0, ahead, tokens, col }, block) in live.iter().zip(&mut blocks) {
                let ahead = match ahead {
                    Some(a) => {
                        if K::SCALED {
                            s.prefetch(bytemuck::cast_slice(&l.v_scale[a..a + bs]), 0);
                        }
                        &l.v[a * hd_s * K::BYTES..][..bytes]
                    }
                    None => &[][..],
                };
                let values = &l.v[slot0 * hd_s * K::BYTES..][..bytes];
                let v_scale = if K::SCALED { &l.v_scale[slot0..slot0 + bs] } else { &[][..] };
                *block = LiveBlock { values, ahead, v_scale, tokens: tokens.0..tokens.1, col };
            }
            let blocks = &mut blocks[..live.len()];
            by_row_chunks!(n_rows, |r0, NR| {
                K::accumulate::<S, NR>(s, &rows.s[slab + r0 * ct..slab + (r0 + NR) * ct], blocks, &mut rows.acc[r0 * hd..(r0 + NR) * hd]);
                // The other row groups read the same values: one prefetch is enough.
                blocks.iter_mut().for_each(|b| b.ahead = &[]);
            });
        }
    }
}

/// The online softmax of a group of chunks, once per group: chunk `k`'s scores at
/// `rows.s[k · rows · ct ..]`, (rows, `ct`). Masks each row to its range in each chunk, takes
/// the row's max over the whole group, rescales its state once, and turns the scores into
/// probabilities — one horizontal max and one horizontal sum per row and group, not per chunk.
#[inline(always)]
fn softmax_group<S: Simd>(s: S, rows: &mut AttnRows, chunks: &[Pending], ct: usize, softcap: Option<f32>) {
    let (n_rows, hd) = (rows.lo.len(), rows.acc.len() / rows.lo.len());
    for r in 0..n_rows {
        let (lo, hi) = (rows.lo[r], rows.hi[r]);
        // The columns of chunk `c` that row `r` sees (empty: none).
        let visible = |c: &Pending| {
            let (lo, hi) = (lo.max(c.p0), hi.min(c.t_end - 1));
            if lo > hi { 0..0 } else { lo - c.p0..hi - c.p0 + 1 }
        };
        let mut vmax = s.splat(f32::NEG_INFINITY);
        for (k, c) in chunks.iter().enumerate() {
            let sr = &mut rows.s[(k * n_rows + r) * ct..][..ct];
            let visible = visible(c);
            if let Some(c) = softcap {
                sr[visible.clone()].iter_mut().for_each(|x| *x = c * (*x / c).tanh());
            }
            if visible.len() < ct {
                // Slots outside the row's range may hold anything (even NaN): never use them.
                sr[..visible.start].fill(f32::NEG_INFINITY);
                sr[visible.end..].fill(f32::NEG_INFINITY);
            }
            for tc in (0..ct).step_by(S::LANES) {
                vmax = s.max(vmax, s.load(&sr[tc..]));
            }
        }
        let group_max = s.reduce_max(vmax);
        if group_max == f32::NEG_INFINITY {
            // The row sees no key of this group.
            (0..chunks.len()).for_each(|k| rows.s[(k * n_rows + r) * ct..][..ct].fill(0.0));
            continue;
        }
        if group_max > rows.m[r] {
            let alpha = (rows.m[r] - group_max).exp();
            rows.l[r] *= alpha;
            rows.acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= alpha);
            rows.m[r] = group_max;
        }
        let m = s.splat(rows.m[r]);
        let mut sum = s.zero();
        for (k, c) in chunks.iter().enumerate() {
            let sr = &mut rows.s[(k * n_rows + r) * ct..][..ct];
            let visible = visible(c);
            if visible.len() == ct {
                for tc in (0..ct).step_by(S::LANES) {
                    let p = exp(s, s.mul_add(s.splat(-1.0), m, s.load(&sr[tc..])));
                    s.store(p, &mut sr[tc..]);
                    sum = s.add(p, sum);
                }
            } else {
                for tc in (0..ct).step_by(S::LANES) {
                    s.store(exp(s, s.mul_add(s.splat(-1.0), m, s.load(&sr[tc..]))), &mut sr[tc..]);
                }
                // Masked slots came out as e^-87, not 0: zero them, then sum.
                sr[..visible.start].fill(0.0);
                sr[visible.end..].fill(0.0);
                for tc in (0..ct).step_by(S::LANES) {
                    sum = s.add(s.load(&sr[tc..]), sum);
                }
            }
        }
        rows.l[r] += s.sum(sum);
    }
}

/// Most chunks in a group (`attend` scores a group's keys, then reads its values): 2048 tokens.
pub(crate) const MAX_GROUP_CHUNKS: usize = 32;

/// A chunk whose scores are computed and whose values are not yet added: its first position,
/// the end of its tokens some row may see, and its live blocks.
#[derive(Clone, Copy)]
struct Pending {
    p0: usize,
    t_end: usize,
    live: [ChunkBlock; MAX_CHUNK_BLOCKS],
    n_live: usize,
}

impl Pending {
    const NONE: Pending = Pending { p0: 0, t_end: 0, live: [ChunkBlock::NONE; MAX_CHUNK_BLOCKS], n_live: 0 };
}
