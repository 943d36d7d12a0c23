//! `cargo bench --bench matmul [-- FILTER]`
//!
//! Every weight format × every CPU level this machine supports × SmolLM2-135M's projection
//! shapes and two large Llama-8B shapes, for m = 1 (decode: throughput in bytes of weights
//! streamed) and m = 128 (prefill: throughput in multiply-add operations, 2·m·n·k).
//! Ids: `matvec/<format>/<isa>/<n>x<k>/m1` and `matmul/<format>/<isa>/<n>x<k>/m128`.
//!
//! The same run measures this machine's memory read bandwidth with the same thread count, and
//! ends with a table of each decode kernel's median GB/s as a fraction of it: the bandwidth this
//! VM gets moves with its neighbours' load (40–85 GB/s seen), so the probe alternates with the
//! kernel in rounds and the fraction is the median of per-round ratios.
//! `SPARQ_BENCH_M=1` (or 128) runs only decode (or prefill). Decode runs
//! rotate through copies of the weights totalling ≥ 1 GiB — the probe's working set — so every
//! call streams its matrix from memory, as each matrix does in a real decode step.
//! `SPARQ_BENCH_THREADS` sets the thread count (default 2).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use sparq::{quant, Cpu, DType, Isa, Scratch, Weights};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SMOLLM2: [(usize, usize); 5] = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)];
const LLAMA8B: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];
/// Total size of the rotated weight copies in decode benchmarks: the same working set as the
/// bandwidth probe (1 GiB), far beyond any cache, so the two are compared like for like.
const COLD_BYTES: usize = 1 << 30;

