//! The CPU's attention: the public ops validate (`crate::attention`'s checks, shared by every
//! backend), then split the work into tasks — prefill by (KV head, tile of query positions),
//! decode by (sequence, KV head, run of blocks) so one long context spreads over every thread —
//! run each task's rows through the level's kernel (`kernels::attend`), and merge the partial
//! results of one query row by log-sum-exp (flash-decoding). Each task's working memory lives
//! in an [`AttnScratch`] reused across calls.

use super::Cpu;
use super::kernels::attend::{AttnRows, KvSpan, MAX_GROUP_CHUNKS, chunk_blocks, query_scratch};
use super::kernels::grow;
use crate::Result;
use crate::attention::{self, AttnParams, key_range};
use crate::kv_cache::{KvCache, SeqId, SeqView};

/// Query positions per prefill task.
const PREFILL_TILE: usize = 16;

/// The fewest KV blocks a decode task takes (a run of a sequence's blocks for one KV head). Each
/// task costs a state reset, a log-sum-exp merge and its share of the dispatch; measured on the
/// attention bench (f16, 2 threads), at least 8 blocks beat at least 2 at every context
/// (SmolLM2 ctx 128: 9.5 → 6.0 µs; ctx 1024: 43 → 33 µs); 16 and 32 were no better.
const MIN_BLOCKS_PER_TASK: usize = 8;

/// Decode tasks per thread the split aims at. Fewer, longer runs of blocks stream better from
/// memory and pay the per-task start (state reset, first block unprefetched, merge) less often;
/// measured on the attention bench's cold-KV decode (2 threads, same-binary alternation), 3
/// against the 8 used before: int8 SmolLM2 ctx 1024 22.1 → 14.1 µs, ctx 4096 48.5 → 42.6 µs,
/// f16 ctx 512 15.7 → 13.1 µs, Llama-8B int8 ctx 4096 246 → 237 µs, ctx 128 unchanged.
const TASKS_PER_THREAD: usize = 3;

/// Scores (f32) a decode task holds at once: it reads the keys of as many whole chunks as fit
/// (up to `MAX_GROUP_CHUNKS`, 2048 tokens), then their values, so each stream comes from memory
/// in runs of up to 128 KiB (int8 SmolLM2) instead of alternating every 64-token chunk. 32 KiB:
/// 2048 tokens for GQA groups of up to 4 query heads, half that for 8. Measured (ctx 4096, KV
/// from memory, 2 threads, in-process paired rounds against one chunk at a time, median time
/// ratio): int8 SmolLM2 geometry ×0.87–0.99 at 16 chunks (three runs), ×0.90–0.98 at 32;
/// Llama-8B ×0.92 at 16, ×0.85 at 32; f16 SmolLM2 ×0.91 and f32 ×0.94 at 16. Prefill keeps one
/// chunk (its keys and values are reused by many rows, from cache).
const DECODE_GROUP_SCORES: usize = 8192;

/// One task's working memory (see `kernels::attend::AttnRows`).
#[derive(Default, Debug)]
struct TaskBuf {
    /// which sequence of the call (decode batch index; 0 for prefill)
    seq: usize,
    kv_head: usize,
    /// blocks `block_lo..block_hi` of the sequence
    block_lo: usize,
    block_hi: usize,
    /// (rows) row of the output (`token · n_heads + head`) each task row feeds
    out_row: Vec<usize>,
    /// (rows, head_dim)
    q: Vec<f32>,
    qt: Vec<f32>,
    lo: Vec<usize>,
    hi: Vec<usize>,
    m: Vec<f32>,
    l: Vec<f32>,
    /// (rows, head_dim)
    acc: Vec<f32>,
    /// (rows, block_size)
    s: Vec<f32>,
}

impl TaskBuf {
    fn reset(&mut self, seq: usize, kv_head: usize, blocks: std::ops::Range<usize>) {
        (self.seq, self.kv_head, self.block_lo, self.block_hi) = (seq, kv_head, blocks.start, blocks.end);
        for v in [&mut self.out_row, &mut self.lo, &mut self.hi] {
            v.clear();
        }
        self.q.clear();
    }

    /// Adds a query row: `q` scaled, seeing keys `lo..=hi`, feeding output row `out_row`.
    fn push_row(&mut self, q: &[f32], scale: f32, lo: usize, hi: usize, out_row: usize) {
        self.q.extend(q.iter().map(|x| x * scale));
        self.lo.push(lo);
        self.hi.push(hi);
        self.out_row.push(out_row);
    }
}

