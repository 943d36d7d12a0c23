//! The AVX-512 levels' SIMD vocabulary (F/BW/VL/DQ, with or without VNNI): 16 f32 lanes.

use super::{X512, prefetch_l2, ymm};
use crate::backend::cpu::simd::{Simd, head};
use core::arch::x86_64::*;

impl<const VNNI: bool> Simd for X512<VNNI> {
    const LANES: usize = 16;
    type F = __m512;
    type I = __m512i;
    type B = __m256i;
    type G = __m256;

    #[inline(always)]
    fn zero(self) -> __m512 {
        // SAFETY: token ⇒ AVX-512F (module docs).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, v: f32) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> __m512 {
        let x: &[f32; 16] = head(x);
        // SAFETY: token ⇒ AVX-512F; `x` is exactly 16 f32.
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }
    #[inline(always)]
    fn load_f32le(self, x: &[u8]) -> __m512 {
        let x: &[u8; 64] = head(x);
        // SAFETY: token ⇒ AVX-512F; `x` is exactly 64 bytes; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_ps(x.as_ptr().cast()) }
    }
    #[inline(always)]
    fn load_f16(self, x: &[u8]) -> __m512 {
        let x: &[u8; 32] = head(x);
        // SAFETY: token ⇒ AVX-512F; `x` is exactly 32 bytes.
        unsafe { _mm512_cvtph_ps(ymm::load_bytes(x)) }
    }
    #[inline(always)]
    fn load_bf16(self, x: &[u8]) -> __m512 {
        let x: &[u8; 32] = head(x);
        // SAFETY: token ⇒ AVX-512F; `x` is exactly 32 bytes.
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(ymm::load_bytes(x)), 16)) }
    }
    #[inline(always)]
    fn store(self, v: __m512, out: &mut [f32]) {
        let out: &mut [f32; 16] = (&mut out[..16]).try_into().expect("16 lanes");
        // SAFETY: token ⇒ AVX-512F; `out` is exactly 16 f32.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn sum(self, v: __m512) -> f32 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512) -> f32 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_reduce_max_ps(v) }
    }

    #[inline(always)]
    fn izero(self) -> __m512i {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    fn isplat(self, v: i32) -> __m512i {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_set1_epi32(v) }
    }
    #[inline(always)]
    fn iload(self, x: &[u8]) -> __m512i {
        let x: &[u8; 64] = head(x);
        // SAFETY: token ⇒ AVX-512F; `x` is exactly 64 bytes.
        unsafe { _mm512_loadu_si512(x.as_ptr().cast()) }
    }
    #[inline(always)]
    fn isplat4(self, x: &[i8]) -> __m512i {
        // SAFETY: token ⇒ AVX-512F; `splat4` indexes (bounds-checked) 4 bytes.
        unsafe { _mm512_set1_epi32(ymm::splat4(x)) }
    }
    #[inline(always)]
    fn iadd(self, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    fn iand(self, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_and_si512(a, b) }
    }
    #[inline(always)]
    fn ixor(self, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_xor_si512(a, b) }
    }
    #[inline(always)]
    fn ishr(self, a: __m512i, bits: u32) -> __m512i {
        // SAFETY: token ⇒ AVX-512F. (A constant `bits` becomes an immediate shift.)
        unsafe { _mm512_srl_epi32(a, _mm_cvtsi32_si128(bits as i32)) }
    }
    #[inline(always)]
    fn ishl(self, a: __m512i, bits: u32) -> __m512i {
        // SAFETY: token ⇒ AVX-512F. (A constant `bits` becomes an immediate shift.)
        unsafe { _mm512_sll_epi32(a, _mm_cvtsi32_si128(bits as i32)) }
    }
    #[inline(always)]
    fn bits_to_f32(self, a: __m512i) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_castsi512_ps(a) }
    }
    #[inline(always)]
    fn gather4(self, x: &[u8], stride: usize) -> __m512i {
        let stride = ymm::gather_bounds(x, stride, 16);
        // SAFETY: token ⇒ AVX-512F; `gather_bounds` checked that all 16 four-byte reads at
        // `l · stride` (l < 16) lie inside `x`, and that the offsets fit i32.
        unsafe {
            let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let offsets = _mm512_mullo_epi32(iota, _mm512_set1_epi32(stride));
            _mm512_i32gather_epi32::<1>(offsets, x.as_ptr().cast())
        }
    }
    #[inline(always)]
    fn istore(self, v: __m512i, out: &mut [u8]) {
        let out: &mut [u8; 64] = (&mut out[..64]).try_into().expect("64 bytes");
        // SAFETY: token ⇒ AVX-512F; `out` is exactly 64 bytes.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) }
    }
    #[inline(always)]
    fn half_to_f32(self, v: __m512i) -> __m512 {
        // SAFETY: token ⇒ AVX-512F (vpmovdw truncates each lane to its low 16 bits).
        unsafe { _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)) }
    }
    #[inline(always)]
    fn isub(self, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_sub_epi32(a, b) }
    }
    #[inline(always)]
    fn isum(self, v: __m512i) -> i32 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_reduce_add_epi32(v) }
    }
    #[inline(always)]
    fn to_f32(self, v: __m512i) -> __m512 {
        // SAFETY: token ⇒ AVX-512F.
        unsafe { _mm512_cvtepi32_ps(v) }
    }
    #[inline(always)]
    fn round_to_i32(self, v: __m512) -> __m512i {
        // SAFETY: token ⇒ AVX-512F. Same tie handling as `ymm::round_away`.
        unsafe {
            let t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            let frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
            let ge_half = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5), _CMP_GE_OQ);
            let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
            let away = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_set1_epi32(0x3f80_0000)));
            _mm512_cvttps_epi32(_mm512_mask_add_ps(t, ge_half, t, away))
        }
    }
    #[inline(always)]
    fn round_nearest(self, v: __m512) -> __m512i {
        // SAFETY: token ⇒ AVX-512F. Rounds as MXCSR says: to nearest even (Rust never changes it).
        unsafe { _mm512_cvtps_epi32(v) }
    }
    #[inline(always)]
    fn store_i8(self, v: __m512i, out: &mut [i8]) {
        let out: &mut [i8; 16] = (&mut out[..16]).try_into().expect("16 lanes");
        // SAFETY: token ⇒ AVX-512F; `out` is exactly the 16 bytes written.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(v)) }
    }
    #[inline(always)]
    fn dot_u7(self, acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        if VNNI {
            self.dot_u8(acc, a, b)
        } else {
            // SAFETY: token ⇒ AVX-512BW.
            unsafe { _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), _mm512_set1_epi16(1))) }
        }
    }
    #[inline(always)]
    fn dot_u8(self, acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        if VNNI {
            // SAFETY: token with VNNI ⇒ AVX-512 VNNI (checked by `X512::<true>::detect`).
            unsafe { _mm512_dpbusd_epi32(acc, a, b) }
        } else {
            // SAFETY: token ⇒ AVX-512BW. Exact: even/odd bytes widened to i16, as `ymm::dot_u8`.
            unsafe {
                let a_even = _mm512_and_si512(a, _mm512_set1_epi16(0xff));
                let a_odd = _mm512_srli_epi16(a, 8);
                let b_even = _mm512_srai_epi16(_mm512_slli_epi16(b, 8), 8);
                let b_odd = _mm512_srai_epi16(b, 8);
                let sum = _mm512_add_epi32(_mm512_madd_epi16(a_even, b_even), _mm512_madd_epi16(a_odd, b_odd));
                _mm512_add_epi32(acc, sum)
            }
        }
    }
    #[inline(always)]
    fn dot_i8(self, acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: token ⇒ AVX-512BW. `|a|` (as u8, ≤ 128) and `b` with `a`'s signs.
        let (abs_a, signed_b) = unsafe {
            let negative = _mm512_movepi8_mask(a);
            (_mm512_abs_epi8(a), _mm512_mask_sub_epi8(b, negative, _mm512_setzero_si512(), b))
        };
        self.dot_u7(acc, abs_a, signed_b)
    }
    // AVX-512 keeps its unsigned words and 32-bit nibble sums as they were: with VNNI both are
    // one `vpdpbusd`; without it AVX2's trade likely holds too, but has not been measured on an
    // AVX-512 machine without VNNI, so that level's instructions are left unchanged.
    const DOT_SIGNED_Q8: bool = false;
    // One half per tile already (16 lanes); unpacking would only save the nibble masks.
    const UNPACK_TILES: bool = false;
    #[inline(always)]
    fn nib_dot(self, acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        self.dot_u7(acc, a, b)
    }
    #[inline(always)]
    fn nib_sum(self, acc: __m512i) -> __m512i {
        acc
    }

    #[inline(always)]
    fn load_i8_pairs(self, x: &[u8]) -> __m512i {
        let x: &[u8; 32] = head(x);
        // SAFETY: token ⇒ AVX-512BW; `x` is exactly the 32 bytes read.
        unsafe { _mm512_cvtepi8_epi16(_mm256_loadu_si256(x.as_ptr().cast())) }
    }
    #[inline(always)]
    fn dot_i16(self, acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        if VNNI {
            // SAFETY: token with VNNI ⇒ AVX-512 VNNI (`vpdpwssd`).
            unsafe { _mm512_dpwssd_epi32(acc, a, b) }
        } else {
            // SAFETY: token ⇒ AVX-512BW.
            unsafe { _mm512_add_epi32(acc, _mm512_madd_epi16(a, b)) }
        }
    }
    #[inline(always)]
    fn store_i16(self, v: __m512i, out: &mut [i16]) {
        let out: &mut [i16; 16] = (&mut out[..16]).try_into().expect("16 lanes");
        // SAFETY: token ⇒ AVX-512F; `out` is exactly the 32 bytes written.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(v)) }
    }

    #[inline(always)]
    fn interleave4(self, v: [__m512i; 4]) -> [__m512i; 4] {
        // SAFETY: token ⇒ AVX-512BW. Vector t, 128-bit lane L, dword p: position 16L + 4t + p.
        unsafe {
            let (ab_lo, ab_hi) = (_mm512_unpacklo_epi8(v[0], v[1]), _mm512_unpackhi_epi8(v[0], v[1]));
            let (cd_lo, cd_hi) = (_mm512_unpacklo_epi8(v[2], v[3]), _mm512_unpackhi_epi8(v[2], v[3]));
            [_mm512_unpacklo_epi16(ab_lo, cd_lo), _mm512_unpackhi_epi16(ab_lo, cd_lo), _mm512_unpacklo_epi16(ab_hi, cd_hi), _mm512_unpackhi_epi16(ab_hi, cd_hi)]
        }
    }
    #[inline(always)]
    fn natural4(self, v: [__m512i; 4]) -> [__m512i; 4] {
        // SAFETY: token ⇒ AVX-512F. Positions 16T .. 16T + 16 are lane T of the four vectors
        // (see `interleave4`): a 4 × 4 transpose of 128-bit lanes.
        unsafe {
            let (t0, t1) = (_mm512_shuffle_i32x4(v[0], v[1], 0x44), _mm512_shuffle_i32x4(v[0], v[1], 0xee));
            let (t2, t3) = (_mm512_shuffle_i32x4(v[2], v[3], 0x44), _mm512_shuffle_i32x4(v[2], v[3], 0xee));
            [_mm512_shuffle_i32x4(t0, t2, 0x88), _mm512_shuffle_i32x4(t0, t2, 0xdd), _mm512_shuffle_i32x4(t1, t3, 0x88), _mm512_shuffle_i32x4(t1, t3, 0xdd)]
        }
    }
    #[inline(always)]
    fn nibbles(self, qs: [&[u8; 16]; 2]) -> __m512i {
        // SAFETY: token ⇒ AVX-512F/BW; each `qs[i]` is exactly the 16 bytes loaded.
        unsafe {
            // [qs0, qs0, qs1, qs1] by 128-bit lane, then lanes 1 and 3 shifted to their high nibbles.
            let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs[0].as_ptr().cast()));
            let hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs[1].as_ptr().cast()));
            let both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let shifted = _mm512_srlv_epi64(both, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
            _mm512_and_si512(shifted, _mm512_set1_epi8(0x0f))
        }
    }
    #[inline(always)]
    fn block_scales(self, s: &[f32]) -> __m512 {
        let s: &[f32; 2] = head(s);
        // SAFETY: token ⇒ AVX-512F/DQ.
        unsafe { _mm512_insertf32x8(_mm512_set1_ps(s[0]), _mm256_set1_ps(s[1]), 1) }
    }

    #[inline(always)]
    fn bload(self, x: &[u8; 32]) -> __m256i {
        // SAFETY: token ⇒ AVX2; `x` is 32 bytes.
        unsafe { ymm::load_bytes(x) }
    }
    #[inline(always)]
    fn bnibbles(self, qs: &[u8; 16]) -> __m256i {
        // SAFETY: token ⇒ AVX2; `qs` is 16 bytes.
        unsafe { ymm::nibbles(qs) }
    }
    #[inline(always)]
    fn bsub_bytes(self, a: __m256i, v: i8) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_sub_epi8(a, _mm256_set1_epi8(v)) }
    }
    #[inline(always)]
    fn bdot_u7(self, a: __m256i, b: __m256i) -> __m256i {
        if VNNI {
            // SAFETY: token with VNNI ⇒ AVX-512 VNNI + VL.
            unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b) }
        } else {
            // SAFETY: token ⇒ AVX2.
            unsafe { ymm::dot_u7(_mm256_setzero_si256(), a, b) }
        }
    }
    #[inline(always)]
    fn bdot_i8(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2. `abs(a)` ≤ 128 (as u8) fits the unsigned operand.
        let (abs_a, signed_b) = unsafe { (_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)) };
        self.bdot_u7(abs_a, signed_b)
    }
    #[inline(always)]
    fn btof(self, v: __m256i) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_cvtepi32_ps(v) }
    }
    #[inline(always)]
    fn gzero(self) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn gmul_add(self, a: __m256, s: f32, acc: __m256) -> __m256 {
        // SAFETY: token ⇒ FMA.
        unsafe { _mm256_fmadd_ps(a, _mm256_set1_ps(s), acc) }
    }
    #[inline(always)]
    fn gsum(self, v: __m256) -> f32 {
        // SAFETY: token ⇒ AVX2.
        unsafe { ymm::sum(v) }
    }
    #[inline(always)]
    fn prefetch(self, x: &[u8], at: usize) {
        prefetch_l2(x, at)
    }
    #[inline(always)]
    fn f16_to_f32(self, h: [u8; 2]) -> f32 {
        // SAFETY: token ⇒ F16C.
        unsafe { ymm::f16_to_f32(h) }
    }
}
