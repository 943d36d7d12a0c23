//! Storage formats: block layouts, reference quantizers, and whole-buffer (de)quantization.
//!
//! These are the *reference* conversions (scalar, obviously correct, bit-exact with ggml). The
//! hot path only ever quantizes activations, which the CPU backend does with SIMD and tests
//! bit-exactly against [`BlockQ8_0::quantize_ref`].

mod blocks;
pub mod float;

pub(crate) use blocks::quantize_q8_ref;
pub use blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK, QuantBlock, q4_values};

use crate::{DType, Error, Result};

fn check_len(op: &'static str, dtype: DType, elems: usize) -> Result<()> {
    let block = dtype.info().block_elems;
    if !elems.is_multiple_of(block) {
        return Err(Error::BlockAlign { op, what: "element count", len: elems, dtype, block });
    }
    Ok(())
}

fn quantize_blocks<B: QuantBlock>(x: &[f32], out: &mut Vec<u8>) {
    for chunk in x.chunks_exact(QK) {
        let block = B::quantize_ref(chunk.try_into().expect("chunks_exact yields QK elements"));
        out.extend_from_slice(bytemuck::bytes_of(&block));
    }
}

fn dequantize_blocks<B: QuantBlock>(bytes: &[u8], out: &mut [f32]) {
    let blocks: &[B] = bytemuck::cast_slice(bytes);
    for (block, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        block.dequantize_ref(o.try_into().expect("chunks_exact_mut yields QK elements"));
    }
}

/// Quantizes `x` into `dtype`'s GGUF byte layout with the reference quantizer.
///
/// `x.len()` must be a multiple of the block size (32 for the block formats).
pub fn quantize(dtype: DType, x: &[f32]) -> Result<Vec<u8>> {
    check_len("quantize", dtype, x.len())?;
    let bytes = dtype.bytes_for(x.len()).ok_or(Error::Shape { op: "quantize", detail: "size overflows usize".into() })?;
    let mut out = Vec::with_capacity(bytes);
    match dtype {
        DType::F32 => x.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => x.iter().for_each(|&v| out.extend_from_slice(&float::f32_to_f16_bits(v).to_le_bytes())),
        DType::BF16 => x.iter().for_each(|&v| out.extend_from_slice(&float::f32_to_bf16_bits(v).to_le_bytes())),
        DType::Q8_0 => quantize_blocks::<BlockQ8_0>(x, &mut out),
        DType::Q8_1 => quantize_blocks::<BlockQ8_1>(x, &mut out),
        DType::Q4_0 => quantize_blocks::<BlockQ4_0>(x, &mut out),
        DType::Q4_1 => quantize_blocks::<BlockQ4_1>(x, &mut out),
    }
    debug_assert_eq!(out.len(), bytes);
    Ok(out)
}

/// Dequantizes `bytes` (in `dtype`'s GGUF layout) into `out`, whose length says how many
/// elements `bytes` must hold.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_len("dequantize", dtype, out.len())?;
    let expected = dtype.bytes_for(out.len());
    if expected != Some(bytes.len()) {
        return crate::error::shape_err("dequantize", format!("{} elements of {dtype} need {expected:?} bytes, got {}", out.len(), bytes.len()));
    }
    let halves = || bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => out.iter_mut().zip(halves()).for_each(|(o, h)| *o = float::f16_bits_to_f32(h)),
        DType::BF16 => out.iter_mut().zip(halves()).for_each(|(o, h)| *o = float::bf16_bits_to_f32(h)),
        DType::Q8_0 => dequantize_blocks::<BlockQ8_0>(bytes, out),
        DType::Q8_1 => dequantize_blocks::<BlockQ8_1>(bytes, out),
        DType::Q4_0 => dequantize_blocks::<BlockQ4_0>(bytes, out),
        DType::Q4_1 => dequantize_blocks::<BlockQ4_1>(bytes, out),
    }
    Ok(())
}
