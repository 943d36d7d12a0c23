//! Integer-block weights against 8-bit activations, packed GEMM: the prefill path (larger m).
//!
//! The task's weight rows are packed, `LANES` rows at a time, into a *panel* laid out for
//! `vpdpbusd`: for each block and each group of 4 consecutive k, one vector holds those 4 bytes
//! of each of the `LANES` rows (`bytes[b][j][lane][4]`, values `q + OFFSET` as unsigned bytes),
//! plus each row's block scale and min (`d[b][lane]`, `m[b][lane]`, f32).
//!
//! The micro-kernel then broadcasts 4 activation bytes of one row and does one multiply-add
//! into `LANES` output columns: 8 per block per row, all into one integer accumulator, and only
//! then converts and scales once per block — so the float work per block is amortized over 8
//! integer instructions and `MR` rows share each weight load.
//!
//! Packing costs one pass over the task's weights per call; it is amortized over all `m` rows.

use super::formats::QuantFormat;
use super::{Acts, QRow, TaskOut, WeightRows};
use crate::backend::cpu::simd::{head, Simd};
use crate::quant::float::f16_le;
use crate::quant::QK;

/// Reusable storage for one packed panel; grows to the largest `k` seen, then stays.
#[derive(Default, Debug)]
pub(crate) struct PanelBuf {
    /// (k / 32, 8, LANES, 4)
    bytes: Vec<u8>,
    /// (k / 32, LANES)
    d: Vec<f32>,
    /// (k / 32, LANES)
    m: Vec<f32>,
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// Packs weight rows `c0 .. c0 + width` (width ≤ lanes) into `buf`; missing rows are zeros.
fn pack<Q: QuantFormat>(w: WeightRows, c0: usize, width: usize, lanes: usize, buf: &mut PanelBuf) {
    let nb = w.k / QK;
    grow(&mut buf.bytes, nb * QK * lanes);
    grow(&mut buf.d, nb * lanes);
    grow(&mut buf.m, nb * lanes);
    for lane in 0..lanes {
        if lane >= width {
            for b in 0..nb {
                buf.d[b * lanes + lane] = 0.0;
                buf.m[b * lanes + lane] = 0.0;
            }
            continue;
        }
        let blocks: &[Q::Block] = bytemuck::cast_slice(w.row(c0 + lane));
        for (b, block) in blocks.iter().enumerate() {
            let vals = Q::packed(block);
            for (j, quad) in vals.chunks_exact(4).enumerate() {
                let at = ((b * 8 + j) * lanes + lane) * 4;
                buf.bytes[at..at + 4].copy_from_slice(quad);
            }
            buf.d[b * lanes + lane] = f16_le(Q::d(block));
            buf.m[b * lanes + lane] = f16_le(Q::m(block));
        }
    }
}

/// `MR` activation rows from `r0` against the packed panel; writes `width` columns at `c0`.
#[inline(always)]
fn micro<S: Simd, Q: QuantFormat, const MR: usize>(
    s: S,
    buf: &PanelBuf,
    nb: usize,
    x: Acts,
    r0: usize,
    c0: usize,
    width: usize,
    out: &TaskOut,
) {
    let lanes = S::LANES;
    let rows: [QRow; MR] = std::array::from_fn(|i| x.qrow(r0 + i));
    let mut acc = [s.zero(); MR];
    for b in 0..nb {
        let panel = &buf.bytes[b * QK * lanes..(b + 1) * QK * lanes];
        let xb: [&[i8; QK]; MR] = std::array::from_fn(|i| head(&rows[i].qs[b * QK..]));
        let mut dots = [s.izero(); MR];
        for j in 0..QK / 4 {
            let wv = s.iload(&panel[j * 4 * lanes..]);
            for i in 0..MR {
                let xv = s.isplat4(&xb[i][4 * j..]);
                dots[i] = if Q::WIDE { s.dot_u8(dots[i], wv, xv) } else { s.dot_u7(dots[i], wv, xv) };
            }
        }
        let dw = s.load(&buf.d[b * lanes..]);
        let mw = if Q::HAS_MIN { s.load(&buf.m[b * lanes..]) } else { s.zero() };
        for i in 0..MR {
            let (dx, sum) = (rows[i].d[b], rows[i].sums[b]);
            let mut dot = dots[i];
            if Q::OFFSET != 0 {
                dot = s.isub(dot, s.isplat(Q::OFFSET * sum));
            }
            acc[i] = s.mul_add(s.to_f32(dot), s.mul(dw, s.splat(dx)), acc[i]);
            if Q::HAS_MIN {
                acc[i] = s.mul_add(mw, s.splat(dx * sum as f32), acc[i]);
            }
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
pub(crate) fn panels<S: Simd, Q: QuantFormat, const MR: usize>(
    s: S,
    w: WeightRows,
    x: Acts,
    out: &TaskOut,
    buf: &mut PanelBuf,
) {
    let lanes = S::LANES;
    let nb = w.k / QK;
    let cols = out.cols();
    for c0 in cols.clone().step_by(lanes) {
        let width = lanes.min(cols.end - c0);
        pack::<Q>(w, c0, width, lanes, buf);
        let mut r0 = 0;
        while r0 + MR <= x.m {
            micro::<S, Q, MR>(s, buf, nb, x, r0, c0, width, out);
            r0 += MR;
        }
        for r in r0..x.m {
            micro::<S, Q, 1>(s, buf, nb, x, r, c0, width, out);
        }
    }
}
