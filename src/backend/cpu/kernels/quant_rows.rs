//! Integer-block weights (Q8_0, Q4_0, Q4_1) against 8-bit activations, row by row: the decode
//! path (m = 1) and small m.
//!
//! Per 32-element block: unpack the weights once, then for each activation row one integer dot
//! product (8 partial sums), one conversion and one FMA by `d_w · d_x`. Q4_1's min contributes
//! `m_w · d_x · Σ x_q`. At m = 1 this should be memory-bound: the weights are read exactly once,
//! and the activation row (`k` bytes) stays in L1.

use super::formats::QuantFormat;
use super::{Acts, QRow, TaskOut, WeightRows};
use crate::backend::cpu::simd::{head, Simd};
use crate::quant::QK;

/// Activation rows handled per pass over a weight row.
const GROUP: usize = 4;

/// `R` dot products of one weight row with `R` activation rows.
///
/// Blocks go in groups of `LANES`: the group's f16 scales (and mins) are converted by one
/// vector instruction and multiplied by the activations' block scales in one more, so the
/// per-block work is just unpack, integer dot, convert, FMA. Q4_1's min term
/// `Σ m_w · d_x·Σx_q` is one vector FMA per group. Leftover blocks take the same steps one by one.
#[inline(always)]
fn dot_rows<S: Simd, Q: QuantFormat, const R: usize>(s: S, w: &[Q::Block], x: [QRow; R]) -> [f32; R] {
    let (lanes, nb) = (S::LANES, w.len());
    // Exact-length views: with `b < nb` the compiler drops the per-access bounds checks.
    let xq: [&[i8]; R] = std::array::from_fn(|r| &x[r].qs[..nb * QK]);
    let xd: [&[f32]; R] = std::array::from_fn(|r| &x[r].d[..nb]);
    let xdsum: [&[f32]; R] = std::array::from_fn(|r| &x[r].dsums[..nb]);
    let block_dot = |b: usize, wv: S::B, r: usize| {
        let xb: &[u8; QK] = head(bytemuck::cast_slice(&xq[r][b * QK..]));
        s.btof(Q::dot(s, wv, s.bload(xb)))
    };
    let mut acc = [s.gzero(); R];
    let mut mins = [s.zero(); R];
    let groups = nb / lanes;
    for g in 0..groups {
        let blocks = &w[g * lanes..(g + 1) * lanes];
        let (mut d16, mut m16) = ([0u8; 32], [0u8; 32]);
        for (j, block) in blocks.iter().enumerate() {
            d16[2 * j..2 * j + 2].copy_from_slice(&Q::d(block));
            if Q::HAS_MIN {
                m16[2 * j..2 * j + 2].copy_from_slice(&Q::m(block));
            }
        }
        let dw = s.load_f16(&d16);
        let mut scales = [[0f32; 16]; R];
        for r in 0..R {
            s.store(s.mul(dw, s.load(&xd[r][g * lanes..])), &mut scales[r]);
            if Q::HAS_MIN {
                mins[r] = s.mul_add(s.load_f16(&m16), s.load(&xdsum[r][g * lanes..]), mins[r]);
            }
        }
        for (j, block) in blocks.iter().enumerate() {
            let wv = Q::values(s, block);
            for r in 0..R {
                acc[r] = s.gmul_add(block_dot(g * lanes + j, wv, r), scales[r][j], acc[r]);
            }
        }
    }
    let mut tail_mins = [0f32; R];
    for (b, block) in w.iter().enumerate().skip(groups * lanes) {
        let wv = Q::values(s, block);
        let dw = s.f16_to_f32(Q::d(block));
        for r in 0..R {
            acc[r] = s.gmul_add(block_dot(b, wv, r), dw * xd[r][b], acc[r]);
            if Q::HAS_MIN {
                tail_mins[r] += s.f16_to_f32(Q::m(block)) * xdsum[r][b];
            }
        }
    }
    std::array::from_fn(|r| s.gsum(acc[r]) + (s.sum(mins[r]) + tail_mins[r]))
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
