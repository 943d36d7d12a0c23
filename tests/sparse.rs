//! Activation-sparse products over input-major weights against the f64 reference, on every
//! level this CPU supports × 1–3 threads × random shapes (any k, n in whole blocks, m across
//! decode and prefill heights) × thresholds from none to everything dropped; plus the
//! equivalences (threshold 0 = the dense product, input-major = the dense layout's values
//! re-quantized) and clear errors on malformed input.

mod common;

use common::{cpus, values};
use proptest::prelude::*;
use sparq::matmul::reference::{act_sparse_error_bound, matmul_act_sparse_f64, matmul_q8_f64, sparsify};
use sparq::sparse::{InputMajorWeights, keeps, transpose_gguf_rows};
use sparq::{Cpu, DType, Error, Layout, Scratch, Weights, quant};

const FORMATS: [DType; 3] = [DType::Q8_0, DType::Q4_0, DType::Q4_1];

/// Runs the activation-sparse product on `cpu` and checks every output within the derived bound.
fn check(cpu: &Cpu, w: &Weights, x: &[f32], m: usize, threshold: f32) -> Result<(), String> {
    let (n, k) = (w.n(), w.k());
    let reference = matmul_act_sparse_f64(w, x, m, threshold);
    let mut y = vec![f32::NAN; m * n];
    cpu.matmul_act_sparse(w, x, m, &mut y, threshold, &mut Scratch::default()).map_err(|e| e.to_string())?;
    for (i, &yi) in y.iter().enumerate() {
        let bound = act_sparse_error_bound(k, reference.magnitude[i]) + 1e-30;
        let err = (yi as f64 - reference.y[i]).abs();
        #[allow(clippy::neg_cmp_op_on_partial_ord, reason = "a NaN error must fail")]
        if !(err <= bound) {
            return Err(format!(
                "{} input-major on {} ({} threads), m={m} n={n} k={k} t={threshold}: y[{}][{}] = {yi} vs {} (err {err:.3e} > {bound:.3e})",
                w.dtype(),
                cpu.isa(),
                cpu.threads(),
                i / n,
                i % n,
                reference.y[i]
            ));
        }
    }
    Ok(())
}

