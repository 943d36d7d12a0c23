//! KV-cache semantics as properties: random sequences of append / write / fork / truncate /
//! free never change what another sequence sees, and refused operations change nothing.

use proptest::prelude::*;
use sparq::{Error, KvCache, KvCacheConfig, KvDtype, SeqId};

const HEADS: usize = 2;
const HD: usize = 3;
const ROW: usize = HEADS * HD;

#[derive(Debug, Clone)]
enum Op {
    New,
    Append {
        seq: usize,
        n: usize,
    },
    Fork {
        seq: usize,
    },
    Truncate {
        seq: usize,
        keep: usize,
    },
    Free {
        seq: usize,
    },
    /// Overwrite an existing position (exercises copy-on-write of shared full blocks).
    Rewrite {
        seq: usize,
        pos: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::New),
        4 => (0usize..8, 1usize..40).prop_map(|(seq, n)| Op::Append { seq, n }),
        2 => (0usize..8).prop_map(|seq| Op::Fork { seq }),
        2 => (0usize..8, 0usize..100).prop_map(|(seq, keep)| Op::Truncate { seq, keep }),
        1 => (0usize..8).prop_map(|seq| Op::Free { seq }),
        2 => (0usize..8, 0usize..200).prop_map(|(seq, pos)| Op::Rewrite { seq, pos }),
    ]
}

/// Values exactly representable in every storage dtype: small integers (int8 scales are
/// `max/127`, so rows are built with max 127 and integer entries → exact).
fn token(tag: u32, layer: usize) -> (Vec<f32>, Vec<f32>) {
    let k = (0..ROW).map(|i| if i % HD == 0 { 127.0 } else { ((tag as usize * 7 + i * 3 + layer) % 200) as f32 - 100.0 }).collect();
    let v = (0..ROW).map(|i| if i % HD == 1 { -127.0 } else { ((tag as usize * 5 + i + 11 * layer) % 180) as f32 - 90.0 }).collect();
    (k, v)
}

fn run(ops: &[Op], dtype: KvDtype, block_size: usize) -> Result<(), TestCaseError> {
    let mut cache =
        KvCache::new_poisoned(KvCacheConfig { n_layers: 2, n_kv_heads: HEADS, head_dim: HD, block_size, n_blocks: 12, max_seq_len: 150, dtype }).unwrap();
    // The model: per live sequence, the tag of each stored token.
    let mut model: Vec<(SeqId, Vec<u32>)> = vec![(cache.new_sequence(), vec![])];
    let mut dead: Vec<SeqId> = vec![];
    let mut next_tag = 0u32;
    let write = |cache: &mut KvCache, s: SeqId, pos: usize, tag: u32| -> sparq::Result<()> {
        for layer in 0..2 {
            let (k, v) = token(tag, layer);
            cache.write(s, layer, pos, &k, &v)?;
        }
        Ok(())
    };
    for op in ops {
        let before_free = cache.free_blocks();
        let live = model.len().max(1);
        let pick = |i: usize| i % live;
        match *op {
            Op::New => model.push((cache.new_sequence(), vec![])),
            _ if model.is_empty() => continue,
            Op::Append { seq, n } => {
                let (s, toks) = &mut model[pick(seq)];
                match cache.append(*s, n) {
                    Ok(r) => {
                        prop_assert_eq!(r.start, toks.len());
                        for pos in r {
                            next_tag += 1;
                            write(&mut cache, *s, pos, next_tag).unwrap();
                            toks.push(next_tag);
                        }
                    }
                    Err(_) => {
                        // Refused only past the maximum length or when the new blocks (+1 for a
                        // copy-on-write of a shared tail) exceed the free ones.
                        let new_blocks = (toks.len() + n).div_ceil(block_size) - toks.len().div_ceil(block_size);
                        prop_assert!(toks.len() + n > 150 || before_free < new_blocks + 1);
                        prop_assert_eq!(cache.free_blocks(), before_free, "a refused append changed the pool");
                    }
                }
            }
            Op::Fork { seq } => {
                let (s, toks) = model[pick(seq)].clone();
                model.push((cache.fork(s).unwrap(), toks));
            }
            Op::Truncate { seq, keep } => {
                let (s, toks) = &mut model[pick(seq)];
                let r = cache.truncate(*s, keep);
                if keep <= toks.len() {
                    r.unwrap();
                    toks.truncate(keep);
                } else {
                    let refused = matches!(r, Err(Error::Invalid { what: "KV cache", .. }));
                    prop_assert!(refused, "truncate past the length: {:?}", r);
                }
            }
            Op::Free { seq } => {
                let (s, _) = model.remove(pick(seq));
                cache.free(s).unwrap();
                dead.push(s);
            }
            Op::Rewrite { seq, pos } => {
                let (s, toks) = &mut model[pick(seq)];
                if pos < toks.len() {
                    next_tag += 1;
                    if write(&mut cache, *s, pos, next_tag).is_ok() {
                        toks[pos] = next_tag;
                    } else {
                        prop_assert_eq!(cache.free_blocks(), 0, "copy-on-write refused with free blocks");
                    }
                }
            }
        }
        // Every live sequence still reads exactly its own tokens; freed handles are refused.
        for (s, toks) in &model {
            prop_assert_eq!(cache.len(*s).unwrap(), toks.len());
            for (pos, &tag) in toks.iter().enumerate() {
                for layer in 0..2 {
                    prop_assert_eq!(cache.read(*s, layer, pos).unwrap(), token(tag, layer), "{:?} pos {} after {:?}", s, pos, op);
                }
            }
        }
        for s in &dead {
            let freed = |e: Error| matches!(e, Error::Invalid { what: "KV cache", ref detail } if detail.contains("unknown or freed"));
            prop_assert!(freed(cache.len(*s).unwrap_err()) && freed(cache.append(*s, 1).unwrap_err()) && freed(cache.fork(*s).unwrap_err()));
        }
    }
    // Freeing everything returns every block.
    for (s, _) in model {
        cache.free(s).unwrap();
    }
    prop_assert_eq!(cache.free_blocks(), 12);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn sequences_never_see_each_others_writes(
        ops in prop::collection::vec(op(), 1..60),
        dtype in prop_oneof![Just(KvDtype::F32), Just(KvDtype::F16), Just(KvDtype::I8)],
        block_size in prop_oneof![Just(16usize), Just(32)],
    ) {
        run(&ops, dtype, block_size)?;
    }
}

