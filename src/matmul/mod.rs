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
pub mod tiled;

use crate::backend::cpu::kernels::quant_panel::PanelBuf;
use crate::backend::cpu::kernels::{Acts, BlockScales, Output, WeightView, grow};
use crate::backend::cpu::pool::WorkerPool;
use crate::backend::cpu::{Isa, Kernels, MatmulKernel};
use crate::error::{check_finite, shape_err};
use crate::quant::QK;
use crate::{DType, Error, Result};

/// From this many activation rows on, integer formats use the packed-panel GEMM; below it,
/// row-by-row dot products (packing would cost more than it saves).
pub const PANEL_MIN_M: usize = 4;

/// The most matrices [`Cpu::matmul_many`] takes at once.
pub const MAX_PARTS: usize = 4;

/// From this many rows on, activations are quantized in parallel.
const QUANTIZE_PARALLEL_M: usize = 16;

/// One group of activation rows to quantize: `x` in, then `qs`, `d`, `sums`, `dsums` out.
type QuantJob<'a> = (&'a [f32], &'a mut [i8], &'a mut [f32], &'a mut [i32], &'a mut [f32]);

/// Validates one product's lengths.
fn check_shapes(op: &'static str, w: &Weights, k: usize, x: &[f32], m: usize, y: &[f32]) -> Result<()> {
    let n = w.n;
    if w.k != k {
        return shape_err(op, format!("matrices disagree on k: {} vs {k}", w.k));
    }
    if m.checked_mul(k) != Some(x.len()) {
        return shape_err(op, format!("x has {} values, expected m·k = {m}·{k}", x.len()));
    }
    if m.checked_mul(n) != Some(y.len()) {
        return shape_err(op, format!("y has {} values, expected m·n = {m}·{n}", y.len()));
    }
    Ok(())
}

/// How a weight matrix's blocks are arranged in memory. A weight is a value format
/// ([`DType`]) in a layout; the kernel table has one entry per pair it multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// GGUF's: `n` rows one after another, each a run of the format's blocks.
    Rows,
    /// sparq's 16-row tiles ([`tiled`]); only [`PackedWeights`](tiled::PackedWeights) makes them.
    Tiled,
}

impl Layout {
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Rows => "rows",
            Layout::Tiled => "tiled",
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A weight matrix: `n` rows of `k` values of one format in one layout, borrowed (e.g.
/// straight from a memory map).
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    dtype: DType,
    layout: Layout,
    /// output features (rows)
    n: usize,
    /// input features (elements per row)
    k: usize,
    /// the matrix in `layout`
    bytes: &'a [u8],
}

impl<'a> Weights<'a> {
    /// Checks that `bytes` holds exactly `n` rows of `k` elements of `dtype` in GGUF layout
    /// ([`Layout::Rows`]).
    pub fn new(dtype: DType, n: usize, k: usize, bytes: &'a [u8]) -> Result<Self> {
        const OP: &str = "Weights::new";
        let info = dtype.info();
        if !info.weight_format {
            return Err(Error::Unsupported { op: OP, dtype });
        }
        if !k.is_multiple_of(info.block_elems) {
            return Err(Error::BlockAlign { op: OP, what: "k", len: k, dtype, block: info.block_elems });
        }
        let expected = n.checked_mul(k).and_then(|e| dtype.bytes_for(e));
        if expected != Some(bytes.len()) {
            return shape_err(OP, format!("{n}×{k} {dtype} needs {expected:?} bytes, got {}", bytes.len()));
        }
        Ok(Weights { dtype, layout: Layout::Rows, n, k, bytes })
    }

    /// A view of a matrix in [`tiled`]'s layout (only [`tiled::PackedWeights`] makes these).
    pub(crate) fn tiled(dtype: DType, n: usize, k: usize, bytes: &'a [u8]) -> Self {
        debug_assert_eq!(bytes.len(), tiled::tiled_len(dtype, n, k));
        Weights { dtype, layout: Layout::Tiled, n, k, bytes }
    }

