//! Activation sparsity for the Llama forward (TEAL-style): per layer, four thresholds — one per
//! group of products sharing an input — below which inputs are dropped, calibrated on text so
//! that a target share of each input is dropped.
//!
//! The four sites of a block: the normed input of the Q/K/V projections, the attention output
//! entering the O projection, the normed input of the gate/up projections, and the SwiGLU
//! output entering the down projection. Each threshold is the `sparsity`-quantile of `|x|`
//! observed there over the calibration tokens (dense forward), read from a log-spaced histogram
//! (bins 0.7% apart, so a threshold is within 0.7% of the exact quantile) — uniform
//! sparsity per site, TEAL's baseline; per-layer allocation is a later step.

use super::llama::{Llama, Session};
use crate::kv_cache::KvDtype;
use crate::{Cpu, Error, Result};

/// The sites of a block whose inputs are thresholded, in forward order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// The normed residual entering the Q, K and V projections.
    Qkv = 0,
    /// The attention output entering the O projection.
    AttnOutput = 1,
    /// The normed residual entering the gate and up projections.
    GateUp = 2,
    /// SwiGLU's output entering the down projection.
    Down = 3,
}

impl Site {
    /// All four, in forward order.
    pub const ALL: [Site; 4] = [Site::Qkv, Site::AttnOutput, Site::GateUp, Site::Down];
}

/// Thresholds for every layer and site, and where they apply.
#[derive(Clone, Debug, PartialEq)]
pub struct ActSparsity {
    /// (n_layers) one threshold per [`Site`].
    thresholds: Vec<[f32; 4]>,
    /// The share of inputs the calibration aimed to drop at each site.
    pub target: f32,
    /// Whether prompt processing (`forward` of more than one token) is sparse too. Off, a
    /// prompt runs dense and exact and only generated tokens are sparse (what speeds decoding
    /// up); on, every position computes what decode computes (what perplexity should measure).
    pub prefill: bool,
}

/// Bins of the calibration histogram: log₂-spaced from 2⁻³⁰ to 2³⁰, 1/100 octave each.
const BINS_PER_OCTAVE: f64 = 100.0;
const LOW_OCTAVE: f64 = -30.0;
const BINS: usize = 6000;

fn bin(v: f32) -> usize {
    let v = v.abs() as f64;
    if v == 0.0 {
        return 0;
    }
    ((v.log2() - LOW_OCTAVE) * BINS_PER_OCTAVE).clamp(0.0, (BINS - 1) as f64) as usize
}

fn bin_top(b: usize) -> f32 {
    ((b + 1) as f64 / BINS_PER_OCTAVE + LOW_OCTAVE).exp2() as f32
}

/// The `|x|` histograms of one calibration run: (n_layers × 4) × BINS counts.
#[derive(Debug)]
pub(crate) struct Histograms {
    counts: Vec<u64>,
}

impl Histograms {
    fn new(n_layers: usize) -> Self {
        Histograms { counts: vec![0; n_layers * 4 * BINS] }
    }
    /// Counts the values of `x` seen at `site` of `layer`.
    pub(crate) fn observe(&mut self, layer: usize, site: Site, x: &[f32]) {
        let h = &mut self.counts[(layer * 4 + site as usize) * BINS..][..BINS];
        for &v in x {
            h[bin(v)] += 1;
        }
    }
    /// The smallest bin top below which at least `share` of the values lie.
    fn quantile(&self, layer: usize, site: Site, share: f32) -> f32 {
        let h = &self.counts[(layer * 4 + site as usize) * BINS..][..BINS];
        let total: u64 = h.iter().sum();
        let want = (share as f64 * total as f64).ceil() as u64;
        let mut seen = 0;
        for (b, &c) in h.iter().enumerate() {
            seen += c;
            if seen >= want {
                // Values in bin 0 include exact zeros: threshold 0 keeps every nonzero.
                return if b == 0 { 0.0 } else { bin_top(b) };
            }
        }
        bin_top(BINS - 1)
    }
}

impl ActSparsity {
    /// Thresholds dropping a `sparsity` share (in `0..1`) of each site's inputs, calibrated by
    /// running the dense forward over `tokens` in windows of at most `window` tokens on `cpu`;
    /// `progress(done, total)` is called after each window. Prefill stays dense
    /// ([`ActSparsity::prefill`] off).
    pub fn calibrate(model: &Llama, cpu: &Cpu, tokens: &[u32], window: usize, sparsity: f32, mut progress: impl FnMut(usize, usize)) -> Result<ActSparsity> {
        if !(0.0..1.0).contains(&sparsity) {
            return Err(Error::Invalid { what: "sparsity", detail: format!("an activation sparsity must be in [0, 1), got {sparsity}") });
        }
        if tokens.is_empty() || window == 0 {
            return Err(Error::Invalid { what: "calibration", detail: "no calibration tokens".into() });
        }
        let n_layers = model.config.n_layers;
        let mut hist = Histograms::new(n_layers);
        let windows: Vec<&[u32]> = tokens.chunks(window).collect();
        for (i, w) in windows.iter().enumerate() {
            let mut session = Session::new(model, cpu, w.len(), KvDtype::F32)?;
            session.observe(&mut hist, w)?;
            progress(i + 1, windows.len());
        }
        let thresholds = (0..n_layers).map(|l| Site::ALL.map(|s| hist.quantile(l, s, sparsity))).collect();
        Ok(ActSparsity { thresholds, target: sparsity, prefill: false })
    }

    /// The same `threshold` at every site of `n_layers` layers.
    pub fn uniform(n_layers: usize, threshold: f32) -> Result<ActSparsity> {
        crate::matmul::check_threshold(threshold)?;
        Ok(ActSparsity { thresholds: vec![[threshold; 4]; n_layers], target: f32::NAN, prefill: false })
    }

    /// Layers these thresholds are for.
    pub fn n_layers(&self) -> usize {
        self.thresholds.len()
    }

    /// The threshold at `site` of `layer`.
    pub fn threshold(&self, layer: usize, site: Site) -> f32 {
        self.thresholds[layer][site as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bin() {
        let mut h = Histograms::new(1);
        let values: Vec<f32> = (1..=10_000).map(|i| i as f32 * 1e-3).collect();
        h.observe(0, Site::Down, &values);
        for share in [0.25f32, 0.5, 0.9] {
            let exact = values[(share * values.len() as f32) as usize - 1];
            let got = h.quantile(0, Site::Down, share);
            assert!((got / exact - 1.0).abs() < 0.01, "{share}: {got} vs {exact}");
        }
        // Zeros: a share covered by zeros gives threshold 0 (keep every nonzero).
        let mut z = Histograms::new(1);
        z.observe(0, Site::Qkv, &[0.0, 0.0, 0.0, 1.0]);
        assert_eq!(z.quantile(0, Site::Qkv, 0.5), 0.0);
        assert!(z.quantile(0, Site::Qkv, 1.0) >= 1.0);
    }
}
