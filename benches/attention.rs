//! `cargo bench --bench attention [-- FILTER]`
//!
//! Decode attention (one query per sequence, flash-decoding split) at contexts 128 … 8192 —
//! throughput as bytes of KV read, judged against the memory read bandwidth measured in the
//! same run — and causal prefill at 128, 512, 2048 tokens (GFLOP/s, `4 · n_heads · head_dim`
//! per visible (query, key) pair). f32 / f16 / int8 caches; SmolLM2-135M geometry (9 heads,
//! 3 KV heads, head_dim 64) and Llama-8B's (32 / 8 / 128). Ids:
//! `attn_decode/<kv>/<geometry>/ctx<N>` and `attn_prefill/<kv>/<geometry>/ctx<N>`.
//!
//! Decode rotates through enough layers (≥ 512 MiB of KV) that every call reads its keys and
//! values from memory, as in a real decode step where each layer's cache was last touched one
//! token ago. Its table also gives each cell's *warm* time: the same call repeated on one layer,
//! whose KV then sits in cache (L2 or L3 by its size) — about the kernel's compute alone. Where
//! warm time nears the memory time (bytes ÷ bandwidth), only overlapping the two can reach the
//! bandwidth. `SPARQ_BENCH_THREADS` sets the thread count (default 2).
//!
//! `SPARQ_BENCH_PHASE_ROUNDS=N` adds N rounds over every selected decode cell after the criterion
//! runs: each cell's 9 calls bracketed by the quick probe, each round filed by the probe's
//! reading into the lower and upper half of all readings — so the VM's low- and high-bandwidth
//! phases are reported apart (its 9 criterion rounds per cell rarely see both). It keeps every
//! selected decode cell's cache (≥ 512 MiB each) alive; filter it, e.g. `-- ctx4096`.

mod common;

use common::{Measured, against_bandwidth, bracketed, median, median_time, read_bandwidth, threads, values, wanted};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sparq::{AttnParams, AttnScratch, Cpu, KvCache, KvCacheConfig, KvDtype, SeqId};
use std::hint::black_box;
use std::time::Duration;

const GEOMETRIES: [(&str, usize, usize, usize); 2] = [("smollm2", 9, 3, 64), ("llama8b", 32, 8, 128)];
const DECODE_CTX: [usize; 5] = [128, 512, 1024, 4096, 8192];
const PREFILL_CTX: [usize; 3] = [128, 512, 2048];
const COLD_BYTES: usize = 512 << 20;
/// KV block size (tokens).
const BLOCK: usize = 16;

/// A cache of `layers` layers holding one sequence of `ctx` tokens.
fn filled(dtype: KvDtype, n_kv_heads: usize, head_dim: usize, ctx: usize, layers: usize) -> (KvCache, SeqId) {
    let mut cache =
        KvCache::new(KvCacheConfig { n_layers: layers, n_kv_heads, head_dim, block_size: BLOCK, n_blocks: ctx.div_ceil(BLOCK), max_seq_len: ctx, dtype })
            .expect("cache");
    let seq = cache.new_sequence();
    cache.append(seq, ctx).expect("append");
    let (k, v) = (values(1, ctx * n_kv_heads * head_dim), values(2, ctx * n_kv_heads * head_dim));
    for layer in 0..layers {
        cache.write(seq, layer, 0, &k, &v).expect("write");
    }
    (cache, seq)
}

