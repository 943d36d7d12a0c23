//! Integer-block weights (Q8_0, Q4_0, Q4_1) against 8-bit activations, row by row: the decode
//! path (m = 1) and small m. At m = 1 this should be memory-bound: the weights are read exactly
//! once and the activation row (`k` bytes) stays in L1 — so the work per block must stay below
//! the time its bytes take to arrive.
//!
//! Two ways through a row, the per-block math identical:
//! - *block path* (Q8_0, and leftover blocks): per 32-element block, one integer dot product
//!   (8 partial sums), one conversion, one FMA by `d_w · d_x`;
//! - *wide path* (Q4_0, Q4_1): a full vector at a time — `LANES / 8` blocks (2 on AVX-512) per
//!   unpack, dot, conversion and FMA — with each group of `LANES` blocks' scales converted
//!   and multiplied by the activation scales in two vector instructions, and the weight-min
//!   term `Σ m_w · d_x·Σx_q` one vector FMA per group (Q4_0's offset rides on it as `m = −8·d`).

use super::formats::{Q4Format, QuantFormat};
use super::{Acts, QRow, TaskOut, WeightRows};
use crate::backend::cpu::simd::{Simd, head};
use crate::quant::QK;

/// Activation rows handled per pass over a weight row.
const GROUP: usize = 4;

/// One activation row, cut to exactly the row's `nb` blocks (so `b < nb` needs no bounds check).
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    dsums: &'a [f32],
}

impl<'a> View<'a> {
    #[inline(always)]
    fn new(x: QRow<'a>, nb: usize) -> Self {
        View { qs: &x.qs[..nb * QK], d: &x.d[..nb], dsums: &x.dsums[..nb] }
    }
    /// The 8-bit values of blocks `b..`, as bytes.
    #[inline(always)]
    fn bytes(&self, b: usize) -> &'a [u8] {
        bytemuck::cast_slice(&self.qs[b * QK..])
    }
}

/// How one weight row meets `R` activation rows.
pub(crate) trait RowDot<Q: QuantFormat> {
    fn dot<S: Simd, const R: usize>(s: S, w: &[Q::Block], x: [View; R]) -> [f32; R];
}

pub(crate) struct BlockPath;
pub(crate) struct WidePath;

/// The scales of a group of `LANES` blocks starting at `b0`, converted from f16 by one vector
/// instruction (collecting them costs less than one AVX-512 gather on this AMD core: measured
/// 15 vs 17 ns per 576-wide Q4_1 row): returns `d_w · d_x` per row and block, and adds the
/// group's weight-min term `m · d_x·Σx_q` to `mins`. With `OFFSET_AS_MIN` the values are taken
/// as unsigned `q` and the format's offset joins the min: `m − OFFSET · d_w`.
#[inline(always)]
fn group_scales<S: Simd, Q: QuantFormat, const R: usize, const OFFSET_AS_MIN: bool>(
    s: S,
    blocks: &[Q::Block],
    x: &[View; R],
    b0: usize,
    mins: &mut [S::F; R],
) -> [[f32; 16]; R] {
    let (mut d16, mut m16) = ([0u8; 32], [0u8; 32]);
    for (j, block) in blocks.iter().enumerate() {
        d16[2 * j..2 * j + 2].copy_from_slice(&Q::d(block));
        if Q::HAS_MIN {
            m16[2 * j..2 * j + 2].copy_from_slice(&Q::m(block));
        }
    }
    let dw = s.load_f16(&d16);
    let offset = if OFFSET_AS_MIN { Q::OFFSET as f32 } else { 0.0 };
    let mw = match (Q::HAS_MIN, offset != 0.0) {
        (true, true) => Some(s.mul_add(dw, s.splat(-offset), s.load_f16(&m16))),
        (true, false) => Some(s.load_f16(&m16)),
        (false, true) => Some(s.mul(dw, s.splat(-offset))),
        (false, false) => None,
    };
    let mut scales = [[0f32; 16]; R];
    for r in 0..R {
        s.store(s.mul(dw, s.load(&x[r].d[b0..])), &mut scales[r]);
        if let Some(mw) = mw {
            mins[r] = s.mul_add(mw, s.load(&x[r].dsums[b0..]), mins[r]);
        }
    }
    scales
}

/// Blocks `from..` of the row one at a time, scales converted one by one (the tail after the
/// last whole group).
#[inline(always)]
fn block_by_block<S: Simd, Q: QuantFormat, const R: usize>(s: S, w: &[Q::Block], x: [View; R], from: usize) -> [f32; R] {
    let mut acc = [s.gzero(); R];
    let mut mins = [0f32; R];
    for (b, block) in w.iter().enumerate().skip(from) {
        let wv = Q::values(s, block);
        let dw = s.f16_to_f32(Q::d(block));
        let mw = if Q::HAS_MIN { s.f16_to_f32(Q::m(block)) } else { 0.0 };
        for r in 0..R {
            let dot = Q::dot(s, wv, s.bload(head(x[r].bytes(b))));
            acc[r] = s.gmul_add(s.btof(dot), dw * x[r].d[b], acc[r]);
            if Q::HAS_MIN {
                mins[r] += mw * x[r].dsums[b];
            }
        }
    }
    std::array::from_fn(|r| s.gsum(acc[r]) + mins[r])
}

