//! Shared test helpers: deterministic data, one `Cpu` per (level, threads), and the tolerance
//! check against the f64 references.
#![allow(dead_code)]

use sparq::matmul::reference::{RefOutput, f32_error_bound, matmul_f64, matmul_q8_f64};
use sparq::{Cpu, DType, Isa, Scratch, Weights, quant};
use std::sync::OnceLock;

/// Every level the tests may use (`Isa::allowed`: supported, up to `SPARQ_MAX_ISA`) with 1, 2 and 3 threads (3 > cores here: uneven splits and more tasks
/// than cores are part of what is tested).
pub fn cpus() -> &'static [Cpu] {
    static CPUS: OnceLock<Vec<Cpu>> = OnceLock::new();
    CPUS.get_or_init(|| {
        Isa::allowed()
            .expect("SPARQ_MAX_ISA names a level")
            .into_iter()
            .flat_map(|isa| (1..=3).map(move |t| Cpu::with_isa(isa, t).expect("supported level")))
            .collect()
    })
}

/// Deterministic values uniform in ±`scale`, for fixed-size tests outside proptest.
pub fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    sparq::model::Uniform::values(seed, len, scale)
}

/// Runs `cpu.matmul` on every given CPU and checks every output against the reference within
/// the derived bound.
pub fn check_matmul_on(cpus: &[&Cpu], dtype: DType, n: usize, k: usize, m: usize, w_f32: &[f32], x: &[f32]) -> Result<(), String> {
    let bytes = quant::quantize(dtype, w_f32).map_err(|e| e.to_string())?;
    let w = Weights::new(dtype, n, k, &bytes).map_err(|e| e.to_string())?;
    // Integer formats quantize activations by design: compare with the reference that does the
    // same (exact up to f32 rounding); float formats with the plain f64 product.
    let reference = if dtype.is_block_quantized() { matmul_q8_f64(&w, x, m) } else { matmul_f64(&w, x, m) };
    cpus.iter().try_for_each(|cpu| compare(cpu, &w, x, m, &reference))
}

pub fn check_matmul(cpu: &Cpu, dtype: DType, n: usize, k: usize, m: usize, w_f32: &[f32], x: &[f32]) -> Result<(), String> {
    check_matmul_on(&[cpu], dtype, n, k, m, w_f32, x)
}

pub fn compare(cpu: &Cpu, w: &Weights, x: &[f32], m: usize, reference: &RefOutput) -> Result<(), String> {
    let (dtype, n, k) = (w.dtype(), w.n(), w.k());
    let mut y = vec![f32::NAN; m * n];
    cpu.matmul(w, x, m, &mut y, &mut Scratch::default()).map_err(|e| e.to_string())?;
    let label = format!("{dtype} on {} ({} threads), m={m} n={n} k={k}", cpu.isa(), cpu.threads());
    within(&label, &y, n, reference, |magnitude| f32_error_bound(dtype, k, magnitude))
}

/// Every output of `y` (rows of `n`) within `bound(magnitude)` of the reference (NaN fails).
pub fn within(label: &str, y: &[f32], n: usize, reference: &RefOutput, bound: impl Fn(f64) -> f64) -> Result<(), String> {
    for (i, &yi) in y.iter().enumerate() {
        let bound = bound(reference.magnitude[i]) + 1e-30;
        let err = (yi as f64 - reference.y[i]).abs();
        #[allow(clippy::neg_cmp_op_on_partial_ord, reason = "a NaN error must fail")]
        if !(err <= bound) {
            return Err(format!("{label}: y[{}][{}] = {yi} vs reference {} (err {err:.3e} > bound {bound:.3e})", i / n, i % n, reference.y[i]));
        }
    }
    Ok(())
}

/// A small Llama config for synthetic models: 2 layers, GQA 6/2 heads of 16, vocab 77.
pub fn tiny_llama_config() -> sparq::model::Config {
    sparq::model::Config {
        n_layers: 2,
        dim: 96,
        hidden_dim: 160,
        n_heads: 6,
        n_kv_heads: 2,
        head_dim: 16,
        vocab_size: 77,
        context_length: 64,
        rope_base: 10_000.0,
        norm_eps: 1e-5,
    }
}

/// `f32` values as their bit patterns, for bit-identity assertions.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Checks on every CPU of [`cpus`] that one `matmul_many` pass over `ws` equals separate
/// `matmul`s bit for bit; the error names the first matrix and CPU that differ.
pub fn many_equals_separate(ws: &[Weights], x: &[f32], m: usize) -> Result<(), String> {
    let w_refs: Vec<&Weights> = ws.iter().collect();
    for cpu in cpus() {
        let mut fused: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; m * w.n()]).collect();
        let mut outs: Vec<&mut [f32]> = fused.iter_mut().map(|v| v.as_mut_slice()).collect();
        cpu.matmul_many(&w_refs, x, m, &mut outs, &mut Scratch::default()).map_err(|e| e.to_string())?;
        for (w, got) in ws.iter().zip(&fused) {
            let mut alone = vec![f32::NAN; m * w.n()];
            cpu.matmul(w, x, m, &mut alone, &mut Scratch::default()).map_err(|e| e.to_string())?;
            if bits(got) != bits(&alone) {
                let (d, t, n, k) = (w.dtype(), w.layout(), w.n(), w.k());
                return Err(format!("{d} ({t}) {n}x{k} m={m} on {} ({} threads): fused differs", cpu.isa(), cpu.threads()));
            }
        }
    }
    Ok(())
}
