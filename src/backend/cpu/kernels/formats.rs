//! What a kernel needs to know about each weight format, as traits: the float formats by how a
//! vector of them is loaded, the integer block formats by how a block becomes 32 bytes and how
//! those bytes multiply an 8-bit activation block.

use crate::backend::cpu::simd::{Simd, head};
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use bytemuck::Pod;

/// A plain float weight format (F32, F16, BF16).
pub(crate) trait FloatFormat {
    const BYTES: usize;
    /// `S::LANES` weights from the start of `w`.
    fn load<S: Simd>(s: S, w: &[u8]) -> S::F;
    /// Weight `i` of the row `w`.
    fn get(w: &[u8], i: usize) -> f32;
    /// Weights `i` and `i + 1` of `LANES` rows at once: `x` starts at row 0's weight `i`, rows
    /// are `stride` bytes apart, and every row holds at least 4 bytes from there.
    fn gather_pair<S: Simd>(s: S, x: &[u8], stride: usize) -> (S::F, S::F);
}

pub(crate) struct F32;
pub(crate) struct F16;
pub(crate) struct Bf16;

impl FloatFormat for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    fn load<S: Simd>(s: S, w: &[u8]) -> S::F {
        s.load_f32le(w)
    }
    #[inline(always)]
    fn get(w: &[u8], i: usize) -> f32 {
        f32::from_le_bytes(*head(&w[4 * i..]))
    }
    #[inline(always)]
    fn gather_pair<S: Simd>(s: S, x: &[u8], stride: usize) -> (S::F, S::F) {
        (s.bits_to_f32(s.gather4(x, stride)), s.bits_to_f32(s.gather4(&x[4..], stride)))
    }
}

impl FloatFormat for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn load<S: Simd>(s: S, w: &[u8]) -> S::F {
        s.load_f16(w)
    }
    #[inline(always)]
    fn get(w: &[u8], i: usize) -> f32 {
        crate::quant::float::f16_le(*head(&w[2 * i..]))
    }
    #[inline(always)]
    fn gather_pair<S: Simd>(s: S, x: &[u8], stride: usize) -> (S::F, S::F) {
        let v = s.gather4(x, stride);
        (s.half_to_f32(v), s.half_to_f32(s.ishr(v, 16)))
    }
}

impl FloatFormat for Bf16 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn load<S: Simd>(s: S, w: &[u8]) -> S::F {
        s.load_bf16(w)
    }
    #[inline(always)]
    fn get(w: &[u8], i: usize) -> f32 {
        crate::quant::float::bf16_bits_to_f32(u16::from_le_bytes(*head(&w[2 * i..])))
    }
    #[inline(always)]
    fn gather_pair<S: Simd>(s: S, x: &[u8], stride: usize) -> (S::F, S::F) {
        let v = s.gather4(x, stride);
        (s.bits_to_f32(s.ishl(v, 16)), s.bits_to_f32(s.iand(v, s.isplat(0xffff_0000u32 as i32))))
    }
}

/// An integer block format (Q8_0, Q4_0, Q4_1) against 8-bit activations.
///
/// Row dot products use `values`/`dot` directly. The packed GEMM instead stores every weight as
/// an *unsigned* byte `u = q + OFFSET` (what `vpdpbusd` wants) and removes the offset exactly in
/// integers: `Σ q·x = Σ u·x − OFFSET · Σ x`.
pub(crate) trait QuantFormat {
    type Block: Pod;
    /// Whether the block carries a min (`x = d·q + m`), contributing `m · d_x · Σ x_q`.
    const HAS_MIN: bool;
    /// `u - q` in the packed GEMM layout.
    const OFFSET: i32;
    /// Whether packed values can exceed 127 (then the GEMM needs the exact `dot_u8`).
    const WIDE: bool;
    /// Bits per stored value (4 or 8).
    const BITS: usize;
    fn d(b: &Self::Block) -> [u8; 2];
    fn m(_b: &Self::Block) -> [u8; 2] {
        [0, 0]
    }
    /// The block's 32 values in a form `dot` accepts.
    fn values<S: Simd>(s: S, b: &Self::Block) -> S::B;
    /// 8 partial sums of `values · x`.
    fn dot<S: Simd>(s: S, w: S::B, x: S::B) -> S::B;
    /// The block's 32 values as packed-GEMM bytes `q + OFFSET`, as 8 little-endian words of 4
    /// consecutive values.
    fn packed(b: &Self::Block) -> [u32; QK / 4];
    /// The same for one block of each of `LANES` rows at once: `x` starts at row 0's block and
    /// rows are `stride` bytes apart; vector `j` holds word `j` of every row.
    fn packed_lanes<S: Simd>(s: S, x: &[u8], stride: usize) -> [S::I; QK / 4];
}

/// `packed_lanes` for the Q4 formats, whose 16 nibble bytes end the block.
#[inline(always)]
fn q4_packed_lanes<S: Simd, B>(s: S, x: &[u8], stride: usize) -> [S::I; QK / 4] {
    let qs = size_of::<B>() - QK / 2;
    let mask = s.isplat(0x0f0f_0f0f);
    let mut out = [s.izero(); QK / 4];
    for j in 0..4 {
        let v = s.gather4(&x[qs + 4 * j..], stride);
        out[j] = s.iand(v, mask);
        out[j + 4] = s.iand(s.ishr(v, 4), mask);
    }
    out
}

