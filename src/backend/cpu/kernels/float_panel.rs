//! Float-weight GEMM (F32, F16, BF16 weights; f32 activations and accumulation): the prefill
//! path (m ≥ `PANEL_MIN_M`).
//!
//! `LANES` weight rows are packed k-major into an f32 panel (`panel[k][lane]`, gathered two k
//! at a time and converted from f16/bf16 once), then an outer-product micro-kernel keeps
//! `MR × LANES` outputs in registers: per k, one panel vector times `MR` broadcast activations.
//! Packing is one pass over the task's weights per call, amortized over all `m` rows.

use super::formats::FloatFormat;
use super::quant_panel::PanelBuf;
use super::{Acts, TaskOut, WeightRows};
use crate::backend::cpu::simd::{Simd, head};

/// Activation values per fixed-size step of the micro-kernel (constant offsets inside a step).
const STEP: usize = 16;

/// Packs weight rows `c0 .. c0 + width` (width ≤ lanes) as `panel[k][lane]`; missing rows are zeros.
#[inline(always)]
fn pack<S: Simd, W: FloatFormat>(s: S, w: WeightRows, c0: usize, width: usize, panel: &mut [f32]) {
    let (lanes, k, rb) = (S::LANES, w.k, w.row_bytes);
    let mut scalar_from = 0;
    if width == lanes {
        let rows = &w.bytes[c0 * rb..(c0 + lanes) * rb];
        for i in (0..k.saturating_sub(1)).step_by(2) {
            let (a, b) = W::gather_pair(s, &rows[i * W::BYTES..], rb);
            s.store(a, &mut panel[i * lanes..]);
            s.store(b, &mut panel[(i + 1) * lanes..]);
        }
        scalar_from = k - k % 2;
    }
    for lane in 0..lanes {
        let row = (lane < width).then(|| w.row(c0 + lane));
        for i in scalar_from..k {
            panel[i * lanes + lane] = row.map_or(0.0, |r| W::get(r, i));
        }
    }
}

/// `MR` activation rows from `r0` against the packed panel; writes `width` columns at `c0`.
#[inline(always)]
#[allow(clippy::needless_range_loop, reason = "plain indexed loops: `array::from_fn` closures are not always inlined into the `#[target_feature]` entry point")]
fn micro<S: Simd, const MR: usize>(s: S, panel: &[f32], x: Acts, r0: usize, c0: usize, width: usize, out: &TaskOut) {
    let (lanes, k) = (S::LANES, x.k);
    let mut xr: [&[f32]; MR] = [&[]; MR];
    for i in 0..MR {
        xr[i] = x.row(r0 + i);
    }
    let mut acc = [s.zero(); MR];
    let steps = k / STEP;
    for st in 0..steps {
        let mut xs: [&[f32; STEP]; MR] = [&[0.0; STEP]; MR];
        for i in 0..MR {
            xs[i] = head(&xr[i][st * STEP..]);
        }
        let block = &panel[st * STEP * lanes..(st + 1) * STEP * lanes];
        for j in 0..STEP {
            let wv = s.load(&block[j * lanes..]);
            for i in 0..MR {
                acc[i] = s.mul_add(s.splat(xs[i][j]), wv, acc[i]);
            }
        }
    }
    for kk in steps * STEP..k {
        let wv = s.load(&panel[kk * lanes..]);
        for i in 0..MR {
            acc[i] = s.mul_add(s.splat(xr[i][kk]), wv, acc[i]);
        }
    }
    let mut lane_vals = [0f32; 16];
    for (i, a) in acc.into_iter().enumerate() {
        s.store(a, &mut lane_vals);
        out.write(r0 + i, c0, &lane_vals[..width]);
    }
}

/// `y[r][c] = x[r] · w[c]` for every row `r` and this task's columns, `MR` rows per micro-tile.
#[inline(always)]
pub(crate) fn panels<S: Simd, W: FloatFormat, const MR: usize>(s: S, w: WeightRows, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
    let lanes = S::LANES;
    let panel = buf.floats(w.k * lanes);
    let cols = out.cols();
    for c0 in cols.clone().step_by(lanes) {
        let width = lanes.min(cols.end - c0);
        pack::<S, W>(s, w, c0, width, panel);
        let mut r0 = 0;
        while r0 + MR <= x.m {
            micro::<S, MR>(s, panel, x, r0, c0, width, out);
            r0 += MR;
        }
        while r0 + 4 <= x.m {
            micro::<S, 4>(s, panel, x, r0, c0, width, out);
            r0 += 4;
        }
        for r in r0..x.m {
            micro::<S, 1>(s, panel, x, r, c0, width, out);
        }
    }
}
