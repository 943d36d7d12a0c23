//! Attention against the f64 reference: every level × 1–3 threads × f32/f16/int8 caches, odd
//! sequence lengths and head sizes, GQA ratios, soft-cap and sliding window, shuffled block
//! tables and NaN-poisoned unused slots.

mod common;

use common::{cpus, values};
use proptest::prelude::*;
use sparq::attention::reference::{RefAttention, attention_f64, f32_error_bound, int8_error_bound, int8_kernel_error_bound};
use sparq::{AttnParams, AttnScratch, Error, KvCache, KvCacheConfig, KvDtype, SeqId};

#[derive(Debug, Clone)]
struct Case {
    n_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    lens: Vec<usize>,
    n_q: usize,
    softcap: Option<f32>,
    window: Option<usize>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let lens = prop::collection::vec(prop_oneof![Just(1usize), Just(15), Just(16), Just(17), Just(113), Just(203), 1usize..80], 1..4);
    (
        1usize..4,
        prop_oneof![Just(1usize), Just(2), Just(3), Just(4)],
        prop_oneof![Just(64usize), Just(80), Just(96), Just(128), Just(59), Just(17), Just(8)],
        prop_oneof![Just(16usize), Just(32)],
        lens,
        1usize..40,
        prop::option::of(5.0f32..50.0),
        prop::option::weighted(0.3, 1usize..60),
        any::<u64>(),
    )
        .prop_map(|(n_kv_heads, group, head_dim, block_size, lens, n_q, softcap, window, seed)| Case {
            n_kv_heads,
            group,
            head_dim,
            block_size,
            n_q: n_q.min(lens[0]),
            lens,
            softcap,
            window,
            seed,
        })
}

impl Case {
    fn params(&self) -> AttnParams {
        let mut p = AttnParams::new(self.n_kv_heads * self.group, self.n_kv_heads, self.head_dim);
        p.softcap = self.softcap;
        p.window = self.window;
        p
    }
}

/// A cache holding one sequence per `case.lens` (layer 1 of 2 written with the data; layer 0
/// gets other data), built in interleaved random chunks beside a decoy sequence that is freed
/// at the end, so block tables are scattered and freed blocks hold stale values. The last
/// sequence forks the first one's prefix when it is long enough (copy-on-write).
fn build(case: &Case, dtype: KvDtype) -> (KvCache, Vec<SeqId>) {
    let row = case.n_kv_heads * case.head_dim;
    let total: usize = case.lens.iter().sum::<usize>() * 2 + 64;
    let mut cache = KvCache::new_poisoned(KvCacheConfig {
        n_layers: 2,
        n_kv_heads: case.n_kv_heads,
        head_dim: case.head_dim,
        block_size: case.block_size,
        n_blocks: total.div_ceil(case.block_size) + 8,
        max_seq_len: total.max(4096),
        dtype,
    })
    .unwrap();
    let decoy = cache.new_sequence();
    let seqs: Vec<SeqId> = case.lens.iter().map(|_| cache.new_sequence()).collect();
    let mut rng = case.seed;
    let mut step = |max: usize| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        1 + (rng >> 33) as usize % max
    };
    let fill = |cache: &mut KvCache, s: SeqId, n: usize, salt: u64| {
        let r = cache.append(s, n).unwrap();
        for layer in 0..2 {
            let seed = salt ^ (r.start as u64) << 20 ^ layer as u64;
            let k = values(seed, n * row, 1.5);
            let v = values(seed ^ 0xABCD, n * row, 2.0);
            cache.write(s, layer, r.start, &k, &v).unwrap();
        }
    };
    for (i, (&s, &len)) in seqs.iter().zip(&case.lens).enumerate() {
        let mut done = 0;
        while done < len {
            let n = step(24).min(len - done);
            fill(&mut cache, s, n, case.seed ^ i as u64);
            fill(&mut cache, decoy, step(20), case.seed ^ 0xDEC0);
            done += n;
        }
    }
    cache.free(decoy).unwrap();
    (cache, seqs)
}

