//! The GGUF block formats: `#[repr(C)]` layouts identical to ggml's `block_*` structs, and their
//! reference quantizers — the spec the fast paths are tested against. Every quantizer follows
//! ggml's `quantize_row_*_ref` operation by operation (same f32 arithmetic, same rounding), so
//! the bytes are identical to ggml's and to the `gguf` Python package's (tests/fixtures).
//!
//! Half-precision fields are stored as `[u8; 2]` (little-endian f16): the structs then have
//! alignment 1 and can be viewed in place from any byte offset of a memory-mapped file.

use super::float::{f16_le, f16_le_from};
use crate::DType;
use bytemuck::{Pod, Zeroable};

/// Elements per block for every block format here (ggml's `QK4_0`, `QK4_1`, `QK8_0`, `QK8_1`).
pub const QK: usize = 32;

/// A block format with a reference quantizer and dequantizer.
pub trait QuantBlock: Pod {
    /// The format this block is.
    const DTYPE: DType;
    /// ggml's `quantize_row_*_ref` for one block.
    fn quantize_ref(x: &[f32; QK]) -> Self;
    /// ggml's `dequantize_row_*` for one block.
    fn dequantize_ref(&self, out: &mut [f32; QK]);
}

/// 8-bit symmetric: `x = d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// The scale `d`: an f16's little-endian bytes.
    pub d: [u8; 2],
    /// The 32 values.
    pub qs: [i8; QK],
}

/// 8-bit symmetric with the scaled sum `s = d * Σq` (activation side of Q4_1 dot products).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// The scale `d`: an f16's little-endian bytes.
    pub d: [u8; 2],
    /// `d · Σq`: an f16's little-endian bytes.
    pub s: [u8; 2],
    /// The 32 values.
    pub qs: [i8; QK],
}

/// 4-bit symmetric: `x = d * (q - 8)`; byte j holds element j (low nibble) and j + 16 (high).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// The scale `d`: an f16's little-endian bytes.
    pub d: [u8; 2],
    /// The 32 values as nibbles, two per byte.
    pub qs: [u8; QK / 2],
}

/// 4-bit affine: `x = d * q + m`; nibble order as [`BlockQ4_0`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// The scale `d`: an f16's little-endian bytes.
    pub d: [u8; 2],
    /// The minimum `m`: an f16's little-endian bytes.
    pub m: [u8; 2],
    /// The 32 values as nibbles, two per byte.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockQ8_0>() == 34);
const _: () = assert!(size_of::<BlockQ8_1>() == 36);
const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(align_of::<BlockQ4_1>() == 1 && align_of::<BlockQ8_0>() == 1);

fn abs_max(x: &[f32; QK]) -> f32 {
    x.iter().fold(0.0f32, |a, v| a.max(v.abs()))
}

/// `1/d`, or 0 when `d == 0` (all-zero block), as ggml.
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// 8-bit quantization shared by Q8_0 and Q8_1: returns (d as f32, values). `f32::round` rounds
/// half away from zero, like C's `roundf`.
pub(crate) fn quantize_q8_ref(x: &[f32; QK]) -> (f32, [i8; QK]) {
    let d = abs_max(x) / 127.0;
    let id = inverse_or_zero(d);
    (d, x.map(|v| (v * id).round() as i8))
}

fn nibbles(q: impl Fn(usize) -> u8) -> [u8; QK / 2] {
    std::array::from_fn(|j| q(j) | (q(j + QK / 2) << 4))
}

fn unnibble(qs: &[u8; QK / 2], j: usize) -> u8 {
    if j < QK / 2 { qs[j] & 0x0f } else { qs[j - QK / 2] >> 4 }
}

impl QuantBlock for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;
    fn quantize_ref(x: &[f32; QK]) -> Self {
        let (d, qs) = quantize_q8_ref(x);
        BlockQ8_0 { d: f16_le_from(d), qs }
    }
    fn dequantize_ref(&self, out: &mut [f32; QK]) {
        let d = f16_le(self.d);
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl QuantBlock for BlockQ8_1 {
    const DTYPE: DType = DType::Q8_1;
    fn quantize_ref(x: &[f32; QK]) -> Self {
        let (d, qs) = quantize_q8_ref(x);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 { d: f16_le_from(d), s: f16_le_from(sum as f32 * d), qs }
    }
    fn dequantize_ref(&self, out: &mut [f32; QK]) {
        let d = f16_le(self.d);
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl QuantBlock for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;
    fn quantize_ref(x: &[f32; QK]) -> Self {
        // The signed value of largest magnitude (first one on ties) maps to -8.
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = inverse_or_zero(d);
        // `as u8` truncates like C's `(int8_t)` cast here: the argument lies in [0.5, 16.5].
        let q = |j: usize| ((x[j] * id + 8.5) as u8).min(15);
        BlockQ4_0 { d: f16_le_from(d), qs: nibbles(q) }
    }
    fn dequantize_ref(&self, out: &mut [f32; QK]) {
        let d = f16_le(self.d);
        for (j, o) in out.iter_mut().enumerate() {
            *o = (unnibble(&self.qs, j) as i32 - 8) as f32 * d;
        }
    }
}

impl QuantBlock for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;
    fn quantize_ref(x: &[f32; QK]) -> Self {
        let min = x.iter().fold(f32::INFINITY, |a, &v| a.min(v));
        let max = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        let q = |j: usize| (((x[j] - min) * id + 0.5) as u8).min(15);
        BlockQ4_1 { d: f16_le_from(d), m: f16_le_from(min), qs: nibbles(q) }
    }
    fn dequantize_ref(&self, out: &mut [f32; QK]) {
        let (d, m) = (f16_le(self.d), f16_le(self.m));
        for (j, o) in out.iter_mut().enumerate() {
            *o = d * unnibble(&self.qs, j) as f32 + m;
        }
    }
}

/// The 4-bit values of a Q4 block, in element order.
pub fn q4_values(qs: &[u8; QK / 2]) -> [u8; QK] {
    std::array::from_fn(|j| unnibble(qs, j))
}
