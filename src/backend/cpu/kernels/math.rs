//! Element-wise math over the SIMD vocabulary: `exp` (attention's softmax) and SiLU-gating
//! (SwiGLU's epilogue).

use crate::backend::cpu::simd::Simd;

/// Smallest argument [`exp`] takes: `e^-87 ≈ 1.6e-38` is still a normal f32.
const EXP_MIN: f32 = -87.0;
/// Largest: `e^88 ≈ 1.65e38` is still finite, and `2¹²⁷` is the largest power the exponent
/// construction below can form.
const EXP_MAX: f32 = 88.0;

/// `e^x`, as `2ⁿ · p(r)` with `x = n·ln2 + r`, `|r| ≤ ln2/2` and `p` the degree-6 Taylor
/// polynomial (truncation `< r⁷/5040 < 2⁻²⁴`): within 3 ulp of `e^x` on `[-87, 88]` (tested
/// against f64 on every level). Arguments outside are clamped to it; softmax callers zero
/// masked lanes themselves.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::F) -> S::F {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = s.min(s.max(x, s.splat(EXP_MIN)), s.splat(EXP_MAX));
    let n = s.round_nearest(s.mul(x, s.splat(std::f32::consts::LOG2_E)));
    let nf = s.to_f32(n);
    let r = s.mul_add(nf, s.splat(-LN2_HI), x);
    let r = s.mul_add(nf, s.splat(-LN2_LO), r);
    let mut p = s.splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = s.mul_add(p, r, s.splat(c));
    }
    s.mul(p, s.bits_to_f32(s.ishl(s.iadd(n, s.isplat(127)), 23)))
}

/// `gate[i] = gate[i] · up[i] / (1 + e^−gate[i])` — `silu(gate) · up` — for equal-length
/// slices. Every element takes the same vector arithmetic (the tail through a padded copy), so
/// a value's result does not depend on where it sits: the fused SwiGLU pass, which gates each
/// task's columns, equals gating the whole products afterwards bit for bit. Relative error
/// ≤ 6 ulp: exp's 3, then the add, multiply and division one each.
#[inline(always)]
pub(crate) fn silu_mul<S: Simd>(s: S, gate: &mut [f32], up: &[f32]) {
    let lanes = S::LANES;
    let full = gate.len() / lanes * lanes;
    for (g, u) in gate[..full].chunks_exact_mut(lanes).zip(up[..full].chunks_exact(lanes)) {
        s.store(silu_times(s, s.load(g), s.load(u)), g);
    }
    let tail = gate.len() - full;
    if tail > 0 {
        // One vector's worth (LANES ≤ 16 on every level), zero-padded: silu(0) · 0 = 0.
        let (mut g, mut u) = ([0f32; 16], [0f32; 16]);
        g[..tail].copy_from_slice(&gate[full..]);
        u[..tail].copy_from_slice(&up[full..]);
        s.store(silu_times(s, s.load(&g), s.load(&u)), &mut g);
        gate[full..].copy_from_slice(&g[..tail]);
    }
}

/// `g · u / (1 + e^−g)`. A function, not a closure: closures are not always inlined into the
/// `#[target_feature]` entry point, and then each intrinsic became a call (SwiGLU ran 3× slower).
#[inline(always)]
fn silu_times<S: Simd>(s: S, g: S::F, u: S::F) -> S::F {
    s.div(s.mul(g, u), s.add(s.splat(1.0), exp(s, s.mul(g, s.splat(-1.0)))))
}
