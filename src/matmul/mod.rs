//! Matrix products `y = x · wᵀ` with weights in any GGUF storage format.
//!
//! Shapes (fixed names crate-wide): weights `w` are `n` rows of `k` (GGUF's `ne0 = k`,
//! `ne1 = n`), activations `x` are `m × k` f32, outputs `y` are `m × n` f32, all row-major.
//! `m = 1` is decode (matrix-vector), larger `m` is prefill (matrix-matrix).
//!
//! Integer block formats (Q8_0, Q4_0, Q4_1) quantize each activation row once per call to
//! 8 bits per 32-element block, exactly as ggml does, and multiply in integers; float formats
//! multiply in f32.
//!
//! This module holds what every backend shares: what a weight is ([`Weights`], [`Layout`]),
//! the shape checks, the reference ([`mod@reference`]) and the tiled layout ([`tiled`]). The
//! products themselves are the backends' (`Cpu::matmul` and friends, `backend/cpu/matmul.rs`).

pub mod reference;
pub mod tiled;

use crate::backend::cpu::kernels::{InputBlocks, TiledRows, WeightRows};
use crate::error::{check_finite, shape_err};
use crate::{DType, Error, Result};

/// From this many activation rows on, integer formats use the packed-panel GEMM; below it,
/// row-by-row dot products (packing would cost more than it saves).
pub const PANEL_MIN_M: usize = 4;

/// The most matrices [`Cpu::matmul_many`](crate::Cpu::matmul_many) takes at once.
pub const MAX_PARTS: usize = 4;

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

// The checks every backend's matrix products run before any kernel (the CPU's: `Cpu::matmul`,
// `Cpu::matmul_many`, `Cpu::matmul_swiglu`, `Cpu::swiglu`). Kernels then take these shapes
// as given.

/// `ys[i] = x · ws[i]ᵀ`: 1..=[`MAX_PARTS`] matrices sharing `k`, one output each, `x` finite.
/// Errors name `matmul` (one matrix) or `matmul_many`.
pub(crate) fn check_products(ws: &[&Weights], x: &[f32], m: usize, ys: &[&mut [f32]]) -> Result<()> {
    let op = if ws.len() == 1 { "matmul" } else { "matmul_many" };
    if ws.is_empty() || ws.len() > MAX_PARTS || ws.len() != ys.len() {
        return shape_err(op, format!("{} matrices and {} outputs (1..={MAX_PARTS} each)", ws.len(), ys.len()));
    }
    for (w, y) in ws.iter().zip(ys.iter()) {
        check_shapes(op, w, ws[0].k, x, m, y)?;
    }
    check_finite(op, &[x])
}

/// `y = silu(x · gateᵀ) ⊙ (x · upᵀ)`: `gate` and `up` both `n × k`, `y` `m × n`, `x` finite.
pub(crate) fn check_swiglu(gate: &Weights, up: &Weights, x: &[f32], m: usize, y: &[f32]) -> Result<()> {
    const OP: &str = "matmul_swiglu";
    if gate.n != up.n {
        return shape_err(OP, format!("gate has {} rows, up {}", gate.n, up.n));
    }
    check_shapes(OP, gate, gate.k, x, m, y)?;
    check_shapes(OP, up, gate.k, x, m, y)?;
    check_finite(OP, &[x])
}

/// An activation-sparse product's threshold: finite and `≥ 0`.
pub(crate) fn check_threshold(threshold: f32) -> Result<()> {
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(Error::Invalid { what: "threshold", detail: format!("an activation-sparsity threshold must be finite and ≥ 0, got {threshold}") });
    }
    Ok(())
}

/// `gate = silu(gate) · up` in place: equal lengths.
pub(crate) fn check_gating(gate: &[f32], up: &[f32]) -> Result<()> {
    if gate.len() != up.len() {
        return shape_err("swiglu", format!("gate ({}) and up ({}) differ", gate.len(), up.len()));
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
    /// The GGUF blocks rearranged by input: per block of 32 inputs, every output's scales,
    /// then one contiguous code row per input. A product then reads only the code rows of the
    /// inputs it keeps (activation sparsity); only
    /// [`InputMajorWeights`](crate::sparse::InputMajorWeights) makes them.
    InputMajor,
}

impl Layout {
    /// A short lower-case name (`"rows"`, `"tiled"`, `"input-major"`).
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Rows => "rows",
            Layout::Tiled => "tiled",
            Layout::InputMajor => "input-major",
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

    /// A view of a matrix in [`Layout::InputMajor`] (only
    /// [`InputMajorWeights`](crate::sparse::InputMajorWeights) makes these, validated).
    pub(crate) fn input_major(dtype: DType, n: usize, k: usize, bytes: &'a [u8]) -> Self {
        debug_assert_eq!(Some(bytes.len()), crate::sparse::Geometry::of(dtype, n).map(|g| g.block * (k / crate::quant::QK)));
        Weights { dtype, layout: Layout::InputMajor, n, k, bytes }
    }

    /// How [`Weights::bytes`] are arranged.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The matrix in GGUF layout: borrowed, or rebuilt from the tiled or input-major layout
    /// (both hold the same bytes rearranged). `None` is for layouts to come that do not keep
    /// every value (pruned weights have no GGUF form).
    pub fn gguf_bytes(&self) -> Option<std::borrow::Cow<'a, [u8]>> {
        match self.layout {
            Layout::Rows => Some(self.bytes.into()),
            Layout::Tiled => Some(tiled::unpack(self.dtype, self.n, self.k, self.bytes).into()),
            Layout::InputMajor => Some(crate::sparse::gguf_rows(self.dtype, self.n, self.k, self.bytes).into()),
        }
    }

    /// The values as f32, `n` rows of `k` (row-major), whatever the layout.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        let rows = self.gguf_bytes().expect("every layout today has GGUF rows");
        crate::quant::dequantize(self.dtype, &rows, &mut out).expect("validated weights");
        out
    }

    /// The values' format.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Rows: output features.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Elements per row: input features.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The stored bytes, in this view's [`Weights::layout`].
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Bytes per row in GGUF layout (of `k` elements).
    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes_for(self.k).expect("validated in Weights::new")
    }

    /// The GGUF rows as the row and panel kernels read them.
    pub(crate) fn rows(&self) -> WeightRows<'a> {
        debug_assert_eq!(self.layout, Layout::Rows);
        WeightRows { bytes: self.bytes, k: self.k, row_bytes: self.row_bytes() }
    }

    /// The input blocks as the activation-sparse kernels read them.
    pub(crate) fn input_blocks(&self) -> InputBlocks<'a> {
        debug_assert_eq!(self.layout, Layout::InputMajor);
        InputBlocks { bytes: self.bytes, geometry: crate::sparse::Geometry::of(self.dtype, self.n).expect("validated") }
    }

    /// The tiles as the tile kernels read them.
    pub(crate) fn tiles(&self) -> TiledRows<'a> {
        debug_assert_eq!(self.layout, Layout::Tiled);
        TiledRows { bytes: self.bytes, k: self.k, tile_stride: tiled::tile_stride(self.dtype, self.k) }
    }
}
