//! Activation-sparse products over input-major weights ([`crate::matmul::Layout::InputMajor`],
//! [`crate::sparse::InputMajorWeights`]).
//!
//! `y = x · wᵀ`. With the weights stored input-major, input `i`'s weights are one contiguous
//! code row, and an input that is dropped (zero) is never read: decode reads the code rows of
//! the kept inputs only, plus each input block's scales once.
//!
//! The arithmetic is the dense integer kernels': the input is quantized to 8 bits per block of
//! 32 inputs (`x ≈ d_x · q_x`), and for each input block `b` with kept inputs and each output
//! `j`, `y_j += d_w[j] · d_x · (Σ q_x[i] · code_j[i] − o · Σ q_x) + m[j] · d_x · Σ q_x` (over
//! the block's kept inputs; `o` is the codes' offset — Q4_0's 8, 128 for Q8_0's excess-128
//! codes where the level multiplies unsigned bytes — and `m` Q4_1's min). The sums are an
//! integer dot product four inputs at
//! a time: four code rows are laid side by side (`interleave4`: each output's four codes one
//! 32-bit lane) against the four `q_x` broadcast, so a `vpdpbusd` does 64 multiply-adds — as
//! many as the dense kernels' — and the lane sums are put back in output order once per block
//! and step (`natural4`). The result equals the dense integer product of the thresholded input
//! up to the order of the float additions.
//!
//! A task owns a range of input blocks (`Acts::blocks`; `Cpu::product` splits the inputs,
//! adding the tasks' partial sums) and a run of whole 64-output steps (all outputs, unless a
//! call mixes layouts and splits the outputs), walked in segments of at most `SEGMENT` outputs
//! whose running sums stay in L1 (`PanelBuf::sums`); within a segment, each input block's kept
//! code rows stream from start to end, the next block's prefetched.

use super::formats::QuantFormat;
use super::quant_panel::PanelBuf;
use super::{Acts, InputBlocks, TaskOut, grow};
use crate::backend::cpu::simd::{Simd, head};
use crate::quant::QK;

/// Outputs per segment: 16 KiB of running sums, comfortably inside L1 with the rows streaming.
const SEGMENT: usize = 4096;
/// f32s of padding around a task's running sums: two cache lines (a line shared with another
/// task's buffer would ping-pong between the cores).
const PAD: usize = 32;
/// Which block ahead of the one being folded is prefetched.
const LOOKAHEAD: usize = 1;

/// The four code rows of one group of kept inputs (their offsets in the block) and their four
/// 8-bit inputs as one little-endian word (a group short of four repeats a row with input 0).
#[derive(Clone, Copy, Debug, Default)]
struct Quad {
    rows: [usize; 4],
    word: i32,
}

/// `4 · LANES` codes of the code row at `at`, starting at output `col`, as bytes: Q4 `0..=15`,
/// Q8_0 signed where the level prefers signed products (`DOT_SIGNED_Q8`), else excess-128.
#[inline(always)]
fn codes<S: Simd, Q: QuantFormat>(s: S, block: &[u8], at: usize, col: usize) -> S::I {
    if Q::BITS == 4 {
        // `nibbles` reads a second 16 bytes only where a step is two runs of 32 outputs.
        let qs = &block[at + col / 2..];
        s.nibbles([head(qs), head(if S::LANES > 8 { &qs[QK / 2..] } else { qs })])
    } else if S::DOT_SIGNED_Q8 {
        s.ixor(s.iload(&block[at + col..]), s.isplat(0x8080_8080u32 as i32))
    } else {
        s.iload(&block[at + col..])
    }
}

/// `acc + Σ₄ codes · inputs` per lane, in `nib_dot`'s running form for Q4.
#[inline(always)]
fn dot<S: Simd, Q: QuantFormat>(s: S, acc: S::I, codes: S::I, inputs: S::I) -> S::I {
    if Q::BITS == 4 {
        s.nib_dot(acc, codes, inputs)
    } else if S::DOT_SIGNED_Q8 {
        s.dot_i8(acc, codes, inputs)
    } else {
        s.dot_u8(acc, codes, inputs)
    }
}

/// One input block's work for a row: where its bytes are and its kept inputs in quads.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockWork {
    block: usize,
    quads: [Quad; QK / 4],
    count: usize,
    /// The kept inputs' 8-bit values summed (removes a code offset exactly, in integers).
    sum: i32,
}