/// Reusable working memory for attention calls: steady-state calls allocate nothing.
#[derive(Default, Debug)]
pub struct AttnScratch {
    tasks: Vec<TaskBuf>,
    /// (out rows) merged running max and denominator, (out rows, head_dim) merged numerator
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
}

impl Cpu {
    /// Causal attention for the last `n_q` tokens of `seq` (prefill): `q` and `out` are
    /// `(n_q, n_heads, head_dim)`.
    #[allow(clippy::too_many_arguments, reason = "the cache, what to read of it, the inputs and outputs, and scratch: each distinct")]
    pub fn attention_prefill(
        &self,
        cache: &KvCache,
        layer: usize,
        seq: SeqId,
        q: &[f32],
        out: &mut [f32],
        p: &AttnParams,
        scratch: &mut AttnScratch,
    ) -> Result<()> {
        let view = attention::check_prefill(cache, layer, seq, q, out, p)?;
        let n_q = q.len() / (p.n_heads * p.head_dim);
        let (g, hd, bs) = (p.n_heads / p.n_kv_heads, p.head_dim, view.layer.block_size);
        let first = view.len - n_q;
        let n_tasks = n_q.div_ceil(PREFILL_TILE) * p.n_kv_heads;
        if scratch.tasks.len() < n_tasks {
            scratch.tasks.resize_with(n_tasks, TaskBuf::default);
        }
        for (i, task) in scratch.tasks[..n_tasks].iter_mut().enumerate() {
            let (tile, kvh) = (i / p.n_kv_heads, i % p.n_kv_heads);
            let (t0, t1) = (tile * PREFILL_TILE, ((tile + 1) * PREFILL_TILE).min(n_q));
            let (lo, _) = key_range(first + t0, p.window);
            task.reset(0, kvh, lo / bs..(first + t1).div_ceil(bs));
            for t in t0..t1 {
                let (lo, hi) = key_range(first + t, p.window);
                for h in kvh * g..(kvh + 1) * g {
                    task.push_row(&q[(t * p.n_heads + h) * hd..][..hd], p.scale, lo, hi, t * p.n_heads + h);
                }
            }
        }
        self.run_tasks(&[view], p, n_tasks, 0, scratch);
        merge(&scratch.tasks[..n_tasks], hd, n_q * p.n_heads, out, &mut scratch.m, &mut scratch.l, &mut scratch.acc);
        Ok(())
    }

    /// Decode attention for a batch of sequences, each contributing its last token as one query:
    /// `q` and `out` are `(batch, n_heads, head_dim)`, row `b` for `seqs[b]`. Long contexts are
    /// split across threads and merged by log-sum-exp.
    #[allow(clippy::too_many_arguments, reason = "the cache, what to read of it, the inputs and outputs, and scratch: each distinct")]
    pub fn attention_decode(
        &self,
        cache: &KvCache,
        layer: usize,
        seqs: &[SeqId],
        q: &[f32],
        out: &mut [f32],
        p: &AttnParams,
        scratch: &mut AttnScratch,
    ) -> Result<()> {
        let views = attention::check_decode(cache, layer, seqs, q, out, p)?;
        let (g, hd) = (p.n_heads / p.n_kv_heads, p.head_dim);
        // Split each (sequence, KV head) into runs of blocks, aiming at TASKS_PER_THREAD tasks
        // per thread but no run shorter than MIN_BLOCKS_PER_TASK.
        let heads = seqs.len() * p.n_kv_heads;
        let splits = (TASKS_PER_THREAD * self.threads()).div_ceil(heads.max(1)).max(1);
        let mut n_tasks = 0;
        for (b, v) in views.iter().enumerate() {
            let (lo, hi) = key_range(v.len - 1, p.window);
            let bs = v.layer.block_size;
            let (first_block, blocks) = (lo / bs, hi / bs + 1);
            let per = (blocks - first_block).div_ceil(splits).max(MIN_BLOCKS_PER_TASK);
            for kvh in 0..p.n_kv_heads {
                for start in (first_block..blocks).step_by(per) {
                    if scratch.tasks.len() <= n_tasks {
                        scratch.tasks.push(TaskBuf::default());
                    }
                    let task = &mut scratch.tasks[n_tasks];
                    task.reset(b, kvh, start..(start + per).min(blocks));
                    for h in kvh * g..(kvh + 1) * g {
                        task.push_row(&q[(b * p.n_heads + h) * hd..][..hd], p.scale, lo, hi, b * p.n_heads + h);
                    }
                    n_tasks += 1;
                }
            }
        }
        self.run_tasks(&views, p, n_tasks, DECODE_GROUP_SCORES, scratch);
        merge(&scratch.tasks[..n_tasks], hd, seqs.len() * p.n_heads, out, &mut scratch.m, &mut scratch.l, &mut scratch.acc);
        Ok(())
    }

