//! `Cpu::matmul` against the f64 reference: every weight format × every level this CPU supports
//! × random shapes with tails (k not a multiple of the vector width, odd m and n, m across the
//! row/panel switch and the micro-tile height) × 1–3 threads.

mod common;

use common::{bits, check_matmul, check_matmul_on, cpus, many_equals_separate, values};
use proptest::prelude::*;
use sparq::{Cpu, DType, Isa, Scratch, Weights, matmul::PANEL_MIN_M, quant};

fn case() -> impl Strategy<Value = (DType, usize, usize, usize, Vec<f32>, Vec<f32>)> {
    // Up to 40 blocks: past one 16-block scale group of the AVX-512 row kernel, with tails.
    (prop::sample::select(DType::WEIGHTS.to_vec()), 1usize..=37, 0usize..=40, 0usize..=31, 1usize..=19).prop_flat_map(|(dtype, n, blocks, tail, m)| {
        // Block formats need k % 32 == 0; float formats get arbitrary tails.
        let k = if dtype.is_block_quantized() { 32 * blocks } else { 32 * blocks + tail };
        let w = prop::collection::vec(-2f32..2f32, n * k);
        let x = prop::collection::vec(-4f32..4f32, m * k);
        (Just(dtype), Just(n), Just(k), Just(m), w, x)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn matches_reference_on_every_level((dtype, n, k, m, w, x) in case()) {
        let all: Vec<&Cpu> = cpus().iter().collect();
        check_matmul_on(&all, dtype, n, k, m, &w, &x).map_err(TestCaseError::fail)?;
    }
}

/// Long reductions at a real model shape (SmolLM2's FFN down projection, k = 1536), decode and
/// a prefill height with a micro-tile tail.
#[test]
fn smollm2_ffn_shape_on_every_level() {
    let (n, k) = (40, 1536);
    let w = values(1, n * k, 1.0);
    for m in [1, 13] {
        let x = values(2 + m as u64, m * k, 3.0);
        for dtype in DType::WEIGHTS {
            for cpu in cpus().iter().filter(|c| c.threads() == 2) {
                check_matmul(cpu, dtype, n, k, m, &w, &x).unwrap();
            }
        }
    }
}

/// Each output is computed the same way whatever the thread count or level, within a level:
/// results are bit-identical across thread counts.
#[test]
fn thread_count_does_not_change_results() {
    let (n, k, m) = (53, 96, 9);
    let (w, x) = (values(3, n * k, 1.0), values(4, m * k, 1.0));
    for dtype in DType::WEIGHTS {
        let bytes = quant::quantize(dtype, &w).unwrap();
        let weights = Weights::new(dtype, n, k, &bytes).unwrap();
        for isa in Isa::allowed().unwrap() {
            let run = |threads| {
                let mut y = vec![0f32; m * n];
                Cpu::with_isa(isa, threads).unwrap().matmul(&weights, &x, m, &mut y, &mut Scratch::default()).unwrap();
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let one = run(1);
            for t in [2, 3, 5] {
                assert_eq!(run(t), one, "{dtype} on {isa}: {t} threads differ from 1");
            }
        }
    }
}

/// Scratch reuse across calls of different shapes never leaks old values into new results.
#[test]
fn scratch_reuse_across_shapes() {
    let cpu = Cpu::new(2).unwrap();
    let mut scratch = Scratch::default();
    for (i, &(n, k, m)) in [(70, 256, 12), (5, 32, 1), (33, 128, PANEL_MIN_M), (70, 256, 3)].iter().enumerate() {
        let (w, x) = (values(10 + i as u64, n * k, 1.0), values(20 + i as u64, m * k, 1.0));
        for dtype in DType::WEIGHTS {
            let bytes = quant::quantize(dtype, &w).unwrap();
            let weights = Weights::new(dtype, n, k, &bytes).unwrap();
            let mut with_reuse = vec![0f32; m * n];
            cpu.matmul(&weights, &x, m, &mut with_reuse, &mut scratch).unwrap();
            let mut fresh = vec![0f32; m * n];
            cpu.matmul(&weights, &x, m, &mut fresh, &mut Scratch::default()).unwrap();
            assert_eq!(with_reuse, fresh, "{dtype} {n}x{k} m={m}");
        }
    }
}

fn many_case() -> impl Strategy<Value = (Vec<(DType, usize)>, usize, usize, Vec<f32>)> {
    let part = (prop::sample::select(DType::WEIGHTS.to_vec()), 0usize..=45);
    (prop::collection::vec(part, 1..=4), 0usize..=12, 1usize..=19).prop_flat_map(|(parts, blocks, m)| {
        let k = 32 * blocks;
        (Just(parts), Just(k), Just(m), prop::collection::vec(-4f32..4f32, m * k))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// One pass over several matrices (mixed formats, any heights, empty ones included) gives
    /// exactly — bit for bit — what separate products give, on every level and thread count.
    #[test]
    fn matmul_many_equals_separate_products((parts, k, m, x) in many_case()) {
        let data: Vec<(DType, usize, Vec<u8>)> = parts
            .iter()
            .enumerate()
            .map(|(i, &(dtype, n))| (dtype, n, quant::quantize(dtype, &values(30 + i as u64, n * k, 1.0)).unwrap()))
            .collect();
        let ws: Vec<Weights> = data.iter().map(|(dtype, n, b)| Weights::new(*dtype, *n, k, b).unwrap()).collect();
        many_equals_separate(&ws, &x, m).map_err(TestCaseError::fail)?;
    }

    /// `Cpu::swiglu` against f64 on every level, lengths with tails, gates up to ±120 (past
    /// `exp`'s clamps at −87 and 88). Bound: 6 ulp relative (exp's 3, then add, multiply,
    /// divide; stated on `Cpu::swiglu`) plus 1e-30 absolute, for gates so negative that the
    /// exact value underflows while the clamped `e^88` leaves `|g·u| / 1.65e38`.
    #[test]
    fn swiglu_matches_f64(len in 0usize..=70, scale in prop::sample::select(vec![1.0f32, 8.0, 120.0]), seed in 0u64..1000) {
        let (g, u) = (values(seed, len, scale), values(seed ^ 0x5111, len, 2.0));
        for cpu in cpus() {
            let mut y = g.clone();
            cpu.swiglu(&mut y, &u).unwrap();
            for i in 0..len {
                let (g, u) = (g[i] as f64, u[i] as f64);
                let want = g * u / (1.0 + (-g).exp());
                let bound = 6.0 * f32::EPSILON as f64 * want.abs() + 1e-30;
                prop_assert!((y[i] as f64 - want).abs() <= bound, "{} len {len}: silu({g})·{u} = {} vs {want}", cpu.isa(), y[i]);
            }
        }
    }

    /// The fused SwiGLU pass equals the two products followed by `Cpu::swiglu`, bit for bit.
    #[test]
    fn matmul_swiglu_equals_products_then_swiglu(dtype in prop::sample::select(DType::WEIGHTS.to_vec()), n in 1usize..=70, blocks in 1usize..=6, m in 1usize..=17) {
        let k = 32 * blocks;
        let (g, u, x) = (values(40, n * k, 1.0), values(41, n * k, 1.0), values(42, m * k, 3.0));
        let (gb, ub) = (quant::quantize(dtype, &g).unwrap(), quant::quantize(dtype, &u).unwrap());
        let (gate, up) = (Weights::new(dtype, n, k, &gb).unwrap(), Weights::new(dtype, n, k, &ub).unwrap());
        for cpu in cpus() {
            let mut fused = vec![f32::NAN; m * n];
            cpu.matmul_swiglu(&gate, &up, &x, m, &mut fused, &mut Scratch::default()).unwrap();
            let (mut yg, mut yu) = (vec![0f32; m * n], vec![0f32; m * n]);
            cpu.matmul(&gate, &x, m, &mut yg, &mut Scratch::default()).unwrap();
            cpu.matmul(&up, &x, m, &mut yu, &mut Scratch::default()).unwrap();
            cpu.swiglu(&mut yg, &yu).unwrap();
            prop_assert_eq!(bits(&fused), bits(&yg));
        }
    }
}

#[test]
fn fused_products_refuse_bad_shapes() {
    let cpu = Cpu::new(2).unwrap();
    let (a, b) = (quant::quantize(DType::Q8_0, &[0.5; 4 * 64]).unwrap(), quant::quantize(DType::Q8_0, &[0.5; 4 * 32]).unwrap());
    let w64 = Weights::new(DType::Q8_0, 4, 64, &a).unwrap();
    let w32 = Weights::new(DType::Q8_0, 4, 32, &b).unwrap();
    let w64_2 = Weights::new(DType::Q8_0, 2, 64, &a[..a.len() / 2]).unwrap();
    let x = vec![1.0f32; 64];
    let s = &mut Scratch::default();
    let (mut y1, mut y2) = (vec![0f32; 4], vec![0f32; 4]);
    let err = |r: sparq::Result<()>| r.unwrap_err().to_string();
    assert!(err(cpu.matmul_many(&[&w64, &w32], &x, 1, &mut [&mut y1, &mut y2], s)).contains("matmul_many"));
    assert!(err(cpu.matmul_many(&[&w64], &x, 1, &mut [&mut y1, &mut y2], s)).contains("matmul"));
    assert!(err(cpu.matmul_many(&[], &x, 1, &mut [], s)).contains("matmul"));
    let five = [&w64; 5];
    let mut ys: Vec<Vec<f32>> = vec![vec![0f32; 4]; 5];
    let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|v| v.as_mut_slice()).collect();
    assert!(err(cpu.matmul_many(&five, &x, 1, &mut outs, s)).contains("1..=4"));
    assert!(err(cpu.matmul_swiglu(&w64, &w64_2, &x, 1, &mut y1, s)).contains("matmul_swiglu"));
    assert!(err(cpu.matmul_swiglu(&w64, &w64, &[f32::NAN; 64], 1, &mut y1, s)).contains("matmul_swiglu"));
}
