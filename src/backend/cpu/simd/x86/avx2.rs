//! The AVX2 (+FMA, F16C) level's SIMD vocabulary: 8 f32 lanes, 256-bit words.

use super::{Avx2, prefetch_l2, ymm};
use crate::backend::cpu::simd::{Simd, head};
use core::arch::x86_64::*;

impl Simd for Avx2 {
    const LANES: usize = 8;
    type F = __m256;
    type I = __m256i;
    type B = __m256i;
    type G = __m256;

    #[inline(always)]
    fn zero(self) -> __m256 {
        // SAFETY: token ⇒ AVX2 (module docs).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, v: f32) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> __m256 {
        let x: &[f32; 8] = head(x);
        // SAFETY: token ⇒ AVX2; `x` is exactly 8 f32.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }
    #[inline(always)]
    fn load_f32le(self, x: &[u8]) -> __m256 {
        let x: &[u8; 32] = head(x);
        // SAFETY: token ⇒ AVX2; `x` is exactly 32 bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(x.as_ptr().cast()) }
    }
    #[inline(always)]
    fn load_f16(self, x: &[u8]) -> __m256 {
        let x: &[u8; 16] = head(x);
        // SAFETY: token ⇒ F16C; `x` is exactly 16 bytes.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().cast())) }
    }
    #[inline(always)]
    fn load_bf16(self, x: &[u8]) -> __m256 {
        let x: &[u8; 16] = head(x);
        // SAFETY: token ⇒ AVX2; `x` is exactly 16 bytes.
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(x.as_ptr().cast())), 16)) }
    }
    #[inline(always)]
    fn store(self, v: __m256, out: &mut [f32]) {
        let out: &mut [f32; 8] = (&mut out[..8]).try_into().expect("8 lanes");
        // SAFETY: token ⇒ AVX2; `out` is exactly 8 f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: token ⇒ FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn sum(self, v: __m256) -> f32 {
        // SAFETY: token ⇒ AVX2.
        unsafe { ymm::sum(v) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256) -> f32 {
        // SAFETY: token ⇒ AVX2.
        unsafe { ymm::reduce_max(v) }
    }

    #[inline(always)]
    fn izero(self) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    fn isplat(self, v: i32) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_set1_epi32(v) }
    }
    #[inline(always)]
    fn iload(self, x: &[u8]) -> __m256i {
        // SAFETY: token ⇒ AVX2; `head` checked 32 bytes.
        unsafe { ymm::load_bytes(head(x)) }
    }
    #[inline(always)]
    fn isplat4(self, x: &[i8]) -> __m256i {
        // SAFETY: token ⇒ AVX2; `splat4` indexes (bounds-checked) 4 bytes.
        unsafe { _mm256_set1_epi32(ymm::splat4(x)) }
    }
    #[inline(always)]
    fn iadd(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    fn iand(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_and_si256(a, b) }
    }
    #[inline(always)]
    fn ixor(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_xor_si256(a, b) }
    }
    #[inline(always)]
    fn ishr(self, a: __m256i, bits: u32) -> __m256i {
        // SAFETY: token ⇒ AVX2. (A constant `bits` becomes an immediate shift.)
        unsafe { _mm256_srl_epi32(a, _mm_cvtsi32_si128(bits as i32)) }
    }
    #[inline(always)]
    fn ishl(self, a: __m256i, bits: u32) -> __m256i {
        // SAFETY: token ⇒ AVX2. (A constant `bits` becomes an immediate shift.)
        unsafe { _mm256_sll_epi32(a, _mm_cvtsi32_si128(bits as i32)) }
    }
    #[inline(always)]
    fn bits_to_f32(self, a: __m256i) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_castsi256_ps(a) }
    }
    #[inline(always)]
    fn gather4(self, x: &[u8], stride: usize) -> __m256i {
        let stride = ymm::gather_bounds(x, stride, 8);
        // SAFETY: token ⇒ AVX2; `gather_bounds` checked that all 8 four-byte reads at
        // `l · stride` (l < 8) lie inside `x`, and that the offsets fit i32.
        unsafe {
            let offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
            _mm256_i32gather_epi32::<1>(x.as_ptr().cast(), offsets)
        }
    }
    #[inline(always)]
    fn istore(self, v: __m256i, out: &mut [u8]) {
        let out: &mut [u8; 32] = (&mut out[..32]).try_into().expect("32 bytes");
        // SAFETY: token ⇒ AVX2; `out` is exactly 32 bytes.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
    }
    #[inline(always)]
    fn half_to_f32(self, v: __m256i) -> __m256 {
        // SAFETY: token ⇒ AVX2 + F16C. Low halves kept, packed (unsigned, no saturation after
        // the mask) to 8 × u16, then converted.
        unsafe {
            let lo = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
            _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1)))
        }
    }
    #[inline(always)]
    fn isub(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_sub_epi32(a, b) }
    }
    #[inline(always)]
    fn isum(self, v: __m256i) -> i32 {
        // SAFETY: token ⇒ AVX2.
        unsafe {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01)))
        }
    }
    #[inline(always)]
    fn to_f32(self, v: __m256i) -> __m256 {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_cvtepi32_ps(v) }
    }
    #[inline(always)]
    fn round_to_i32(self, v: __m256) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { ymm::round_away(v) }
    }
    #[inline(always)]
    fn round_nearest(self, v: __m256) -> __m256i {
        // SAFETY: token ⇒ AVX. Rounds as MXCSR says: to nearest even (Rust never changes it).
        unsafe { _mm256_cvtps_epi32(v) }
    }
    #[inline(always)]
    fn store_i8(self, v: __m256i, out: &mut [i8]) {
        let out: &mut [i8; 8] = (&mut out[..8]).try_into().expect("8 lanes");
        // SAFETY: token ⇒ AVX2; `out` is exactly the 8 bytes `storel_epi64` writes.
        unsafe {
            let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64(out.as_mut_ptr().cast(), _mm_packs_epi16(w, w));
        }
    }
    #[inline(always)]
    fn dot_u7(self, acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { ymm::dot_u7(acc, a, b) }
    }
    #[inline(always)]
    fn dot_u8(self, acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { ymm::dot_u8(acc, a, b) }
    }
    #[inline(always)]
    fn dot_i8(self, acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2. `|a|` ≤ 128 (as u8) fits `dot_u7`'s unsigned operand, and `b`
        // with `a`'s signs stays in `-127..=127`.
        unsafe { ymm::dot_u7(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)) }
    }
    const DOT_SIGNED_Q8: bool = true;
    const UNPACK_TILES: bool = true;
    #[inline(always)]
    fn nib_dot(self, acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2. Pair sums ≤ 2·15·127; the 16-bit running sum is exact for the
        // 8 calls the contract allows (trait docs).
        unsafe { _mm256_add_epi16(acc, _mm256_maddubs_epi16(a, b)) }
    }
    #[inline(always)]
    fn nib_sum(self, acc: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_madd_epi16(acc, _mm256_set1_epi16(1)) }
    }
    #[inline(always)]
    fn load_i8_pairs(self, x: &[u8]) -> __m256i {
        let x: &[u8; 16] = head(x);
        // SAFETY: token ⇒ AVX2; `x` is exactly the 16 bytes read.
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(x.as_ptr().cast())) }
    }
    #[inline(always)]
    fn dot_i16(self, acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2.
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) }
    }
    #[inline(always)]
    fn store_i16(self, v: __m256i, out: &mut [i16]) {
        let out: &mut [i16; 8] = (&mut out[..8]).try_into().expect("8 lanes");
        // SAFETY: token ⇒ AVX2; `out` is exactly the 16 bytes written.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))) }
    }

    #[inline(always)]
    fn interleave4(self, v: [__m256i; 4]) -> [__m256i; 4] {
        // SAFETY: token ⇒ AVX2. Vector t, 128-bit lane L, dword p: position 16L + 4t + p.
        unsafe {
            let (ab_lo, ab_hi) = (_mm256_unpacklo_epi8(v[0], v[1]), _mm256_unpackhi_epi8(v[0], v[1]));
            let (cd_lo, cd_hi) = (_mm256_unpacklo_epi8(v[2], v[3]), _mm256_unpackhi_epi8(v[2], v[3]));
            [_mm256_unpacklo_epi16(ab_lo, cd_lo), _mm256_unpackhi_epi16(ab_lo, cd_lo), _mm256_unpacklo_epi16(ab_hi, cd_hi), _mm256_unpackhi_epi16(ab_hi, cd_hi)]
        }
    }
    #[inline(always)]
    fn natural4(self, v: [__m256i; 4]) -> [__m256i; 4] {
        // SAFETY: token ⇒ AVX2. Positions 8T .. 8T + 8 are lane T / 2 of vectors T % 2 · 2 and
        // T % 2 · 2 + 1 (see `interleave4`).
        unsafe {
            [
                _mm256_permute2x128_si256(v[0], v[1], 0x20),
                _mm256_permute2x128_si256(v[2], v[3], 0x20),
                _mm256_permute2x128_si256(v[0], v[1], 0x31),
                _mm256_permute2x128_si256(v[2], v[3], 0x31),
            ]
        }
    }
    #[inline(always)]
    fn nibbles(self, qs: [&[u8; 16]; 2]) -> __m256i {
        self.bnibbles(qs[0])
    }
    #[inline(always)]
    fn block_scales(self, s: &[f32]) -> __m256 {
        self.splat(s[0])
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
        // SAFETY: token ⇒ AVX2.
        unsafe { ymm::dot_u7(_mm256_setzero_si256(), a, b) }
    }
    #[inline(always)]
    fn bdot_i8(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: token ⇒ AVX2. `abs(a)` ≤ 128 (as u8) fits `dot_u7`'s unsigned operand.
        unsafe { ymm::dot_u7(_mm256_setzero_si256(), _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)) }
    }
    #[inline(always)]
    fn btof(self, v: __m256i) -> __m256 {
        self.to_f32(v)
    }
    #[inline(always)]
    fn gzero(self) -> __m256 {
        self.zero()
    }
    #[inline(always)]
    fn gmul_add(self, a: __m256, s: f32, acc: __m256) -> __m256 {
        self.mul_add(a, self.splat(s), acc)
    }
    #[inline(always)]
    fn gsum(self, v: __m256) -> f32 {
        self.sum(v)
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
