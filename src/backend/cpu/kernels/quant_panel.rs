//! Integer-block weights against 8-bit activations, packed GEMM: the prefill path (larger m).
//!
//! The task's weight rows are packed, `LANES` rows at a time, into a *panel* laid out for
//! `vpdpbusd`: for each block and each group of 4 consecutive k, one vector holds those 4 bytes
//! of each of the `LANES` rows (`bytes[b][j][lane][4]`, values `q + OFFSET` as unsigned bytes),
//! plus each row's block scale and min (`d[b][lane]`, `m[b][lane]`, f32). A full panel is
//! packed with one gather per 4-byte word of a block (`LANES` rows at once); the last, partial
//! panel of a task word by word.
//!
//! The micro-kernel then broadcasts 4 activation bytes of one row and does one multiply-add
//! into `LANES` output columns: 8 per block per row, all into one integer accumulator, and only
//! then converts and scales once per block — so the float work per block is amortized over 8
//! integer instructions and `MR` rows share each weight load.
//!
//! Packing costs one pass over the task's weights per call; it is amortized over all `m` rows.

use super::formats::QuantFormat;
use super::{Acts, BlockScales, TaskOut, WeightRows, grow};
use crate::backend::cpu::simd::{Simd, head};
use crate::quant::QK;
use crate::quant::float::f16_le;

/// Reusable storage for one packed panel; grows to the largest `k` seen, then stays.
#[derive(Default, Debug)]
pub(crate) struct PanelBuf {
    /// (k / 32, 8, LANES, 4); an unpacked tile (`quant_tiles::unpack`): (k / 32, 8, TILE, 4)
    pub(super) bytes: Vec<u8>,
    /// (k / 32, LANES), or (k / 32, TILE)
    pub(super) d: Vec<f32>,
    /// (k / 32, LANES), or (k / 32, TILE)
    pub(super) m: Vec<f32>,
    /// (k, LANES): a float-weight panel
    floats: Vec<f32>,
    /// A segment's running sums (`act_sparse`).
    pub(super) sums: Vec<f32>,
    /// A task's partial products when the work is split along the inputs (`Cpu::product`).
    pub(crate) partial: Vec<f32>,
    /// A row's input blocks with kept inputs (`act_sparse`).
    pub(super) blocks: Vec<super::act_sparse::BlockWork>,
}

impl PanelBuf {
    /// The float panel, at least `len` long.
    pub(crate) fn floats(&mut self, len: usize) -> &mut [f32] {
        grow(&mut self.floats, len)
    }
}

/// Packs weight rows `c0 .. c0 + width` (width ≤ lanes) into `buf`; missing rows are zeros.
#[inline(always)]
fn pack<S: Simd, Q: QuantFormat>(s: S, w: WeightRows, c0: usize, width: usize, buf: &mut PanelBuf) {
    let (lanes, nb, block_bytes) = (S::LANES, w.k / QK, size_of::<Q::Block>());
    grow(&mut buf.bytes, nb * QK * lanes);
    grow(&mut buf.d, nb * lanes);
    grow(&mut buf.m, nb * lanes);
    if width == lanes {
        let rows = &w.bytes[c0 * w.row_bytes..(c0 + lanes) * w.row_bytes];
        for b in 0..nb {
            let x = &rows[b * block_bytes..];
            let panel = &mut buf.bytes[b * QK * lanes..(b + 1) * QK * lanes];
            for (j, v) in Q::packed_lanes(s, x, w.row_bytes).into_iter().enumerate() {
                s.istore(v, &mut panel[j * 4 * lanes..]);
            }
            // d (and Q4_1's m right after it) from one 4-byte gather at the block's start.
            let dm = s.gather4(x, w.row_bytes);
            s.store(s.half_to_f32(dm), &mut buf.d[b * lanes..]);
            if Q::HAS_MIN {
                s.store(s.half_to_f32(s.ishr(dm, 16)), &mut buf.m[b * lanes..]);
            }
        }
        return;
    }
    for lane in 0..lanes {
        if lane >= width {
            // A missing row: scale and min 0, so its (ignored) outputs are 0 whatever the bytes.
            for b in 0..nb {
                buf.d[b * lanes + lane] = 0.0;
                buf.m[b * lanes + lane] = 0.0;
            }
            continue;
        }
        let blocks: &[Q::Block] = bytemuck::cast_slice(w.row(c0 + lane));
        for (b, block) in blocks.iter().enumerate() {
            let panel = &mut buf.bytes[b * QK * lanes..(b + 1) * QK * lanes];
            for (j, quad) in Q::packed(block).into_iter().enumerate() {
                let at = (j * lanes + lane) * 4;
                panel[at..at + 4].copy_from_slice(&quad.to_le_bytes());
            }
            buf.d[b * lanes + lane] = f16_le(Q::d(block));
            buf.m[b * lanes + lane] = f16_le(Q::m(block));
        }
    }
}

