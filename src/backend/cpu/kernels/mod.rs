//! Kernel bodies, each written once, generic over the SIMD vocabulary ([`super::simd::Simd`]).
//!
//! Everything here takes inputs validated by the public op (`crate::matmul`); bodies index
//! slices normally (bounds-checked), so a broken invariant panics rather than misbehaves.

pub(crate) mod act_sparse;
pub(crate) mod attend;
pub(crate) mod float_panel;
pub(crate) mod float_rows;
pub(crate) mod formats;
pub(crate) mod math;
pub(crate) mod quant_panel;
pub(crate) mod quant_rows;
pub(crate) mod quant_tiles;
pub(crate) mod quantize;

use std::marker::PhantomData;
use std::ptr::NonNull;

/// `v[..len]`, growing `v` first if it is shorter: scratch buffers reach the largest size
/// seen and are then reused without allocating.
pub(crate) fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// Activations as the kernels see them: `m` rows of `k` values, in f32 and — for the integer
/// paths — quantized to 8 bits per 32-element block (ggml's Q8_0/Q8_1 values, stored as
/// separate arrays so a block's 32 bytes are one aligned-stride load).
#[derive(Clone, Copy)]
pub(crate) struct Acts<'a> {
    pub m: usize,
    pub k: usize,
    /// (m, k)
    pub f32s: &'a [f32],
    /// (m, k) 8-bit values; empty on float paths.
    pub qs: &'a [i8],
    /// (m, k / 32) block scales, f16-rounded like ggml's `block_q8_*.d`.
    pub d: &'a [f32],
    /// (m, k / 32) `d · Σ` per block (ggml's Q8_1 `s`, kept in f32): the weight-min term's factor.
    pub dsums: &'a [f32],
    /// (k / 32, m) per block `d`, `d · Σ` and `Σ` (which removes an unsigned weight offset
    /// exactly, in integers), block-major: the panel and tile kernels read one block of several
    /// rows from one place; empty on the row path.
    pub by_block: &'a [BlockScales],
    /// The indices of the kept inputs of every row, ascending, row after row, for the
    /// activation-sparse kernels (`act_sparse`, which read their 8-bit values from `qs`);
    /// empty elsewhere.
    pub active: &'a [u32],
    /// (m) where each row's run in `active` ends.
    pub active_ends: &'a [usize],
    /// The input blocks (of 32) an activation-sparse kernel takes its kept inputs from: a task's
    /// share when the work is split along the inputs (`Cpu::product`); all of them elsewhere.
    pub blocks: (usize, usize),
}

/// One activation block's scale, sum and scaled sum.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockScales {
    pub d: f32,
    pub dsum: f32,
    pub sum: i32,
}

/// One activation row of the integer path.
#[derive(Clone, Copy)]
pub(crate) struct QRow<'a> {
    /// (k)
    pub qs: &'a [i8],
    /// (k / 32)
    pub d: &'a [f32],
    /// (k / 32)
    pub dsums: &'a [f32],
}

impl<'a> Acts<'a> {
    /// Activations for the float paths (no quantized copy).
    pub fn float(x: &'a [f32], m: usize, k: usize) -> Self {
        Acts { m, k, f32s: x, qs: &[], d: &[], dsums: &[], by_block: &[], active: &[], active_ends: &[], blocks: (0, k / crate::quant::QK) }
    }
    /// Row `r`'s active inputs in `blocks`.
    pub fn active_row(&self, r: usize) -> &'a [u32] {
        let start = if r == 0 { 0 } else { self.active_ends[r - 1] };
        let row = &self.active[start..self.active_ends[r]];
        let block = |&i: &u32| i as usize / crate::quant::QK;
        let (lo, hi) = (row.partition_point(|a| block(a) < self.blocks.0), row.partition_point(|a| block(a) < self.blocks.1));
        &row[lo..hi]
    }
    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.f32s[r * self.k..(r + 1) * self.k]
    }
    pub fn qrow(&self, r: usize) -> QRow<'a> {
        let nb = self.k / crate::quant::QK;
        QRow { qs: &self.qs[r * self.k..(r + 1) * self.k], d: &self.d[r * nb..(r + 1) * nb], dsums: &self.dsums[r * nb..(r + 1) * nb] }
    }
}

/// Weights as the kernels see them: `n` rows of `k` elements in a GGUF layout, `row_bytes` each.
#[derive(Clone, Copy)]
pub(crate) struct WeightRows<'a> {
    pub bytes: &'a [u8],
    pub k: usize,
    pub row_bytes: usize,
}

impl<'a> WeightRows<'a> {
    pub fn row(&self, n: usize) -> &'a [u8] {
        &self.bytes[n * self.row_bytes..(n + 1) * self.row_bytes]
    }
}

/// Weights in the input-major layout ([`crate::sparse::InputMajorWeights`]): `k / 32` input
/// blocks, each `geometry.block` bytes.
#[derive(Clone, Copy)]
pub(crate) struct InputBlocks<'a> {
    pub bytes: &'a [u8],
    pub geometry: crate::sparse::Geometry,
}