    /// Runs the tasks, each with room for the scores of as many whole chunks as fit in
    /// `group_scores` f32 (one chunk at least: see `AttnRows::s`).
    fn run_tasks(&self, views: &[SeqView], p: &AttnParams, n_tasks: usize, group_scores: usize, scratch: &mut AttnScratch) {
        let attend = self.kernels().attend.get(views[0].layer.dtype);
        let hd = p.head_dim;
        let run = |_: usize, task: &mut TaskBuf| {
            let v = &views[task.seq];
            let bs = v.layer.block_size;
            let (rows, ct) = (task.lo.len(), chunk_blocks(bs) * bs);
            let TaskBuf { q, qt, lo, hi, m, l, acc, s, .. } = task;
            let (m, l) = (grow(m, rows), grow(l, rows));
            m.fill(f32::NEG_INFINITY);
            l.fill(0.0);
            let acc = grow(acc, rows * hd);
            acc.fill(0.0);
            let span = KvSpan {
                layer: v.layer,
                head: task.kv_head,
                blocks: &v.blocks[task.block_lo..task.block_hi],
                first_pos: task.block_lo * bs,
                len: v.len,
                softcap: p.softcap,
            };
            let qt = grow(qt, rows * query_scratch(hd));
            let mut rows = AttnRows { q, qt, lo, hi, m, l, acc, s: grow(s, rows * ct * (group_scores / (rows * ct)).clamp(1, MAX_GROUP_CHUNKS)) };
            // The spans and rows are consistent: blocks exist in the layer's pool, q/acc are
            // rows·head_dim, s is whole chunks of rows·chunk tokens (one at least), every
            // position read is below the length.
            // SAFETY: the table came from `Kernels::for_isa` (a supported level); shapes above.
            unsafe { attend(&span, &mut rows) };
        };
        self.pool().for_each_mut(&mut scratch.tasks[..n_tasks], &run);
    }
}

/// Combines every task's partial rows into `out` (out_rows, head_dim): log-sum-exp merge of
/// the running maxima, then `acc / l`.
fn merge(tasks: &[TaskBuf], hd: usize, out_rows: usize, out: &mut [f32], m: &mut Vec<f32>, l: &mut Vec<f32>, acc: &mut Vec<f32>) {
    let (m, l, acc) = (grow(m, out_rows), grow(l, out_rows), grow(acc, out_rows * hd));
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);
    acc.fill(0.0);
    for task in tasks {
        for (r, &o) in task.out_row.iter().enumerate() {
            let tm = task.m[r];
            if tm == f32::NEG_INFINITY {
                continue;
            }
            if m[o] == f32::NEG_INFINITY {
                // The row's first part (in prefill, its only one): the general update below with
                // its weights 0 and 1, without two `exp` calls per row.
                (m[o], l[o]) = (tm, task.l[r]);
                acc[o * hd..(o + 1) * hd].copy_from_slice(&task.acc[r * hd..(r + 1) * hd]);
                continue;
            }
            let new_m = m[o].max(tm);
            let (a_old, a_new) = ((m[o] - new_m).exp(), (tm - new_m).exp());
            l[o] = l[o] * a_old + task.l[r] * a_new;
            for (x, &y) in acc[o * hd..(o + 1) * hd].iter_mut().zip(&task.acc[r * hd..(r + 1) * hd]) {
                *x = *x * a_old + y * a_new;
            }
            m[o] = new_m;
        }
    }
    for o in 0..out_rows {
        let inv = if l[o] > 0.0 { 1.0 / l[o] } else { 0.0 };
        for (y, &x) in out[o * hd..(o + 1) * hd].iter_mut().zip(&acc[o * hd..(o + 1) * hd]) {
            *y = x * inv;
        }
    }
}
