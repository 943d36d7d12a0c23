//! x86-64 levels: AVX2 (+FMA, F16C) and AVX-512 (F/BW/VL/DQ), the latter with or without VNNI.
//!
//! Safety model: every method of these tokens executes instructions of its level. A token is
//! only created by `new_unchecked`, whose contract is that the CPU supports the level; the
//! kernel table for a level is built only after `detect()` returned true for it (see
//! `backend::cpu::Isa::available`). So each unsafe block below relies on that one invariant,
//! "a token exists ⇒ its features exist", plus explicit bounds: every pointer comes from a slice
//! that `head()` has already bounds-checked to the exact size read or written.

mod avx2;
mod avx512;

use core::arch::x86_64::*;

/// AVX2 + FMA + F16C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

/// AVX-512 F/BW/VL/DQ (+ the AVX2 set); `VNNI` adds `vpdpbusd`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct X512<const VNNI: bool>(());
pub(crate) type Avx512 = X512<false>;
pub(crate) type Avx512Vnni = X512<true>;

impl Avx2 {
    pub(crate) fn detect() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C ([`Avx2::detect`]).
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx2(())
    }
}

impl<const VNNI: bool> X512<VNNI> {
    pub(crate) fn detect() -> bool {
        Avx2::detect()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && (!VNNI || is_x86_feature_detected!("avx512vnni"))
    }
    /// # Safety
    /// The CPU must support this level ([`X512::detect`]).
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        X512(())
    }
}

/// The prefetch of both levels: the line holding `x[at]` into L2 (`prefetcht2`), not L1. The
/// decode attention loops, its only callers, prefetch each KV stream 4–8 KiB ahead; into L1
/// (`prefetcht0`) those requests hold L1 miss buffers for the whole trip to DRAM, and once
/// they run out the core stalls instead of computing — a core's transfer then adds to its
/// compute instead of overlapping it. Into L2 they wait in L2's larger miss queue, and L1's own
/// prefetcher brings each line the short way when the loop nears it. Measured on the AMD EPYC
/// (Zen 4) VM, KV from memory, ctx 4096, 2 threads, in-process paired rounds (12–16), median
/// time ratio T2 ÷ T0, two runs each (SmolLM2 geometry / Llama-8B's): int8 ×0.88, ×0.87 /
/// ×0.68, ×0.69; f16 ×1.01 (already at ~96% of the probe), ×0.89 / ×0.74, ×0.76; f32 ×0.82,
/// ×0.93 / ×0.68; SmolLM2's KV in cache unchanged. (Twice the distance with T2: ×0.82 / ×0.70
/// int8, no better elsewhere; four and eight times: worse.)
#[inline(always)]
fn prefetch_l2(x: &[u8], at: usize) {
    // A prefetch never faults or reads architecturally, so any address will do
    // (`wrapping_add` keeps the pointer arithmetic itself defined).
    // SAFETY: SSE is part of x86-64's baseline (this module is x86-64 only); see above.
    unsafe { _mm_prefetch::<_MM_HINT_T2>(x.as_ptr().wrapping_add(at).cast()) }
}

// ---- 256-bit words shared by both levels (callers hold an AVX2-or-better token) ----

/// Every function here is `unsafe` with one precondition: the CPU supports AVX2 + FMA + F16C.
/// Their bodies are sequences of intrinsics under that same precondition, so the lint asking for
/// a separate unsafe block around each intrinsic is relaxed for this module only.
mod ymm {
    #![allow(unsafe_op_in_unsafe_fn)]
    use super::*;

    #[inline(always)]
    pub unsafe fn sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }
    #[inline(always)]
    pub unsafe fn reduce_max(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)))
    }
    #[inline(always)]
    pub unsafe fn load_bytes(x: &[u8; 32]) -> __m256i {
        _mm256_loadu_si256(x.as_ptr().cast())
    }
    #[inline(always)]
    pub unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
        let v = _mm_loadu_si128(qs.as_ptr().cast());
        let m = _mm_set1_epi8(0x0f);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m))
    }
    /// `acc + Σ₄ a·b` with `pmaddubsw` (exact while `a ≤ 127`).
    #[inline(always)]
    pub unsafe fn dot_u7(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)))
    }
    /// `acc + Σ₄ a·b`, exact for any unsigned `a`: even and odd bytes widened to i16.
    #[inline(always)]
    pub unsafe fn dot_u8(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        let a_even = _mm256_and_si256(a, _mm256_set1_epi16(0xff));
        let a_odd = _mm256_srli_epi16(a, 8);
        let b_even = _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8);
        let b_odd = _mm256_srai_epi16(b, 8);
        let even = _mm256_madd_epi16(a_even, b_even);
        _mm256_add_epi32(acc, _mm256_add_epi32(even, _mm256_madd_epi16(a_odd, b_odd)))
    }
    /// `roundf` per lane: truncate, then step away from zero where the dropped part is ≥ ½
    /// (`v - trunc(v)` is exact, so ties are detected exactly).
    #[inline(always)]
    pub unsafe fn round_away(v: __m256) -> __m256i {
        let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(v, t));
        let away = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0));
        let step = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ), away);
        _mm256_cvttps_epi32(_mm256_add_ps(t, step))
    }
    #[inline(always)]
    pub unsafe fn f16_to_f32(h: [u8; 2]) -> f32 {
        // `set1`, not `cvtsi32_si128`: the latter may become an insert into a live register,
        // chaining every conversion to whatever last wrote it (seen: the FMA accumulator).
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(h))))
    }
    /// Checks that `x` holds `lanes` u32 at `stride` and that the offsets fit i32.
    #[inline(always)]
    pub fn gather_bounds(x: &[u8], stride: usize, lanes: usize) -> i32 {
        assert!((lanes - 1) * stride + 4 <= x.len() && stride <= (i32::MAX as usize) / lanes);
        stride as i32
    }
    #[inline(always)]
    pub unsafe fn splat4(x: &[i8]) -> i32 {
        i32::from_le_bytes([x[0] as u8, x[1] as u8, x[2] as u8, x[3] as u8])
    }
}
