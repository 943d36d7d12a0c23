//! Every vocabulary word and the quantize entry point, on every level this CPU supports, against
//! the scalar words and the reference quantizer: integer results bit-exact.

use super::simd::{Simd, scalar::Scalar};
use super::{Isa, Kernels};
use crate::quant::{BlockQ8_0, QK, QuantBlock};
use proptest::prelude::*;

/// Lanes of an integer vector, read through the exact i32 → f32 conversion (|v| < 2²⁴ here).
fn lanes<S: Simd>(s: S, v: S::I) -> Vec<i64> {
    let mut out = [0f32; 16];
    s.store(s.to_f32(v), &mut out);
    out[..S::LANES].iter().map(|&x| x as i64).collect()
}

/// The total of a block's 8 partial sums (exact in f32: |total| ≤ 32·128·127 < 2²⁴). Kernels
/// only ever consume block dot products scaled as a whole, so the total is what must be exact.
fn block_total<S: Simd>(s: S, v: S::B) -> Vec<i64> {
    vec![s.gsum(s.btof(v)) as i64]
}

fn scalar_dot(a: &[u8], b: &[i8]) -> Vec<i64> {
    a.chunks_exact(4).zip(b.chunks_exact(4)).map(|(a, b)| (0..4).map(|i| a[i] as i64 * b[i] as i64).sum()).collect()
}

