//! Bad input gets an `Error` naming the op (or a documented result) — never a panic.

use sparq::{Cpu, DType, Error, Isa, Scratch, Weights, quant};

fn q4_1(n: usize, k: usize) -> Vec<u8> {
    quant::quantize(DType::Q4_1, &vec![0.5; n * k]).unwrap()
}

#[test]
fn weights_validate_shape_and_format() {
    let bytes = q4_1(4, 64);
    assert!(Weights::new(DType::Q4_1, 4, 64, &bytes).is_ok());
    // wrong byte count
    assert!(matches!(Weights::new(DType::Q4_1, 5, 64, &bytes), Err(Error::Shape { op: "Weights::new", .. })));
    // k not a multiple of the block size
    assert!(matches!(Weights::new(DType::Q4_1, 4, 48, &bytes), Err(Error::BlockAlign { op: "Weights::new", .. })));
    // activation-only format
    assert!(matches!(Weights::new(DType::Q8_1, 1, 32, &[0; 36]), Err(Error::Unsupported { .. })));
    // overflowing dimensions
    assert!(matches!(Weights::new(DType::F32, usize::MAX, 2, &[]), Err(Error::Shape { .. })));
}

#[test]
fn matmul_validates_lengths() {
    let bytes = q4_1(4, 64);
    let w = Weights::new(DType::Q4_1, 4, 64, &bytes).unwrap();
    let cpu = Cpu::new(2).unwrap();
    let mut s = Scratch::default();
    let mut y = vec![0f32; 8];
    let err = cpu.matmul(&w, &[0.0; 64], 2, &mut y, &mut s).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "matmul", .. }), "{err}");
    assert!(err.to_string().starts_with("matmul: shape mismatch"));
    let err = cpu.matmul(&w, &[0.0; 128], 2, &mut y[..7], &mut s).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "matmul", .. }));
    assert!(matches!(cpu.matmul(&w, &[0.0; 128], usize::MAX, &mut y, &mut s), Err(Error::Shape { op: "matmul", .. })));
}

#[test]
fn non_finite_activations_are_refused_for_every_format() {
    let cpu = Cpu::new(1).unwrap();
    for dtype in DType::WEIGHTS {
        let bytes = quant::quantize(dtype, &[0.25; 2 * 32]).unwrap();
        let w = Weights::new(dtype, 2, 32, &bytes).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = vec![1.0; 32];
            x[17] = bad;
            let mut y = [7.0f32; 2];
            let err = cpu.matmul(&w, &x, 1, &mut y, &mut Scratch::default()).unwrap_err();
            assert_eq!(err, Error::NonFinite { op: "matmul" }, "{dtype}");
            assert_eq!(y, [7.0; 2], "{dtype}: outputs untouched on error");
        }
    }
}

#[test]
fn empty_matrices_have_documented_results() {
    let cpu = Cpu::new(2).unwrap();
    let mut s = Scratch::default();
    for dtype in DType::WEIGHTS {
        // n = 0: nothing to write.
        let w = Weights::new(dtype, 0, 32, &[]).unwrap();
        cpu.matmul(&w, &[1.0; 64], 2, &mut [], &mut s).unwrap();
        // m = 0: nothing to write.
        let bytes = quant::quantize(dtype, &[1.0; 96]).unwrap();
        let w = Weights::new(dtype, 3, 32, &bytes).unwrap();
        cpu.matmul(&w, &[], 0, &mut [], &mut s).unwrap();
        // k = 0: empty sums are zero.
        let w = Weights::new(dtype, 3, 0, &[]).unwrap();
        let mut y = [5.0f32; 6];
        cpu.matmul(&w, &[], 2, &mut y, &mut s).unwrap();
        assert_eq!(y, [0.0; 6], "{dtype}");
    }
}

#[test]
fn unsupported_levels_are_errors_not_crashes() {
    for isa in Isa::ALL {
        match Cpu::with_isa(isa, 1) {
            Ok(cpu) => assert!(isa.is_supported() && cpu.isa() == isa),
            Err(e) => assert!(!isa.is_supported() && matches!(e, Error::IsaUnavailable { .. })),
        }
    }
}

/// `SPARQ_MAX_ISA` / `SPARQ_REQUIRE_ISA`, as set by whoever runs the suite (see .ci/run): the
/// selection must honour them, and a required level that is missing must fail this test.
#[test]
fn selection_honours_environment() {
    let selected = Isa::selected();
    if let Ok(req) = std::env::var("SPARQ_REQUIRE_ISA") {
        let req: Isa = req.parse().expect("SPARQ_REQUIRE_ISA names a level");
        assert_eq!(selected.clone().expect("required level must be available"), req);
    }
    if let Ok(max) = std::env::var("SPARQ_MAX_ISA") {
        let max: Isa = max.parse().expect("SPARQ_MAX_ISA names a level");
        assert!(selected.clone().unwrap() <= max);
    }
    if std::env::var("SPARQ_REQUIRE_ISA").is_err() && std::env::var("SPARQ_MAX_ISA").is_err() {
        assert_eq!(selected.unwrap(), Isa::best());
    }
    assert!(sparq::isa_report().contains("selected"));
}
