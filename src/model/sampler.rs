//! Choosing the next token from logits: greedy, or llama.cpp's sampler chain — repetition
//! penalty, top-k, top-p, min-p, then temperature — seeded and reproducible.

use crate::{Error, Result};

/// How to sample. `temperature == 0` is greedy (arg-max; ties go to the lowest id).
///
/// Otherwise the filters run in llama.cpp's order on the penalized logits' probabilities at
/// temperature 1 — top-k, then top-p, then min-p — and the temperature then reshapes the
/// survivors before the draw. [`SamplerConfig::default`] is greedy (deterministic, for tests
/// and benchmarks); [`SamplerConfig::chat`] is what a chat tool wants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Divides the surviving logits before the draw (0 = greedy: the arg-max, no filters).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Keep only tokens at least `min_p` times as likely as the most likely one (0 = all).
    pub min_p: f32,
    /// llama.cpp's rule: logits of tokens seen in the last `repeat_window` are divided by the
    /// penalty when positive, multiplied when negative (1 = off).
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_window: usize,
    /// Seeds the sampler's random numbers: the same seed, logits and history give the same tokens.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// Greedy.
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 40, top_p: 0.95, min_p: 0.0, repeat_penalty: 1.0, repeat_window: 64, seed: 0 }
    }
}

impl SamplerConfig {
    /// Greedy decoding (the arg-max at every step): [`SamplerConfig::default`].
    pub fn greedy() -> Self {
        Self::default()
    }

    /// llama.cpp's `llama-cli` defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05,
    /// no repetition penalty (window 64 when one is set), with the given seed.
    pub fn chat(seed: u64) -> Self {
        SamplerConfig { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0, repeat_window: 64, seed }
    }
}

/// A sampler with its random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    state: u64,
    /// (vocab) candidates, reused
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    #[allow(clippy::nonminimal_bool, reason = "negated comparisons on purpose: NaN fails every one of them")]
    /// A sampler with `config`, checked: an error unless `temperature ≥ 0`, `0 < top_p ≤ 1`,
    /// `0 ≤ min_p ≤ 1` and `repeat_penalty > 0`, all finite.
    pub fn new(config: SamplerConfig) -> Result<Sampler> {
        let c = &config;
        if !(c.temperature >= 0.0 && c.temperature.is_finite())
            || !(c.top_p > 0.0 && c.top_p <= 1.0)
            || !(c.min_p >= 0.0 && c.min_p <= 1.0)
            || !(c.repeat_penalty > 0.0 && c.repeat_penalty.is_finite())
        {
            return Err(Error::Invalid {
                what: "sampler",
                detail: format!("temperature ≥ 0, 0 < top_p ≤ 1, 0 ≤ min_p ≤ 1 and repeat_penalty > 0 are required: {config:?}"),
            });
        }
        Ok(Sampler { config, state: config.seed ^ 0x9E37_79B9_7F4A_7C15, candidates: Vec::new() })
    }

    /// A uniform number in [0, 1) (splitmix64).
    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// The next token given `logits` (vocab) and the tokens so far (for the penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() || logits.iter().any(|x| x.is_nan()) {
            return Err(Error::Invalid { what: "logits", detail: "empty or NaN".into() });
        }
        let c = self.config;
        self.candidates.clear();
        self.candidates.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        if c.repeat_penalty != 1.0 {
            let mut seen = history[history.len().saturating_sub(c.repeat_window)..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in seen.iter().filter(|&&t| (t as usize) < logits.len()) {
                let l = &mut self.candidates[t as usize].1;
                *l = if *l > 0.0 { *l / c.repeat_penalty } else { *l * c.repeat_penalty };
            }
        }
        let u = self.uniform();
        let cands = &mut self.candidates;
        if c.temperature == 0.0 {
            let best = cands.iter().fold(cands[0], |b, &x| if x.1 > b.1 { x } else { b });
            return Ok(best.0);
        }
        // Most likely first; ties by id, a total order, so the result depends on neither the
        // sort's stability nor on selecting before sorting. With top_k (40 by default) only the
        // k best are selected (O(vocab)) and sorted, not the whole vocabulary every token.
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if c.top_k > 0 && c.top_k < cands.len() {
            cands.select_nth_unstable_by(c.top_k - 1, order);
            cands.truncate(c.top_k);
        }
        cands.sort_unstable_by(order);
        // Probabilities at temperature 1 (unnormalized: relative to the best), for the filters.
        let max = cands[0].1;
        if !max.is_finite() {
            // An infinite best logit (or only −∞ ones): nothing else can be weighed against it.
            return Ok(cands[0].0);
        }
        let mut total = 0.0;
        for x in cands.iter_mut() {
            x.1 -= max;
            total += x.1.exp();
        }
        let mut kept = 0.0;
        let mut keep = cands.len();
        for (i, x) in cands.iter().enumerate() {
            kept += x.1.exp() / total;
            if kept >= c.top_p {
                keep = i + 1;
                break;
            }
        }
        cands.truncate(keep);
        if c.min_p > 0.0 {
            // p / p_max = exp(logit − max) ≥ min_p; the best token always stays.
            let floor = c.min_p.ln();
            let keep = cands.iter().position(|x| x.1 < floor).unwrap_or(cands.len()).max(1);
            cands.truncate(keep);
        }
        // The temperature reshapes the survivors.
        for x in cands.iter_mut() {
            x.1 = (x.1 / c.temperature).exp();
        }
        let total: f32 = cands.iter().map(|x| x.1).sum();
        let mut r = u * total;
        for x in cands.iter() {
            r -= x.1;
            if r < 0.0 {
                return Ok(x.0);
            }
        }
        Ok(cands[cands.len() - 1].0)
    }
}