impl<'a> InputBlocks<'a> {
    /// Input block `b` (inputs `32b .. 32b + 32`).
    pub fn block(&self, b: usize) -> &'a [u8] {
        &self.bytes[b * self.geometry.block..(b + 1) * self.geometry.block]
    }
}

/// Weights in the tiled layout (`crate::matmul::tiled`): `tile_stride` bytes per 16 rows.
#[derive(Clone, Copy)]
pub(crate) struct TiledRows<'a> {
    pub bytes: &'a [u8],
    pub k: usize,
    pub tile_stride: usize,
}

impl<'a> TiledRows<'a> {
    pub fn tile(&self, t: usize) -> &'a [u8] {
        &self.bytes[t * self.tile_stride..(t + 1) * self.tile_stride]
    }
}

/// The output `y` (m × n, row-major) shared by the tasks of one matmul.
///
/// Tasks write disjoint column ranges of the same rows, which safe slices cannot express without
/// allocating. `Output` keeps `y` mutably borrowed for `'a` and hands out [`TaskOut`]s, each of
/// which refuses (panics on) any write outside its columns; the one obligation — column ranges
/// of `TaskOut`s alive at the same time are disjoint — sits with the caller of [`Output::task`].
pub(crate) struct Output<'a> {
    y: NonNull<f32>,
    m: usize,
    n: usize,
    _y: PhantomData<&'a mut [f32]>,
}

// SAFETY: `Output` only creates `TaskOut`s (through an `unsafe` method whose contract forbids
// overlapping live ranges); sharing it between threads cannot by itself create a data race.
unsafe impl Sync for Output<'_> {}

impl<'a> Output<'a> {
    pub fn new(y: &'a mut [f32], m: usize, n: usize) -> Self {
        assert_eq!(y.len(), m * n);
        Output { y: NonNull::from(y).cast(), m, n, _y: PhantomData }
    }

    /// The writer for columns `cols` of every row.
    ///
    /// # Safety
    /// No other `TaskOut` of this `Output` whose columns overlap `cols` may be alive at the same time.
    pub unsafe fn task(&self, cols: std::ops::Range<usize>) -> TaskOut<'_> {
        assert!(cols.start <= cols.end && cols.end <= self.n);
        TaskOut { y: self.y, m: self.m, n: self.n, cols, _y: PhantomData }
    }
}

/// The output columns `cols` of `y` that one task owns (see [`Output`]).
pub(crate) struct TaskOut<'a> {
    y: NonNull<f32>,
    m: usize,
    n: usize,
    cols: std::ops::Range<usize>,
    _y: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `TaskOut` writes only its own columns (checked in `write`), and no overlapping
// `TaskOut` is alive at the same time (`Output::task`'s contract).
unsafe impl Send for TaskOut<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for TaskOut<'_> {}

impl TaskOut<'_> {
    pub fn cols(&self) -> std::ops::Range<usize> {
        self.cols.clone()
    }

    /// This task's columns of row `row`.
    pub fn row(&self, row: usize) -> &[f32] {
        assert!(row < self.m);
        // In bounds (as in `write`); no other live `TaskOut` touches these columns.
        // SAFETY: see above and `Output::task`.
        unsafe { std::slice::from_raw_parts(self.y.add(row * self.n + self.cols.start).as_ptr(), self.cols.len()) }
    }

    /// This task's columns of row `row`, writable.
    pub fn row_mut(&mut self, row: usize) -> &mut [f32] {
        assert!(row < self.m);
        // In bounds (as in `write`); no other live `TaskOut` touches these columns, and
        // `&mut self` keeps this the only reference this `TaskOut` hands out.
        // SAFETY: see above and `Output::task`.
        unsafe { std::slice::from_raw_parts_mut(self.y.add(row * self.n + self.cols.start).as_ptr(), self.cols.len()) }
    }

    /// Writes `vals` to `y[row][col0 .. col0 + vals.len()]`, which must lie in this task's columns.
    #[inline(always)]
    pub fn write(&self, row: usize, col0: usize, vals: &[f32]) {
        assert!(row < self.m && col0 >= self.cols.start && col0 + vals.len() <= self.cols.end);
        let dst = self.y.as_ptr().wrapping_add(row * self.n + col0);
        // The asserted range lies inside row `row` of `y` (m × n, cols.end ≤ n, checked in
        // `Output::task`), which the `Output` borrows mutably for its whole lifetime. A whole
        // vector's worth (16 or 8) is copied with a constant length, which compiles to vector
        // moves instead of a `memmove` call (measured: 4% of prefill in `memmove`).
        // SAFETY: in bounds (above); no other live `TaskOut` writes these columns (`Output::task`).
        unsafe {
            match vals.len() {
                16 => dst.copy_from_nonoverlapping(vals.as_ptr(), 16),
                8 => dst.copy_from_nonoverlapping(vals.as_ptr(), 8),
                len => dst.copy_from_nonoverlapping(vals.as_ptr(), len),
            }
        }
    }
}