fn case() -> impl Strategy<Value = (DType, usize, usize, usize, Vec<f32>, Vec<f32>, f32)> {
    // n up to 300 blocks crosses the kernel's 4096-output segment; k is free (tails of the
    // 4-row groups); thresholds from 0 (keep every nonzero) past the largest |x| (drop all).
    (prop::sample::select(FORMATS.to_vec()), prop_oneof![1usize..=9, 120usize..=140], 0usize..=70, 1usize..=6, prop_oneof![Just(0f32), 0f32..4f32, Just(5f32)])
        .prop_flat_map(|(dtype, blocks, k, m, threshold)| {
            let n = 32 * blocks;
            // Every fifth input exactly zero on average: ReLU-like inputs.
            let x = prop::collection::vec(prop_oneof![4 => -4f32..4f32, 1 => Just(0f32)], m * k);
            (Just(dtype), Just(n), Just(k), Just(m), prop::collection::vec(-2f32..2f32, n * k), x, Just(threshold))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn matches_reference_on_every_level((dtype, n, k, m, w, x, threshold) in case()) {
        let im = InputMajorWeights::quantize(dtype, n, k, &w).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for cpu in cpus() {
            check(cpu, &im.weights(), &x, m, threshold).map_err(TestCaseError::fail)?;
        }
    }
}

/// SmolLM2's FFN down projection transposed (n = 576 outputs, k = 1536 inputs) at TEAL-like
/// sparsities, decode and a prefill height, two threads.
#[test]
fn smollm2_down_shape_on_every_level() {
    let (n, k) = (576, 1536);
    let w = values(11, n * k, 1.0);
    for dtype in FORMATS {
        let im = InputMajorWeights::quantize(dtype, n, k, &w).unwrap();
        for (m, threshold) in [(1, 0.0), (1, 1.5), (1, 2.7), (5, 1.5)] {
            let x = values(12 + m as u64, m * k, 3.0);
            for cpu in cpus().iter().filter(|c| c.threads() == 2) {
                check(cpu, &im.weights(), &x, m, threshold).unwrap();
            }
        }
    }
}

/// The view's values are the matrix re-quantized along the outputs: exactly the reference
/// quantizer's blocks of each column, fields gathered by kind (d's, then m's, then values).
#[test]
fn input_major_bytes_are_the_transpose_quantized() {
    let (n, k) = (64, 5);
    let w = values(21, n * k, 1.0);
    for dtype in FORMATS {
        let im = InputMajorWeights::quantize(dtype, n, k, &w).unwrap();
        let view = im.weights();
        assert_eq!((view.layout(), view.n(), view.k(), view.dtype()), (Layout::InputMajor, n, k, dtype));
        assert!(view.gguf_bytes().is_none(), "no GGUF rows of the untransposed matrix");
        let gguf = transpose_gguf_rows(&view).unwrap();
        let row_bytes = dtype.bytes_for(n).unwrap();
        for i in 0..k {
            let column: Vec<f32> = (0..n).map(|c| w[c * k + i]).collect();
            let blocks = quant::quantize(dtype, &column).unwrap();
            assert_eq!(&gguf[i * row_bytes..(i + 1) * row_bytes], &blocks[..], "{dtype} column {i}");
            // The stored row: block 1's d at bytes 2..4, and its values after every scale.
            let row = &im.bytes()[i * row_bytes..];
            let bb = dtype.info().block_bytes;
            assert_eq!(&row[2..4], &blocks[bb..bb + 2], "{dtype} column {i}: d of block 1");
            let qb = if dtype == DType::Q8_0 { 32 } else { 16 };
            let scales = row_bytes - 2 * qb;
            assert_eq!(&row[scales..scales + qb], &blocks[bb - qb..bb], "{dtype} column {i}: values of block 0");
        }
        // `dequantize` undoes the transpose.
        let dq = view.dequantize();
        let mut column = vec![0f32; n];
        quant::dequantize(dtype, &gguf[..row_bytes], &mut column).unwrap();
        assert_eq!((0..n).map(|c| dq[c * k]).collect::<Vec<_>>(), column);
    }
}

/// On a dense layout the activation-sparse product is the dense product of the thresholded
/// input, bit for bit; on input-major weights, threshold 0 equals the plain product.
#[test]
fn thresholds_mean_the_same_on_every_layout() {
    let (n, k, m) = (96, 128, 3);
    let (w, x) = (values(31, n * k, 1.0), values(32, m * k, 2.0));
    for dtype in FORMATS {
        let bytes = quant::quantize(dtype, &w).unwrap();
        let dense = Weights::new(dtype, n, k, &bytes).unwrap();
        let im = InputMajorWeights::from_weights(&dense, dtype).unwrap();
        for cpu in cpus() {
            let mut s = Scratch::default();
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            cpu.matmul_act_sparse(&dense, &x, m, &mut a, 0.9, &mut s).unwrap();
            cpu.matmul(&dense, &sparsify(&x, 0.9), m, &mut b, &mut s).unwrap();
            assert_eq!(common::bits(&a), common::bits(&b), "{dtype} on {}: dense layout", cpu.isa());
            cpu.matmul_act_sparse(&im.weights(), &x, m, &mut a, 0.0, &mut s).unwrap();
            cpu.matmul(&im.weights(), &x, m, &mut b, &mut s).unwrap();
            assert_eq!(common::bits(&a), common::bits(&b), "{dtype} on {}: threshold 0", cpu.isa());
        }
        // The dense and sparse products of one matrix agree to within the two quantizations.
        let q8 = matmul_q8_f64(&dense, &sparsify(&x, 0.9), m);
        let sparse = matmul_act_sparse_f64(&im.weights(), &x, m, 0.9);
        let scale = q8.magnitude.iter().cloned().fold(0.0, f64::max);
        for (a, b) in q8.y.iter().zip(&sparse.y) {
            assert!((a - b).abs() <= 0.25 * scale, "{dtype}: {a} vs {b} (scale {scale})");
        }
    }
    assert!(keeps(-0.5, 0.4) && !keeps(0.4, 0.4) && !keeps(0.0, 0.0));
}

/// Many matrices and SwiGLU with a threshold equal their separate parts.
#[test]
fn many_and_swiglu_threshold_once() {
    let (n, k, m) = (64, 96, 2);
    let x = values(41, m * k, 2.0);
    let (g, u) = (values(42, n * k, 1.0), values(43, n * k, 1.0));
    let (gi, ui) = (InputMajorWeights::quantize(DType::Q4_1, n, k, &g).unwrap(), InputMajorWeights::quantize(DType::Q8_0, n, k, &u).unwrap());
    for cpu in cpus() {
        let mut s = Scratch::default();
        let (mut a, mut b, mut y, mut gate, mut up) = (vec![0f32; m * n], vec![0f32; m * n], vec![0f32; m * n], vec![0f32; m * n], vec![0f32; m * n]);
        cpu.matmul_many_act_sparse(&[&gi.weights(), &ui.weights()], &x, m, &mut [&mut a, &mut b], 1.0, &mut s).unwrap();
        cpu.matmul_act_sparse(&gi.weights(), &x, m, &mut gate, 1.0, &mut s).unwrap();
        cpu.matmul_act_sparse(&ui.weights(), &x, m, &mut up, 1.0, &mut s).unwrap();
        assert_eq!((common::bits(&a), common::bits(&b)), (common::bits(&gate), common::bits(&up)), "{}", cpu.isa());
        cpu.matmul_swiglu_act_sparse(&gi.weights(), &ui.weights(), &x, m, &mut y, 1.0, &mut s).unwrap();
        cpu.swiglu(&mut gate, &up).unwrap();
        assert_eq!(common::bits(&y), common::bits(&gate), "{}", cpu.isa());
    }
}

/// Malformed input gets a clear error naming what is wrong.
#[test]
fn bad_input_is_refused_clearly() {
    let w = values(51, 64 * 4, 1.0);
    let e = InputMajorWeights::quantize(DType::F16, 64, 4, &w).unwrap_err();
    assert!(matches!(e, Error::Unsupported { dtype: DType::F16, .. }), "{e}");
    let e = InputMajorWeights::quantize(DType::Q4_1, 48, 4, &w[..48 * 4]).unwrap_err();
    assert!(matches!(e, Error::BlockAlign { len: 48, .. }), "{e}");
    let e = InputMajorWeights::quantize(DType::Q4_1, 64, 5, &w).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("expected n·k"), "{e}");
    let e = InputMajorWeights::from_bytes(DType::Q8_0, 64, 4, vec![0; 271]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("needs 272 bytes, got 271"), "{e}");
    let e = InputMajorWeights::from_bytes(DType::Q8_0, usize::MAX / 2, 64, vec![]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. } | Error::BlockAlign { .. }), "{e}");
    let ok = InputMajorWeights::from_bytes(DType::Q8_0, 64, 4, vec![0; 272]).unwrap();
    let cpu = &cpus()[0];
    let (x, mut y) = (vec![1f32; 4], vec![0f32; 64]);
    for t in [-1.0, f32::NAN, f32::INFINITY] {
        let e = cpu.matmul_act_sparse(&ok.weights(), &x, 1, &mut y, t, &mut Scratch::default()).unwrap_err();
        assert!(matches!(e, Error::Invalid { what: "threshold", .. }), "{e}");
    }
    let e = cpu.matmul_act_sparse(&ok.weights(), &x[..3], 1, &mut y, 0.5, &mut Scratch::default()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e}");
    // All-zero bytes are valid weights: every output 0.
    cpu.matmul_act_sparse(&ok.weights(), &x, 1, &mut y, 0.0, &mut Scratch::default()).unwrap();
    assert!(y.iter().all(|&v| v == 0.0));
}