fn check(case: &Case, dtype: KvDtype) -> Result<(), TestCaseError> {
    let (cache, seqs) = build(case, dtype);
    let p = case.params();
    let width = p.n_heads * p.head_dim;
    let layer = 1;
    // Prefill of the first sequence's last n_q tokens.
    let q = values(case.seed ^ 0x51, case.n_q * width, 1.0);
    let reference = attention_f64(&cache, layer, seqs[0], &q, &p).unwrap();
    let q_dec = values(case.seed ^ 0x52, seqs.len() * width, 1.0);
    let refs_dec: Vec<_> = seqs.iter().enumerate().map(|(b, &s)| attention_f64(&cache, layer, s, &q_dec[b * width..(b + 1) * width], &p).unwrap()).collect();
    let mut scratch = AttnScratch::default();
    for cpu in cpus() {
        let ctx = format!("{} {} threads {dtype} {case:?}", cpu.isa(), cpu.threads());
        let mut out = vec![f32::NAN; q.len()];
        cpu.attention_prefill(&cache, layer, seqs[0], &q, &mut out, &p, &mut scratch).unwrap();
        compare(&out, &reference, &q, &p, case.block_size, dtype, &format!("prefill {ctx}"))?;

        let mut out = vec![f32::NAN; q_dec.len()];
        cpu.attention_decode(&cache, layer, &seqs, &q_dec, &mut out, &p, &mut scratch).unwrap();
        for (b, r) in refs_dec.iter().enumerate() {
            let q = &q_dec[b * width..(b + 1) * width];
            compare(&out[b * width..(b + 1) * width], r, q, &p, case.block_size, dtype, &format!("decode seq {b} {ctx}"))?;
        }
    }
    Ok(())
}

/// The largest `|q| · scale` of each row of `q`.
fn q_absmax(q: &[f32], p: &AttnParams) -> Vec<f64> {
    q.chunks_exact(p.head_dim).map(|r| r.iter().fold(0f64, |a, x| a.max(x.abs() as f64)) * p.scale as f64).collect()
}

