//! Small element-wise and row-wise operations of a transformer block: RMSNorm, rotary position
//! embedding (RoPE), residual add (SwiGLU's gating is `Cpu::swiglu`, vectorized). Memory-bound and tiny next to the matrix products at
//! these sizes, so they are plain loops the compiler vectorises; each has its f64 reference in
//! the tests.

use crate::Result;
use crate::error::shape_err;

/// `out[r] = x[r] / rms(x[r]) · w` for each row `r` of `x` (rows, dim); `rms = √(mean(x²) + eps)`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Result<()> {
    let dim = w.len();
    if dim == 0 || !x.len().is_multiple_of(dim) || out.len() != x.len() {
        return shape_err("rms_norm", format!("x ({}) and out ({}) must be rows of dim = {dim}", x.len(), out.len()));
    }
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        // 16 partial sums, which the compiler vectorizes (one f32 accumulator is a serial chain
        // of `dim` dependent adds: 2.6 of a 40 ms SmolLM2 prefill).
        let mut part = [0f32; 16];
        let mut chunks = xr.chunks_exact(16);
        for c in &mut chunks {
            for (p, v) in part.iter_mut().zip(c) {
                *p += v * v;
            }
        }
        let ss = part.iter().sum::<f32>() + chunks.remainder().iter().map(|v| v * v).sum::<f32>();
        let inv = 1.0 / (ss / dim as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
    Ok(())
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) -> Result<()> {
    if x.len() != y.len() {
        return shape_err("add_assign", format!("{} vs {} values", x.len(), y.len()));
    }
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    Ok(())
}

/// Rotary position embedding in ggml's "normal" convention (used for Llama GGUFs, whose
/// converter permutes the Q/K weights to match): within each head, the adjacent pair
/// `(x[2i], x[2i+1])` is rotated by `pos · base^(−2i / rot_dim)`.
#[derive(Debug, Clone)]
pub struct Rope {
    head_dim: usize,
    /// (max_pos, head_dim / 2) cos and sin of each pair's angle
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Positions between directly evaluated angles in [`Rope::new`].
const ROPE_ANCHOR: usize = 64;

impl Rope {
    /// Tables for positions `0..max_pos`, computed in f64 and rounded once to f32.
    ///
    /// Every 64th position (`ROPE_ANCHOR`) is evaluated directly (`sin_cos`); the positions between
    /// advance from it by rotation with the one-step angle (angle addition), which costs a few
    /// multiplications instead of two libm calls (an 8192-position table: ~4 ms → well under 1 ms).
    /// The rotation adds ≲ 2⁻⁵² relative error per step, so after < 64 steps the f64 values are
    /// within ~1e-14 of the direct ones — far below the f32 rounding (6e-8) applied after.
    pub fn new(head_dim: usize, base: f64, max_pos: usize) -> Rope {
        let half = head_dim / 2;
        let freqs: Vec<f64> = (0..half).map(|i| base.powf(-2.0 * i as f64 / head_dim as f64)).collect();
        let steps: Vec<(f64, f64)> = freqs.iter().map(|f| f.sin_cos()).collect();
        let (mut cos, mut sin) = (vec![0f32; max_pos * half], vec![0f32; max_pos * half]);
        let mut at = vec![(0f64, 1f64); half];
        for pos in 0..max_pos {
            for i in 0..half {
                at[i] = if pos % ROPE_ANCHOR == 0 {
                    (pos as f64 * freqs[i]).sin_cos()
                } else {
                    let ((s, c), (ds, dc)) = (at[i], steps[i]);
                    (s * dc + c * ds, c * dc - s * ds)
                };
                sin[pos * half + i] = at[i].0 as f32;
                cos[pos * half + i] = at[i].1 as f32;
            }
        }
        Rope { head_dim, cos, sin }
    }

    /// Positions the tables cover: [`Rope::apply`] refuses positions at or past this.
    pub fn max_pos(&self) -> usize {
        self.cos.len() / (self.head_dim / 2).max(1)
    }

    /// Rotates `x` (tokens, n_heads, head_dim) in place; token `t` is at position `pos0 + t`.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, pos0: usize) -> Result<()> {
        let (hd, half) = (self.head_dim, self.head_dim / 2);
        let row = n_heads * hd;
        if row == 0 || !x.len().is_multiple_of(row) {
            return shape_err("rope", format!("x has {} values, not rows of {n_heads} heads × {hd}", x.len()));
        }
        if pos0 + x.len() / row > self.max_pos() {
            return shape_err("rope", format!("positions up to {} past the table ({})", pos0 + x.len() / row, self.max_pos()));
        }
        for (t, xr) in x.chunks_exact_mut(row).enumerate() {
            let (cos, sin) = (&self.cos[(pos0 + t) * half..][..half], &self.sin[(pos0 + t) * half..][..half]);
            for head in xr.chunks_exact_mut(hd) {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[i] - b * sin[i];
                    pair[1] = a * sin[i] + b * cos[i];
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64, rows with tails. Bound, relative to each output: the sum of squares is a
    /// chain of ≤ dim/16 + 20 f32 adds (16 partial sums, then 16 + the tail), so relative
    /// ≤ (dim/16 + 21)·ε; the square root halves that and adds ε, the division, the two
    /// products ε each: ≤ ((dim/16 + 21)/2 + 4)·ε.
    #[test]
    fn rms_norm_matches_f64() {
        for dim in [1usize, 15, 16, 17, 64, 113, 576] {
            let rows = 3;
            let x: Vec<f32> = (0..rows * dim).map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 3.0).collect();
            let w: Vec<f32> = (0..dim).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect();
            let mut out = vec![0f32; x.len()];
            rms_norm(&x, &w, 1e-5, &mut out).unwrap();
            for r in 0..rows {
                let xr = &x[r * dim..(r + 1) * dim];
                let rms = (xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64 + 1e-5).sqrt();
                for d in 0..dim {
                    let want = xr[d] as f64 / rms * w[d] as f64;
                    let bound = ((dim / 16 + 21) as f64 / 2.0 + 4.0) * f32::EPSILON as f64 * want.abs();
                    let got = out[r * dim + d] as f64;
                    assert!((got - want).abs() <= bound, "dim {dim} row {r} d {d}: {got} vs {want}");
                }
            }
        }
        assert!(rms_norm(&[1.0; 5], &[1.0; 2], 1e-5, &mut [0.0; 5]).is_err());
    }

    /// The rotation-stepped table agrees with direct evaluation to the f32 rounding: the f64
    /// values differ by ≲ 1e-14, so an entry is the directly rounded value or its neighbour
    /// (one f32 step below 1 is 6e-8). SmolLM2's geometry, every position of its context.
    #[test]
    fn rope_table_matches_direct_evaluation() {
        let (hd, base, max_pos) = (64, 100_000.0f64, 8192);
        let rope = Rope::new(hd, base, max_pos);
        let half = hd / 2;
        for pos in 0..max_pos {
            for i in 0..half {
                let (s, c) = (pos as f64 * base.powf(-2.0 * i as f64 / hd as f64)).sin_cos();
                let at = pos * half + i;
                assert!((rope.sin[at] - s as f32).abs() <= 6e-8, "sin pos {pos} i {i}: {} vs {s}", rope.sin[at]);
                assert!((rope.cos[at] - c as f32).abs() <= 6e-8, "cos pos {pos} i {i}: {} vs {c}", rope.cos[at]);
            }
        }
    }
}
