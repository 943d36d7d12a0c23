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
//! The layout itself is described once, in `crate::matmul::tiled`. On `UNPACK_TILES` levels
//! (AVX2) a 4-bit product with `m ≥ UNPACK_MIN_M` first unpacks each tile's nibbles to bytes
//! (`unpack`), so one broadcast feeds both halves.
//!
//! Every block ends in `quant_panel::accumulate_block`, as the packed-panel kernel's do: the
//! integer sums are the same and so is the float arithmetic, so all give identical bits.

use super::formats::QuantFormat;
use super::quant_panel::{PanelBuf, accumulate_block};
use super::{Acts, BlockScales, TaskOut, TiledRows, grow};
use crate::backend::cpu::simd::{Simd, head};
use crate::matmul::tiled::TILE;
use crate::quant::QK;

/// `MR` activation rows from `r0` against tile `t`; writes the tile's columns that exist.
#[inline(always)]
#[allow(clippy::needless_range_loop, reason = "plain indexed loops over register arrays")]
fn micro<S: Simd, Q: QuantFormat, const MR: usize>(s: S, w: TiledRows, t: usize, x: Acts, r0: usize, out: &TaskOut) {
    let lanes = S::LANES;
    let nb = w.k / QK;
    let vb = TILE * QK * Q::BITS / 8;
    // A block's record (`crate::matmul::tiled`): values, then the scales, then the mins.
    let rb = vb + if Q::HAS_MIN { 4 } else { 2 } * TILE;
    // Exact-length views (tile blocks of `rb` bytes, rows of `nb` blocks): with `b < nb` the
    // compiler drops the per-access bounds checks. The `MR` rows' block scales are adjacent in
    // `by_block`, one load base for all rows.
    let tile = &w.tile(t)[..nb * rb];
    let mut xq: [&[i8]; MR] = [&[]; MR];
    for i in 0..MR {
        xq[i] = &x.qrow(r0 + i).qs[..nb * QK];
    }
    let mask = s.isplat(0x0f0f_0f0f);
    let flip = s.isplat(0x8080_8080u32 as i32);
    // Q8_0 words are excess-128; `DOT_SIGNED_Q8` levels flip them back, so no offset to remove.
    let signed_q8 = Q::BITS == 8 && S::DOT_SIGNED_Q8;
    let c0 = t * TILE;
    let width = TILE.min(out.cols().end - c0);
    // The tile's halves of `lanes` rows (2 on 8-lane levels). Decode takes both in one pass:
    // each activation broadcast then serves all 16 rows and the tile streams once, whole cache
    // lines in order. With more activation rows both halves' sums would not fit the 16
    // registers, so each half is its own pass (the tile is in L1 by the second).
    let halves = TILE / lanes;
    let per_pass = if MR == 1 { halves } else { 1 };
    for h0 in (0..halves).step_by(per_pass) {
        if h0 * lanes >= width {
            break;
        }
        let mut acc = [[s.zero(); 2]; MR];
        for (b, wb) in tile.chunks_exact(rb).enumerate() {
            let mut xb: [&[i8; QK]; MR] = [&[0; QK]; MR];
            for i in 0..MR {
                xb[i] = head(&xq[i][b * QK..]);
            }
            let scales: &[BlockScales; MR] = head(&x.by_block[b * x.m + r0..]);
            let word = |j: usize, g: usize| s.iload(&wb[(j * TILE + (h0 + g) * lanes) * 4..]);
            let mut dots = [[s.izero(); 2]; MR];
            if Q::BITS == 4 {
                // Word j's low nibbles are elements 4j.., its high nibbles 16 + 4j.. ; 8 `nib_dot`
                // calls per block, the most the running form allows.
                for j in 0..QK / 8 {
                    let (v0, v1) = (word(j, 0), word(j, per_pass - 1));
                    let nibs = [(s.iand(v0, mask), s.iand(s.ishr(v0, 4), mask)), (s.iand(v1, mask), s.iand(s.ishr(v1, 4), mask))];
                    for i in 0..MR {
                        let (x_lo, x_hi) = (s.isplat4(&xb[i][4 * j..]), s.isplat4(&xb[i][QK / 2 + 4 * j..]));
                        for g in 0..per_pass {
                            dots[i][g] = s.nib_dot(s.nib_dot(dots[i][g], nibs[g].0, x_lo), nibs[g].1, x_hi);
                        }
                    }
                }
                for row in &mut dots {
                    for dot in row.iter_mut().take(per_pass) {
                        *dot = s.nib_sum(*dot);
                    }
                }
            } else {
                for j in 0..QK / 4 {
                    let v = [word(j, 0), word(j, per_pass - 1)];
                    for i in 0..MR {
                        let xj = s.isplat4(&xb[i][4 * j..]);
                        for g in 0..per_pass {
                            dots[i][g] = if signed_q8 { s.dot_i8(dots[i][g], s.ixor(v[g], flip), xj) } else { s.dot_u8(dots[i][g], v[g], xj) };
                        }
                    }
                }
            }
            for g in 0..per_pass {
                let at = vb + (h0 + g) * lanes * 2;
                let dw = s.load_f16(&wb[at..]);
                let mw = if Q::HAS_MIN { s.load_f16(&wb[at + TILE * 2..]) } else { s.zero() };
                for i in 0..MR {
                    acc[i][g] = accumulate_block::<S, Q>(s, dots[i][g], !signed_q8, dw, mw, &scales[i], acc[i][g]);
                }
            }
        }
        write_parts(s, &acc, h0, per_pass, r0, c0, width, out);
    }
}