    /// How [`Weights::bytes`] are arranged.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The matrix in GGUF layout: borrowed, or unpacked from another layout.
    pub fn gguf_bytes(&self) -> std::borrow::Cow<'a, [u8]> {
        match self.layout {
            Layout::Rows => self.bytes.into(),
            Layout::Tiled => tiled::unpack(self.dtype, self.n, self.k, self.bytes).into(),
        }
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
    /// The stored bytes, in this view's [`Weights::layout`].
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Bytes per row in GGUF layout.
    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes_for(self.k).expect("validated in Weights::new")
    }

    /// What the kernels read: the bytes with their stride (per row, or per tile).
    fn view(&self) -> WeightView<'a> {
        let stride = match self.layout {
            Layout::Rows => self.row_bytes(),
            Layout::Tiled => tiled::tile_stride(self.dtype, self.k),
        };
        WeightView { bytes: self.bytes, k: self.k, stride }
    }
}

/// Reusable per-caller working memory (quantized activations, packed panels). Buffers grow to
/// the largest call seen and are then reused: steady-state calls allocate nothing.
#[derive(Default, Debug)]
pub struct Scratch {
    /// (m, k)
    qs: Vec<i8>,
    /// (m, k / 32) each: block scales, sums and scaled sums
    d: Vec<f32>,
    sums: Vec<i32>,
    dsums: Vec<f32>,
    /// (k / 32, m)
    by_block: Vec<BlockScales>,
    /// one per task
    panels: Vec<PanelBuf>,
    /// (m, n) the `up` product of [`Cpu::matmul_swiglu`]
    up: Vec<f32>,
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
        self.matmul_many(&[w], x, m, &mut [y], scratch)
    }

    /// Several products of one input in one parallel pass: `ys[i] = x · ws[i]ᵀ` (e.g. a layer's
    /// Q, K and V projections). `x` is quantized once and the threads meet once, instead of
    /// once per matrix. All `ws` share `k`; at most [`MAX_PARTS`] matrices. Errors as
    /// [`Cpu::matmul`] (naming `matmul_many`).
    pub fn matmul_many(&self, ws: &[&Weights], x: &[f32], m: usize, ys: &mut [&mut [f32]], scratch: &mut Scratch) -> Result<()> {
        let op = if ws.len() == 1 { "matmul" } else { "matmul_many" };
        if ws.is_empty() || ws.len() > MAX_PARTS || ws.len() != ys.len() {
            return shape_err(op, format!("{} matrices and {} outputs (1..={MAX_PARTS} each)", ws.len(), ys.len()));
        }
        for (w, y) in ws.iter().zip(ys.iter()) {
            check_shapes(op, w, ws[0].k, x, m, y)?;
        }
        check_finite(op, &[x])?;
        self.product(ws, x, m, ys, scratch, false);
        Ok(())
    }

    /// A feed-forward block's first half: `y = silu(x · gateᵀ) ⊙ (x · upᵀ)` (SwiGLU), both
    /// products and the gating in one parallel pass. `gate` and `up` are `n × k`, `y` is `m × n`.
    /// Errors as [`Cpu::matmul`] (naming `matmul_swiglu`).
    pub fn matmul_swiglu(&self, gate: &Weights, up: &Weights, x: &[f32], m: usize, y: &mut [f32], scratch: &mut Scratch) -> Result<()> {
        const OP: &str = "matmul_swiglu";
        if gate.n != up.n {
            return shape_err(OP, format!("gate has {} rows, up {}", gate.n, up.n));
        }
        check_shapes(OP, gate, gate.k, x, m, y)?;
        check_shapes(OP, up, gate.k, x, m, y)?;
        check_finite(OP, &[x])?;
        let mut up_out = std::mem::take(&mut scratch.up);
        self.product(&[gate, up], x, m, &mut [y, grow(&mut up_out, m * up.n)], scratch, true);
        scratch.up = up_out;
        Ok(())
    }

    /// `gate[i] = silu(gate[i]) · up[i]` (SwiGLU's gating), in place, vectorized on this
    /// `Cpu`'s level: [`Cpu::matmul_swiglu`] equals its two products followed by this, bit for
    /// bit. Relative error ≤ 6 ulp against exact arithmetic (a vectorized `exp`, within 3).
    pub fn swiglu(&self, gate: &mut [f32], up: &[f32]) -> Result<()> {
        if gate.len() != up.len() {
            return shape_err("swiglu", format!("gate ({}) and up ({}) differ", gate.len(), up.len()));
        }
        // SAFETY: the table came from `Kernels::for_isa` (a supported level); equal lengths.
        unsafe { (self.kernels.silu_mul)(gate, up) };
        Ok(())
    }

    /// The products of validated inputs. With `swiglu`, `ws` is `[gate, up]`: each task computes
    /// the same columns of both, then gates its columns of `ys[0]` by `ys[1]`.
    fn product(&self, ws: &[&Weights], x: &[f32], m: usize, ys: &mut [&mut [f32]], scratch: &mut Scratch, swiglu: bool) {
        let k = ws[0].k;
        if m == 0 || ws.iter().all(|w| w.n == 0) {
            return;
        }
        let kernels = self.kernels;
        // Every format × layout that passes `Weights`' constructors has an entry at m = 1 on
        // every level (tests/matmul.rs and tests/tiled.rs run them all), so a miss is a bug.
        let mut chosen: [Option<&MatmulKernel>; MAX_PARTS] = [None; MAX_PARTS];
        for (c, w) in chosen.iter_mut().zip(ws) {
            *c = Some(kernels.matmul(w.dtype, w.layout, m).expect("a kernel for every weight format and layout"));
        }
        let chosen = &chosen[..ws.len()];
        let quantized = ws.iter().any(|w| w.dtype.is_block_quantized());
        // The panel and tile kernels read block scales block-major; the row kernels do not.
        let by_block = ws.iter().zip(chosen).any(|(w, c)| w.dtype.is_block_quantized() && c.is_some_and(|c| c.cols_unit > 1));
        let Scratch { qs, d, sums, dsums, by_block: by_block_buf, panels, .. } = scratch;
        let acts = if quantized { self.quantize(x, m, k, qs, d, sums, dsums, by_block_buf, by_block) } else { Acts::float(x, m, k) };

        // Each matrix's columns in units (the largest `cols_unit` of the kernels chosen: they
        // divide one another), all matrices' units laid end to end and cut into contiguous
        // ranges, one per task; with `swiglu` the units are the gate's and each task also
        // computes the same columns of `up`.
        let unit = chosen.iter().flatten().map(|c| c.cols_unit).max().unwrap_or(1);
        let parts = if swiglu { 1 } else { ws.len() };
        let units: usize = ws[..parts].iter().map(|w| w.n.div_ceil(unit)).sum();
        // One task per thread: two per thread (smaller ranges, dynamic balance) measured no faster.
        let tasks = self.threads().min(units).max(1);
        if panels.len() < tasks {
            panels.resize_with(tasks, PanelBuf::default);
        }
        let mut outputs: [Option<Output>; MAX_PARTS] = std::array::from_fn(|_| None);
        for ((o, y), w) in outputs.iter_mut().zip(ys.iter_mut()).zip(ws) {
            *o = Some(Output::new(y, m, w.n));
        }
        let run = |t: usize, buf: &mut PanelBuf| {
            let (lo, hi) = (t * units / tasks, (t + 1) * units / tasks);
            let mut first_unit = 0;
            for (i, w) in ws[..parts].iter().enumerate() {
                let w_units = w.n.div_ceil(unit);
                let (a, b) = (lo.max(first_unit) - first_unit, hi.min(first_unit + w_units).saturating_sub(first_unit));
                first_unit += w_units;
                if a >= b {
                    continue;
                }
                let cols = (a * unit).min(w.n)..(b * unit).min(w.n);
                let targets = if swiglu { 0..2 } else { i..i + 1 };
                for j in targets.clone() {
                    let (w, kernel) = (ws[j], chosen[j].expect("chosen above"));
                    let output = outputs[j].as_ref().expect("one output per matrix");
                    // SAFETY: task `t` runs once and its unit range `lo..hi` is disjoint from
                    // every other task's, so its columns of each matrix are too.
                    let out = unsafe { output.task(cols.clone()) };
                    // SAFETY: the kernel comes from a `Kernels` for a supported level
                    // (`Kernels::for_isa`) and matches the weights' format and layout; the
                    // weights, `acts` and `out` describe consistent, validated shapes (tiled views
                    // only come from `PackedWeights`, sized by `tiled::tiled_len`), and the
                    // task's columns start on a multiple of `unit`, itself a multiple of the
                    // kernel's `cols_unit`.
                    unsafe { (kernel.run)(w.view(), acts, &out, buf) };
                }
                if swiglu {
                    let [Some(gate), Some(up)] = [&outputs[0], &outputs[1]] else { unreachable!("two outputs") };
                    // SAFETY: as above (these columns are this task's alone).
                    let (mut gate, up) = unsafe { (gate.task(cols.clone()), up.task(cols.clone())) };
                    for r in 0..m {
                        // SAFETY: the table came from `Kernels::for_isa` (a supported level).
                        unsafe { (kernels.silu_mul)(gate.row_mut(r), up.row(r)) };
                    }
                }
            }
        };
        self.pool.for_each_mut(&mut panels[..tasks], &run);
    }

    /// Quantizes the `m` rows of `x` (m × k) for the integer kernels, in parallel when `m` is large.
    #[allow(clippy::too_many_arguments)]
    fn quantize<'s>(
        &self,
        x: &'s [f32],
        m: usize,
        k: usize,
        qs: &'s mut Vec<i8>,
        d: &'s mut Vec<f32>,
        sums: &'s mut Vec<i32>,
        dsums: &'s mut Vec<f32>,
        by_block: &'s mut Vec<BlockScales>,
        packed: bool,
    ) -> Acts<'s> {
        let nb = k / QK;
        let (qs, d, sums, dsums) = (grow(qs, m * k), grow(d, m * nb), grow(sums, m * nb), grow(dsums, m * nb));
        let quantize_row = self.kernels.quantize_row;
        let rows = |(x, q, d, s, ds): &mut QuantJob| {
            for ((xr, q), ((dr, s), ds)) in x.chunks(k).zip(q.chunks_mut(k)).zip(d.chunks_mut(nb).zip(s.chunks_mut(nb)).zip(ds.chunks_mut(nb))) {
                // SAFETY: the table came from `Kernels::for_isa`, so its level is supported; the
                // slices have the lengths the kernel expects (k, k/32, k/32, k/32).
                unsafe { quantize_row(xr, q, dr, s, ds) };
            }
        };
        if k > 0 && m < QUANTIZE_PARALLEL_M {
            rows(&mut (x, &mut qs[..], &mut d[..], &mut sums[..], &mut dsums[..]));
        } else if k > 0 {
            // Groups of rows, two per thread (prefill only: this small Vec is off the decode path).
            let group = m.div_ceil(self.threads() * 2);
            let mut jobs: Vec<QuantJob> = x
                .chunks(group * k)
                .zip(qs.chunks_mut(group * k))
                .zip(d.chunks_mut(group * nb).zip(sums.chunks_mut(group * nb)).zip(dsums.chunks_mut(group * nb)))
                .map(|((x, q), ((d, s), ds))| (x, q, d, s, ds))
                .collect();
            self.pool.for_each_mut(&mut jobs, &|_, job| rows(job));
        }
        let by_block: &[BlockScales] = if packed {
            let by_block = grow(by_block, nb * m);
            for (b, column) in by_block.chunks_exact_mut(m).enumerate() {
                for (r, t) in column.iter_mut().enumerate() {
                    *t = BlockScales { d: d[r * nb + b], dsum: dsums[r * nb + b], sum: sums[r * nb + b] };
                }
            }
            by_block
        } else {
            &[]
        };
        Acts { m, k, f32s: x, qs, d, dsums, by_block }
    }
}