fn bench(c: &mut Criterion) {
    let threads = threads();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let bandwidth = read_bandwidth(&pool, threads);
    let probe: Vec<u64> = (0..(1u64 << 30) / 8).collect();
    println!("memory read bandwidth ({threads} threads): {:.1} GB/s; {}", bandwidth / 1e9, sparq::isa_report());
    let cpu = Cpu::new(threads).expect("cpu");
    let mut scratch = AttnScratch::default();
    let (mut decode, mut prefill, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    let phase_rounds: usize = std::env::var("SPARQ_BENCH_PHASE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut kept = Vec::new();

    for (geo, n_heads, n_kv_heads, head_dim) in GEOMETRIES {
        let p = AttnParams::new(n_heads, n_kv_heads, head_dim);
        for dtype in KvDtype::ALL {
            let per_token = n_kv_heads * (2 * head_dim * dtype.bytes() + if dtype == KvDtype::I8 { 8 } else { 0 });
            for ctx in DECODE_CTX {
                let id = format!("attn_decode/{dtype}/{geo}/ctx{ctx}");
                if !wanted(&id) {
                    continue;
                }
                let bytes = ctx * per_token;
                let layers = COLD_BYTES.div_ceil(bytes).clamp(1, 4096);
                let (cache, seq) = filled(dtype, n_kv_heads, head_dim, ctx, layers);
                let q = values(3, n_heads * head_dim);
                let mut out = vec![0f32; q.len()];
                let mut layer = 0;
                let mut call = || {
                    layer = (layer + 1) % layers;
                    cpu.attention_decode(&cache, layer, &[seq], black_box(&q), &mut out, &p, &mut scratch).expect("decode");
                };
                let mut group = c.benchmark_group(format!("attn_decode/{dtype}/{geo}"));
                group.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
                group.throughput(Throughput::Bytes(bytes as u64));
                group.bench_function(format!("ctx{ctx}"), |b| b.iter(&mut call));
                group.finish();
                let (bandwidth, ratio, seconds) = against_bandwidth(&pool, &probe, threads, bytes, &mut call);
                decode.push(Measured { id: id.clone(), bandwidth, ratio, work: bytes as f64, seconds });
                let mut warm_call = || cpu.attention_decode(&cache, 0, &[seq], black_box(&q), &mut out, &p, &mut scratch).expect("decode");
                warm_call();
                warm.push(median_time(9, warm_call));
                if phase_rounds > 0 {
                    kept.push((id, cache, seq, p, q, layers, bytes));
                }
            }
            for ctx in PREFILL_CTX {
                let id = format!("attn_prefill/{dtype}/{geo}/ctx{ctx}");
                if !wanted(&id) {
                    continue;
                }
                let (cache, seq) = filled(dtype, n_kv_heads, head_dim, ctx, 1);
                let q = values(4, ctx * n_heads * head_dim);
                let mut out = vec![0f32; q.len()];
                let flops = 4.0 * (n_heads * head_dim) as f64 * (ctx * (ctx + 1) / 2) as f64;
                let mut call = || cpu.attention_prefill(&cache, 0, seq, black_box(&q), &mut out, &p, &mut scratch).expect("prefill");
                let mut group = c.benchmark_group(format!("attn_prefill/{dtype}/{geo}"));
                group.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(2));
                group.throughput(Throughput::Elements(flops as u64));
                group.bench_function(format!("ctx{ctx}"), |b| b.iter(&mut call));
                group.finish();
                prefill.push(Measured { id, bandwidth: 0.0, ratio: 0.0, work: flops, seconds: median_time(5, &mut call) });
            }
        }
    }
    if !decode.is_empty() {
        println!("\ndecode attention (KV cold), {threads} threads, {}: 9 rounds of (probe, 9 calls, probe); medians", cpu.isa());
        println!("{:<36} {:>10} {:>9} {:>9} {:>8} {:>9} {:>9}", "kernel", "µs", "GB/s", "bw GB/s", "of bw", "warm µs", "mem µs");
        for (r, warm) in decode.iter().zip(&warm) {
            println!(
                "{:<36} {:>10.1} {:>9.1} {:>9.1} {:>7.0}% {:>9.1} {:>9.1}",
                r.id,
                r.seconds * 1e6,
                r.work / r.seconds / 1e9,
                r.bandwidth / 1e9,
                100.0 * r.ratio,
                warm * 1e6,
                r.work / r.bandwidth * 1e6
            );
        }
    }
    if phase_rounds > 0 && !kept.is_empty() {
        by_phase(&pool, &probe, threads, &cpu, &mut scratch, &kept, phase_rounds);
    }
    if !prefill.is_empty() {
        println!("\nprefill attention (causal), {threads} threads, {}, median of 5", cpu.isa());
        println!("{:<36} {:>10} {:>9}", "kernel", "µs", "GFLOP/s");
        for r in &prefill {
            println!("{:<36} {:>10.1} {:>9.1}", r.id, r.seconds * 1e6, r.work / r.seconds / 1e9);
        }
    }
}

/// Decode cells kept for [`by_phase`]: id, cache, sequence, params, query, layers, bytes per call.
type Kept = (String, KvCache, SeqId, AttnParams, Vec<f32>, usize, usize);

/// `rounds` rounds over every kept cell (9 calls each, bracketed by the quick probe), then each
/// cell's median time and fraction of bandwidth over the rounds whose probe read below, and at
/// or above, the median of all readings.
fn by_phase(pool: &rayon::ThreadPool, probe: &[u64], threads: usize, cpu: &Cpu, scratch: &mut AttnScratch, kept: &[Kept], rounds: usize) {
    let probe = &probe[..probe.len() / 4];
    let mut seen = vec![Vec::new(); kept.len()]; // (probe bytes/s, seconds per call)
    let mut layer = 0;
    for round in 0..rounds {
        for (i, (_, cache, seq, p, q, layers, _)) in kept.iter().enumerate() {
            let mut out = vec![0f32; q.len()];
            seen[i].push(bracketed(pool, probe, threads, || {
                // A layer not read for a while: every call streams its KV from memory.
                layer = (layer + 1) % layers;
                cpu.attention_decode(cache, layer, &[*seq], black_box(q), &mut out, p, scratch).expect("decode");
            }));
        }
        eprint!("\rphase rounds: {}/{rounds}", round + 1);
    }
    // End the progress line, so the table below starts on its own line in a terminal and a log.
    eprintln!();
    let split = median(seen.iter().flatten().map(|&(bw, _)| bw).collect());
    println!(
        "\ndecode attention by bandwidth phase, {threads} threads, {rounds} rounds, probe split at {:.1} GB/s: median µs / fraction of bw (rounds)",
        split / 1e9
    );
    println!("{:<36} {:>24} {:>24}", "kernel", "probe below split", "probe at or above");
    for ((id, .., bytes), seen) in kept.iter().zip(&seen) {
        let cell = |high: bool| {
            let x: Vec<_> = seen.iter().filter(|&&(bw, _)| (bw >= split) == high).collect();
            if x.is_empty() {
                return "—".to_string();
            }
            let (t, r) = (median(x.iter().map(|&&(_, t)| t).collect()), median(x.iter().map(|&&(bw, t)| *bytes as f64 / t / bw).collect()));
            format!("{:.1} / {:.0}% ({})", t * 1e6, 100.0 * r, x.len())
        };
        println!("{:<36} {:>24} {:>24}", id, cell(false), cell(true));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