/// Writes the accumulators of `parts` `LANES`-row parts of a tile, from part `first`, for rows
/// `r0 ..`: tile columns `c0 + part · LANES ..`, only the `width` the tile has.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a micro-tile's place in the output, each distinct")]
fn write_parts<S: Simd, const MR: usize>(s: S, acc: &[[S::F; 2]; MR], first: usize, parts: usize, r0: usize, c0: usize, width: usize, out: &TaskOut) {
    let lanes = S::LANES;
    let mut lane_vals = [0f32; 16];
    for g in 0..parts {
        let start = (first + g) * lanes;
        if start >= width {
            break;
        }
        let cols = c0 + start..c0 + (start + lanes).min(width);
        for (i, a) in acc.iter().enumerate() {
            s.store(a[g], &mut lane_vals);
            out.write(r0 + i, cols.start, &lane_vals[..cols.len()]);
        }
    }
}

/// Activation rows from which a 4-bit product unpacks each tile first (on `UNPACK_TILES`
/// levels): below it the unpacking, one pass over the tile, costs more than it saves.
pub(crate) const UNPACK_MIN_M: usize = 16;

/// Activation rows per unpacked micro-tile.
const UNPACKED_MR: usize = 2;

/// Unpacks tile `t` of a 4-bit format into `buf`: for each block `b`, value word `j < 8` of row
/// `r` at `bytes[((b · 8 + j) · TILE + r) · 4 ..]` holds the row's elements `4j .. 4j + 4`, one
/// byte each (`0..=15`), and its scale and min as f32 at `d[b · TILE + r]`, `m[b · TILE + r]`.
#[inline(always)]
fn unpack<S: Simd, Q: QuantFormat>(s: S, w: TiledRows, t: usize, buf: &mut PanelBuf) {
    let (lanes, nb) = (S::LANES, w.k / QK);
    let vb = TILE * QK / 2;
    let rb = vb + if Q::HAS_MIN { 4 } else { 2 } * TILE;
    let tile = &w.tile(t)[..nb * rb];
    let bytes = grow(&mut buf.bytes, nb * QK * TILE);
    let d = grow(&mut buf.d, nb * TILE);
    let m = grow(&mut buf.m, nb * TILE);
    let mask = s.isplat(0x0f0f_0f0f);
    for (b, wb) in tile.chunks_exact(rb).enumerate() {
        let out = &mut bytes[b * QK * TILE..(b + 1) * QK * TILE];
        for h in 0..TILE / lanes {
            for j in 0..QK / 8 {
                // Word j's low nibbles are elements 4j.., its high nibbles 16 + 4j.. (word 4 + j).
                let v = s.iload(&wb[(j * TILE + h * lanes) * 4..]);
                s.istore(s.iand(v, mask), &mut out[(j * TILE + h * lanes) * 4..]);
                s.istore(s.iand(s.ishr(v, 4), mask), &mut out[((QK / 8 + j) * TILE + h * lanes) * 4..]);
            }
            s.store(s.load_f16(&wb[vb + h * lanes * 2..]), &mut d[b * TILE + h * lanes..]);
            if Q::HAS_MIN {
                s.store(s.load_f16(&wb[vb + (TILE + h * lanes) * 2..]), &mut m[b * TILE + h * lanes..]);
            }
        }
    }
}

