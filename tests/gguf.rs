//! The GGUF reader on hostile input: truncated real headers, random mutations of a valid file,
//! huge counts. Every outcome is `Ok` or an `Error` — never a panic, never a huge allocation.

use proptest::prelude::*;
use sparq::Error;
use sparq::model::Gguf;

/// A small valid GGUF v3: three metadata entries (one an array) and two tensors.
fn sample() -> Vec<u8> {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(2u64.to_le_bytes()); // tensors
    b.extend(3u64.to_le_bytes()); // metadata
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, "llama");
    s(&mut b, "llama.block_count");
    b.extend(4u32.to_le_bytes());
    b.extend(2u32.to_le_bytes());
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    s(&mut b, "a");
    s(&mut b, "b");
    for (name, dims, ty, off) in [("w", vec![32u64, 2], 8u32, 0u64), ("n", vec![4], 0, 96)] {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(ty.to_le_bytes());
        b.extend(off.to_le_bytes());
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(1u8, 96 + 16));
    b
}

#[test]
fn sample_parses() {
    let g = Gguf::from_bytes(sample()).unwrap();
    assert_eq!(g.tensors().len(), 2);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.tensor("w").unwrap().1.len(), 68);
}

#[test]
fn specific_refusals() {
    let mut bad = sample();
    bad[0] = b'X';
    assert!(Gguf::from_bytes(bad).unwrap_err().to_string().contains("magic"));
    let mut bad = sample();
    bad[4] = 9;
    assert!(Gguf::from_bytes(bad).unwrap_err().to_string().contains("version"));
    let mut bad = sample();
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(Gguf::from_bytes(bad).unwrap_err().to_string().contains("cannot fit"), "huge tensor count");
    // Duplicate tensor name: rename "n" to "w".
    let mut bad = sample();
    let i = bad.windows(9).position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'n']).unwrap();
    bad[i + 8] = b'w';
    assert!(Gguf::from_bytes(bad).unwrap_err().to_string().contains("duplicate"));
    // Missing file.
    assert!(matches!(Gguf::open("/nonexistent/model.gguf"), Err(Error::Io(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn truncations_are_errors(len in 0usize..240) {
        let b = sample();
        prop_assume!(len < b.len());
        prop_assert!(matches!(Gguf::from_bytes(b[..len].to_vec()), Err(Error::Gguf(_))));
    }

    #[test]
    fn mutations_never_panic(edits in prop::collection::vec((0usize..400, any::<u8>()), 1..6)) {
        let mut b = sample();
        for (i, v) in edits {
            let i = i % b.len();
            b[i] = v;
        }
        if let Ok(g) = Gguf::from_bytes(b) {
            for t in g.tensors().to_vec() {
                prop_assert_eq!(g.tensor(&t.name).unwrap().1.len(), t.bytes);
            }
        }
    }
}

/// The real model's header, truncated anywhere before its tensor data, is an error.
#[test]
fn truncated_real_headers_are_errors() {
    #[path = "../examples/common/mod.rs"]
    mod common;
    let path = common::find_model(None).unwrap_or_else(|e| panic!("needs the model: {e}"));
    let bytes = std::fs::read(path).unwrap();
    let data_start = Gguf::from_bytes(bytes.clone()).unwrap().tensors().iter().map(|t| t.offset).min().unwrap();
    let mut len = 0;
    while len < data_start {
        assert!(matches!(Gguf::from_bytes(bytes[..len].to_vec()), Err(Error::Gguf(_))), "truncated at {len}");
        len += 1 + len / 3;
    }
}

/// What `GgufWriter` writes, the reader reads back: metadata values of every type, tensors
/// (their dims, formats and bytes), alignment padding.
#[test]
fn writer_round_trips_through_the_reader() {
    use sparq::DType;
    use sparq::model::GgufWriter;
    use sparq::model::gguf::Value;
    let mut w = GgufWriter::new();
    let entries = [
        ("a.u8", Value::U8(7)),
        ("a.i32", Value::I32(-5)),
        ("a.f32", Value::F32(0.25)),
        ("a.f64", Value::F64(-1.5)),
        ("a.bool", Value::Bool(true)),
        ("a.str", Value::String("héllo".into())),
        ("a.u64", Value::U64(1 << 40)),
        ("a.arr", Value::Array(vec![Value::String("x".into()), Value::String("yz".into())])),
    ];
    for (k, v) in &entries {
        w.metadata(k, v.clone()).unwrap();
    }
    assert!(matches!(w.metadata("mixed", Value::Array(vec![Value::U8(1), Value::I8(1)])), Err(Error::Gguf(_))));
    let q = sparq::quant::quantize(DType::Q4_1, &[0.5f32; 64]).unwrap();
    w.tensor("t.q", &[32, 2], DType::Q4_1, q.clone()).unwrap();
    w.tensor("t.f", &[3], DType::F32, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    assert!(matches!(w.tensor("t.bad", &[3], DType::F32, vec![0; 11]), Err(Error::Gguf(_))));
    let g = Gguf::from_bytes(w.to_bytes()).unwrap();
    for (k, v) in &entries {
        assert_eq!(g.get(k).unwrap(), v, "{k}");
    }
    let (info, bytes) = g.tensor("t.q").unwrap();
    assert_eq!((info.dims.as_slice(), info.dtype, bytes), (&[32usize, 2][..], DType::Q4_1, q.as_slice()));
    assert_eq!(g.tensor("t.f").unwrap().1, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
}
