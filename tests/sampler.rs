//! Sampling rules: greedy, top-k, top-p, temperature, repetition penalty, seeding, bad configs.

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
    assert!(Sampler::new(cfg(-1.0, 0, 1.0, 0)).is_err());
    assert!(Sampler::new(cfg(1.0, 0, 0.0, 0)).is_err());
    assert!(Sampler::new(cfg(f32::NAN, 0, 1.0, 0)).is_err());
    let mut s = Sampler::new(cfg(1.0, 0, 1.0, 0)).unwrap();
    assert!(s.sample(&[], &[]).is_err());
    assert!(s.sample(&[1.0, f32::NAN], &[]).is_err());
}