/// A Q4 block's 16 bytes as 8 words of 4 values each: words 0–3 hold the low nibbles
/// (elements 0–15), words 4–7 the high nibbles (elements 16–31).
#[inline(always)]
fn q4_quads(qs: &[u8; QK / 2]) -> [u32; QK / 4] {
    let word = |j: usize| u32::from_le_bytes([qs[4 * j], qs[4 * j + 1], qs[4 * j + 2], qs[4 * j + 3]]);
    std::array::from_fn(|j| if j < 4 { word(j) & 0x0f0f_0f0f } else { (word(j - 4) >> 4) & 0x0f0f_0f0f })
}

pub(crate) struct Q8_0;
pub(crate) struct Q4_0;
pub(crate) struct Q4_1;

impl QuantFormat for Q8_0 {
    type Block = BlockQ8_0;
    const HAS_MIN: bool = false;
    const OFFSET: i32 = 128;
    const WIDE: bool = true;
    const BITS: usize = 8;
    #[inline(always)]
    fn d(b: &BlockQ8_0) -> [u8; 2] {
        b.d
    }
    #[inline(always)]
    fn values<S: Simd>(s: S, b: &BlockQ8_0) -> S::B {
        s.bload(bytemuck::cast_ref(&b.qs))
    }
    #[inline(always)]
    fn dot<S: Simd>(s: S, w: S::B, x: S::B) -> S::B {
        // Our quantizer never emits -128, but other writers may: `bdot_i8` stays exact for it.
        s.bdot_i8(w, x)
    }
    #[inline(always)]
    fn packed(b: &BlockQ8_0) -> [u32; QK / 4] {
        // q + 128 as an unsigned byte is q with its top bit flipped.
        let qs: &[u8; QK] = bytemuck::cast_ref(&b.qs);
        std::array::from_fn(|j| u32::from_le_bytes([qs[4 * j], qs[4 * j + 1], qs[4 * j + 2], qs[4 * j + 3]]) ^ 0x8080_8080)
    }
    #[inline(always)]
    fn packed_lanes<S: Simd>(s: S, x: &[u8], stride: usize) -> [S::I; QK / 4] {
        let flip = s.isplat(0x8080_8080u32 as i32);
        let mut out = [s.izero(); QK / 4];
        for (j, o) in out.iter_mut().enumerate() {
            *o = s.ixor(s.gather4(&x[2 + 4 * j..], stride), flip);
        }
        out
    }
}

impl QuantFormat for Q4_0 {
    type Block = BlockQ4_0;
    const HAS_MIN: bool = false;
    const OFFSET: i32 = 8;
    const WIDE: bool = false;
    const BITS: usize = 4;
    #[inline(always)]
    fn d(b: &BlockQ4_0) -> [u8; 2] {
        b.d
    }
    #[inline(always)]
    fn values<S: Simd>(s: S, b: &BlockQ4_0) -> S::B {
        s.bsub_bytes(s.bnibbles(&b.qs), 8)
    }
    #[inline(always)]
    fn dot<S: Simd>(s: S, w: S::B, x: S::B) -> S::B {
        s.bdot_i8(w, x)
    }
    #[inline(always)]
    fn packed(b: &BlockQ4_0) -> [u32; QK / 4] {
        q4_quads(&b.qs)
    }
    #[inline(always)]
    fn packed_lanes<S: Simd>(s: S, x: &[u8], stride: usize) -> [S::I; QK / 4] {
        q4_packed_lanes::<S, BlockQ4_0>(s, x, stride)
    }
}

impl QuantFormat for Q4_1 {
    type Block = BlockQ4_1;
    const HAS_MIN: bool = true;
    const OFFSET: i32 = 0;
    const WIDE: bool = false;
    const BITS: usize = 4;
    #[inline(always)]
    fn d(b: &BlockQ4_1) -> [u8; 2] {
        b.d
    }
    #[inline(always)]
    fn m(b: &BlockQ4_1) -> [u8; 2] {
        b.m
    }
    #[inline(always)]
    fn values<S: Simd>(s: S, b: &BlockQ4_1) -> S::B {
        s.bnibbles(&b.qs)
    }
    #[inline(always)]
    fn dot<S: Simd>(s: S, w: S::B, x: S::B) -> S::B {
        s.bdot_u7(w, x)
    }
    #[inline(always)]
    fn packed(b: &BlockQ4_1) -> [u32; QK / 4] {
        q4_quads(&b.qs)
    }
    #[inline(always)]
    fn packed_lanes<S: Simd>(s: S, x: &[u8], stride: usize) -> [S::I; QK / 4] {
        q4_packed_lanes::<S, BlockQ4_1>(s, x, stride)
    }
}

/// The 4-bit formats, which the row kernel unpacks a full vector at a time (as unsigned `q`;
/// Q4_0's `−8` then rides on the weight-min term, see `quant_rows`).
pub(crate) trait Q4Format: QuantFormat {
    fn qs(b: &Self::Block) -> &[u8; QK / 2];
}

impl Q4Format for Q4_0 {
    #[inline(always)]
    fn qs(b: &BlockQ4_0) -> &[u8; QK / 2] {
        &b.qs
    }
}

impl Q4Format for Q4_1 {
    #[inline(always)]
    fn qs(b: &BlockQ4_1) -> &[u8; QK / 2] {
        &b.qs
    }
}
