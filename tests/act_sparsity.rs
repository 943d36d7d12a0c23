//! Activation sparsity in the Llama forward, on synthetic models: the thresholds reach the
//! products (dropping everything leaves the embedding alone in the residual stream, which a
//! direct computation gives), threshold 0 changes nothing on the dense weights, prefill is dense
//! unless asked, the input-major copies compute the same model, and calibration behaves.

use sparq::model::{ActSparsity, Gguf, Llama, Session, Site, WeightLayout, synthetic_llama};
use sparq::ops::rms_norm;
use sparq::{Cpu, DType, KvDtype, Scratch, Weights, quant};

mod common;

use common::tiny_llama_config as config;

fn model(dtype: DType) -> Llama {
    let bytes = synthetic_llama(&config(), dtype, DType::Q8_0, 5).unwrap();
    Llama::from_gguf(Gguf::from_bytes(bytes).unwrap(), WeightLayout::Tiled).unwrap()
}

fn logits(model: &Llama, cpu: &Cpu, act: Option<ActSparsity>, tokens: &[u32]) -> Vec<f32> {
    let mut s = Session::new(model, cpu, 64, KvDtype::F32).unwrap();
    s.set_act_sparsity(act).unwrap();
    s.forward(tokens, true).unwrap().to_vec()
}

