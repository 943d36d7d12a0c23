//! The CPU's matrix products: the public ops validate (`crate::matmul`'s checks, shared by
//! every backend), then `product` splits the output columns into one contiguous range per
//! thread and runs each matrix's kernel from the level's table on it.
//!
//! Integer block formats quantize each activation row once per call to 8 bits per 32-element
//! block, exactly as ggml does (in parallel from `QUANTIZE_PARALLEL_M` rows), and multiply in
//! integers; float formats multiply in f32.

use super::kernels::quant_panel::PanelBuf;
use super::kernels::{Acts, BlockScales, Output, grow};
use super::{ActsForm, Cpu, MatmulKernel};
use crate::Result;
use crate::matmul::{self, MAX_PARTS, Weights};
use crate::quant::QK;

/// From this many rows on, activations are quantized in parallel.
const QUANTIZE_PARALLEL_M: usize = 16;

/// One group of activation rows to quantize: `x` in, then `qs`, `d`, `sums`, `dsums` out.
type QuantJob<'a> = (&'a [f32], &'a mut [i8], &'a mut [f32], &'a mut [i32], &'a mut [f32]);

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
    /// (m, k) the thresholded input, for dense kernels of an activation-sparse product
    sparse_x: Vec<f32>,
    /// each row's kept inputs, and where each row's run ends (m)
    active: Vec<u32>,
    active_ends: Vec<usize>,
    /// kept inputs before each input block (k / 32 + 1), and the tasks' first blocks, when
    /// activation-sparse work is split along the inputs
    kept_before: Vec<usize>,
    task_blocks: Vec<usize>,
}