/// [`micro`] over an unpacked tile (`unpack`), all its rows in one pass: each activation
/// broadcast feeds every `LANES`-row part of the tile (on AVX2, one broadcast per two
/// `vpmaddubsw` instead of one each), and no nibble is masked in the loop. The integer sums
/// and the float epilogue are `micro`'s, operation for operation: the same bits.
#[inline(always)]
#[allow(clippy::needless_range_loop, reason = "plain indexed loops over register arrays")]
#[allow(clippy::too_many_arguments, reason = "a micro-kernel's operands, each distinct")]
fn micro_unpacked<S: Simd, Q: QuantFormat, const MR: usize>(s: S, buf: &PanelBuf, nb: usize, x: Acts, r0: usize, c0: usize, width: usize, out: &TaskOut) {
    const PARTS: usize = 2;
    let (lanes, parts) = (S::LANES, TILE / S::LANES);
    assert!(parts <= PARTS, "a tile is at most two vectors of rows");
    let (values, dw_all, mw_all) = (&buf.bytes[..nb * QK * TILE], &buf.d[..nb * TILE], &buf.m[..nb * TILE]);
    let mut xq: [&[i8]; MR] = [&[]; MR];
    for i in 0..MR {
        xq[i] = &x.qrow(r0 + i).qs[..nb * QK];
    }
    let mut acc = [[s.zero(); PARTS]; MR];
    for b in 0..nb {
        let wb: &[u8; QK * TILE] = head(&values[b * QK * TILE..]);
        let mut xb: [&[i8; QK]; MR] = [&[0; QK]; MR];
        for i in 0..MR {
            xb[i] = head(&xq[i][b * QK..]);
        }
        let scales: &[BlockScales; MR] = head(&x.by_block[b * x.m + r0..]);
        let mut dots = [[s.izero(); PARTS]; MR];
        for j in 0..QK / 4 {
            let mut v = [s.izero(); PARTS];
            for g in 0..parts {
                v[g] = s.iload(&wb[(j * TILE + g * lanes) * 4..]);
            }
            for i in 0..MR {
                let xj = s.isplat4(&xb[i][4 * j..]);
                for g in 0..parts {
                    dots[i][g] = s.nib_dot(dots[i][g], v[g], xj);
                }
            }
        }
        for g in 0..parts {
            let dw = s.load(&dw_all[b * TILE + g * lanes..]);
            let mw = if Q::HAS_MIN { s.load(&mw_all[b * TILE + g * lanes..]) } else { s.zero() };
            for i in 0..MR {
                acc[i][g] = accumulate_block::<S, Q>(s, s.nib_sum(dots[i][g]), true, dw, mw, &scales[i], acc[i][g]);
            }
        }
    }
    write_parts(s, &acc, 0, parts, r0, c0, width, out);
}

/// `y[r][c] = x[r] · w[c]` for every row `r` and this task's columns, which start on a tile.
#[inline(always)]
pub(crate) fn tiles<S: Simd, Q: QuantFormat, const MR: usize>(s: S, w: TiledRows, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
    let cols = out.cols();
    assert!(cols.start.is_multiple_of(TILE), "tiled tasks start on a tile");
    for t in cols.start / TILE..cols.end.div_ceil(TILE) {
        if S::UNPACK_TILES && Q::BITS == 4 && x.m >= UNPACK_MIN_M {
            unpack::<S, Q>(s, w, t, buf);
            let (nb, c0) = (w.k / QK, t * TILE);
            let width = TILE.min(cols.end - c0);
            let mut r0 = 0;
            while r0 + UNPACKED_MR <= x.m {
                micro_unpacked::<S, Q, UNPACKED_MR>(s, buf, nb, x, r0, c0, width, out);
                r0 += UNPACKED_MR;
            }
            for r in r0..x.m {
                micro_unpacked::<S, Q, 1>(s, buf, nb, x, r, c0, width, out);
            }
            continue;
        }
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
