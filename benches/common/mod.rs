//! Shared by the benches: the thread count, medians, and the memory read-bandwidth probe that
//! decode kernels are judged against.
#![allow(dead_code)]

use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// Deterministic values in [-1, 1), a different sequence per `seed`.
pub fn values(seed: u64, len: usize) -> Vec<f32> {
    sparq::model::Uniform::values(seed, len, 1.0)
}

/// One benchmark's summary row.
pub struct Measured {
    pub id: String,
    /// decode: read bandwidth, median over the rounds alternating with the kernel
    pub bandwidth: f64,
    /// decode: median over rounds of (kernel GB/s ÷ bandwidth of the same round)
    pub ratio: f64,
    /// bytes streamed (decode) or operations (prefill) per call
    pub work: f64,
    pub seconds: f64,
}

/// Whether the id matches one of the command line's non-flag arguments (or there are none).
pub fn wanted(id: &str) -> bool {
    // Criterion's options that take a value as the next argument: that value is not a filter.
    const WITH_VALUE: [&str; 13] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--output-format",
        "--color",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter: Vec<&String> =
        args.iter().enumerate().filter(|(i, a)| !a.starts_with('-') && (*i == 0 || !WITH_VALUE.contains(&args[i - 1].as_str()))).map(|(_, a)| a).collect();
    filter.is_empty() || filter.iter().any(|f| id.contains(f.as_str()))
}

/// `SPARQ_BENCH_THREADS`, default 2.
pub fn threads() -> usize {
    std::env::var("SPARQ_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

pub fn median(mut v: Vec<f64>) -> f64 {
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
pub fn read_bandwidth(pool: &rayon::ThreadPool, threads: usize) -> f64 {
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
pub fn read_bandwidth_quick(pool: &rayon::ThreadPool, buf: &[u64], threads: usize) -> f64 {
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

/// Median of `runs` timed calls of `f`.
pub fn median_time(runs: usize, mut f: impl FnMut()) -> f64 {
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

/// A decode kernel judged against the bandwidth next to it: 9 rounds of (quick probe, 9 timed
/// calls of `call`, each streaming `bytes`, quick probe again). The bandwidth this VM gets moves
/// with its neighbours' load within seconds (measured: 43 to 79 GB/s between consecutive
/// 1-second reads), so each round's speed is divided by the mean of the two probes bracketing
/// it, each over a quarter of `probe` (still far larger than the caches) to stay close in time.
/// Returns the medians of (bandwidth, per-round ratio, seconds per call).
pub fn against_bandwidth(pool: &rayon::ThreadPool, probe: &[u64], threads: usize, bytes: usize, mut call: impl FnMut()) -> (f64, f64, f64) {
    let probe = &probe[..probe.len() / 4];
    let (mut bws, mut ratios, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..9 {
        let (bw, t) = bracketed(pool, probe, threads, &mut call);
        ratios.push(bytes as f64 / t / bw);
        times.push(t);
        bws.push(bw);
    }
    (median(bws), median(ratios), median(times))
}

/// One round of [`against_bandwidth`]: the quick probe over `probe`, 9 timed calls, the probe
/// again. Returns (the two probes' mean bytes/s, median seconds per call).
pub fn bracketed(pool: &rayon::ThreadPool, probe: &[u64], threads: usize, call: impl FnMut()) -> (f64, f64) {
    let before = read_bandwidth_quick(pool, probe, threads);
    let t = median_time(9, call);
    ((before + read_bandwidth_quick(pool, probe, threads)) / 2.0, t)
}
