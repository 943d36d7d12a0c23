//! Activation-sparse products over input-major weights against the f64 reference (the dense
//! integer product of the thresholded input), on every level this CPU supports × 1–3 threads ×
//! random shapes (any n, k in whole blocks, m across decode and prefill heights) × thresholds
//! from none to everything dropped; plus: the layout is the GGUF matrix rearranged (lossless),
//! dropped inputs' bytes are never read, and malformed input gets a clear error.

mod common;

use common::{cpus, values};
use proptest::prelude::*;
use sparq::matmul::reference::{act_sparse_error_bound, matmul_act_sparse_f64, sparsify};
use sparq::sparse::{InputMajorWeights, keeps};
use sparq::{Cpu, DType, Error, Layout, Scratch, Weights, quant};

const FORMATS: [DType; 3] = [DType::Q8_0, DType::Q4_0, DType::Q4_1];

/// Runs the activation-sparse product on `cpu` and checks every output within the derived bound.
fn check(cpu: &Cpu, w: &Weights, x: &[f32], m: usize, threshold: f32) -> Result<(), String> {
    let (n, k) = (w.n(), w.k());
    let reference = matmul_act_sparse_f64(w, x, m, threshold);
    let mut y = vec![f32::NAN; m * n];
    cpu.matmul_act_sparse(w, x, m, &mut y, threshold, &mut Scratch::default()).map_err(|e| e.to_string())?;
    let label = format!("{} input-major on {} ({} threads), m={m} n={n} k={k} t={threshold}", w.dtype(), cpu.isa(), cpu.threads());
    common::within(&label, &y, n, &reference, |magnitude| act_sparse_error_bound(k, magnitude))
}

