//! `Cpu::matmul` against the f64 reference: every weight format × every level this CPU supports
//! × random shapes with tails (k not a multiple of the vector width, odd m and n, m across the
//! row/panel switch and the micro-tile height) × 1–3 threads.

mod common;

use common::{check_matmul, check_matmul_on, cpus, values};
use proptest::prelude::*;
use sparq::{matmul::PANEL_MIN_M, quant, Cpu, DType, Isa, Scratch, Weights};

fn case() -> impl Strategy<Value = (DType, usize, usize, usize, Vec<f32>, Vec<f32>)> {
    // Up to 40 blocks: past one 16-block scale group of the AVX-512 row kernel, with tails.
    (prop::sample::select(DType::WEIGHTS.to_vec()), 1usize..=37, 0usize..=40, 0usize..=31, 1usize..=19)
        .prop_flat_map(|(dtype, n, blocks, tail, m)| {
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
        for isa in Isa::available() {
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
