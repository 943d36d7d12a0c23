//! `cargo bench --bench matmul [-- FILTER]`
//!
//! Every weight format × every CPU level this machine supports × SmolLM2-135M's projection
//! shapes and two large Llama-8B shapes, for m = 1 (decode: throughput in bytes of weights
//! streamed) and m = 128 (prefill: throughput in multiply-add operations, 2·m·n·k).
//! Ids: `matvec/<format>/<isa>/<n>x<k>/m1` and `matmul/<format>/<isa>/<n>x<k>/m128`; the integer
//! formats run twice, in the file's layout and repacked into sparq's tiled layout
//! (`sparq::matmul::tiled`, what `Llama::load` uses), the latter named `<format>_tiled`.
//!
//! The same run measures this machine's memory read bandwidth with the same thread count, and
//! ends with a table of each decode kernel's median GB/s as a fraction of it: the bandwidth this
//! VM gets moves with its neighbours' load (40–85 GB/s seen), so the probe alternates with the
//! kernel in rounds and the fraction is the median of per-round ratios.
//! `SPARQ_BENCH_M=1` (or 128) runs only decode (or prefill). Decode runs
//! rotate through copies of the weights totalling ≥ 1 GiB — the probe's working set — so every
//! call streams its matrix from memory, as each matrix does in a real decode step.
//! `SPARQ_BENCH_THREADS` sets the thread count (default 2).

mod common;

use common::{Measured, against_bandwidth, median_time, read_bandwidth, threads, values, wanted};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sparq::matmul::tiled::can_tile;
use sparq::{Cpu, DType, Isa, PackedWeights, Scratch, Weights, quant};
use std::hint::black_box;
use std::time::Duration;

const SMOLLM2: [(usize, usize); 5] = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)];
const LLAMA8B: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];
/// Total size of the rotated weight copies in decode benchmarks: the same working set as the
/// bandwidth probe (1 GiB), far beyond any cache, so the two are compared like for like.
const COLD_BYTES: usize = 1 << 30;

fn bench(c: &mut Criterion) {
    let threads = threads();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let bandwidth = read_bandwidth(&pool, threads);
    let probe_buf: Vec<u64> = (0..(1u64 << 30) / 8).collect();
    let only_m: Option<usize> = std::env::var("SPARQ_BENCH_M").ok().and_then(|v| v.parse().ok());
    println!("memory read bandwidth ({threads} threads, 1 GiB, best of 4 access patterns): {:.1} GB/s", bandwidth / 1e9);
    println!("{}", sparq::isa_report());

    let cpus: Vec<Cpu> = Isa::available().into_iter().map(|isa| Cpu::with_isa(isa, threads).expect("level")).collect();
    let (mut decode, mut prefill) = (Vec::new(), Vec::new());
    let mut scratch = Scratch::default();

    for (n, k) in SMOLLM2.into_iter().chain(LLAMA8B) {
        let labels =
            |dtype: DType| -> Vec<String> { if can_tile(dtype) { vec![dtype.to_string(), format!("{dtype}_tiled")] } else { vec![dtype.to_string()] } };
        let ids_for = |dtype: DType| -> Vec<String> {
            cpus.iter()
                .flat_map(|cpu| {
                    let i = cpu.isa();
                    labels(dtype).into_iter().flat_map(move |f| [format!("matvec/{f}/{i}/{n}x{k}/m1"), format!("matmul/{f}/{i}/{n}x{k}/m128")])
                })
                .collect()
        };
        if !DType::WEIGHTS.iter().any(|&d| ids_for(d).iter().any(|id| wanted(id))) {
            continue;
        }
        let w_f32 = values(0, n * k);
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
                    (0..n)
                        .flat_map(|i| {
                            let r = (i * step + shift) % n;
                            bytes[r * row_bytes..(r + 1) * row_bytes].iter().copied()
                        })
                        .collect()
                })
                .collect();
            let plain: Vec<Weights> = copies.iter().map(|b| Weights::new(dtype, n, k, b).expect("weights")).collect();
            let w_plain = Weights::new(dtype, n, k, &bytes).expect("weights");
            for label in labels(dtype) {
                let tiled = label.ends_with("_tiled");
                if !cpus
                    .iter()
                    .any(|cpu| [1, 128].iter().any(|m| wanted(&format!("{}/{label}/{}/{n}x{k}/m{m}", if *m == 1 { "matvec" } else { "matmul" }, cpu.isa()))))
                {
                    continue;
                }
                let packed =
                    if tiled { Some((PackedWeights::pack(&plain, 0).expect("pack"), PackedWeights::pack(&[w_plain], 0).expect("pack"))) } else { None };
                let mut next = 0usize;
                let mut cold = || {
                    next = (next + 1) % copies.len();
                    match &packed {
                        Some((all, _)) => all.get(next).expect("packed copy"),
                        None => plain[next],
                    }
                };
                let w = packed.as_ref().map_or(w_plain, |(_, one)| one.get(0).expect("packed"));
                for m in [1usize, 128].into_iter().filter(|m| only_m.is_none_or(|o| o == *m)) {
                    let x = values(99, m * k);
                    let mut y = vec![0f32; m * n];
                    let name = if m == 1 { "matvec" } else { "matmul" };
                    let mut group = c.benchmark_group(format!("{name}/{label}"));
                    group.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
                    group.throughput(if m == 1 { Throughput::Bytes(bytes.len() as u64) } else { Throughput::Elements((2 * m * n * k) as u64) });
                    for cpu in &cpus {
                        let id = format!("{name}/{label}/{}/{n}x{k}/m{m}", cpu.isa());
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
                            let (bandwidth, ratio, seconds) = against_bandwidth(&pool, &probe_buf, threads, bytes.len(), || {
                                cpu.matmul(&cold(), &x, m, &mut y, &mut scratch).expect("matmul")
                            });
                            decode.push(Measured { id, bandwidth, ratio, work: bytes.len() as f64, seconds });
                        } else {
                            let seconds = median_time(5, || cpu.matmul(&w, &x, m, &mut y, &mut scratch).expect("matmul"));
                            prefill.push(Measured { id, bandwidth: 0.0, ratio: 0.0, work: (2 * m * n * k) as f64, seconds });
                        }
                    }
                    group.finish();
                }
            }
        }
    }

    if !decode.is_empty() {
        println!("\ndecode (m = 1, weights cold), {threads} threads: 9 rounds of (probe, 9 calls, probe); medians");
        println!("{:<44} {:>10} {:>9} {:>9} {:>8}", "kernel", "µs", "GB/s", "bw GB/s", "of bw");
        for r in &decode {
            let gbs = r.work / r.seconds / 1e9;
            println!("{:<44} {:>10.1} {:>9.1} {:>9.1} {:>7.0}%", r.id, r.seconds * 1e6, gbs, r.bandwidth / 1e9, 100.0 * r.ratio);
        }
    }
    if !prefill.is_empty() {
        println!("\nprefill (m = 128), {threads} threads, median of 5");
        println!("{:<44} {:>10} {:>9}", "kernel", "µs", "GOP/s");
        for r in &prefill {
            println!("{:<44} {:>10.1} {:>9.1}", r.id, r.seconds * 1e6, r.work / r.seconds / 1e9);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