impl<Q: QuantFormat> RowDot<Q> for BlockPath {
    #[inline(always)]
    fn dot<S: Simd, const R: usize>(s: S, w: &[Q::Block], x: [View; R]) -> [f32; R] {
        let lanes = S::LANES;
        let groups = w.len() / lanes;
        let mut acc = [s.gzero(); R];
        let mut mins = [s.zero(); R];
        for g in 0..groups {
            let blocks = &w[g * lanes..(g + 1) * lanes];
            let scales = group_scales::<S, Q, R, false>(s, blocks, &x, g * lanes, &mut mins);
            for (j, block) in blocks.iter().enumerate() {
                let wv = Q::values(s, block);
                for r in 0..R {
                    let dot = Q::dot(s, wv, s.bload(head(x[r].bytes(g * lanes + j))));
                    acc[r] = s.gmul_add(s.btof(dot), scales[r][j], acc[r]);
                }
            }
        }
        let tail = block_by_block::<S, Q, R>(s, w, x, groups * lanes);
        std::array::from_fn(|r| s.gsum(acc[r]) + s.sum(mins[r]) + tail[r])
    }
}

impl<Q: Q4Format> RowDot<Q> for WidePath {
    #[inline(always)]
    fn dot<S: Simd, const R: usize>(s: S, w: &[Q::Block], x: [View; R]) -> [f32; R] {
        let lanes = S::LANES;
        let per_vector = lanes / 8;
        let groups = w.len() / lanes;
        // Two accumulator chains (even and odd vectors) and a third for the weight-min terms:
        // with one, decode (R = 1) waits on the FMA latency every step.
        let (mut even, mut odd, mut mins) = ([s.zero(); R], [s.zero(); R], [s.zero(); R]);
        for g in 0..groups {
            let scales = group_scales::<S, Q, R, true>(s, &w[g * lanes..(g + 1) * lanes], &x, g * lanes, &mut mins);
            for v in 0..8 {
                let b = g * lanes + v * per_vector;
                let wv = s.nibbles([Q::qs(&w[b]), Q::qs(&w[b + per_vector - 1])]);
                for r in 0..R {
                    let dot = s.to_f32(s.dot_u7(s.izero(), wv, s.iload(x[r].bytes(b))));
                    let acc = if v % 2 == 0 { &mut even[r] } else { &mut odd[r] };
                    *acc = s.mul_add(dot, s.block_scales(&scales[r][v * per_vector..]), *acc);
                }
            }
        }
        let total = |r: usize| s.sum(s.add(s.add(even[r], odd[r]), mins[r]));
        if groups * lanes == w.len() {
            return std::array::from_fn(total);
        }
        // Blocks after the last whole group, one at a time (cheaper here than vector steps fed
        // by a scale array built on the stack: measured 15 vs 23 ns per 576-wide Q4_1 row).
        let tail = block_by_block::<S, Q, R>(s, w, x, groups * lanes);
        std::array::from_fn(|r| total(r) + tail[r])
    }
}

#[inline(always)]
fn row_group<S: Simd, Q: QuantFormat, P: RowDot<Q>, const R: usize>(s: S, w: WeightRows, x: Acts, r0: usize, out: &TaskOut) {
    let nb = w.k / QK;
    let xs: [View; R] = std::array::from_fn(|i| View::new(x.qrow(r0 + i), nb));
    for c in out.cols() {
        let blocks: &[Q::Block] = bytemuck::cast_slice(w.row(c));
        let y = P::dot::<S, R>(s, blocks, xs);
        for (i, v) in y.iter().enumerate() {
            out.write(r0 + i, c, std::slice::from_ref(v));
        }
    }
}

/// `y[r][c] = x[r] · w[c]` for every row `r` and this task's columns `c`.
#[inline(always)]
pub(crate) fn rows<S: Simd, Q: QuantFormat, P: RowDot<Q>>(s: S, w: WeightRows, x: Acts, out: &TaskOut) {
    let mut r0 = 0;
    while r0 < x.m {
        match x.m - r0 {
            1 => row_group::<S, Q, P, 1>(s, w, x, r0, out),
            2 => row_group::<S, Q, P, 2>(s, w, x, r0, out),
            3 => row_group::<S, Q, P, 3>(s, w, x, r0, out),
            _ => row_group::<S, Q, P, GROUP>(s, w, x, r0, out),
        }
        r0 += (x.m - r0).min(GROUP);
    }
}