/// `out` against the reference with the bound of the kernel that reads `dtype`.
fn compare(out: &[f32], r: &RefAttention, q: &[f32], p: &AttnParams, bs: usize, dtype: KvDtype, ctx: &str) -> Result<(), TestCaseError> {
    let q_max = q_absmax(q, p);
    for (i, (&y, &x)) in out.iter().zip(&r.out).enumerate() {
        let row = i / p.head_dim;
        let (hd, n) = (p.head_dim, r.n_keys[row]);
        let bound = match dtype {
            KvDtype::I8 => int8_kernel_error_bound(hd, bs, r.score_mag[row], q_max[row], r.k_max[row], r.v_max[row], n),
            _ => f32_error_bound(hd, bs, r.score_mag[row], r.v_max[row], n),
        } + 1e-30;
        let err = (y as f64 - x).abs();
        prop_assert!(err <= bound, "{ctx}: out[{i}] = {y} vs {x}: err {err:.3e} > bound {bound:.3e}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn attention_matches_reference_f32(case in case()) {
        check(&case, KvDtype::F32)?;
    }

    #[test]
    fn attention_matches_reference_f16(case in case()) {
        check(&case, KvDtype::F16)?;
    }

    #[test]
    fn attention_matches_reference_int8(case in case()) {
        check(&case, KvDtype::I8)?;
    }

    /// The stated int8 bound: an int8 cache against the same data in an f32 cache.
    #[test]
    fn int8_cache_within_stated_bound_of_f32(case in case()) {
        let (c32, s32) = build(&case, KvDtype::F32);
        let (c8, s8) = build(&case, KvDtype::I8);
        let p = case.params();
        let q = values(case.seed ^ 0x77, case.n_q * p.n_heads * p.head_dim, 1.0);
        let exact = attention_f64(&c32, 1, s32[0], &q, &p).unwrap();
        let cpu = &cpus()[cpus().len() - 1];
        let mut out = vec![f32::NAN; q.len()];
        cpu.attention_prefill(&c8, 1, s8[0], &q, &mut out, &p, &mut AttnScratch::default()).unwrap();
        let len = c32.len(s32[0]).unwrap();
        let absmax = |kv: usize| (0..len).flat_map(|pos| { let r = c32.read(s32[0], 1, pos).unwrap(); if kv == 0 { r.0 } else { r.1 } })
            .fold(0f64, |a, x| a.max(x.abs() as f64));
        let (kmax, vmax) = (absmax(0), absmax(1));
        let q_max = q_absmax(&q, &p);
        for (i, (&y, &x)) in out.iter().zip(&exact.out).enumerate() {
            let row = i / p.head_dim;
            let q_abs: f64 = q[row * p.head_dim..(row + 1) * p.head_dim].iter().map(|v| v.abs() as f64).sum();
            let bound = int8_error_bound(p.scale, q_abs, kmax, vmax)
                + int8_kernel_error_bound(p.head_dim, case.block_size, exact.score_mag[row] * 1.01, q_max[row], kmax, vmax, exact.n_keys[row]);
            let err = (y as f64 - x).abs();
            prop_assert!(err <= bound, "int8 vs f32 out[{i}] = {y} vs {x}: err {err:.3e} > bound {bound:.3e}");
        }
    }
}

/// Decode over contexts long enough that one task's keys span several groups of chunks (the
/// kernel scores up to 32 chunks' keys before reading their values; one thread and three KV
/// heads make one task of up to 63 chunks per head): group boundaries, a sliding window that
/// starts mid-chunk, a batch of two lengths, scattered blocks and poisoned free slots, every
/// level and format against the f64 reference.
#[test]
fn long_decode_spans_several_groups_of_chunks() {
    for (block_size, window) in [(16, None), (32, Some(3001)), (16, Some(2500))] {
        let case =
            Case { n_kv_heads: 3, group: 3, head_dim: 64, block_size, lens: vec![4000, 2230], n_q: 1, softcap: None, window, seed: 7 + block_size as u64 };
        for dtype in KvDtype::ALL {
            check(&case, dtype).unwrap_or_else(|e| panic!("block size {block_size}, window {window:?}, {dtype}: {e}"));
        }
    }
}

#[test]
fn attention_refuses_bad_arguments() {
    let case = Case { n_kv_heads: 2, group: 2, head_dim: 16, block_size: 16, lens: vec![5], n_q: 3, softcap: None, window: None, seed: 1 };
    let (mut cache, seqs) = build(&case, KvDtype::F32);
    let cpu = &cpus()[0];
    let p = case.params();
    let mut s = AttnScratch::default();
    let width = p.n_heads * p.head_dim;
    let mut out = vec![0f32; width * 6];
    // more queries than tokens
    assert!(matches!(
        cpu.attention_prefill(&cache, 1, seqs[0], &vec![0.0; width * 6], &mut out, &p, &mut s),
        Err(Error::Shape { op: "attention_prefill", .. })
    ));
    // wrong output size
    assert!(matches!(
        cpu.attention_prefill(&cache, 1, seqs[0], &vec![0.0; width], &mut out[..width - 1], &p, &mut s),
        Err(Error::Shape { op: "attention_prefill", .. })
    ));
    // geometry disagreeing with the cache, bad GQA ratio, bad window / softcap
    for bad in [
        AttnParams { head_dim: 32, ..p },
        AttnParams { n_heads: 3, ..p },
        AttnParams { window: Some(0), ..p },
        AttnParams { softcap: Some(-1.0), ..p },
        AttnParams { scale: f32::NAN, ..p },
    ] {
        assert!(
            matches!(
                cpu.attention_prefill(&cache, 1, seqs[0], &vec![0.0; width], &mut out[..width], &bad, &mut s),
                Err(Error::Invalid { what: "attention_prefill", .. })
            ),
            "{bad:?}"
        );
    }
    // NaN queries, unknown layer, freed sequence, empty sequence
    let mut nan_q = vec![0.0; width];
    nan_q[3] = f32::NAN;
    assert!(matches!(cpu.attention_decode(&cache, 1, &seqs, &nan_q, &mut out[..width], &p, &mut s), Err(Error::NonFinite { op: "attention_decode" })));
    assert!(matches!(cpu.attention_decode(&cache, 2, &seqs, &vec![0.0; width], &mut out[..width], &p, &mut s), Err(Error::Invalid { what: "KV cache", .. })));
    let empty = cache.new_sequence();
    assert!(matches!(
        cpu.attention_decode(&cache, 1, &[empty], &vec![0.0; width], &mut out[..width], &p, &mut s),
        Err(Error::Invalid { what: "attention_decode", .. })
    ));
    cache.free(seqs[0]).unwrap();
    assert!(matches!(cpu.attention_decode(&cache, 1, &seqs, &vec![0.0; width], &mut out[..width], &p, &mut s), Err(Error::Invalid { what: "KV cache", .. })));
}
