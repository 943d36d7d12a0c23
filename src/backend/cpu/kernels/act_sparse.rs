//! Activation-sparse products over input-major weights ([`crate::matmul::Layout::InputMajor`]).
//!
//! `y = x · wᵀ = Σᵢ xᵢ · w[:, i]`: with the weights stored input-major (row `i` of the bytes is
//! column `i` of `w`, `n` outputs in 32-element blocks), an input that is zero contributes
//! nothing and its row is never read. The product is a sum of scaled rows over the *active*
//! inputs only (`Acts::active_row`, built once per call): decode reads `(1 − sparsity)` of the
//! matrix's bytes.
//!
//! Per active input and output block, with the block's scale `d` and constant `c` (Q4_1's min
//! `m`, Q4_0's `−8·d`, 0 for Q8_0): `y[b·32 + j] += (xᵢ·d) · q_j` in vectors, and the block's
//! `xᵢ · c` — the same for its 32 outputs — into one scalar per block, added once at the end.
//!
//! A task owns a run of output blocks and walks it in segments of at most `SEGMENT` outputs:
//! the segment's running sums stay in L1 (`PanelBuf::sums`), and each active input's row
//! segment is one contiguous run of bytes (Q4_1: 20 bytes per 32 outputs), which the hardware
//! prefetchers follow; rows are taken `GROUP` at a time so that each running-sum vector is
//! loaded and stored once per `GROUP` rows. Values accumulate in f32 (activations are not
//! quantized): an output's longest rounding chain is one FMA per active input.

use super::formats::QuantFormat;
use super::quant_panel::PanelBuf;
use super::{Active, Acts, TaskOut, WeightRows, grow};
use crate::backend::cpu::simd::{Simd, head};
use crate::quant::QK;

/// Outputs per segment: 16 KiB of running sums, comfortably inside L1 with the rows streaming.
const SEGMENT: usize = 4096;
/// f32s of padding around a task's working memory: two cache lines.
const PAD: usize = 32;
/// Active rows folded into the running sums per pass.
const GROUP: usize = 4;

/// `acc[v] += a · q` for one block's 32 values `q` (their bytes start `qs`; `acc` holds
/// `32 / LANES` vectors in value order): Q4 values unsigned `0..=15` (the offset rides on the
/// block constant), Q8_0 signed.
#[inline(always)]
fn axpy<S: Simd, Q: QuantFormat>(s: S, qs: &[u8], a: S::F, acc: &mut [S::F; 4]) {
    let lanes = S::LANES;
    if Q::BITS == 4 {
        // Byte j holds value j (low nibble) and j + 16 (high).
        let qs: &[u8; QK / 2] = head(qs);
        let mask = s.isplat(0x0f);
        for j in (0..QK / 2).step_by(lanes) {
            let v = s.widen_u8(&qs[j..]);
            let (lo, hi) = (s.to_f32(s.iand(v, mask)), s.to_f32(s.ishr(v, 4)));
            acc[j / lanes] = s.mul_add(lo, a, acc[j / lanes]);
            acc[(QK / 2 + j) / lanes] = s.mul_add(hi, a, acc[(QK / 2 + j) / lanes]);
        }
    } else {
        let qs: &[u8; QK] = head(qs);
        for j in (0..QK).step_by(lanes) {
            acc[j / lanes] = s.mul_add(s.to_f32(s.widen_i8(&qs[j..])), a, acc[j / lanes]);
        }
    }
}

/// Where a stored row's fields start (see `InputMajorWeights`): m's, values; and value bytes
/// per block.
const fn offsets<Q: QuantFormat>(nb_row: usize) -> (usize, usize, usize) {
    let values = if Q::HAS_MIN { 4 * nb_row } else { 2 * nb_row };
    (2 * nb_row, values, Q::BITS * QK / 8)
}