#[test]
fn refusals_are_errors() {
    let cfg = KvCacheConfig { n_layers: 1, n_kv_heads: 1, head_dim: 4, block_size: 16, n_blocks: 2, max_seq_len: 40, dtype: KvDtype::F32 };
    assert!(matches!(KvCache::new(KvCacheConfig { block_size: 8, ..cfg }), Err(Error::Invalid { what: "KV cache", .. })));
    assert!(matches!(KvCache::new(KvCacheConfig { head_dim: 0, ..cfg }), Err(Error::Invalid { what: "KV cache", .. })));
    assert!(matches!(KvCache::new(KvCacheConfig { head_dim: 513, dtype: KvDtype::I8, ..cfg }), Err(Error::Invalid { what: "KV cache", .. })));
    assert!(KvCache::new(KvCacheConfig { head_dim: 512, dtype: KvDtype::I8, ..cfg }).is_ok());
    assert!(matches!(KvCache::new(KvCacheConfig { n_blocks: usize::MAX / 4, ..cfg }), Err(Error::Invalid { what: "KV cache", .. })));
    let mut c = KvCache::new_poisoned(cfg).unwrap();
    let s = c.new_sequence();
    assert!(matches!(c.append(s, 41), Err(Error::Invalid { what: "KV cache", .. })), "past max_seq_len");
    assert!(matches!(c.append(s, 33), Err(Error::Invalid { what: "KV cache", .. })), "out of blocks");
    assert_eq!(c.len(s).unwrap(), 0);
    c.append(s, 2).unwrap();
    assert!(matches!(c.write(s, 0, 1, &[0.0; 8], &[0.0; 8]), Err(Error::Invalid { what: "KV cache", .. })), "write past the appended length");
    assert!(matches!(c.write(s, 1, 0, &[0.0; 4], &[0.0; 4]), Err(Error::Invalid { what: "KV cache", .. })), "unknown layer");
    assert!(matches!(c.write(s, 0, 0, &[0.0; 3], &[0.0; 3]), Err(Error::Shape { op: "KvCache::write", .. })), "ragged rows");
    assert!(matches!(c.write(s, 0, 0, &[f32::NAN; 4], &[0.0; 4]), Err(Error::NonFinite { op: "KvCache::write" })), "NaN");
    assert!(matches!(c.read(s, 0, 2), Err(Error::Invalid { what: "KV cache", .. })));
    assert!(matches!(c.truncate(s, 3), Err(Error::Invalid { what: "KV cache", .. })));
    let t = c.fork(s).unwrap();
    c.free(s).unwrap();
    assert!(matches!(c.free(s), Err(Error::Invalid { what: "KV cache", .. })), "double free");
    assert_eq!(c.len(t).unwrap(), 2);
    let s2 = c.new_sequence();
    assert_ne!(s, s2, "a reused slot gets a new generation");
    assert!(matches!(c.len(s), Err(Error::Invalid { what: "KV cache", .. })));
}