/// Adds input block `work`'s kept inputs (scale `dx`, scaled sum `dsum`) into the running sums
/// of outputs `c0 .. c0 + sums.len()`, prefetching the same outputs of a later block's (`ahead`:
/// `LOOKAHEAD` blocks on) kept rows and scales as it goes, and only bytes that will be read (each
/// kept row is its own stream, more than the hardware prefetchers follow).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fold_block<S: Simd, Q: QuantFormat>(s: S, w: InputBlocks, work: &BlockWork, ahead: Option<&BlockWork>, dx: f32, dsum: f32, c0: usize, sums: &mut [f32]) {
    let (lanes, g) = (S::LANES, w.geometry);
    let step = 4 * lanes;
    let (block, quads) = (w.block(work.block), &work.quads[..work.count.div_ceil(4)]);
    let ahead = ahead.map(|n| (w.block(n.block), &n.quads[..n.count.div_ceil(4)]));
    // The codes' offset (Q4_0's 8, excess-128 Q8_0's 128), removed from the integer sums
    // exactly: `Σ (q + o)·x − o·Σ x`. (Removed in floats, as `o · d_w · dsum`, it cancels
    // against a term up to 128× the product's size: a proptest found the rounding.)
    let offset = if Q::BITS == 4 {
        Q::OFFSET
    } else if S::DOT_SIGNED_Q8 {
        0
    } else {
        128
    };
    let correction = s.isplat(offset * work.sum);
    let (dxv, dsumv) = (s.splat(dx), s.splat(dsum));
    for (o, out) in sums.chunks_exact_mut(step).enumerate() {
        let col = c0 + o * step;
        if let Some((nb, nq)) = ahead {
            // A code row's line once per 64 bytes; the scales' lines every step.
            if (col * Q::BITS / 8).is_multiple_of(64) {
                for q in nq {
                    for at in q.rows {
                        s.prefetch(nb, at + col * Q::BITS / 8);
                    }
                }
            }
            for at in (2 * col..2 * (col + step)).step_by(64) {
                s.prefetch(nb, at);
                if Q::HAS_MIN {
                    s.prefetch(nb, g.m_at + at);
                }
            }
        }
        let mut acc = [s.izero(); 4];
        for q in quads {
            let inputs = s.isplat(q.word);
            let rows = s.interleave4(q.rows.map(|at| codes::<S, Q>(s, block, at, col)));
            for t in 0..4 {
                acc[t] = dot::<S, Q>(s, acc[t], rows[t], inputs);
            }
        }
        let acc = s.natural4(if Q::BITS == 4 { acc.map(|a| s.nib_sum(a)) } else { acc }).map(|a| s.isub(a, correction));
        for t in 0..4 {
            let (j, y) = (col + t * lanes, &mut out[t * lanes..]);
            let dw = s.load_f16(&block[2 * j..]);
            let mut v = s.mul_add(s.mul(dw, dxv), s.to_f32(acc[t]), s.load(y));
            if Q::HAS_MIN {
                v = s.mul_add(s.load_f16(&block[g.m_at + 2 * j..]), dsumv, v);
            }
            s.store(v, y);
        }
    }
}

/// `y[r][c] = Σ over kept inputs i of row r: x[r][i] · w[c][i]` (integer arithmetic as above),
/// for this task's columns `c` and input blocks (`x.blocks`): whole 64-output steps from a
/// multiple of 64, the last possibly running past `n` into the stored padding (those sums are
/// dropped).
#[inline(always)]
pub(crate) fn act_sparse<S: Simd, Q: QuantFormat>(s: S, w: InputBlocks, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
    let cols = out.cols();
    debug_assert!(cols.start.is_multiple_of(crate::sparse::OUTPUT_ALIGN));
    let g = w.geometry;
    let mut blocks = std::mem::take(&mut buf.blocks);
    for r in 0..x.m {
        let qx = x.qrow(r);
        // The row's blocks with kept inputs whose 8-bit values are not 0, four to a quad.
        blocks.clear();
        for &i in x.active_row(r) {
            let (b, t, v) = (i as usize / QK, i as usize % QK, qx.qs[i as usize]);
            if v == 0 {
                continue;
            }
            if blocks.last().is_none_or(|w: &BlockWork| w.block != b) {
                blocks.push(BlockWork { block: b, ..BlockWork::default() });
            }
            let work = blocks.last_mut().expect("pushed");
            let (quad, p) = (&mut work.quads[work.count / 4], work.count % 4);
            if p == 0 {
                *quad = Quad { rows: [g.codes_at + t * g.code_row; 4], word: 0 };
            }
            quad.rows[p] = g.codes_at + t * g.code_row;
            quad.word |= ((v as u8) as i32) << (8 * p);
            work.count += 1;
            work.sum += v as i32;
        }
        let mut c0 = cols.start;
        while c0 < cols.end {
            let len = SEGMENT.min(cols.end - c0);
            // Whole steps: within the stored width, as `c0 + len ≤ n` and the width is `n`
            // rounded up to a multiple of every step.
            let padded = len.next_multiple_of(4 * S::LANES);
            let sums = &mut grow(&mut buf.sums, PAD + padded + PAD)[PAD..PAD + padded];
            sums.fill(0.0);
            for (i, work) in blocks.iter().enumerate() {
                fold_block::<S, Q>(s, w, work, blocks.get(i + LOOKAHEAD), qx.d[work.block], qx.dsums[work.block], c0, sums);
            }
            out.write(r, c0, &sums[..len]);
            c0 += len;
        }
    }
    buf.blocks = blocks;
}