fn case() -> impl Strategy<Value = (DType, usize, usize, usize, Vec<f32>, Vec<f32>, f32)> {
    // n: any width, and widths crossing the kernel's 4096-output segment; k up to 8 blocks of 32
    // inputs (groups of 4 kept inputs with tails); thresholds from 0 (keep every nonzero) past
    // the largest |x| (drop all).
    (
        prop::sample::select(FORMATS.to_vec()),
        prop_oneof![1usize..=200, 4030usize..=4170],
        0usize..=8,
        1usize..=6,
        prop_oneof![Just(0f32), 0f32..4f32, Just(5f32)],
    )
        .prop_flat_map(|(dtype, n, blocks, m, threshold)| {
            let k = 32 * blocks;
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

/// SmolLM2's FFN down projection (n = 576 outputs, k = 1536 inputs) at TEAL-like
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

/// The layout is the GGUF matrix rearranged: each input block's scales by output, then one
/// code row per input; `gguf_rows` (and the view's `gguf_bytes`) give the file's bytes back.
#[test]
fn input_major_is_the_gguf_matrix_rearranged() {
    let (n, k) = (100, 64);
    let w = values(21, n * k, 1.0);
    for dtype in FORMATS {
        let rows = quant::quantize(dtype, &w).unwrap();
        let im = InputMajorWeights::from_gguf_rows(dtype, n, k, &rows).unwrap();
        assert_eq!(im.gguf_rows(), rows, "{dtype}: round trip");
        let view = im.weights();
        assert_eq!((view.layout(), view.n(), view.k(), view.dtype()), (Layout::InputMajor, n, k, dtype));
        assert_eq!(view.gguf_bytes().unwrap().as_ref(), &rows[..], "{dtype}: gguf_bytes");
        let dense = Weights::new(dtype, n, k, &rows).unwrap();
        assert_eq!(common::bits(&view.dequantize()), common::bits(&dense.dequantize()), "{dtype}: dequantize");
        // 128 stored outputs (n rounded up to 64); input block 1 starts after block 0's bytes.
        let (width, bb) = (128, dtype.info().block_bytes);
        let (scales, code_row) = (if dtype == DType::Q4_1 { 4 * width } else { 2 * width }, if dtype == DType::Q8_0 { width } else { width / 2 });
        let block = scales + 32 * code_row;
        assert_eq!(im.bytes().len(), 2 * block, "{dtype}: size");
        let row_bytes = dtype.bytes_for(k).unwrap();
        let (j, input) = (37, 32 + 5);
        let gguf_block = &rows[j * row_bytes + bb..][..bb];
        assert_eq!(&im.bytes()[block + 2 * j..][..2], &gguf_block[..2], "{dtype}: d of output {j}, input block 1");
        let code_at = block + scales + 5 * code_row;
        let code = match dtype {
            DType::Q8_0 => (im.bytes()[code_at + j] ^ 0x80) as i8 as i32,
            _ => ((im.bytes()[code_at + j / 32 * 16 + j % 16] >> (4 * (j % 32 / 16))) & 0x0f) as i32,
        };
        // Output 37 is in its 32-run's high half: input 5's code is byte 5's high nibble.
        let want = match dtype {
            DType::Q8_0 => gguf_block[2 + 5] as i8 as i32,
            DType::Q4_0 => (gguf_block[2 + 5] & 0x0f) as i32,
            _ => (gguf_block[4 + 5] & 0x0f) as i32,
        };
        assert_eq!(code, want, "{dtype}: code of output {j}, input {input}");
    }
}

/// A dropped input's code row is never read: garbage there changes nothing, bit for bit;
/// garbage in a kept input's row does change the result (the check can fail).
#[test]
fn dropped_inputs_are_never_read() {
    let (n, k, m) = (200, 96, 2);
    let (w, x) = (values(61, n * k, 1.0), values(62, m * k, 2.0));
    let threshold = 1.2;
    for dtype in FORMATS {
        let im = InputMajorWeights::quantize(dtype, n, k, &w).unwrap();
        let (width, block) = (256, im.bytes().len() / 3);
        let code_row = if dtype == DType::Q8_0 { width } else { width / 2 };
        let codes_at = block - 32 * code_row;
        let poisoned = |inputs: &mut dyn Iterator<Item = usize>| {
            let mut bytes = im.bytes().to_vec();
            for i in inputs {
                let at = (i / 32) * block + codes_at + (i % 32) * code_row;
                bytes[at..at + code_row].iter_mut().enumerate().for_each(|(j, b)| *b = (j * 151 + i * 7) as u8);
            }
            InputMajorWeights::from_bytes(dtype, n, k, bytes).unwrap()
        };
        let dropped: Vec<usize> = (0..k).filter(|&i| (0..m).all(|r| !keeps(x[r * k + i], threshold))).collect();
        let kept = (0..k).find(|i| !dropped.contains(i)).unwrap();
        assert!(dropped.len() > k / 4, "the case drops inputs");
        for cpu in cpus() {
            let mut s = Scratch::default();
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            cpu.matmul_act_sparse(&im.weights(), &x, m, &mut a, threshold, &mut s).unwrap();
            cpu.matmul_act_sparse(&poisoned(&mut dropped.iter().copied()).weights(), &x, m, &mut b, threshold, &mut s).unwrap();
            assert_eq!(common::bits(&a), common::bits(&b), "{dtype} on {}", cpu.isa());
            cpu.matmul_act_sparse(&poisoned(&mut std::iter::once(kept)).weights(), &x, m, &mut b, threshold, &mut s).unwrap();
            assert_ne!(common::bits(&a), common::bits(&b), "{dtype} on {}: a kept row is read", cpu.isa());
        }
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
        let im = InputMajorWeights::from_weights(&dense).unwrap();
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
        // The same values: the dense layout's product and the input-major one agree within the
        // rounding bound of the one reference.
        let reference = matmul_act_sparse_f64(&dense, &x, m, 0.9);
        for cpu in cpus() {
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            cpu.matmul_act_sparse(&dense, &x, m, &mut a, 0.9, &mut Scratch::default()).unwrap();
            cpu.matmul_act_sparse(&im.weights(), &x, m, &mut b, 0.9, &mut Scratch::default()).unwrap();
            for i in 0..m * n {
                let bound = 2.0 * act_sparse_error_bound(k, reference.magnitude[i]);
                assert!((a[i] as f64 - b[i] as f64).abs() <= bound, "{dtype} on {}: {} vs {}", cpu.isa(), a[i], b[i]);
            }
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
    let w = values(51, 64 * 32, 1.0);
    let e = InputMajorWeights::quantize(DType::Q4_1, 64, 8, &w[..64 * 8]).unwrap_err();
    assert!(matches!(e, Error::BlockAlign { len: 8, .. }), "{e}");
    let e = InputMajorWeights::quantize(DType::Q4_1, 64, 64, &w).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("expected n·k"), "{e}");
    // One input block of 64 outputs: 64 f16 scales and 32 rows of 64 codes.
    let e = InputMajorWeights::from_bytes(DType::Q8_0, 64, 32, vec![0; 2175]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("needs 2176 bytes, got 2175"), "{e}");
    let e = InputMajorWeights::from_bytes(DType::Q8_0, usize::MAX / 2, 64, vec![]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("overflows"), "{e}");
    let e = InputMajorWeights::from_gguf_rows(DType::Q4_0, 64, 32, &[0; 100]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("got 100"), "{e}");
    let ok = InputMajorWeights::from_bytes(DType::Q8_0, 64, 32, vec![0; 2176]).unwrap();
    let cpu = &cpus()[0];
    let (x, mut y) = (vec![1f32; 32], vec![0f32; 64]);
    for t in [-1.0, f32::NAN, f32::INFINITY] {
        let e = cpu.matmul_act_sparse(&ok.weights(), &x, 1, &mut y, t, &mut Scratch::default()).unwrap_err();
        assert!(matches!(e, Error::Invalid { what: "threshold", .. }), "{e}");
    }
    let e = cpu.matmul_act_sparse(&ok.weights(), &x[..3], 1, &mut y, 0.5, &mut Scratch::default()).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "matmul", .. }), "{e}");
    // Zero scales are valid weights (whatever the codes): every output 0.
    cpu.matmul_act_sparse(&ok.weights(), &x, 1, &mut y, 0.0, &mut Scratch::default()).unwrap();
    assert!(y.iter().all(|&v| v == 0.0));
}