impl Cpu {
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
        matmul::check_products(ws, x, m, ys)?;
        self.product(ws, x, m, ys, scratch, false, 0.0);
        Ok(())
    }

    /// An activation-sparse product: `y = x̃ · wᵀ` where `x̃` is `x` with every entry of
    /// magnitude `≤ threshold` set to zero ([`crate::sparse::keeps`]). On
    /// [`Layout::InputMajor`](crate::matmul::Layout::InputMajor) weights
    /// ([`InputMajorWeights`](crate::sparse::InputMajorWeights)) only the rows of kept inputs are
    /// read, in f32 (the input is not quantized); on other layouts `x̃` is multiplied as
    /// [`Cpu::matmul`] would. Errors as [`Cpu::matmul`], and if `threshold` is negative or not finite.
    pub fn matmul_act_sparse(&self, w: &Weights, x: &[f32], m: usize, y: &mut [f32], threshold: f32, scratch: &mut Scratch) -> Result<()> {
        self.matmul_many_act_sparse(&[w], x, m, &mut [y], threshold, scratch)
    }

    /// [`Cpu::matmul_many`] with the input thresholded as in [`Cpu::matmul_act_sparse`] (once,
    /// for every matrix).
    pub fn matmul_many_act_sparse(&self, ws: &[&Weights], x: &[f32], m: usize, ys: &mut [&mut [f32]], threshold: f32, scratch: &mut Scratch) -> Result<()> {
        matmul::check_products(ws, x, m, ys)?;
        matmul::check_threshold(threshold)?;
        self.product(ws, x, m, ys, scratch, false, threshold);
        Ok(())
    }

    /// [`Cpu::matmul_swiglu`] with the input thresholded as in [`Cpu::matmul_act_sparse`].
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_swiglu_act_sparse(
        &self,
        gate: &Weights,
        up: &Weights,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        threshold: f32,
        scratch: &mut Scratch,
    ) -> Result<()> {
        matmul::check_swiglu(gate, up, x, m, y)?;
        matmul::check_threshold(threshold)?;
        self.swiglu_product(gate, up, x, m, y, scratch, threshold);
        Ok(())
    }

    /// A feed-forward block's first half: `y = silu(x · gateᵀ) ⊙ (x · upᵀ)` (SwiGLU), both
    /// products and the gating in one parallel pass. `gate` and `up` are `n × k`, `y` is `m × n`.
    /// Errors as [`Cpu::matmul`] (naming `matmul_swiglu`).
    pub fn matmul_swiglu(&self, gate: &Weights, up: &Weights, x: &[f32], m: usize, y: &mut [f32], scratch: &mut Scratch) -> Result<()> {
        matmul::check_swiglu(gate, up, x, m, y)?;
        self.swiglu_product(gate, up, x, m, y, scratch, 0.0);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn swiglu_product(&self, gate: &Weights, up: &Weights, x: &[f32], m: usize, y: &mut [f32], scratch: &mut Scratch, threshold: f32) {
        let mut up_out = std::mem::take(&mut scratch.up);
        self.product(&[gate, up], x, m, &mut [y, grow(&mut up_out, m * up.n())], scratch, true, threshold);
        scratch.up = up_out;
    }

    /// `gate[i] = silu(gate[i]) · up[i]` (SwiGLU's gating), in place, vectorized on this
    /// `Cpu`'s level: [`Cpu::matmul_swiglu`] equals its two products followed by this, bit for
    /// bit. Relative error ≤ 6 ulp against exact arithmetic (a vectorized `exp`, within 3).
    pub fn swiglu(&self, gate: &mut [f32], up: &[f32]) -> Result<()> {
        matmul::check_gating(gate, up)?;
        // SAFETY: the table came from `Kernels::for_isa` (a supported level); equal lengths.
        unsafe { (self.kernels.silu_mul)(gate, up) };
        Ok(())
    }

    /// The products of validated inputs, the input thresholded at `threshold` (0: every
    /// nonzero kept, which is exact). With `swiglu`, `ws` is `[gate, up]`: each task computes
    /// the same columns of both, then gates its columns of `ys[0]` by `ys[1]`.
    #[allow(clippy::too_many_arguments)]
    fn product(&self, ws: &[&Weights], x: &[f32], m: usize, ys: &mut [&mut [f32]], scratch: &mut Scratch, swiglu: bool, threshold: f32) {
        let k = ws[0].k();
        if m == 0 || ws.iter().all(|w| w.n() == 0) {
            return;
        }
        let kernels = self.kernels;
        // Every format × layout that passes `Weights`' constructors has an entry at m = 1 on
        // every level (a unit test checks the tables), so a miss is a bug.
        let chosen: [Option<&MatmulKernel>; MAX_PARTS] =
            std::array::from_fn(|i| ws.get(i).map(|w| kernels.matmul(w.dtype(), w.layout(), m).expect("a kernel for every weight format and layout")));
        let reads = |form: ActsForm| chosen.iter().flatten().any(|c| c.acts == form);
        let active_lists = reads(ActsForm::Active);
        let by_block = reads(ActsForm::QuantizedBlockMajor);
        let quantized = reads(ActsForm::Quantized) || by_block || active_lists;
        let Scratch { qs, d, sums, dsums, by_block: by_block_buf, panels, sparse_x, active, active_ends, kept_before, task_blocks, .. } = scratch;
        // The input every kernel reads: `x`, or its thresholded copy (the activation-sparse
        // kernels read its quantized values, the others all of it).
        let x: &[f32] = if threshold > 0.0 {
            let xs = grow(sparse_x, m * k);
            for (o, &v) in xs.iter_mut().zip(x) {
                *o = if crate::sparse::keeps(v, threshold) { v } else { 0.0 };
            }
            xs
        } else {
            x
        };
        let mut acts = if quantized { self.quantize(x, m, k, qs, d, sums, dsums, by_block_buf, by_block) } else { Acts::float(x, m, k) };
        if active_lists {
            active.clear();
            active_ends.clear();
            for row in x.chunks_exact(k.max(1)).take(m) {
                active.extend(row.iter().enumerate().filter(|&(_, &v)| crate::sparse::keeps(v, threshold)).map(|(i, _)| i as u32));
                active_ends.push(active.len());
            }
            if k == 0 {
                active_ends.resize(m, 0);
            }
            (acts.active, acts.active_ends) = (&active[..], &active_ends[..]);
        }

        if active_lists && chosen.iter().flatten().all(|c| c.acts == ActsForm::Active) {
            self.split_inputs(ws, &chosen, acts, ys, panels, kept_before, task_blocks, swiglu);
            return;
        }

        // Each matrix's columns in units (the largest `cols_unit` of the kernels chosen: they
        // divide one another), all matrices' units laid end to end and cut into contiguous
        // ranges, one per task; with `swiglu` the units are the gate's and each task also
        // computes the same columns of `up`.
        let unit = chosen.iter().flatten().map(|c| c.cols_unit).max().unwrap_or(1);
        let parts = if swiglu { 1 } else { ws.len() };
        let units: usize = ws[..parts].iter().map(|w| w.n().div_ceil(unit)).sum();
        // One task per thread: two per thread (smaller ranges, dynamic balance) measured no faster.
        let tasks = self.threads().min(units).max(1);
        if panels.len() < tasks {
            panels.resize_with(tasks, PanelBuf::default);
        }
        let mut outputs: [Option<Output>; MAX_PARTS] = std::array::from_fn(|_| None);
        for ((o, y), w) in outputs.iter_mut().zip(ys.iter_mut()).zip(ws) {
            *o = Some(Output::new(y, m, w.n()));
        }
        let run = |t: usize, buf: &mut PanelBuf| {
            let (lo, hi) = (t * units / tasks, (t + 1) * units / tasks);
            let mut first_unit = 0;
            for (i, w) in ws[..parts].iter().enumerate() {
                let w_units = w.n().div_ceil(unit);
                let (a, b) = (lo.max(first_unit) - first_unit, hi.min(first_unit + w_units).saturating_sub(first_unit));
                first_unit += w_units;
                if a >= b {
                    continue;
                }
                let cols = (a * unit).min(w.n())..(b * unit).min(w.n());
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
                    unsafe { (kernel.run)(w, acts, &out, buf) };
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

    /// The activation-sparse products split along the inputs: each task takes a run of input
    /// blocks holding an equal share of the kept inputs and computes every output from them
    /// into its own partial sums, which are then added up. A kept input's code row is then read
    /// whole by one task, and a block's rows lie one after another, so each task streams through
    /// contiguous memory; split by outputs instead, a task would read a few cache lines of every
    /// kept row (SmolLM2's 576 × 1536 Q4_1, all inputs kept, 2 threads, Zen 4 VM: 0.17 of the
    /// dense kernel's speed split by outputs, 0.27 split by inputs, each against dense in the
    /// same run).
    #[allow(clippy::too_many_arguments)]
    fn split_inputs(
        &self,
        ws: &[&Weights],
        chosen: &[Option<&MatmulKernel>],
        acts: Acts,
        ys: &mut [&mut [f32]],
        panels: &mut Vec<PanelBuf>,
        kept_before: &mut Vec<usize>,
        task_blocks: &mut Vec<usize>,
        swiglu: bool,
    ) {
        let (m, nb) = (acts.m, acts.k / QK);
        let total_n: usize = ws.iter().map(|w| w.n()).sum();
        // Task boundaries in blocks, by cumulative kept inputs (over every row).
        let per_block = grow(kept_before, nb + 1);
        per_block.fill(0);
        for &i in acts.active {
            per_block[i as usize / QK + 1] += 1;
        }
        for b in 1..=nb {
            per_block[b] += per_block[b - 1];
        }
        let kept = per_block[nb];
        let tasks = self.threads().min(nb).max(1);
        let bounds = grow(task_blocks, tasks + 1);
        for (t, bound) in bounds.iter_mut().enumerate() {
            *bound = if t == tasks { nb } else { per_block.partition_point(|&c| c < t * kept / tasks).min(nb) };
        }
        let bounds = &*bounds;
        if panels.len() < tasks {
            panels.resize_with(tasks, PanelBuf::default);
        }
        let run = |t: usize, buf: &mut PanelBuf| {
            let mut partial = std::mem::take(&mut buf.partial);
            let acts = Acts { blocks: (bounds[t], bounds[t + 1]), ..acts };
            let mut rest = grow(&mut partial, m * total_n);
            for (w, kernel) in ws.iter().zip(chosen) {
                let (part, tail) = rest.split_at_mut(m * w.n());
                rest = tail;
                let output = Output::new(part, m, w.n());
                // SAFETY: this task's own buffer, all its columns; the kernel comes from a
                // `Kernels` for a supported level and matches the weights' format and layout
                // (input-major: the geometry the view was validated with), and the columns
                // start at 0.
                unsafe { (kernel.expect("one kernel per matrix").run)(w, acts, &output.task(0..w.n()), buf) };
            }
            buf.partial = partial;
        };
        self.pool.for_each_mut(&mut panels[..tasks], &run);
        let mut at = 0;
        for (y, w) in ys.iter_mut().zip(ws) {
            let len = m * w.n();
            y[..len].copy_from_slice(&panels[0].partial[at..at + len]);
            for p in &panels[1..tasks] {
                for (o, v) in y[..len].iter_mut().zip(&p.partial[at..at + len]) {
                    *o += v;
                }
            }
            at += len;
        }
        if swiglu {
            let (gate, up) = ys.split_at_mut(1);
            for (g, u) in gate[0].chunks_exact_mut(ws[0].n().max(1)).zip(up[0].chunks_exact(ws[1].n().max(1))).take(m) {
                // SAFETY: the table came from `Kernels::for_isa` (a supported level); equal lengths.
                unsafe { (self.kernels.silu_mul)(g, u) };
            }
        }
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
        Acts { m, k, f32s: x, qs, d, dsums, by_block, active: &[], active_ends: &[], blocks: (0, nb) }
    }
}