/// Folds `G` active rows into the segment's running sums (blocks `b0 .. b0 + sums.len() / 32`):
/// first each row's block scales `x·d` (into `scales`, `G` runs of `nb`) and constants
/// (`consts += x·c`), `LANES` blocks a vector, then the values, block by block, each running-sum
/// vector loaded and stored once for the `G` rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fold<S: Simd, Q: QuantFormat, const G: usize>(
    s: S,
    w: WeightRows,
    nb_row: usize,
    rows: &[Active],
    b0: usize,
    sums: &mut [f32],
    consts: &mut [f32],
    scales: &mut [f32],
) {
    let (lanes, nb) = (S::LANES, sums.len() / QK);
    let (m_at, v_at, qb) = offsets::<Q>(nb_row);
    let mut values: [&[u8]; G] = [&[]; G];
    let stride = nb.next_multiple_of(lanes);
    for g in 0..G {
        let (row, x) = (w.row(rows[g].i as usize), rows[g].x);
        values[g] = &row[v_at + b0 * qb..v_at + (b0 + nb) * qb];
        let (d, m) = (&row[2 * b0..], &row[m_at + 2 * b0..]);
        let scales = &mut scales[g * stride..(g + 1) * stride];
        let (xv, c_factor) = (s.splat(x), s.splat(-(Q::OFFSET as f32) * x));
        // Whole vectors of blocks where the row holds the bytes (lanes past `nb` read the
        // next fields, harmlessly: their results land in the padding of `scales` and `consts`).
        let mut j = 0;
        while j < nb && 2 * (j + lanes) <= d.len() && (!Q::HAS_MIN || 2 * (j + lanes) <= m.len()) {
            let dv = s.load_f16(&d[2 * j..]);
            s.store(s.mul(dv, xv), &mut scales[j..]);
            if Q::HAS_MIN {
                let c = s.load(&consts[j..]);
                s.store(s.mul_add(s.load_f16(&m[2 * j..]), xv, c), &mut consts[j..]);
            } else if Q::BITS == 4 {
                let c = s.load(&consts[j..]);
                s.store(s.mul_add(dv, c_factor, c), &mut consts[j..]);
            }
            j += lanes;
        }
        for j in j..nb {
            let dj = s.f16_to_f32([d[2 * j], d[2 * j + 1]]);
            scales[j] = dj * x;
            if Q::HAS_MIN {
                consts[j] += s.f16_to_f32([m[2 * j], m[2 * j + 1]]) * x;
            } else if Q::BITS == 4 {
                consts[j] += dj * (-(Q::OFFSET as f32) * x);
            }
        }
    }
    let per_block = QK / lanes;
    for (j, out) in sums.chunks_exact_mut(QK).enumerate() {
        let mut acc = [s.zero(); 4];
        for v in 0..per_block {
            acc[v] = s.load(&out[v * lanes..]);
        }
        for g in 0..G {
            let (q, rest) = values[g].split_at(qb);
            values[g] = rest;
            axpy::<S, Q>(s, q, s.splat(scales[g * stride + j]), &mut acc);
        }
        for v in 0..per_block {
            s.store(acc[v], &mut out[v * lanes..]);
        }
    }
}

/// `y[r][c] = Σ over active inputs i of row r: x[r][i] · w[c][i]`, for this task's columns `c`
/// (whole 32-output blocks: `n` is a multiple of 32 for the input-major layout). `w` holds the
/// input-major rows (`k` rows of `n` values: `w.k` here is `n`).
#[inline(always)]
pub(crate) fn act_sparse<S: Simd, Q: QuantFormat>(s: S, w: WeightRows, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
    let cols = out.cols();
    debug_assert!(cols.start.is_multiple_of(QK) && cols.end.is_multiple_of(QK));
    let nb_row = w.k / QK;
    for r in 0..x.m {
        let active = x.active_row(r);
        let mut c0 = cols.start;
        while c0 < cols.end {
            let len = SEGMENT.min(cols.end - c0);
            let (b0, nb) = (c0 / QK, len / QK);
            // Padded on both sides: another task's buffer may be the next allocation, and a
            // cache line of running sums shared with it ping-pongs between the cores (measured:
            // two threads slower than one at SmolLM2's shapes without the padding).
            let stride = nb.next_multiple_of(S::LANES);
            let work = &mut grow(&mut buf.sums, PAD + len + (1 + GROUP) * stride + PAD)[PAD..];
            work[..len + stride].fill(0.0);
            let (sums, rest) = work.split_at_mut(len);
            let (consts, scales) = rest.split_at_mut(stride);
            let consts = &mut consts[..];
            let mut groups = active.chunks_exact(GROUP);
            for rows in &mut groups {
                fold::<S, Q, GROUP>(s, w, nb_row, rows, b0, sums, consts, scales);
            }
            for row in groups.remainder().chunks(1) {
                fold::<S, Q, 1>(s, w, nb_row, row, b0, sums, consts, scales);
            }
            for (block, &c) in sums.chunks_exact_mut(QK).zip(consts.iter()) {
                block.iter_mut().for_each(|v| *v += c);
            }
            out.write(r, c0, sums);
            c0 += len;
        }
    }
}
