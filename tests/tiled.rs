//! Weights repacked into the tiled layout (`sparq::matmul::tiled`): the layout round-trips to
//! the file's bytes, products match the f64 reference on every level (any `m`, decode
//! included) and equal the GGUF-layout packed-panel path bit for bit where that path runs.

mod common;

use common::{bits, compare, cpus, many_equals_separate, values};
use proptest::prelude::*;
use sparq::matmul::reference::matmul_q8_f64;
use sparq::matmul::tiled::TILE;
use sparq::{DType, Error, PackedWeights, Scratch, Weights, matmul::PANEL_MIN_M, quant};

const TILED: [DType; 3] = [DType::Q8_0, DType::Q4_0, DType::Q4_1];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Random shapes with tails: n not a multiple of the tile (partial last tile), k from 0 to
    /// 40 blocks, m across the decode, small-m and micro-tile heights.
    #[test]
    fn tiled_products_match_reference_and_panels(
        dtype in prop::sample::select(TILED.to_vec()),
        n in 1usize..=50,
        blocks in 0usize..=40,
        m in 1usize..=27,
        seed in 0u64..1000,
    ) {
        let k = 32 * blocks;
        let (w, x) = (values(seed, n * k, 2.0), values(seed + 1, m * k, 4.0));
        let bytes = quant::quantize(dtype, &w).unwrap();
        let plain = Weights::new(dtype, n, k, &bytes).unwrap();
        let packed = PackedWeights::pack(&[plain], 2).unwrap();
        let tiled = packed.get(0).unwrap();
        prop_assert_eq!(tiled.layout(), sparq::matmul::Layout::Tiled);
        prop_assert_eq!(&*tiled.gguf_bytes().unwrap(), &bytes[..], "unpack(pack(w)) == w");
        let reference = matmul_q8_f64(&plain, &x, m);
        for cpu in cpus() {
            compare(cpu, &tiled, &x, m, &reference).map_err(TestCaseError::fail)?;
            if m >= PANEL_MIN_M {
                let (mut a, mut b) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                cpu.matmul(&tiled, &x, m, &mut a, &mut Scratch::default()).unwrap();
                cpu.matmul(&plain, &x, m, &mut b, &mut Scratch::default()).unwrap();
                prop_assert_eq!(bits(&a), bits(&b), "{} {}x{} m={} on {} ({} threads)", dtype, n, k, m, cpu.isa(), cpu.threads());
            }
        }
    }

    /// Fused passes over a mix of tiled and GGUF-layout matrices (the unit of work becomes a
    /// tile) equal separate products, bit for bit.
    #[test]
    fn mixed_layouts_in_one_pass(parts in prop::collection::vec((prop::sample::select(TILED.to_vec()), 0usize..=40, any::<bool>()), 1..=4), blocks in 0usize..=6, m in 1usize..=9) {
        let k = 32 * blocks;
        let x = values(7, m * k, 3.0);
        let data: Vec<Vec<u8>> = parts.iter().enumerate().map(|(i, &(dtype, n, _))| quant::quantize(dtype, &values(50 + i as u64, n * k, 1.0)).unwrap()).collect();
        let plain: Vec<Weights> = parts.iter().zip(&data).map(|(&(dtype, n, _), b)| Weights::new(dtype, n, k, b).unwrap()).collect();
        let packed = PackedWeights::pack(&plain, 1).unwrap();
        let ws: Vec<Weights> = parts.iter().enumerate().map(|(i, &(_, _, tile))| if tile { packed.get(i).unwrap() } else { plain[i] }).collect();
        many_equals_separate(&ws, &x, m).map_err(TestCaseError::fail)?;
    }
}

/// The SwiGLU pass over tiled gate/up equals the GGUF-layout pass at prefill heights (same
/// arithmetic) and stays within the reference's bound at decode.
#[test]
fn swiglu_over_tiled_weights() {
    let (n, k) = (3 * TILE + 5, 96);
    for dtype in TILED {
        let (g, u) = (quant::quantize(dtype, &values(60, n * k, 1.0)).unwrap(), quant::quantize(dtype, &values(61, n * k, 1.0)).unwrap());
        let plain = [Weights::new(dtype, n, k, &g).unwrap(), Weights::new(dtype, n, k, &u).unwrap()];
        let packed = PackedWeights::pack(&plain, 0).unwrap();
        let (gate, up) = (packed.get(0).unwrap(), packed.get(1).unwrap());
        // 21: past the height from which AVX2 unpacks each tile first (16), with an odd tail.
        for m in [PANEL_MIN_M, 13, 21] {
            let x = values(62 + m as u64, m * k, 3.0);
            for cpu in cpus() {
                let (mut a, mut b) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                cpu.matmul_swiglu(&gate, &up, &x, m, &mut a, &mut Scratch::default()).unwrap();
                cpu.matmul_swiglu(&plain[0], &plain[1], &x, m, &mut b, &mut Scratch::default()).unwrap();
                assert_eq!(bits(&a), bits(&b), "{dtype} m={m} on {}", cpu.isa());
            }
        }
    }
}

#[test]
fn packing_refuses_what_it_cannot_tile() {
    let f = quant::quantize(DType::F16, &values(1, 64, 1.0)).unwrap();
    let w = Weights::new(DType::F16, 2, 32, &f).unwrap();
    assert!(matches!(PackedWeights::pack(&[w], 1), Err(Error::Unsupported { op: "PackedWeights::pack", dtype: DType::F16 })));
    let q = quant::quantize(DType::Q4_1, &values(1, 64, 1.0)).unwrap();
    let packed = PackedWeights::pack(&[Weights::new(DType::Q4_1, 2, 32, &q).unwrap()], 1).unwrap();
    assert!(matches!(PackedWeights::pack(&[packed.get(0).unwrap()], 1), Err(Error::Invalid { .. })));
    assert!(matches!(packed.get(1), Err(Error::Shape { .. })));
    // Nothing to pack: no memory, no error.
    let empty = PackedWeights::pack(&[Weights::new(DType::Q8_0, 0, 64, &[]).unwrap()], 1).unwrap();
    assert_eq!((empty.len(), empty.bytes()), (1, 0));
}
