//! Activation quantization to 8 bits per 32-element block, bit-exact with ggml's
//! `quantize_row_q8_0_ref` (and so with [`crate::quant::BlockQ8_0::quantize_ref`]): the same
//! `amax / 127`, the same `1 / d`, the same product and `roundf` rounding. The block scale kept
//! for the dot product is f16-rounded, as ggml stores it; the exact integer sum of each block
//! serves Q4_1's min term and the packed GEMM's offset correction.

use crate::backend::cpu::simd::Simd;
use crate::quant::QK;

/// Quantizes one row. `x`: (k), `qs`: (k); `d`, `sums` and `dsums` (`d · sum`): (k / 32).
#[inline(always)]
pub(crate) fn quantize_row<S: Simd>(s: S, x: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i32], dsums: &mut [f32]) {
    let lanes = S::LANES;
    let blocks = x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK));
    let scales = d.iter_mut().zip(sums.iter_mut()).zip(dsums.iter_mut());
    for ((xb, qb), ((db, sb), dsb)) in blocks.zip(scales) {
        let mut amax = s.zero();
        for v in (0..QK).step_by(lanes) {
            amax = s.max(amax, s.abs(s.load(&xb[v..])));
        }
        let scale = s.reduce_max(amax) / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = s.izero();
        for v in (0..QK).step_by(lanes) {
            let q = s.round_to_i32(s.mul(s.load(&xb[v..]), s.splat(inv)));
            s.store_i8(q, &mut qb[v..]);
            sum = s.iadd(sum, q);
        }
        *db = half::f16::from_f32(scale).to_f32();
        *sb = s.isum(sum);
        *dsb = *db * *sb as f32;
    }
}
