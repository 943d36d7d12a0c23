//! `cargo bench --bench sparse [-- FILTER]`
//!
//! Activation-sparse decode products (m = 1) against the dense kernel the model uses, in the
//! same run: for Q4_1 and Q8_0 at SmolLM2-135M's and Llama-8B's projection shapes, the dense
//! tiled product (`<format>_tiled`) and the input-major activation-sparse product
//! (`<format>_input_major`) at input sparsities 0, 25, 50, 70 and 90% (the threshold is the
//! quantile of |x| that drops that share). Ids: `sparse/<format>/<isa>/<n>x<k>/s<percent>` and
//! `sparse/<format>/<isa>/<n>x<k>/dense`.
//!
//! Weights are cold, as in a decode step: each call takes the next of several copies totalling
//! ≥ 1 GiB. Dense and sparse calls alternate in 7 rounds; the table gives medians and the median
//! per-round speed-up over dense, with the bytes each call had to read (the kept inputs' code
//! rows and the scales of every input block with one; the whole matrix for dense) as GB/s
//! against the memory bandwidth probe of the same run.
//! `SPARQ_BENCH_THREADS` sets the thread count (default 2); `SPARQ_BENCH_WARM=1` uses one copy
//! (weights in cache where they fit: the kernels' compute speed).

mod common;

use common::{median, median_time, read_bandwidth, threads, values, wanted};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sparq::sparse::InputMajorWeights;
use sparq::{Cpu, DType, Isa, PackedWeights, Scratch, Weights, quant};
use std::hint::black_box;
use std::time::Duration;

const SHAPES: [(usize, usize); 5] = [(576, 576), (1536, 576), (576, 1536), (4096, 4096), (14336, 4096)];
const SPARSITIES: [usize; 5] = [0, 25, 50, 70, 90];
const COLD_BYTES: usize = 1 << 30;

/// The threshold that drops `percent`% of `x` (by magnitude).
fn threshold_for(x: &[f32], percent: usize) -> f32 {
    if percent == 0 {
        return 0.0;
    }
    let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    mags.sort_by(f32::total_cmp);
    mags[(mags.len() * percent / 100).min(mags.len() - 1)]
}

fn bench(c: &mut Criterion) {
    let threads = threads();
    let warm = std::env::var("SPARQ_BENCH_WARM").is_ok_and(|v| v == "1");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let bandwidth = read_bandwidth(&pool, threads);
    println!("memory read bandwidth ({threads} threads, 1 GiB): {:.1} GB/s", bandwidth / 1e9);
    println!("{}", sparq::isa_report());
    let cpus: Vec<Cpu> =
        Isa::available().into_iter().filter(|&i| i >= Isa::Avx2 || Isa::best() < Isa::Avx2).map(|isa| Cpu::with_isa(isa, threads).expect("level")).collect();
    let mut table: Vec<(String, f64, f64, f64)> = Vec::new();
    let mut scratch = Scratch::default();

    for (n, k) in SHAPES {
        for dtype in [DType::Q4_1, DType::Q8_0] {
            let prefix = format!("sparse/{dtype}");
            if !cpus.iter().any(|cpu| wanted(&format!("{prefix}/{}/{n}x{k}/", cpu.isa()))) {
                continue;
            }
            let w_f32 = values(0, n * k);
            let bytes = quant::quantize(dtype, &w_f32).expect("quantize");
            let copies = if warm { 1 } else { COLD_BYTES.div_ceil(bytes.len()) };
            let dense_views: Vec<Weights> = (0..copies).map(|_| Weights::new(dtype, n, k, &bytes).expect("weights")).collect();
            let dense = PackedWeights::pack(&dense_views, 0).expect("pack");
            let im = InputMajorWeights::quantize(dtype, n, k, &w_f32).expect("input-major");
            let ims: Vec<InputMajorWeights> = (0..copies).map(|_| InputMajorWeights::from_bytes(dtype, n, k, im.bytes().to_vec()).expect("copy")).collect();
            let x = values(99, k);
            let mut y = vec![0f32; n];
            for cpu in &cpus {
                let id = format!("{prefix}/{}/{n}x{k}", cpu.isa());
                if !wanted(&format!("{id}/")) {
                    continue;
                }
                let mut next = 0usize;
                let mut dense_call = |y: &mut [f32], s: &mut Scratch| {
                    next = (next + 1) % copies;
                    cpu.matmul(&dense.get(next).expect("copy"), black_box(&x), 1, y, s).expect("matmul")
                };
                let mut group = c.benchmark_group(prefix.clone());
                group.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
                group.throughput(Throughput::Bytes(bytes.len() as u64));
                group.bench_function(BenchmarkId::new(cpu.isa().name(), format!("{n}x{k}/dense")), |b| b.iter(|| dense_call(&mut y, &mut scratch)));
                for &p in &SPARSITIES {
                    let t = threshold_for(&x, p);
                    // What the product reads: each input block with a kept input, its scales
                    // and the kept inputs' code rows (the layout of `InputMajorWeights`).
                    let width = n.next_multiple_of(64);
                    let scales = if dtype == DType::Q4_1 { 4 * width } else { 2 * width };
                    let code_row = if dtype == DType::Q8_0 { width } else { width / 2 };
                    let read: usize = x
                        .chunks(32)
                        .map(|b| b.iter().filter(|v| sparq::sparse::keeps(**v, t)).count())
                        .map(|c| if c > 0 { scales + c * code_row } else { 0 })
                        .sum();
                    let mut next_im = 0usize;
                    let mut sparse_call = |y: &mut [f32], s: &mut Scratch| {
                        next_im = (next_im + 1) % copies;
                        cpu.matmul_act_sparse(&ims[next_im].weights(), black_box(&x), 1, y, t, s).expect("sparse")
                    };
                    group.throughput(Throughput::Bytes(read as u64));
                    group.bench_function(BenchmarkId::new(cpu.isa().name(), format!("{n}x{k}/s{p}")), |b| b.iter(|| sparse_call(&mut y, &mut scratch)));
                    // Paired rounds: dense, sparse, dense ... the ratio per round, then medians.
                    let (mut ratios, mut times) = (Vec::new(), Vec::new());
                    for _ in 0..7 {
                        let td = median_time(9, || dense_call(&mut y, &mut scratch));
                        let ts = median_time(9, || sparse_call(&mut y, &mut scratch));
                        ratios.push(td / ts);
                        times.push(ts);
                    }
                    let ts = median(times);
                    table.push((format!("{id}/s{p}"), ts, read as f64 / ts, median(ratios)));
                }
                let td = median_time(31, || dense_call(&mut y, &mut scratch));
                table.push((format!("{id}/dense"), td, bytes.len() as f64 / td, 1.0));
                group.finish();
            }
        }
    }
    if !table.is_empty() {
        let weights = if warm { "warm: one copy" } else { "cold" };
        println!("\nactivation-sparse decode (m = 1, weights {weights}), {threads} threads, bandwidth {:.1} GB/s; medians", bandwidth / 1e9);
        println!("{:<40} {:>10} {:>12} {:>8} {:>12}", "product", "µs", "GB/s read", "of bw", "× dense");
        for (id, t, rate, ratio) in &table {
            println!("{id:<40} {:>10.1} {:>12.1} {:>7.0}% {:>12.2}", t * 1e6, rate / 1e9, 100.0 * rate / bandwidth, ratio);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
