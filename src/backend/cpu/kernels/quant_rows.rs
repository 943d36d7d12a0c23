//! Integer-block weights (Q8_0, Q4_0, Q4_1) against 8-bit activations, row by row: the decode
//! path (m = 1) and small m.
//!
//! Per 32-element block: unpack the weights once, then for each activation row one integer dot
//! product (8 partial sums), one conversion and one FMA by `d_w · d_x`. Q4_1's min contributes
//! `m_w · d_x · Σ x_q`, accumulated as a scalar. This is memory-bound at m = 1: the weights are
//! read exactly once, and the activation row (`k` bytes) stays in L1.

use super::formats::QuantFormat;
use super::{Acts, QRow, TaskOut, WeightRows};
use crate::backend::cpu::simd::{head, Simd};
use crate::quant::QK;

/// Activation rows handled per pass over a weight row.
const GROUP: usize = 4;

#[inline(always)]
fn dot_rows<S: Simd, Q: QuantFormat, const R: usize>(s: S, w: &[Q::Block], x: [QRow; R]) -> [f32; R] {
    let mut acc = [s.gzero(); R];
    let mut mins = [0f32; R];
    for (b, block) in w.iter().enumerate() {
        let wv = Q::values(s, block);
        let dw = s.f16_to_f32(Q::d(block));
        let mw = if Q::HAS_MIN { s.f16_to_f32(Q::m(block)) } else { 0.0 };
        for r in 0..R {
            let xq: &[u8; QK] = head(bytemuck::cast_slice(&x[r].qs[b * QK..]));
            let dot = Q::dot(s, wv, s.bload(xq));
            let dx = x[r].d[b];
            acc[r] = s.gmul_add(s.btof(dot), dw * dx, acc[r]);
            if Q::HAS_MIN {
                mins[r] += mw * (dx * x[r].sums[b] as f32);
            }
        }
    }
    std::array::from_fn(|r| s.gsum(acc[r]) + mins[r])
}

#[inline(always)]
fn row_group<S: Simd, Q: QuantFormat, const R: usize>(s: S, w: WeightRows, x: Acts, r0: usize, out: &TaskOut) {
    let xs: [QRow; R] = std::array::from_fn(|i| x.qrow(r0 + i));
    for c in out.cols() {
        let blocks: &[Q::Block] = bytemuck::cast_slice(w.row(c));
        let y = dot_rows::<S, Q, R>(s, blocks, xs);
        for (i, v) in y.iter().enumerate() {
            out.write(r0 + i, c, std::slice::from_ref(v));
        }
    }
}

/// `y[r][c] = x[r] · w[c]` for every row `r` and this task's columns `c`.
#[inline(always)]
pub(crate) fn rows<S: Simd, Q: QuantFormat>(s: S, w: WeightRows, x: Acts, out: &TaskOut) {
    let mut r0 = 0;
    while r0 < x.m {
        match x.m - r0 {
            1 => row_group::<S, Q, 1>(s, w, x, r0, out),
            2 => row_group::<S, Q, 2>(s, w, x, r0, out),
            3 => row_group::<S, Q, 3>(s, w, x, r0, out),
            _ => row_group::<S, Q, GROUP>(s, w, x, r0, out),
        }
        r0 += (x.m - r0).min(GROUP);
    }
}
