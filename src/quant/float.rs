//! Scalar conversions for the 16-bit float formats, bit-exact with ggml.

/// f32 → bf16 as ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN forced quiet.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern, 0xff80_0000, plus 0x8000 fits in u32.
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// bf16 → f32 (exact).
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 → f16, round to nearest even (IEEE; what ggml and numpy do).
pub fn f32_to_f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// f16 → f32 (exact).
pub fn f16_bits_to_f32(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

/// An f16 stored little-endian in a block, as f32.
pub fn f16_le(b: [u8; 2]) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes(b))
}

/// An f32 as a little-endian f16 for a block.
pub fn f16_le_from(x: f32) -> [u8; 2] {
    f32_to_f16_bits(x).to_le_bytes()
}