fn check_words<S: Simd>(s: S, a: &[u8; 64], b: &[i8; 64]) {
    let n = 4 * S::LANES;
    let (a, b) = (&a[..n], &b[..n]);
    let b_u8: &[u8] = bytemuck::cast_slice(b);
    let a7: Vec<u8> = a.iter().map(|&v| v.min(128)).collect();
    let acc = s.isplat(-5);
    let want_u8: Vec<i64> = scalar_dot(a, b).iter().map(|v| v - 5).collect();
    let want_u7: Vec<i64> = scalar_dot(&a7, b).iter().map(|v| v - 5).collect();
    assert_eq!(lanes(s, s.dot_u8(acc, s.iload(a), s.iload(b_u8))), want_u8, "dot_u8");
    assert_eq!(lanes(s, s.dot_u7(acc, s.iload(&a7), s.iload(b_u8))), want_u7, "dot_u7");
    let a_i8: &[i8] = bytemuck::cast_slice(a);
    let want_i8: Vec<i64> = a_i8.chunks_exact(4).zip(b.chunks_exact(4)).map(|(a, b)| (0..4).map(|i| a[i] as i64 * b[i] as i64).sum::<i64>() - 5).collect();
    assert_eq!(lanes(s, s.dot_i8(acc, s.iload(a), s.iload(b_u8))), want_i8, "dot_i8");

    // Nibble running sums: 1 and the contract's 8 calls, on these bytes and at the extremes
    // (every product 15 · ±127, where a 16-bit running form is closest to overflowing).
    let nibs: Vec<u8> = a.iter().map(|&v| v & 0x0f).collect();
    let extremes: [(Vec<u8>, Vec<u8>); 3] = [(nibs.clone(), b_u8.to_vec()), (vec![15; n], vec![127; n]), (vec![15; n], vec![(-127i8) as u8; n])];
    for (x, y) in &extremes {
        let y_i8: &[i8] = bytemuck::cast_slice(y);
        for calls in [1i64, 8] {
            let mut run = s.izero();
            for _ in 0..calls {
                run = s.nib_dot(run, s.iload(x), s.iload(y));
            }
            let want: Vec<i64> = scalar_dot(x, y_i8).iter().map(|v| calls * v).collect();
            assert_eq!(lanes(s, s.nib_sum(run)), want, "nib_dot × {calls}, nib_sum");
        }
    }

    // 16-bit pair words: `a`'s bytes widened in pairs, against `b`'s bytes read as i16 pairs.
    let pairs = s.load_i8_pairs(a);
    let b16: Vec<i64> = b_u8.chunks_exact(2).map(|x| i16::from_le_bytes([x[0], x[1]]) as i64).collect();
    let want_i16: Vec<i64> = (0..S::LANES).map(|l| (0..2).map(|h| a[2 * l + h] as i8 as i64 * b16[2 * l + h]).sum::<i64>() - 5).collect();
    assert_eq!(lanes(s, s.dot_i16(acc, pairs, s.iload(b_u8))), want_i16, "load_i8_pairs, dot_i16");
    let hundreds = s.dot_i16(s.izero(), pairs, s.isplat(100 | 100 << 16));
    let mut stored = [0i16; 16];
    s.store_i16(hundreds, &mut stored);
    let want_sum: Vec<i16> = (0..S::LANES).map(|l| 100 * (a[2 * l] as i8 as i16 + a[2 * l + 1] as i8 as i16)).collect();
    assert_eq!(&stored[..S::LANES], &want_sum[..], "store_i16");

    // Four rows side by side: a dot product on `interleave4`'s lanes, put back in position
    // order by `natural4`, is position j's 4-byte dot product of the rows' bytes.
    let rows: [Vec<u8>; 4] = std::array::from_fn(|r| (0..n).map(|j| a[(j * 7 + 13 * r) % n] & 0x0f).collect());
    let coef: [i8; 4] = [b[0], b[1].max(-127), -127, 127];
    let inter = s.interleave4(std::array::from_fn(|r| s.iload(&rows[r])));
    let dots = s.natural4(inter.map(|v| s.nib_sum(s.nib_dot(s.izero(), v, s.isplat4(&coef)))));
    for (t, d) in dots.iter().enumerate() {
        let want: Vec<i64> = (0..S::LANES).map(|l| (0..4).map(|r| rows[r][t * S::LANES + l] as i64 * coef[r] as i64).sum()).collect();
        assert_eq!(lanes(s, *d), want, "interleave4, natural4: vector {t}");
    }

    // round_nearest: within half a step, ties either way.
    let x: Vec<f32> = (0..16).map(|l| a[l] as i8 as f32 * 0.37 + b[l] as f32 * 1000.5).collect();
    let rounded = lanes(s, s.round_nearest(s.load(&x)));
    for (r, x) in rounded.iter().zip(&x) {
        assert!((*r as f64 - *x as f64).abs() <= 0.5, "round_nearest({x}) = {r}");
    }

    // prefetch is a hint at any offset: inside, far past the end, of an empty slice.
    for at in [0, n - 1, n, 1 << 40, usize::MAX] {
        s.prefetch(a, at);
        s.prefetch(&[], at);
    }

    // Block words: one 32-byte block.
    let a32: &[u8; 32] = a7[..32].try_into().unwrap();
    let b32: &[u8; 32] = b_u8[..32].try_into().unwrap();
    let total = |x: &[u8], y: &[i8]| scalar_dot(x, y).iter().sum::<i64>();
    assert_eq!(block_total(s, s.bdot_u7(s.bload(a32), s.bload(b32))), vec![total(a32, &b[..32])], "bdot_u7");
    let a_signed: &[i8] = bytemuck::cast_slice(&a[..32]);
    let signed_total: i64 = a_signed.iter().zip(&b[..32]).map(|(&x, &y)| x as i64 * y as i64).sum();
    assert_eq!(block_total(s, s.bdot_i8(s.bload(a[..32].try_into().unwrap()), s.bload(b32))), vec![signed_total], "bdot_i8");
    let qs: &[u8; 16] = a[..16].try_into().unwrap();
    let nib = crate::quant::q4_values(qs);
    assert_eq!(block_total(s, s.bdot_u7(s.bnibbles(qs), s.bload(b32))), vec![total(&nib, &b[..32])], "bnibbles");
    let minus8: Vec<i64> = nib.iter().zip(&b[..32]).map(|(&q, &y)| (q as i64 - 8) * y as i64).collect();
    let q4_0 = s.bsub_bytes(s.bnibbles(qs), 8);
    assert_eq!(block_total(s, s.bdot_i8(q4_0, s.bload(b32))), vec![minus8.iter().sum::<i64>()], "bsub_bytes");
}

