//! Float-weight matmul (F32, F16, BF16 weights; f32 activations and accumulation).
//!
//! One tile kernel computes `R × C` dot products at once — `R` activation rows against `C`
//! weight rows — so each weight vector loaded (and converted from f16/bf16) feeds `R` FMAs and
//! each activation vector `C` FMAs. Prefill runs 4 × 4 tiles. Decode (and the last < 4 rows)
//! runs `R × 1`: it is memory-bound, and one weight row streaming per thread measured up to
//! ~2× faster here than four interleaved rows (hardware prefetchers track one stream better).

use super::formats::FloatFormat;
use super::{Acts, TaskOut, WeightRows};
use crate::backend::cpu::simd::Simd;

/// Largest tile edge (rows of either operand per tile).
const EDGE: usize = 4;

/// `out[r][c] = Σᵢ x[r][i] · w[c][i]` over `k` elements.
#[inline(always)]
fn tile<S: Simd, W: FloatFormat, const R: usize, const C: usize>(s: S, w: [&[u8]; C], x: [&[f32]; R], k: usize) -> [[f32; C]; R] {
    let mut acc = [[s.zero(); C]; R];
    let body = k - k % S::LANES;
    for i in (0..body).step_by(S::LANES) {
        // Plain loops, not `array::from_fn`: its closure is not always inlined into the
        // `#[target_feature]` caller, and then every vector round-trips through the stack.
        let mut wv = [s.zero(); C];
        for c in 0..C {
            wv[c] = W::load(s, &w[c][i * W::BYTES..]);
        }
        for r in 0..R {
            let xv = s.load(&x[r][i..]);
            for c in 0..C {
                acc[r][c] = s.mul_add(xv, wv[c], acc[r][c]);
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|c| {
            let tail: f32 = (body..k).map(|i| x[r][i] * W::get(w[c], i)).sum();
            s.sum(acc[r][c]) + tail
        })
    })
}

/// `R` activation rows starting at `r0` against this task's weight rows, `C` at a time.
#[inline(always)]
fn row_group<S: Simd, W: FloatFormat, const R: usize, const C: usize>(s: S, w: WeightRows, x: Acts, r0: usize, out: &TaskOut) {
    let xs: [&[f32]; R] = std::array::from_fn(|i| x.row(r0 + i));
    let cols = out.cols();
    let mut c = cols.start;
    while c + C <= cols.end {
        let t = tile::<S, W, R, C>(s, std::array::from_fn(|j| w.row(c + j)), xs, w.k);
        for (i, vals) in t.iter().enumerate() {
            out.write(r0 + i, c, vals);
        }
        c += C;
    }
    for c in c..cols.end {
        let t = tile::<S, W, R, 1>(s, [w.row(c)], xs, w.k);
        for (i, vals) in t.iter().enumerate() {
            out.write(r0 + i, c, vals);
        }
    }
}

/// `y[r][c] = x[r] · w[c]` for every row `r` and this task's columns `c`.
#[inline(always)]
pub(crate) fn rows<S: Simd, W: FloatFormat>(s: S, w: WeightRows, x: Acts, out: &TaskOut) {
    let mut r0 = 0;
    while r0 < x.m {
        match x.m - r0 {
            1 => row_group::<S, W, 1, 1>(s, w, x, r0, out),
            2 => row_group::<S, W, 2, 1>(s, w, x, r0, out),
            3 => row_group::<S, W, 3, 1>(s, w, x, r0, out),
            _ => row_group::<S, W, EDGE, EDGE>(s, w, x, r0, out),
        }
        r0 += (x.m - r0).min(EDGE);
    }
}
