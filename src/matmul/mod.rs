//! Matrix products `y = x · wᵀ` with weights in any GGUF storage format.
//!
//! Shapes (fixed names crate-wide): weights `w` are `n` rows of `k` (GGUF's `ne0 = k`,
//! `ne1 = n`), activations `x` are `m × k` f32, outputs `y` are `m × n` f32, all row-major.
//! `m = 1` is decode (matrix-vector), larger `m` is prefill (matrix-matrix).
//!
//! Integer block formats (Q8_0, Q4_0, Q4_1) quantize each activation row once per call to
//! 8 bits per 32-element block, exactly as ggml does, and multiply in integers; float formats
//! multiply in f32. Output columns are split into one contiguous range per thread.

pub mod reference;

use crate::backend::cpu::kernels::quant_panel::PanelBuf;
use crate::backend::cpu::kernels::{grow, Acts, BlockScales, Output, WeightRows};
use crate::backend::cpu::pool::WorkerPool;
use crate::backend::cpu::{Isa, Kernels};
use crate::error::shape_err;
use crate::quant::QK;
use crate::{DType, Error, Result};

/// From this many activation rows on, integer formats use the packed-panel GEMM; below it,
/// row-by-row dot products (packing would cost more than it saves).
pub const PANEL_MIN_M: usize = 4;

/// A weight matrix in a GGUF storage format, borrowed (e.g. straight from a memory map).
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    dtype: DType,
    /// output features (rows)
    n: usize,
    /// input features (elements per row)
    k: usize,
    /// (n, row_bytes)
    bytes: &'a [u8],
}

impl<'a> Weights<'a> {
    /// Checks that `bytes` holds exactly `n` rows of `k` elements of `dtype`.
    pub fn new(dtype: DType, n: usize, k: usize, bytes: &'a [u8]) -> Result<Self> {
        const OP: &str = "Weights::new";
        let info = dtype.info();
        if !info.weight_format {
            return Err(Error::Unsupported { op: OP, dtype });
        }
        if k % info.block_elems != 0 {
            return Err(Error::BlockAlign { op: OP, what: "k", len: k, dtype, block: info.block_elems });
        }
        let expected = n.checked_mul(k).and_then(|e| dtype.bytes_for(e));
        if expected != Some(bytes.len()) {
            return shape_err(OP, format!("{n}×{k} {dtype} needs {expected:?} bytes, got {}", bytes.len()));
        }
        Ok(Weights { dtype, n, k, bytes })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn k(&self) -> usize {
        self.k
    }
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes_for(self.k).expect("validated in Weights::new")
    }
}

/// Reusable per-caller working memory (quantized activations, packed panels). Buffers grow to
/// the largest call seen and are then reused: steady-state calls allocate nothing.
#[derive(Default, Debug)]
pub struct Scratch {
    /// (m, k)
    qs: Vec<i8>,
    /// (m, k / 32)
    d: Vec<f32>,
    /// (m, k / 32)
    sums: Vec<i32>,
    /// (m, k / 32)
    dsums: Vec<f32>,
    /// (k / 32, m)
    by_block: Vec<BlockScales>,
    /// one per task
    panels: Vec<PanelBuf>,
}

/// CPU execution: a kernel table for one instruction-set level and a pool of threads that
/// stay awake between operations (see `backend::cpu::pool`).
///
/// `Cpu` is `Sync`: one instance can serve many callers, each with its own [`Scratch`].
pub struct Cpu {
    kernels: &'static Kernels,
    pool: WorkerPool,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu").field("isa", &self.kernels.isa).field("threads", &self.threads()).finish()
    }
}

impl Cpu {
    /// The default level ([`Isa::selected`]) with `threads` worker threads (0 = one per core).
    pub fn new(threads: usize) -> Result<Cpu> {
        Cpu::with_isa(Isa::selected()?, threads)
    }

    /// A specific level, which this CPU must support.
    pub fn with_isa(isa: Isa, threads: usize) -> Result<Cpu> {
        let kernels = Kernels::for_isa(isa).ok_or_else(|| Error::IsaUnavailable {
            requested: isa.to_string(),
            source_of_request: "Cpu::with_isa",
            best: Isa::best().to_string(),
        })?;
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let pool = WorkerPool::new(threads).map_err(|e| Error::ThreadPool(e.to_string()))?;
        Ok(Cpu { kernels, pool })
    }

