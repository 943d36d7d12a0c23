//! The input-major copy of a block-quantized weight matrix: the same values, rearranged so that
//! each input's weights are one contiguous run.

use crate::matmul::Weights;
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use crate::{DType, Error, Result, quant};

/// Outputs are stored in multiples of this (zero-padded): the kernels' widest step.
pub(crate) const OUTPUT_ALIGN: usize = 64;

/// A block-quantized weight matrix (`n` outputs × `k` inputs, Q8_0, Q4_0 or Q4_1) stored
/// input-major, **losslessly**: the GGUF blocks' own codes and scales, rearranged.
///
/// A GGUF row holds one output's weights in blocks of 32 inputs, each block a scale `d` (and
/// Q4_1's min `m`) and 32 codes. Here the matrix is cut into the same blocks of 32 inputs, and
/// each *input block* `b` (inputs `32b .. 32b + 32`) is stored as
///
/// ```text
/// d: w × f16 (output j's scale for this block) | m: w × f16 (Q4_1 only) | 32 code rows
/// code row t (input 32b + t): output j's code for that input, w codes, 4 or 8 bits each
/// ```
/// with `w = n` rounded up to a multiple of 64 (padding outputs have zero codes and scales).
/// A 4-bit code row packs each run of 32 outputs in 16 bytes as GGUF packs a block (output `j`
/// in the low nibble of byte `j`, `j + 16` in the high nibble); an 8-bit code row holds
/// `q + 128` (the unsigned form integer dot products take). So input `i`'s weights are one run
/// of `w · bits / 8` bytes, and a product that drops input `i` never reads them; the scales
/// of a block are read once for the 32 inputs. The copy is exactly as large as the GGUF matrix
/// when `n` is a multiple of 64, and [`InputMajorWeights::gguf_rows`] gives the file's bytes back.
#[derive(Clone)]
pub struct InputMajorWeights {
    dtype: DType,
    n: usize,
    k: usize,
    /// k / 32 input blocks as above
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

/// Where an input block's fields sit, for `n` outputs of a format: the stored width `w`,
/// the offsets of the m's and of the code rows, the bytes of a code row and of a whole block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub width: usize,
    pub m_at: usize,
    pub codes_at: usize,
    pub code_row: usize,
    pub block: usize,
}

impl Geometry {
    /// `None` where the sizes overflow.
    pub(crate) fn of(dtype: DType, n: usize) -> Option<Geometry> {
        let width = n.checked_next_multiple_of(OUTPUT_ALIGN)?;
        let (mins, bits) = match dtype {
            DType::Q4_1 => (1, 4),
            DType::Q4_0 => (0, 4),
            _ => (0, 8),
        };
        let m_at = width.checked_mul(2)?;
        let codes_at = m_at.checked_add(m_at * mins)?;
        let code_row = width / 8 * bits;
        let block = codes_at.checked_add(code_row.checked_mul(QK)?)?;
        Some(Geometry { width, m_at, codes_at, code_row, block })
    }
}

/// The stored size of an `n × k` matrix, checked.
fn check(dtype: DType, n: usize, k: usize) -> Result<usize> {
    if !can_input_major(dtype) {
        return Err(Error::Unsupported { op: OP, dtype });
    }
    if !k.is_multiple_of(QK) {
        return Err(Error::BlockAlign { op: OP, what: "k (inputs)", len: k, dtype, block: QK });
    }
    Geometry::of(dtype, n).and_then(|g| g.block.checked_mul(k / QK)).ok_or_else(|| Error::Shape { op: OP, detail: format!("{n}×{k} overflows") })
}

/// One GGUF block's scale, min and 32 codes (Q4: `0..=15`; Q8_0: `-127..=127` as stored).
fn parse(dtype: DType, b: &[u8]) -> ([u8; 2], [u8; 2], [i32; QK]) {
    match dtype {
        DType::Q4_1 => {
            let b: &BlockQ4_1 = bytemuck::from_bytes(b);
            (b.d, b.m, quant::q4_values(&b.qs).map(i32::from))
        }
        DType::Q4_0 => {
            let b: &BlockQ4_0 = bytemuck::from_bytes(b);
            (b.d, [0; 2], quant::q4_values(&b.qs).map(i32::from))
        }
        _ => {
            let b: &BlockQ8_0 = bytemuck::from_bytes(b);
            (b.d, [0; 2], b.qs.map(i32::from))
        }
    }
}

/// Stores `code` for output `j` in a code row.
fn put_code(row: &mut [u8], bits: usize, j: usize, code: i32) {
    if bits == 4 {
        let (byte, shift) = (j / QK * 16 + j % 16, if j % QK < 16 { 0 } else { 4 });
        row[byte] |= (code as u8 & 0x0f) << shift;
    } else {
        row[j] = (code as i8 as u8) ^ 0x80;
    }
}

/// Output `j`'s code in a code row (as `put_code` stored it).
fn get_code(row: &[u8], bits: usize, j: usize) -> u8 {
    if bits == 4 {
        let (byte, shift) = (j / QK * 16 + j % 16, if j % QK < 16 { 0 } else { 4 });
        (row[byte] >> shift) & 0x0f
    } else {
        row[j] ^ 0x80
    }
}