/// Runs `check_words` with the token of every level the tests may use (`Isa::allowed`).
fn for_each_token(a: &[u8; 64], b: &[i8; 64]) {
    let allowed = Isa::allowed().expect("SPARQ_MAX_ISA names a level");
    check_words(Scalar, a, b);
    if allowed.contains(&Isa::Portable) {
        check_words(super::simd::portable::Portable, a, b);
    }
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::x86::{Avx2, Avx512, Avx512Vnni};
        // `Isa::allowed` lists only supported levels: each token's level was detected.
        if allowed.contains(&Isa::Avx2) {
            // SAFETY: see above.
            check_words(unsafe { Avx2::new_unchecked() }, a, b);
        }
        if allowed.contains(&Isa::Avx512) {
            // SAFETY: see above.
            check_words(unsafe { Avx512::new_unchecked() }, a, b);
        }
        if allowed.contains(&Isa::Avx512Vnni) {
            // SAFETY: see above.
            check_words(unsafe { Avx512Vnni::new_unchecked() }, a, b);
        }
    }
}

fn quantize_with(isa: Isa, x: &[f32]) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let kernels = Kernels::for_isa(isa).expect("available level");
    let nb = x.len() / QK;
    let (mut qs, mut d, mut sums, mut dsums) = (vec![0i8; x.len()], vec![0f32; nb], vec![0i32; nb], vec![0f32; nb]);
    // SAFETY: `kernels` is for a supported level; lengths are k, k/32, k/32, k/32.
    unsafe { (kernels.quantize_row)(x, &mut qs, &mut d, &mut sums, &mut dsums) };
    for b in 0..nb {
        assert_eq!(dsums[b].to_bits(), (d[b] * sums[b] as f32).to_bits());
    }
    (qs, d, sums)
}

fn activations() -> impl Strategy<Value = Vec<f32>> {
    (1usize..8, -20i32..20, any::<bool>()).prop_flat_map(|(blocks, exp, ints)| {
        prop::collection::vec(-1000f32..1000f32, blocks * QK).prop_map(move |v| {
            // Integer-valued inputs hit exact rounding ties after scaling by 1/d.
            if ints { v.into_iter().map(|x| x.round() / 2.0).collect() } else { v.into_iter().map(|x| x * 2f32.powi(exp)).collect() }
        })
    })
}

proptest! {
    #[test]
    fn integer_words_are_exact_on_every_level(a in prop::array::uniform32(any::<u8>()), a2 in prop::array::uniform32(any::<u8>()),
                                              b in prop::array::uniform32(-127i8..=127), b2 in prop::array::uniform32(-127i8..=127)) {
        let a: [u8; 64] = std::array::from_fn(|i| if i < 32 { a[i] } else { a2[i - 32] });
        let b: [i8; 64] = std::array::from_fn(|i| if i < 32 { b[i] } else { b2[i - 32] });
        for_each_token(&a, &b);
    }

    #[test]
    fn quantize_row_is_bit_exact_with_reference_on_every_level(x in activations()) {
        for isa in Isa::allowed().expect("SPARQ_MAX_ISA names a level") {
            let (qs, d, sums) = quantize_with(isa, &x);
            for (b, chunk) in x.chunks_exact(QK).enumerate() {
                let want = BlockQ8_0::quantize_ref(chunk.try_into().unwrap());
                prop_assert_eq!(&qs[b * QK..(b + 1) * QK], &want.qs[..], "{} block {}", isa, b);
                prop_assert_eq!(d[b].to_bits(), crate::quant::float::f16_le(want.d).to_bits(), "{} scale", isa);
                prop_assert_eq!(sums[b], want.qs.iter().map(|&q| q as i32).sum::<i32>(), "{} sum", isa);
            }
        }
    }
}

#[test]
fn levels_are_ordered_and_choice_respects_caps() {
    let avail = Isa::available();
    assert!(avail.contains(&Isa::Scalar) && avail.contains(&Isa::Portable));
    assert_eq!(Isa::choose(Some(Isa::Scalar), None).unwrap(), Isa::Scalar);
    assert_eq!(Isa::choose(None, None).unwrap(), Isa::best());
    assert!(Isa::choose(Some(Isa::Scalar), Some(Isa::Portable)).is_err());
    assert_eq!(Isa::up_to(Some(Isa::Scalar)), vec![Isa::Scalar]);
    assert_eq!(Isa::up_to(None), avail);
    // Under this process's environment the levels the tests run top out at the selected one:
    // `SPARQ_MAX_ISA=scalar cargo test` (CI's second pass) runs the scalar level alone.
    assert_eq!(Isa::allowed().unwrap().into_iter().max(), Some(Isa::selected().unwrap()));
    for isa in Isa::ALL {
        assert_eq!(Kernels::for_isa(isa).map(|k| k.isa), isa.is_supported().then_some(isa));
        assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
    }
    assert!("avx9000".parse::<Isa>().is_err());
}

