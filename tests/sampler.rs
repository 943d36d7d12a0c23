//! Sampling rules: greedy, top-k, top-p, temperature, repetition penalty, seeding, bad configs.

use sparq::Error;
use sparq::model::{Sampler, SamplerConfig};

fn cfg(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
    SamplerConfig { temperature, top_k, top_p, seed, ..SamplerConfig::default() }
}

#[test]
fn greedy_and_top_k_1_take_the_arg_max() {
    let logits = [0.1, 3.0, -2.0, 2.9, 3.0];
    assert_eq!(Sampler::new(cfg(0.0, 0, 1.0, 0)).unwrap().sample(&logits, &[]).unwrap(), 1, "ties → lowest id");
    let mut s = Sampler::new(cfg(5.0, 1, 1.0, 7)).unwrap();
    assert!((0..50).all(|_| s.sample(&logits, &[]).unwrap() == 1));
}

#[test]
fn top_p_and_top_k_restrict_the_candidates() {
    // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps ids 0 and 1 only.
    let logits = [3.0, 2.0, 1.0, 0.0];
    let mut s = Sampler::new(cfg(1.0, 0, 0.7, 1)).unwrap();
    let seen: std::collections::BTreeSet<u32> = (0..500).map(|_| s.sample(&logits, &[]).unwrap()).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    let mut s = Sampler::new(cfg(1.0, 3, 1.0, 1)).unwrap();
    let seen: std::collections::BTreeSet<u32> = (0..2000).map(|_| s.sample(&logits, &[]).unwrap()).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn seeded_runs_repeat_and_seeds_differ() {
    let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
    let run = |seed| {
        let mut s = Sampler::new(cfg(1.0, 0, 1.0, seed)).unwrap();
        (0..64).map(|_| s.sample(&logits, &[]).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn repetition_penalty_demotes_recent_tokens() {
    let logits = [2.0, 1.9, -1.0];
    let c = SamplerConfig { repeat_penalty: 1.5, ..cfg(0.0, 0, 1.0, 0) };
    assert_eq!(Sampler::new(c).unwrap().sample(&logits, &[0]).unwrap(), 1);
    assert_eq!(Sampler::new(c).unwrap().sample(&logits, &[]).unwrap(), 0);
}

#[test]
fn bad_configs_and_logits_are_errors() {
    assert!(matches!(Sampler::new(cfg(-1.0, 0, 1.0, 0)), Err(Error::Invalid { what: "sampler", .. })));
    assert!(matches!(Sampler::new(cfg(1.0, 0, 0.0, 0)), Err(Error::Invalid { what: "sampler", .. })));
    assert!(matches!(Sampler::new(cfg(f32::NAN, 0, 1.0, 0)), Err(Error::Invalid { what: "sampler", .. })));
    let mut s = Sampler::new(cfg(1.0, 0, 1.0, 0)).unwrap();
    assert!(matches!(s.sample(&[], &[]), Err(Error::Invalid { what: "logits", .. })));
    assert!(matches!(s.sample(&[1.0, f32::NAN], &[]), Err(Error::Invalid { what: "logits", .. })));
}

#[test]
fn min_p_drops_tokens_far_below_the_best() {
    // Probabilities ∝ e^[3, 2, 0, -1]: relative to the best 1, 0.37, 0.05, 0.018. min_p 0.1
    // keeps ids 0 and 1, whatever the temperature (the filter sees temperature-1 probabilities).
    let logits = [3.0, 2.0, 0.0, -1.0];
    for temperature in [0.5, 1.0, 3.0] {
        let mut s = Sampler::new(SamplerConfig { min_p: 0.1, ..cfg(temperature, 0, 1.0, 9) }).unwrap();
        let seen: std::collections::BTreeSet<u32> = (0..2000).map(|_| s.sample(&logits, &[]).unwrap()).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1], "temperature {temperature}");
    }
    // min_p 1 keeps only the best.
    let mut s = Sampler::new(SamplerConfig { min_p: 1.0, ..cfg(2.0, 0, 1.0, 9) }).unwrap();
    assert!((0..200).all(|_| s.sample(&logits, &[]).unwrap() == 0));
}

#[test]
fn top_p_sees_temperature_one_probabilities() {
    // At temperature 1 the best of [3, 2, 1, 0] has p ≈ 0.64 ≥ top_p 0.6: only id 0 survives,
    // even though a temperature of 10 would flatten the distribution if applied first.
    let logits = [3.0, 2.0, 1.0, 0.0];
    let mut s = Sampler::new(cfg(10.0, 0, 0.6, 2)).unwrap();
    assert!((0..500).all(|_| s.sample(&logits, &[]).unwrap() == 0));
}

#[test]
fn temperature_reshapes_the_survivors() {
    // Two survivors with logits 1 and 0: at temperature 1 id 1 is drawn with p = 1/(1+e) ≈ 0.27,
    // at temperature 0.25 with p = 1/(1+e⁴) ≈ 0.018. 4000 draws: ±3σ ≈ ±0.021 and ±0.0063.
    let logits = [1.0, 0.0];
    let rate = |t: f32| {
        let mut s = Sampler::new(cfg(t, 0, 1.0, 5)).unwrap();
        (0..4000).filter(|_| s.sample(&logits, &[]).unwrap() == 1).count() as f64 / 4000.0
    };
    let (warm, cold) = (rate(1.0), rate(0.25));
    assert!((warm - 0.2689).abs() < 0.021, "temperature 1: {warm}");
    assert!((cold - 0.0180).abs() < 0.0063, "temperature 0.25: {cold}");
}

#[test]
fn chat_defaults_are_llama_clis() {
    let c = SamplerConfig::chat(7);
    assert_eq!((c.temperature, c.top_k, c.top_p, c.min_p, c.repeat_penalty, c.seed), (0.8, 40, 0.95, 0.05, 1.0, 7));
    assert_eq!(SamplerConfig::greedy().temperature, 0.0);
    assert!(matches!(Sampler::new(SamplerConfig { min_p: 1.5, ..c }), Err(Error::Invalid { what: "sampler", .. })));
    assert!(matches!(Sampler::new(SamplerConfig { min_p: -0.1, ..c }), Err(Error::Invalid { what: "sampler", .. })));
    // An infinite logit wins outright instead of poisoning the weights with NaN.
    let mut s = Sampler::new(c).unwrap();
    assert_eq!(s.sample(&[0.0, f32::INFINITY, 1.0], &[]).unwrap(), 1);
    assert_eq!(s.sample(&[f32::NEG_INFINITY; 3], &[]).unwrap(), 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
    /// top_k selects its k candidates without sorting the vocabulary; the result must equal
    /// top_k = 0 on logits where everything outside the k best (ties by lowest id, sorted
    /// reference) is −∞ and dropped by a tiny min_p. Logits come from a few values, so ties at
    /// the k-th place are common: a selection that broke ties another way would differ.
    #[test]
    fn top_k_selection_matches_a_full_sort(
        logits in proptest::collection::vec(0u8..6, 1..200),
        k in 1usize..64,
        seed in 0u64..1000,
        temperature in 0.2f32..3.0,
        top_p in 0.3f32..=1.0,
    ) {
        let logits: Vec<f32> = logits.iter().map(|&v| v as f32 * 0.7).collect();
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        let mut masked = vec![f32::NEG_INFINITY; logits.len()];
        for &i in ids.iter().take(k) {
            masked[i as usize] = logits[i as usize];
        }
        let config = |top_k| SamplerConfig { temperature, top_k, top_p, min_p: 1e-30, seed, ..SamplerConfig::default() };
        let (mut a, mut b) = (Sampler::new(config(k)).unwrap(), Sampler::new(config(0)).unwrap());
        for _ in 0..8 {
            proptest::prop_assert_eq!(a.sample(&logits, &[]).unwrap(), b.sample(&masked, &[]).unwrap());
        }
    }
}