fn bits(dtype: DType) -> usize {
    if dtype == DType::Q8_0 { 8 } else { 4 }
}

impl InputMajorWeights {
    /// Quantizes `w` (`n × k` f32, row-major) in `dtype`'s GGUF rows with the reference
    /// quantizer, then rearranges them: the same values as `quant::quantize(dtype, w)`.
    pub fn quantize(dtype: DType, n: usize, k: usize, w: &[f32]) -> Result<Self> {
        check(dtype, n, k)?;
        if n.checked_mul(k) != Some(w.len()) {
            return crate::error::shape_err(OP, format!("w has {} values, expected n·k = {n}·{k}", w.len()));
        }
        InputMajorWeights::from_gguf_rows(dtype, n, k, &quant::quantize(dtype, w)?)
    }

    /// The input-major copy of `w` (any layout of Q8_0, Q4_0 or Q4_1): the same values.
    pub fn from_weights(w: &Weights) -> Result<Self> {
        check(w.dtype(), w.n(), w.k())?;
        let rows = w.gguf_bytes().ok_or(Error::Unsupported { op: OP, dtype: w.dtype() })?;
        InputMajorWeights::from_gguf_rows(w.dtype(), w.n(), w.k(), &rows)
    }

    /// Rearranges a matrix's GGUF bytes (`n` rows of `k` values).
    pub fn from_gguf_rows(dtype: DType, n: usize, k: usize, rows: &[u8]) -> Result<Self> {
        let total = check(dtype, n, k)?;
        let row_bytes = dtype.bytes_for(k).expect("k is whole blocks");
        if n.checked_mul(row_bytes) != Some(rows.len()) {
            return crate::error::shape_err(OP, format!("{n}×{k} {dtype} is {} bytes in GGUF rows, got {}", n * row_bytes, rows.len()));
        }
        let g = Geometry::of(dtype, n).expect("checked");
        let (bb, bits) = (dtype.info().block_bytes, bits(dtype));
        let mut bytes = vec![0u8; total];
        for (j, row) in rows.chunks_exact(row_bytes.max(1)).enumerate().take(n) {
            for (b, block) in row.chunks_exact(bb).enumerate() {
                let (d, m, codes) = parse(dtype, block);
                let out = &mut bytes[b * g.block..(b + 1) * g.block];
                out[2 * j..2 * j + 2].copy_from_slice(&d);
                if dtype == DType::Q4_1 {
                    out[g.m_at + 2 * j..g.m_at + 2 * j + 2].copy_from_slice(&m);
                }
                for (t, &code) in codes.iter().enumerate() {
                    put_code(&mut out[g.codes_at + t * g.code_row..][..g.code_row], bits, j, code);
                }
            }
        }
        if dtype == DType::Q8_0 {
            // Padding outputs hold code 0 (stored 0x80), like the rest of the format.
            for block in bytes.chunks_exact_mut(g.block.max(1)) {
                for row in block[g.codes_at..].chunks_exact_mut(g.code_row.max(1)) {
                    row[n..].fill(0x80);
                }
            }
        }
        Ok(InputMajorWeights { dtype, n, k, bytes })
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

    /// The stored bytes: `k / 32` input blocks as above.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The matrix in GGUF rows again (`n` rows of `k` values), byte for byte what it was made from.
    pub fn gguf_rows(&self) -> Vec<u8> {
        gguf_rows(self.dtype, self.n, self.k, &self.bytes)
    }
}

/// An input-major matrix's GGUF rows (the inverse of `from_gguf_rows`; padding dropped).
pub(crate) fn gguf_rows(dtype: DType, n: usize, k: usize, bytes: &[u8]) -> Vec<u8> {
    let g = Geometry::of(dtype, n).expect("validated");
    let (bb, bits) = (dtype.info().block_bytes, bits(dtype));
    let row_bytes = dtype.bytes_for(k).expect("validated");
    let mut rows = vec![0u8; n * row_bytes];
    for (j, row) in rows.chunks_exact_mut(row_bytes.max(1)).enumerate().take(n) {
        for (b, out) in row.chunks_exact_mut(bb).enumerate() {
            let block = &bytes[b * g.block..(b + 1) * g.block];
            out[..2].copy_from_slice(&block[2 * j..2 * j + 2]);
            let code = |t: usize| get_code(&block[g.codes_at + t * g.code_row..][..g.code_row], bits, j);
            match dtype {
                DType::Q8_0 => (0..QK).for_each(|t| out[2 + t] = code(t)),
                _ => {
                    let at = if dtype == DType::Q4_1 {
                        out[2..4].copy_from_slice(&block[g.m_at + 2 * j..g.m_at + 2 * j + 2]);
                        4
                    } else {
                        2
                    };
                    (0..QK / 2).for_each(|t| out[at + t] = code(t) | code(t + 16) << 4);
                }
            }
        }
    }
    rows
}