    pub fn isa(&self) -> Isa {
        self.kernels.isa
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub(crate) fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    pub(crate) fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// `y = x · wᵀ`: `x` is `m × k`, `y` is `m × n` (row-major, f32).
    ///
    /// Errors (naming `matmul`) if the lengths disagree with `m`, `w.n()` and `w.k()`, or if `x`
    /// holds a NaN or an infinity: integer formats cannot represent them, and float formats
    /// refuse them too so that every format gives the same answer to the same input. `m = 0`
    /// or `n = 0` is a no-op; `k = 0` writes zeros (empty sums).
    pub fn matmul(&self, w: &Weights, x: &[f32], m: usize, y: &mut [f32], scratch: &mut Scratch) -> Result<()> {
        const OP: &str = "matmul";
        let (n, k) = (w.n, w.k);
        if m.checked_mul(k) != Some(x.len()) {
            return shape_err(OP, format!("x has {} values, expected m·k = {m}·{k}", x.len()));
        }
        if m.checked_mul(n) != Some(y.len()) {
            return shape_err(OP, format!("y has {} values, expected m·n = {m}·{n}", y.len()));
        }
        if !x.iter().fold(true, |ok, v| ok & v.is_finite()) {
            return Err(Error::NonFinite { op: OP });
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let kernels = self.kernels;
        let idx = w.dtype.index();
        let panel_fn = kernels.panels[idx].filter(|_| m >= PANEL_MIN_M);
        let rows_fn = kernels.rows[idx].ok_or(Error::Unsupported { op: OP, dtype: w.dtype })?;
        let Scratch { qs, d, sums, dsums, by_block, panels } = scratch;
        let acts = if w.dtype.is_block_quantized() {
            let nb = k / QK;
            let (qs, d, sums, dsums) = (grow(qs, m * k), grow(d, m * nb), grow(sums, m * nb), grow(dsums, m * nb));
            let per_block = d.chunks_mut(nb.max(1)).zip(sums.chunks_mut(nb.max(1))).zip(dsums.chunks_mut(nb.max(1)));
            for ((xr, q), ((dr, s), ds)) in x.chunks(k.max(1)).zip(qs.chunks_mut(k.max(1))).zip(per_block) {
                // SAFETY: `kernels` came from `Kernels::for_isa`, so its level is supported;
                // the slices have the lengths the kernel expects (k, k/32, k/32, k/32).
                unsafe { (kernels.quantize_row)(xr, q, dr, s, ds) };
            }
            let by_block = if panel_fn.is_some() {
                let by_block = grow(by_block, nb * m);
                for (i, t) in by_block.iter_mut().enumerate() {
                    let (b, r) = (i / m, i % m);
                    *t = BlockScales { d: d[r * nb + b], dsum: dsums[r * nb + b], sum: sums[r * nb + b] };
                }
                &by_block[..]
            } else {
                &[]
            };
            Acts { m, k, f32s: x, qs, d, dsums, by_block }
        } else {
            Acts { m, k, f32s: x, qs: &[], d: &[], dsums: &[], by_block: &[] }
        };
        let rows = WeightRows { bytes: w.bytes, k, row_bytes: w.row_bytes() };

        // Contiguous column ranges, one per thread, aligned to the panel width when packing.
        let unit = if panel_fn.is_some() { kernels.lanes } else { 1 };
        let units = n.div_ceil(unit);
        let tasks = self.threads().min(units).max(1);
        let range = |t: usize| {
            let (lo, hi) = (t * units / tasks, (t + 1) * units / tasks);
            (lo * unit).min(n)..(hi * unit).min(n)
        };
        if panels.len() < tasks {
            panels.resize_with(tasks, PanelBuf::default);
        }
        let output = Output::new(y, m, n);
        let run = |t: usize, buf: &mut PanelBuf| {
            // SAFETY: each task index `t` runs once, and `range(t)` for distinct `t` are
            // disjoint sub-ranges of 0..n.
            let out = unsafe { output.task(range(t)) };
            match panel_fn {
                // SAFETY: the functions come from a `Kernels` for a supported level (see above);
                // `rows`, `acts` and `out` describe consistent, validated shapes.
                Some(f) => unsafe { f(rows, acts, &out, buf) },
                // SAFETY: as above.
                None => unsafe { rows_fn(rows, acts, &out) },
            }
        };
        self.pool.for_each_mut(&mut panels[..tasks], &run);
        Ok(())
    }
}
