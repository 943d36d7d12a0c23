//! The input-major copy of a weight matrix: its transpose, quantized in GGUF rows.

use crate::matmul::Weights;
use crate::quant::QK;
use crate::{DType, Error, Result, quant};

/// A weight matrix (`n` outputs × `k` inputs) stored input-major: `k` rows, row `i` holding
/// input `i`'s `n` weights in 32-element blocks of a block format (Q8_0, Q4_0, Q4_1) — the
/// blocks of the GGUF rows of `wᵀ`, with each row's fields gathered by kind so that a kernel
/// loads many blocks' scales with one vector load:
///
/// ```text
/// row i (n / 32 = nb blocks):  d: nb × f16 | m: nb × f16 (Q4_1 only) | values: nb × (16 or 32) bytes
/// ```
/// Values are the blocks' own bytes (Q4: 16 bytes, element j in the low nibble of byte j and
/// j + 16 in its high nibble; Q8_0: 32 signed bytes). A row is as long as its GGUF row.
/// [`InputMajorWeights::weights`] is the view the products take
/// ([`Layout::InputMajor`](crate::matmul::Layout::InputMajor)).
///
/// The blocks run along the outputs, so the values are *re-quantized* from the source matrix
/// (whose blocks run along the inputs): the copy is not the file's bytes rearranged, and a
/// 4-bit copy of 4-bit weights adds a second rounding. `n` must be a multiple of 32; `k` is free.
#[derive(Clone)]
pub struct InputMajorWeights {
    dtype: DType,
    n: usize,
    k: usize,
    /// k rows as above
    bytes: Vec<u8>,
}

impl std::fmt::Debug for InputMajorWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputMajorWeights").field("dtype", &self.dtype).field("n", &self.n).field("k", &self.k).field("bytes", &self.bytes.len()).finish()
    }
}

const OP: &str = "InputMajorWeights";

/// Whether `dtype` has an input-major layout.
pub const fn can_input_major(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q4_1)
}

fn check(dtype: DType, n: usize, k: usize) -> Result<usize> {
    if !can_input_major(dtype) {
        return Err(Error::Unsupported { op: OP, dtype });
    }
    if !n.is_multiple_of(QK) {
        return Err(Error::BlockAlign { op: OP, what: "n (outputs)", len: n, dtype, block: QK });
    }
    k.checked_mul(n).and_then(|e| dtype.bytes_for(e)).ok_or_else(|| Error::Shape { op: OP, detail: format!("{n}×{k} overflows") })
}

impl InputMajorWeights {
    /// Quantizes `w` (`n × k` f32, row-major) input-major in `dtype` with the reference quantizer.
    pub fn quantize(dtype: DType, n: usize, k: usize, w: &[f32]) -> Result<Self> {
        check(dtype, n, k)?;
        if n.checked_mul(k) != Some(w.len()) {
            return crate::error::shape_err(OP, format!("w has {} values, expected n·k = {n}·{k}", w.len()));
        }
        let mut t = vec![0f32; n * k];
        for (c, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            for (i, &v) in row.iter().enumerate() {
                t[i * n + c] = v;
            }
        }
        let mut bytes = quant::quantize(dtype, &t)?;
        let row_bytes = dtype.bytes_for(n).expect("checked");
        for row in bytes.chunks_exact_mut(row_bytes.max(1)) {
            let planar = gguf_to_planar(dtype, row);
            row.copy_from_slice(&planar);
        }
        Ok(InputMajorWeights { dtype, n, k, bytes })
    }

    /// The input-major copy of `w` (any layout), its values re-quantized in `dtype`.
    pub fn from_weights(w: &Weights, dtype: DType) -> Result<Self> {
        InputMajorWeights::quantize(dtype, w.n(), w.k(), &w.dequantize())
    }

    /// Takes bytes already in this layout (e.g. from a file), checking their length.
    pub fn from_bytes(dtype: DType, n: usize, k: usize, bytes: Vec<u8>) -> Result<Self> {
        let expected = check(dtype, n, k)?;
        if bytes.len() != expected {
            return crate::error::shape_err(OP, format!("{n}×{k} input-major {dtype} needs {expected} bytes, got {}", bytes.len()));
        }
        Ok(InputMajorWeights { dtype, n, k, bytes })
    }

    /// The view the products take.
    pub fn weights(&self) -> Weights<'_> {
        Weights::input_major(self.dtype, self.n, self.k, &self.bytes)
    }

    /// The stored bytes: `k` rows of `n` values as above.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Where a block's fields sit in its GGUF bytes: (d, m, values, value bytes).
const fn fields(dtype: DType) -> (usize, Option<usize>, usize, usize) {
    match dtype {
        DType::Q4_1 => (0, Some(2), 4, QK / 2),
        DType::Q4_0 => (0, None, 2, QK / 2),
        _ => (0, None, 2, QK),
    }
}

/// One row of GGUF blocks gathered by field (the layout above).
fn gguf_to_planar(dtype: DType, row: &[u8]) -> Vec<u8> {
    let (d_at, m_at, q_at, qb) = fields(dtype);
    let bb = dtype.info().block_bytes;
    let nb = row.len() / bb;
    let mut out = vec![0u8; row.len()];
    let values_at = if m_at.is_some() { 4 * nb } else { 2 * nb };
    for (j, b) in row.chunks_exact(bb).enumerate() {
        out[2 * j..2 * j + 2].copy_from_slice(&b[d_at..d_at + 2]);
        if let Some(m_at) = m_at {
            out[2 * nb + 2 * j..2 * nb + 2 * j + 2].copy_from_slice(&b[m_at..m_at + 2]);
        }
        out[values_at + qb * j..values_at + qb * (j + 1)].copy_from_slice(&b[q_at..q_at + qb]);
    }
    out
}

/// One stored row back in GGUF blocks.
fn planar_to_gguf(dtype: DType, row: &[u8]) -> Vec<u8> {
    let (d_at, m_at, q_at, qb) = fields(dtype);
    let bb = dtype.info().block_bytes;
    let nb = row.len() / bb;
    let mut out = vec![0u8; row.len()];
    let values_at = if m_at.is_some() { 4 * nb } else { 2 * nb };
    for (j, b) in out.chunks_exact_mut(bb).enumerate() {
        b[d_at..d_at + 2].copy_from_slice(&row[2 * j..2 * j + 2]);
        if let Some(m_at) = m_at {
            b[m_at..m_at + 2].copy_from_slice(&row[2 * nb + 2 * j..2 * nb + 2 * j + 2]);
        }
        b[q_at..q_at + qb].copy_from_slice(&row[values_at + qb * j..values_at + qb * (j + 1)]);
    }
    out
}

/// The GGUF rows of `wᵀ` (`k` rows of `n` values) for an input-major view: its blocks as the
/// file formats and references know them. `None` for another layout.
pub fn transpose_gguf_rows(w: &Weights) -> Option<Vec<u8>> {
    if w.layout() != crate::matmul::Layout::InputMajor {
        return None;
    }
    let row_bytes = w.dtype().bytes_for(w.n())?;
    Some(w.bytes().chunks_exact(row_bytes.max(1)).flat_map(|row| planar_to_gguf(w.dtype(), row)).collect())
}