/// One block's integer sum `dot` of one activation row into its f32 accumulator: the unsigned
/// storage's offset removed in integers (when `offset`), then `acc = dot · (d_w · d_x) + acc`
/// and, with a min, `acc = m_w · (d_x Σx) + acc`. The panel and tile kernels all end a block
/// here, which is what makes their results equal bit for bit.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a block's operands, each distinct")]
pub(super) fn accumulate_block<S: Simd, Q: QuantFormat>(s: S, dot: S::I, offset: bool, dw: S::F, mw: S::F, x: &BlockScales, acc: S::F) -> S::F {
    let dot = if offset && Q::OFFSET != 0 { s.isub(dot, s.isplat(Q::OFFSET * x.sum)) } else { dot };
    let acc = s.mul_add(s.to_f32(dot), s.mul(dw, s.splat(x.d)), acc);
    if Q::HAS_MIN { s.mul_add(mw, s.splat(x.dsum), acc) } else { acc }
}

/// `MR` activation rows from `r0` against the packed panel; writes `width` columns at `c0`.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a micro-kernel's operands, each distinct")]
#[allow(clippy::needless_range_loop, reason = "plain indexed loops: `array::from_fn` closures are not always inlined into the `#[target_feature]` entry point")]
fn micro<S: Simd, Q: QuantFormat, const MR: usize>(s: S, buf: &PanelBuf, nb: usize, x: Acts, r0: usize, c0: usize, width: usize, out: &TaskOut) {
    let lanes = S::LANES;
    // Exact-length views: with `b < nb` the compiler drops the per-access bounds checks.
    let mut xq: [&[i8]; MR] = [&[]; MR];
    for i in 0..MR {
        xq[i] = &x.qrow(r0 + i).qs[..nb * QK];
    }
    let (panel, dw_all, mw_all) = (&buf.bytes[..nb * QK * lanes], &buf.d[..nb * lanes], &buf.m[..nb * lanes]);
    let mut acc = [s.zero(); MR];
    for b in 0..nb {
        let wb = &panel[b * QK * lanes..(b + 1) * QK * lanes];
        // Fixed-size views: offsets into them are constants, so each broadcast folds into the
        // multiply-add's memory operand with no bounds check.
        let mut xb: [&[i8; QK]; MR] = [&[0; QK]; MR];
        for i in 0..MR {
            xb[i] = head(&xq[i][b * QK..]);
        }
        let scales: &[BlockScales; MR] = head(&x.by_block[b * x.m + r0..]);
        let mut dots = [s.izero(); MR];
        for j in 0..QK / 4 {
            let wv = s.iload(&wb[j * 4 * lanes..]);
            for i in 0..MR {
                let xv = s.isplat4(&xb[i][4 * j..]);
                dots[i] = if Q::WIDE { s.dot_u8(dots[i], wv, xv) } else { s.dot_u7(dots[i], wv, xv) };
            }
        }
        let dw = s.load(&dw_all[b * lanes..]);
        let mw = if Q::HAS_MIN { s.load(&mw_all[b * lanes..]) } else { s.zero() };
        for i in 0..MR {
            acc[i] = accumulate_block::<S, Q>(s, dots[i], true, dw, mw, &scales[i], acc[i]);
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
pub(crate) fn panels<S: Simd, Q: QuantFormat, const MR: usize>(s: S, w: WeightRows, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
    let lanes = S::LANES;
    let nb = w.k / QK;
    let cols = out.cols();
    for c0 in cols.clone().step_by(lanes) {
        let width = lanes.min(cols.end - c0);
        pack::<S, Q>(s, w, c0, width, buf);
        let mut r0 = 0;
        while r0 + MR <= x.m {
            micro::<S, Q, MR>(s, buf, nb, x, r0, c0, width, out);
            r0 += MR;
        }
        while r0 + 4 <= x.m {
            micro::<S, Q, 4>(s, buf, nb, x, r0, c0, width, out);
            r0 += 4;
        }
        for r in r0..x.m {
            micro::<S, Q, 1>(s, buf, nb, x, r, c0, width, out);
        }
    }
}