fn threads() -> usize {
    std::env::var("SPARQ_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Two ways to consume a buffer: a wide XOR fold (32 independent 64-byte accumulators) and a
/// multiply-add per element. On this machine the second, slower per byte, streams *faster*
/// (~48 vs ~44 GB/s; a tight 8-wide fold only ~11), presumably leaving the prefetchers room; so
/// the probe takes the best of both rather than trusting one access pattern.
#[inline(always)]
fn fold_xor(c: &[u64]) -> u64 {
    let mut acc = [0u64; 256];
    for chunk in c.chunks_exact(256) {
        for i in 0..256 {
            acc[i] ^= chunk[i];
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

#[inline(always)]
fn fold_mul_add(c: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in c.chunks_exact(8) {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_mul(3).wrapping_add(chunk[i]);
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fold_avx512(c: &[u64], xor: bool) -> u64 {
    if xor { fold_xor(c) } else { fold_mul_add(c) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fold_avx2(c: &[u64], xor: bool) -> u64 {
    if xor { fold_xor(c) } else { fold_mul_add(c) }
}

/// A fold compiled for the widest loads this CPU has.
fn fold_widest(c: &[u64], xor: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected just above.
            return unsafe { fold_avx512(c, xor) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 detected just above.
            return unsafe { fold_avx2(c, xor) };
        }
    }
    if xor { fold_xor(c) } else { fold_mul_add(c) }
}

/// Read bandwidth (bytes/s): over a 1 GiB buffer on `threads` threads, the best median of 5
/// among both folds × (one contiguous half per thread, or 8 pieces per thread).
fn read_bandwidth(pool: &rayon::ThreadPool, threads: usize) -> f64 {
    let buf: Vec<u64> = (0..(1u64 << 30) / 8).collect();
    let mut best = 0f64;
    for xor in [true, false] {
        for pieces in [threads, 8 * threads] {
            let chunk = buf.len().div_ceil(pieces);
            let samples = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let s: u64 = pool.install(|| buf.par_chunks(chunk).map(|c| fold_widest(c, xor)).reduce(|| 0, |a, b| a ^ b));
                    black_box(s);
                    (buf.len() * 8) as f64 / t.elapsed().as_secs_f64()
                })
                .collect();
            best = best.max(median(samples));
        }
    }
    best
}

/// A quicker probe for alternating with kernels: the best of the two folds over contiguous
/// halves, median of 3 each.
fn read_bandwidth_quick(pool: &rayon::ThreadPool, buf: &[u64], threads: usize) -> f64 {
    let chunk = buf.len().div_ceil(threads);
    [true, false]
        .into_iter()
        .map(|xor| {
            median(
                (0..3)
                    .map(|_| {
                        let t = Instant::now();
                        let s: u64 = pool.install(|| buf.par_chunks(chunk).map(|c| fold_widest(c, xor)).reduce(|| 0, |a, b| a ^ b));
                        black_box(s);
                        (buf.len() * 8) as f64 / t.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        })
        .fold(0.0, f64::max)
}

/// Deterministic values in [-1, 1), a different sequence per `seed`.
fn weights_f32(n: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..n * k)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

struct Measured {
    id: String,
    /// decode: read bandwidth, median over the rounds alternating with the kernel
    bandwidth: f64,
    /// decode: median over rounds of (kernel GB/s ÷ bandwidth of the same round)
    ratio: f64,
    /// bytes of weights (decode) or operations 2·m·n·k (prefill) per call
    work: usize,
    seconds: f64,
}

/// Median of `runs` timed calls of `f`.
fn median_time(runs: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn bench(c: &mut Criterion) {
    let threads = threads();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let bandwidth = read_bandwidth(&pool, threads);
    let probe_buf: Vec<u64> = (0..(1u64 << 30) / 8).collect();
    let only_m: Option<usize> = std::env::var("SPARQ_BENCH_M").ok().and_then(|v| v.parse().ok());
    println!("memory read bandwidth ({threads} threads, 1 GiB, best of 4 access patterns): {:.1} GB/s", bandwidth / 1e9);
    println!("{}", sparq::isa_report());

    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |id: &str| filter.is_empty() || filter.iter().any(|f| id.contains(f.as_str()));
    let cpus: Vec<Cpu> = Isa::available().into_iter().map(|isa| Cpu::with_isa(isa, threads).expect("level")).collect();
    let (mut decode, mut prefill) = (Vec::new(), Vec::new());
    let mut scratch = Scratch::default();

    for (n, k) in SMOLLM2.into_iter().chain(LLAMA8B) {
        let ids_for = |dtype: DType| -> Vec<String> {
            cpus.iter()
                .flat_map(|cpu| {
                    let (f, i) = (dtype, cpu.isa());
                    [format!("matvec/{f}/{i}/{n}x{k}/m1"), format!("matmul/{f}/{i}/{n}x{k}/m128")]
                })
                .collect()
        };
        if !DType::WEIGHTS.iter().any(|&d| ids_for(d).iter().any(|id| wanted(id))) {
            continue;
        }
        let w_f32 = weights_f32(n, k, 0);
        for dtype in DType::WEIGHTS {
            if !ids_for(dtype).iter().any(|id| wanted(id)) {
                continue;
            }
            let bytes = quant::quantize(dtype, &w_f32).expect("quantize");
            // Decode: enough copies that each call finds its weights evicted from every cache.
            // Each copy holds its rows in a different order, so no two copies share a page.
            let row_bytes = bytes.len() / n;
            let copies: Vec<Vec<u8>> = (0..COLD_BYTES.div_ceil(bytes.len()))
                .map(|c| {
                    let (step, shift) = (if n % 7 == 0 { 1 } else { 7 }, c * 13);
                    (0..n).flat_map(|i| {
                        let r = (i * step + shift) % n;
                        bytes[r * row_bytes..(r + 1) * row_bytes].iter().copied()
                    }).collect()
                })
                .collect();
            let mut next = 0usize;
            let mut cold = || {
                next = (next + 1) % copies.len();
                Weights::new(dtype, n, k, &copies[next]).expect("weights")
            };
            let w = Weights::new(dtype, n, k, &bytes).expect("weights");
            for m in [1usize, 128].into_iter().filter(|m| only_m.is_none_or(|o| o == *m)) {
                let x = weights_f32(m, k, 99);
                let mut y = vec![0f32; m * n];
                let name = if m == 1 { "matvec" } else { "matmul" };
                let mut group = c.benchmark_group(format!("{name}/{dtype}"));
                group.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
                group.throughput(if m == 1 { Throughput::Bytes(bytes.len() as u64) } else { Throughput::Elements((2 * m * n * k) as u64) });
                for cpu in &cpus {
                    let id = format!("{name}/{dtype}/{}/{n}x{k}/m{m}", cpu.isa());
                    if !wanted(&id) {
                        continue;
                    }
                    group.bench_function(BenchmarkId::new(cpu.isa().name(), format!("{n}x{k}/m{m}")), |b| {
                        if m == 1 {
                            b.iter(|| cpu.matmul(&cold(), black_box(&x), m, &mut y, &mut scratch).expect("matmul"))
                        } else {
                            b.iter(|| cpu.matmul(&w, black_box(&x), m, &mut y, &mut scratch).expect("matmul"))
                        }
                    });
                    if m == 1 {
                        // Rounds of: probe the bandwidth, then 5 cold calls. The bandwidth this VM
                        // gets moves with its neighbours' load, so each round's kernel speed is
                        // judged against the probe taken right next to it.
                        let (mut times, mut bws, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
                        for _ in 0..5 {
                            let bw = read_bandwidth_quick(&pool, &probe_buf, threads);
                            let mut round = Vec::new();
                            for _ in 0..5 {
                                let w = cold();
                                round.push(median_time(1, || cpu.matmul(&w, &x, m, &mut y, &mut scratch).expect("matmul")));
                            }
                            let t = median(round);
                            ratios.push(bytes.len() as f64 / t / bw);
                            times.push(t);
                            bws.push(bw);
                        }
                        decode.push(Measured { id, bandwidth: median(bws), ratio: median(ratios), work: bytes.len(), seconds: median(times) });
                    } else {
                        let seconds = median_time(5, || cpu.matmul(&w, &x, m, &mut y, &mut scratch).expect("matmul"));
                        prefill.push(Measured { id, bandwidth: 0.0, ratio: 0.0, work: 2 * m * n * k, seconds });
                    }
                }
                group.finish();
            }
        }
    }

    if !decode.is_empty() {
        println!("\ndecode (m = 1, weights cold), {threads} threads: 5 rounds of (bandwidth probe, 5 calls); medians");
        println!("{:<44} {:>10} {:>9} {:>9} {:>8}", "kernel", "µs", "GB/s", "bw GB/s", "of bw");
        for r in &decode {
            let gbs = r.work as f64 / r.seconds / 1e9;
            println!("{:<44} {:>10.1} {:>9.1} {:>9.1} {:>7.0}%", r.id, r.seconds * 1e6, gbs, r.bandwidth / 1e9, 100.0 * r.ratio);
        }
    }
    if !prefill.is_empty() {
        println!("\nprefill (m = 128), {threads} threads, median of 5");
        println!("{:<44} {:>10} {:>9}", "kernel", "µs", "GOP/s");
        for r in &prefill {
            println!("{:<44} {:>10.1} {:>9.1}", r.id, r.seconds * 1e6, r.work as f64 / r.seconds / 1e9);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