/// The vectorized `exp` (attention, SiLU): within 3 ulp (relative 3·2⁻²³) of the f64 value on
/// `[-87, 88]`, on every level (the attention error bound counts on it).
fn check_exp<S: Simd>(s: S) {
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * (i as f32 / 200_000.0);
        let mut out = [0f32; 16];
        s.store(super::kernels::math::exp(s, s.splat(x)), &mut out);
        let want = (x as f64).exp();
        worst = worst.max(((out[0] as f64 - want) / want).abs());
    }
    assert!(worst <= 3.0 * f32::EPSILON as f64, "exp relative error {worst:e}");
}

#[test]
fn exp_is_accurate_on_every_level() {
    check_exp(Scalar);
    check_exp(super::simd::portable::Portable);
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::x86::{Avx2, Avx512};
        // SAFETY (each): the token is created only after its level was detected.
        if Avx2::detect() {
            check_exp(unsafe { Avx2::new_unchecked() });
        }
        if Avx512::detect() {
            // SAFETY: as above.
            check_exp(unsafe { Avx512::new_unchecked() });
        }
    }
}

/// The matmul table, per level: every weight format has a row kernel from m = 1 and a panel
/// kernel (one vector wide) from `PANEL_MIN_M`; every format with a tiled layout has a tile
/// kernel from m = 1, and every format with an input-major layout an activation-sparse kernel
/// from m = 1; each reads the activation form its family says; no (format, layout, min_m) is
/// listed twice, so the choice is unambiguous.
#[test]
fn matmul_table_covers_every_format_and_layout_once() {
    use super::ActsForm;
    use crate::DType;
    use crate::matmul::{Layout, PANEL_MIN_M, tiled};
    use crate::sparse::can_input_major;
    for isa in Isa::available() {
        let k = Kernels::for_isa(isa).unwrap();
        let lanes = if isa >= Isa::Avx512 { 16 } else { 8 };
        for (i, a) in k.matmul.iter().enumerate() {
            for b in &k.matmul[i + 1..] {
                assert!((a.format, a.layout, a.min_m) != (b.format, b.layout, b.min_m), "{isa}: {} {} from m = {} twice", a.format, a.layout, a.min_m);
            }
        }
        for format in DType::WEIGHTS {
            for m in 1..PANEL_MIN_M + 2 {
                let e = k.matmul(format, Layout::Rows, m).unwrap_or_else(|| panic!("{isa}: no {format} rows kernel at m = {m}"));
                let quantized = format.is_block_quantized();
                let want = match (m >= PANEL_MIN_M, quantized) {
                    (_, false) => (if m >= PANEL_MIN_M { PANEL_MIN_M } else { 1 }, if m >= PANEL_MIN_M { lanes } else { 1 }, ActsForm::Float),
                    (true, true) => (PANEL_MIN_M, lanes, ActsForm::QuantizedBlockMajor),
                    (false, true) => (1, 1, ActsForm::Quantized),
                };
                assert_eq!((e.min_m, e.cols_unit, e.acts), want, "{isa} {format} rows m = {m}");
                let tiles = k.matmul(format, Layout::Tiled, m);
                assert_eq!(tiles.is_some(), tiled::can_tile(format), "{isa} {format} tiled m = {m}");
                assert!(tiles.is_none_or(|e| e.cols_unit == tiled::TILE && e.acts == ActsForm::QuantizedBlockMajor));
                let sparse = k.matmul(format, Layout::InputMajor, m);
                assert_eq!(sparse.is_some(), can_input_major(format), "{isa} {format} input-major m = {m}");
                assert!(sparse.is_none_or(|e| e.cols_unit == crate::sparse::OUTPUT_ALIGN && e.acts == ActsForm::Active));
            }
            assert!(k.matmul(format, Layout::Rows, 0).is_none(), "m = 0 never reaches a kernel");
        }
    }
}
