//! The spec for [`crate::Cpu::matmul`]: safe, scalar, obvious, accumulated in f64.
//!
//! Two references, because the integer paths deliberately quantize activations:
//! - [`matmul_f64`]: the exact product of the dequantized weights with the f32 activations;
//! - [`matmul_q8_f64`]: the same with the activations first quantized exactly as the integer
//!   paths (and ggml) do — 8-bit values times the f16-rounded block scale. This is what an
//!   integer kernel computes exactly up to f32 rounding, so tests hold it to a rounding bound.
//!
//! Each returns the product and, per output, the magnitude `Σ |terms|` that bounds f32
//! rounding error (see [`f32_error_bound`]).

use super::Weights;
use crate::DType;
use crate::quant::{self, BlockQ4_0, BlockQ4_1, QK, float::f16_le, quantize_q8_ref};

/// Reference output: `y` (m × n) and the per-output magnitude `Σ |terms|` (m × n).
#[derive(Debug, Clone)]
pub struct RefOutput {
    /// (m, n) the products in f64.
    pub y: Vec<f64>,
    /// (m, n) `Σ |terms|` of each product: the scale its rounding error is bounded against.
    pub magnitude: Vec<f64>,
}

fn dequantized(w: &Weights) -> Vec<f32> {
    w.dequantize()
}

fn product(w: &Weights, wf: &[f32], xs: &[f32], m: usize, mag_term: impl Fn(usize, usize, f64) -> f64) -> RefOutput {
    let (n, k) = (w.n(), w.k());
    let mut y = vec![0f64; m * n];
    let mut magnitude = vec![0f64; m * n];
    for r in 0..m {
        let x = &xs[r * k..(r + 1) * k];
        for c in 0..n {
            let wr = &wf[c * k..(c + 1) * k];
            y[r * n + c] = wr.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
            magnitude[r * n + c] = x.iter().enumerate().map(|(i, &b)| mag_term(c, i, b as f64)).sum();
        }
    }
    RefOutput { y, magnitude }
}

/// `y = x · wᵀ` with dequantized weights and unquantized activations, in f64.
pub fn matmul_f64(w: &Weights, x: &[f32], m: usize) -> RefOutput {
    let wf = dequantized(w);
    let k = w.k();
    product(w, &wf, x, m, |c, i, xv| (wf[c * k + i] as f64 * xv).abs())
}

/// Activations as the integer paths see them: per 32-block, `q · f16(d)` (ggml's Q8_0 values).
pub fn quantize_activations_ref(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(QK)
        .flat_map(|chunk| {
            let (d, q) = quantize_q8_ref(chunk.try_into().expect("QK elements"));
            let d = half::f16::from_f32(d).to_f32();
            q.map(|v| v as f32 * d)
        })
        .collect()
}

/// `y = x̂ · wᵀ` where `x̂` is [`quantize_activations_ref`]`(x)`: what the integer kernels
/// compute up to f32 rounding. For the 4-bit formats the magnitude counts the two parts the
/// kernels may accumulate separately: `|d·q·x̂|` and `|m·x̂|`, with Q4_0's `m = −8·d`.
pub fn matmul_q8_f64(w: &Weights, x: &[f32], m: usize) -> RefOutput {
    assert!(w.dtype().is_block_quantized(), "matmul_q8_f64 is for block formats");
    let xq = quantize_activations_ref(x);
    let wf = dequantized(w);
    let (k, nb) = (w.k(), w.k() / QK);
    match w.dtype() {
        DType::Q4_1 => {
            let rows = w.gguf_bytes().expect("matmul_q8_f64: a layout with GGUF rows");
            let blocks: &[BlockQ4_1] = bytemuck::cast_slice(&rows);
            product(w, &wf, &xq, m, |c, i, xv| {
                let b = &blocks[c * nb + i / QK];
                let (d, mn) = (f16_le(b.d) as f64, f16_le(b.m) as f64);
                let q = quant::q4_values(&b.qs)[i % QK] as f64;
                ((d * q).abs() + mn.abs()) * xv.abs()
            })
        }
        DType::Q4_0 => {
            let rows = w.gguf_bytes().expect("matmul_q8_f64: a layout with GGUF rows");
            let blocks: &[BlockQ4_0] = bytemuck::cast_slice(&rows);
            product(w, &wf, &xq, m, |c, i, xv| {
                let b = &blocks[c * nb + i / QK];
                let d = f16_le(b.d).abs() as f64;
                let q = quant::q4_values(&b.qs)[i % QK] as f64;
                (d * q + 8.0 * d) * xv.abs()
            })
        }
        _ => product(w, &wf, &xq, m, |c, i, xv| (wf[c * k + i] as f64 * xv).abs()),
    }
}

/// Bound on `|f32 result − exact|` for one output of a `dtype` matmul with inner size `k`:
/// the standard recursive-summation bound `γ_depth · Σ|terms|`, where `depth` is the longest
/// chain of f32 roundings any kernel puts a term through:
/// - float formats: up to `k` sequential FMAs into one lane (the packed GEMM), where the row
///   kernels need only `k / LANES`;
/// - block formats: one FMA per 32-element block (`k / 32`; the integer dot inside a block is
///   exact), plus the scale product;
/// - both: the lane reduction (≤ 4 levels), a scalar tail (≤ 16), the min term and a final add.
///
/// We use `f32::EPSILON = 2u` per step (`u = 2⁻²⁴`): a factor-2 margin over the first-order bound.
pub fn f32_error_bound(dtype: DType, k: usize, magnitude: f64) -> f64 {
    let chain = if dtype.is_block_quantized() { k / QK } else { k };
    (chain + 4 + 16 + 4) as f64 * f32::EPSILON as f64 * magnitude
}

/// `x` with every entry of magnitude `≤ threshold` set to zero: the activations an
/// activation-sparse product ([`crate::Cpu::matmul_act_sparse`]) multiplies.
pub fn sparsify(x: &[f32], threshold: f32) -> Vec<f32> {
    x.iter().map(|&v| if v.abs() > threshold { v } else { 0.0 }).collect()
}

/// `y = x̂ · wᵀ` for `x̂` the thresholded input ([`sparsify`]) quantized as the integer paths
/// quantize it: what an activation-sparse kernel computes up to f32 rounding (it is the dense
/// integer product of the thresholded input; see [`act_sparse_error_bound`]).
pub fn matmul_act_sparse_f64(w: &Weights, x: &[f32], m: usize, threshold: f32) -> RefOutput {
    matmul_q8_f64(w, &sparsify(x, threshold), m)
}

/// Bound on `|f32 result − exact|` for one output of an activation-sparse product over `k`
/// inputs: each input block with kept inputs adds two FMAs to the output's chain (its exact
/// integer dot product scaled by `d_w · d_x`, and its constant term), plus that scale product
/// and the final add — `γ_(2k/32 + 8)` with the same factor-2 margin as [`f32_error_bound`].
pub fn act_sparse_error_bound(k: usize, magnitude: f64) -> f64 {
    (2 * (k / QK) + 8) as f64 * f32::EPSILON as f64 * magnitude
}