#[test]
fn dropping_every_input_leaves_the_embedding() {
    let cpu = Cpu::new(2).unwrap();
    for dtype in [DType::Q4_1, DType::Q8_0] {
        let mut m = model(dtype);
        for prepared in [false, true] {
            if prepared {
                m.prepare_act_sparsity().unwrap();
            }
            let mut all = ActSparsity::uniform(2, 1e30).unwrap();
            all.prefill = true;
            let got = logits(&m, &cpu, Some(all), &[3, 9]);
            // Every product sees zeros, so the residual stream stays the embedding: logits are
            // the LM head over the normed embedding rows.
            let c = config();
            let g = m.gguf();
            let (embd, bytes) = g.tensor("token_embd.weight").unwrap();
            let row = embd.dtype.bytes_for(c.dim).unwrap();
            let mut x = vec![0f32; 2 * c.dim];
            for (t, tok) in [3usize, 9].into_iter().enumerate() {
                quant::dequantize(embd.dtype, &bytes[tok * row..(tok + 1) * row], &mut x[t * c.dim..(t + 1) * c.dim]).unwrap();
            }
            let (norm_t, norm_bytes) = g.tensor("output_norm.weight").unwrap();
            let mut norm = vec![0f32; c.dim];
            quant::dequantize(norm_t.dtype, norm_bytes, &mut norm).unwrap();
            let mut xn = vec![0f32; 2 * c.dim];
            rms_norm(&x, &norm, c.norm_eps, &mut xn).unwrap();
            let head = Weights::new(embd.dtype, c.vocab_size, c.dim, bytes).unwrap();
            let mut want = vec![0f32; 2 * c.vocab_size];
            cpu.matmul(&head, &xn, 2, &mut want, &mut Scratch::default()).unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{dtype} prepared={prepared}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn threshold_zero_on_dense_weights_is_the_dense_forward() {
    let cpu = Cpu::new(2).unwrap();
    let m = model(DType::Q4_1);
    let dense = logits(&m, &cpu, None, &[1, 2, 3, 4]);
    let mut zero = ActSparsity::uniform(2, 0.0).unwrap();
    zero.prefill = true;
    assert_eq!(logits(&m, &cpu, Some(zero), &[1, 2, 3, 4]), dense);
}

#[test]
fn prefill_is_dense_unless_asked_and_decode_is_sparse() {
    let cpu = Cpu::new(2).unwrap();
    let m = model(DType::Q4_1);
    let act = ActSparsity::uniform(2, 0.05).unwrap();
    assert!(!act.prefill);
    let dense = logits(&m, &cpu, None, &[1, 2, 3, 4]);
    assert_eq!(logits(&m, &cpu, Some(act.clone()), &[1, 2, 3, 4]), dense, "prefill dense");
    let decode = |act: Option<ActSparsity>| {
        let mut s = Session::new(&m, &cpu, 64, KvDtype::F32).unwrap();
        s.set_act_sparsity(act).unwrap();
        s.forward(&[1, 2, 3], false).unwrap();
        s.forward(&[4], false).unwrap().to_vec()
    };
    let (sparse, plain) = (decode(Some(act)), decode(None));
    assert_ne!(sparse, plain, "decode thresholded");
}

/// The input-major copies hold the same values and the sparse kernels compute the dense integer
/// product of the thresholded input, so the model computes the same logits up to the order of
/// f32 additions (relative differences ~1e-6 per product; 1e-4 of the range allows for two
/// layers of propagation): at threshold 0 (exact zeros skipped) and with a threshold.
#[test]
fn input_major_copies_compute_the_same_model() {
    let cpu = Cpu::new(2).unwrap();
    for dtype in [DType::Q4_1, DType::Q4_0, DType::Q8_0] {
        let dense_model = model(dtype);
        let mut sparse_model = model(dtype);
        sparse_model.prepare_act_sparsity().unwrap();
        assert!(sparse_model.has_input_major() && !dense_model.has_input_major());
        for t in [0.0, 0.05] {
            let mut act = ActSparsity::uniform(2, t).unwrap();
            act.prefill = true;
            let a = logits(&dense_model, &cpu, Some(act.clone()), &[5, 6, 7]);
            let b = logits(&sparse_model, &cpu, Some(act), &[5, 6, 7]);
            let range = a.iter().fold(0f32, |r, v| r.max(v.abs()));
            let worst = a.iter().zip(&b).fold(0f32, |w, (x, y)| w.max((x - y).abs()));
            assert!(worst <= 1e-4 * range, "{dtype}, threshold {t}: worst logit difference {worst} of range {range}");
        }
    }
    // A format without an input-major layout stays dense.
    let mut f16 = model(DType::F16);
    f16.prepare_act_sparsity().unwrap();
    let act = ActSparsity::uniform(2, 0.05).unwrap();
    assert_eq!(logits(&f16, &cpu, Some(act.clone()), &[5, 6]), logits(&model(DType::F16), &cpu, Some(act), &[5, 6]));
}

#[test]
fn calibration_reaches_its_target_and_refuses_nonsense() {
    let cpu = Cpu::new(2).unwrap();
    let m = model(DType::Q4_1);
    let tokens: Vec<u32> = (0..200).map(|i| (i * 7 % 77) as u32).collect();
    let mut last = [0f32; 4];
    for sparsity in [0.25f32, 0.5, 0.75] {
        let a = ActSparsity::calibrate(&m, &cpu, &tokens, 64, sparsity, |_, _| {}).unwrap();
        assert_eq!((a.n_layers(), a.target, a.prefill), (2, sparsity, false));
        for (i, site) in Site::ALL.into_iter().enumerate() {
            let t = a.threshold(1, site);
            assert!(t > last[i], "{site:?}: thresholds grow with the target ({t} after {})", last[i]);
            last[i] = t;
        }
    }
    assert!(ActSparsity::calibrate(&m, &cpu, &tokens, 64, 1.0, |_, _| {}).is_err());
    assert!(ActSparsity::calibrate(&m, &cpu, &[], 64, 0.5, |_, _| {}).is_err());
    assert!(ActSparsity::uniform(2, f32::NAN).is_err());
    let mut s = Session::new(&m, &cpu, 64, KvDtype::F32).unwrap();
    let e = s.set_act_sparsity(Some(ActSparsity::uniform(3, 0.1).unwrap())).unwrap_err();
    assert!(e.to_string().contains("3 layers, the model has 2"), "{e}");
}
