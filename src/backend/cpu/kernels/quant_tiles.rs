//! Integer-block weights in the tiled layout (`crate::matmul::tiled`) against 8-bit activations:
//! one kernel for every `m`, decode included.
//!
//! Per tile of 16 weight rows and per block, each value word is one vector load holding 4 bytes
//! of each row (`LANES` rows at a time: one pass on AVX-512, two halves on 8-lane levels); a
//! broadcast of 4 activation bytes and one `vpdpbusd` then add 4 products into each row's
//! integer sum. The block's scales are two vector loads, so the float work per block is one
//! conversion and two multiply-adds for `LANES` outputs, and nothing is reduced horizontally.
//! `MR` activation rows share each weight load (prefill); decode runs `MR = 1`.
//!
//! The arithmetic — integer block sums, offset removed in integers, then
//! `acc = dot · (d_w · d_x) + acc` and `acc = m_w · (d_x Σx) + acc` per block — is the
//! packed-panel kernel's (`quant_panel`), operation for operation: the two give identical bits.

use super::formats::QuantFormat;
use super::{Acts, TaskOut, TiledRows};
use crate::backend::cpu::simd::{Simd, head};
use crate::matmul::tiled::TILE;
use crate::quant::QK;

/// `MR` activation rows from `r0` against tile `t`; writes the tile's columns that exist.
#[inline(always)]
fn micro<S: Simd, Q: QuantFormat, const MR: usize>(s: S, w: TiledRows, t: usize, x: Acts, r0: usize, out: &TaskOut) {
    let lanes = S::LANES;
    let nb = w.k / QK;
    let vb = TILE * QK * Q::BITS / 8;
    // A block's record: values, then 16 f16 scales `d`, then (with a min) 16 f16 mins.
    let rb = vb + if Q::HAS_MIN { 4 } else { 2 } * TILE;
    let tile = w.tile(t);
    let rows: [_; MR] = std::array::from_fn(|i| x.qrow(r0 + i));
    let mask = s.isplat(0x0f0f_0f0f);
    let c0 = t * TILE;
    let width = TILE.min(out.cols().end - c0);
    for h in 0..TILE.div_ceil(lanes) {
        if h * lanes >= width {
            break;
        }
        let mut acc = [s.zero(); MR];
        for b in 0..nb {
            let wb = &tile[b * rb..(b + 1) * rb];
            let xb: [&[i8; QK]; MR] = std::array::from_fn(|i| head(&rows[i].qs[b * QK..]));
            let word = |j: usize| s.iload(&wb[(j * TILE + h * lanes) * 4..]);
            let mut dots = [s.izero(); MR];
            if Q::BITS == 4 {
                // Word j's low nibbles are elements 4j.., its high nibbles 16 + 4j.. .
                for j in 0..QK / 8 {
                    let v = word(j);
                    let (lo, hi) = (s.iand(v, mask), s.iand(s.ishr(v, 4), mask));
                    for i in 0..MR {
                        dots[i] = s.dot_u7(dots[i], lo, s.isplat4(&xb[i][4 * j..]));
                    }
                    for i in 0..MR {
                        dots[i] = s.dot_u7(dots[i], hi, s.isplat4(&xb[i][QK / 2 + 4 * j..]));
                    }
                }
            } else {
                for j in 0..QK / 4 {
                    let v = word(j);
                    for i in 0..MR {
                        dots[i] = s.dot_u8(dots[i], v, s.isplat4(&xb[i][4 * j..]));
                    }
                }
            }
            let at = vb + h * lanes * 2;
            let dw = s.load_f16(&wb[at..]);
            let mw = if Q::HAS_MIN { s.load_f16(&wb[at + TILE * 2..]) } else { s.zero() };
            for i in 0..MR {
                let mut dot = dots[i];
                if Q::OFFSET != 0 {
                    dot = s.isub(dot, s.isplat(Q::OFFSET * rows[i].sums[b]));
                }
                acc[i] = s.mul_add(s.to_f32(dot), s.mul(dw, s.splat(rows[i].d[b])), acc[i]);
                if Q::HAS_MIN {
                    acc[i] = s.mul_add(mw, s.splat(rows[i].dsums[b]), acc[i]);
                }
            }
        }
        let mut lane_vals = [0f32; 16];
        let cols = c0 + h * lanes..c0 + (h * lanes + lanes).min(width);
        for (i, a) in acc.into_iter().enumerate() {
            s.store(a, &mut lane_vals);
            out.write(r0 + i, cols.start, &lane_vals[..cols.len()]);
        }
    }
}

/// `y[r][c] = x[r] · w[c]` for every row `r` and this task's columns, which start on a tile.
#[inline(always)]
pub(crate) fn tiles<S: Simd, Q: QuantFormat, const MR: usize>(s: S, w: TiledRows, x: Acts, out: &TaskOut) {
    let cols = out.cols();
    assert!(cols.start.is_multiple_of(TILE), "tiled tasks start on a tile");
    for t in cols.start / TILE..cols.end.div_ceil(TILE) {
        let mut r0 = 0;
        while r0 + MR <= x.m {
            micro::<S, Q, MR>(s, w, t, x, r0, out);
            r0 += MR;
        }
        while r0 + 4 <= x.m {
            micro::<S, Q, 4>(s, w, t, x, r0, out);
            r0 += 4;
        }
        for r in r0..x.m {
            micro::<S, Q, 1>(s, w, t, x, r, out);
        }
    }
}
