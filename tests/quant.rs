//! Formats are bit-exact with an independent implementation: the `gguf` Python package's
//! quantizers (fixtures from scripts/gen_quant_fixtures.py), and round-trip properties.

use proptest::prelude::*;
use sparq::quant::{self, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK, QuantBlock};
use sparq::{DType, Error};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    (a.len() != b.len()).then_some(a.len().min(b.len())).or_else(|| a.iter().zip(b).position(|(x, y)| x != y))
}

#[test]
fn quantize_matches_gguf_py_bit_for_bit() {
    let x = f32s(&fixture("input.f32"));
    assert_eq!(x.len(), 2400);
    for dtype in DType::ALL.into_iter().filter(|d| *d != DType::F32) {
        let ours = quant::quantize(dtype, &x).unwrap();
        let theirs = fixture(&format!("{dtype}.bin"));
        if let Some(i) = first_difference(&ours, &theirs) {
            let block = dtype.info().block_bytes;
            panic!(
                "{dtype}: first differing byte {i} (block {}); ours {:?} theirs {:?}",
                i / block,
                &ours[i / block * block..(i / block + 1) * block],
                &theirs[i / block * block..(i / block + 1) * block]
            );
        }
    }
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    let n = 2400;
    for dtype in [DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        let mut ours = vec![0f32; n];
        quant::dequantize(dtype, &fixture(&format!("{dtype}.bin")), &mut ours).unwrap();
        let theirs = f32s(&fixture(&format!("{dtype}.deq.f32")));
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{dtype} element {i}: ours {a} theirs {b}");
        }
    }
}

#[test]
fn bf16_nan_is_quiet_and_sign_preserving_like_ggml() {
    let bytes = quant::quantize(DType::BF16, &[f32::from_bits(0xff80_0001), f32::NAN, f32::INFINITY]).unwrap();
    let h: Vec<u16> = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    assert_eq!(h, vec![0xffc0, (f32::NAN.to_bits() >> 16) as u16 | 64, 0x7f80]);
}

#[test]
fn wrong_lengths_are_errors() {
    assert!(matches!(quant::quantize(DType::Q4_1, &[0.0; 33]), Err(Error::BlockAlign { .. })));
    let mut out = [0f32; 32];
    assert!(matches!(quant::dequantize(DType::Q8_0, &[0u8; 33], &mut out), Err(Error::Shape { .. })));
    assert!(matches!(quant::dequantize(DType::Q8_0, &[0u8; 34], &mut out[..31]), Err(Error::BlockAlign { .. })));
}

/// Max reconstruction error per element, derived from each quantizer:
/// - Q8_0: `|x − d·q| ≤ d/2` with `d = amax/127`, plus the f16 rounding of `d`
///   (`|q|·|d − f16(d)| ≤ 127·d·2⁻¹¹`);
/// - Q4_0: steps of `d = |max|/8`, truncation after +8.5 rounds to nearest: `d/2`, plus the
///   clamp at 15 (the +max side): at most one step `d`; plus f16(d) error `8·d·2⁻¹¹`;
/// - Q4_1: steps of `d = (max−min)/15`: `d/2`, plus f16 rounding of `d` (`15·d·2⁻¹¹`) and of
///   `min` (`|min|·2⁻¹¹`).
fn max_error<B: QuantBlock>(x: &[f32; QK]) -> f32 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (lo, hi) = x.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let h = 2f32.powi(-11);
    let slack = 1e-6 * amax.max(1e-30);
    match B::DTYPE {
        DType::Q8_0 | DType::Q8_1 => amax / 127.0 * (0.5 + 127.0 * h) + slack,
        DType::Q4_0 => amax / 8.0 * (1.0 + 8.0 * h) + slack,
        DType::Q4_1 => (hi - lo) / 15.0 * (0.5 + 15.0 * h) + lo.abs() * h + slack,
        _ => unreachable!(),
    }
}

fn roundtrip_within_bound<B: QuantBlock>(x: &[f32; QK]) -> Result<(), TestCaseError> {
    let mut y = [0f32; QK];
    B::quantize_ref(x).dequantize_ref(&mut y);
    let bound = max_error::<B>(x);
    for (a, b) in x.iter().zip(&y) {
        prop_assert!((a - b).abs() <= bound, "{:?}: {a} -> {b}, bound {bound}", B::DTYPE);
    }
    Ok(())
}

proptest! {
    #[test]
    fn roundtrip_error_is_bounded(x in prop::array::uniform32(-1000f32..1000f32), scale in -8i32..4) {
        let x = x.map(|v| v * 2f32.powi(scale));
        roundtrip_within_bound::<BlockQ8_0>(&x)?;
        roundtrip_within_bound::<BlockQ8_1>(&x)?;
        roundtrip_within_bound::<BlockQ4_0>(&x)?;
        roundtrip_within_bound::<BlockQ4_1>(&x)?;
    }

    #[test]
    fn q8_1_sum_is_scaled_sum_of_values(x in prop::array::uniform32(-10f32..10f32)) {
        let b = BlockQ8_1::quantize_ref(&x);
        let d = quant::float::f16_le(b.d);
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        // s = f16(sum·d_f32); d_f32 and f16(d) differ by ≤ 2⁻¹¹ relative, then one f16 rounding.
        let s = quant::float::f16_le(b.s);
        prop_assert!((s - sum as f32 * d).abs() <= (sum as f32 * d).abs() * 2.0 * 2f32.powi(-11) + 1e-6);
        prop_assert_eq!(b.qs, BlockQ8_0::quantize_ref(&x).qs);
    }
}
