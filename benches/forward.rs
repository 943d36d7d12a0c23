//! `cargo bench --bench forward [-- FILTER]`
//!
//! End to end on SmolLM2-135M-Instruct Q4_1 — the real file when present (`SPARQ_MODEL`, else
//! the examples' cache, `~/.cache/sparq/`; the bench never downloads), otherwise a synthetic
//! model of the same shapes and formats (Q4_1 matrices, Q8_0 tied embedding):
//! - `forward/prefill/128`, `/512`: a fresh prompt of that many tokens (tokens/s);
//! - `forward/decode/ctx128`, `/ctx1024`: one token after that many (tokens/s, and GB/s of
//!   weights streamed as a fraction of the read bandwidth measured in the same run);
//! - `forward/query`: the headline — a 128-token prompt, then 64 greedy tokens (ms), model
//!   loaded, from token ids in to the last token out.
//!
//! `SPARQ_BENCH_THREADS` sets the thread count (default 2); `SPARQ_BENCH_KV` the KV-cache
//! format (f32, f16 — the default, as llama.cpp's — or i8).

mod common;

use common::{median, median_time, read_bandwidth, threads, wanted};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sparq::model::{Config, Gguf, Llama, Session, WeightLayout, synthetic_llama};
use sparq::{Cpu, DType, KvDtype};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PROMPT: usize = 128;
const ANSWER: usize = 64;

/// The real model if it is on disk, else a synthetic one; and which it is.
fn model() -> (Llama, String) {
    let cached = match std::env::var_os("SPARQ_MODEL") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "SPARQ_MODEL={} is not a file", p.display());
            Some(p)
        }
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sparq/SmolLM2-135M-Instruct.Q4_1.gguf")),
    };
    match cached.filter(|p| p.is_file()) {
        Some(path) => (Llama::load(&path).expect("load model"), format!("real model {}", path.display())),
        None => {
            let bytes = synthetic_llama(&Config::smollm2_135m(), DType::Q4_1, DType::Q8_0, 7).expect("synthetic model");
            let model = Llama::from_gguf(Gguf::from_bytes(bytes).expect("parse"), WeightLayout::Tiled).expect("load");
            (model, "synthetic SmolLM2-135M-shaped model (no model file found)".into())
        }
    }
}

/// Deterministic token ids spread over the vocabulary.
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

/// The query: prefill `prompt`, then `ANSWER` greedy tokens. Returns (prefill s, decode s).
fn query(session: &mut Session, prompt: &[u32]) -> (f64, f64) {
    session.rewind(0).expect("rewind");
    let t0 = Instant::now();
    let mut next = argmax(session.forward(prompt, false).expect("prefill"));
    let t1 = Instant::now();
    for _ in 1..ANSWER {
        next = argmax(session.forward(&[next], false).expect("decode"));
    }
    black_box(next);
    (t1.duration_since(t0).as_secs_f64(), t1.elapsed().as_secs_f64())
}

fn kv_dtype() -> KvDtype {
    match std::env::var("SPARQ_BENCH_KV").as_deref() {
        Ok("f32") => KvDtype::F32,
        Ok("i8") => KvDtype::I8,
        _ => KvDtype::F16,
    }
}

fn bench(c: &mut Criterion) {
    let threads = threads();
    let load_start = Instant::now();
    let (model, which) = model();
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let bandwidth = read_bandwidth(&pool, threads);
    drop(pool);
    let cpu = Cpu::new(threads).expect("cpu");
    let kv = kv_dtype();
    let weight_bytes = model.decode_weight_bytes();
    println!("{which}; {threads} threads; KV {kv:?}; {}", sparq::isa_report());
    println!("memory read bandwidth: {:.1} GB/s; weights streamed per decoded token: {:.1} MB", bandwidth / 1e9, weight_bytes as f64 / 1e6);
    let vocab = model.config.vocab_size;
    let mut session = Session::new(&model, &cpu, 2048, kv).expect("session");
    let mut rows: Vec<String> = Vec::new();

    let mut g = c.benchmark_group("forward");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for n in [128, 512] {
        let id = format!("prefill/{n}");
        if !wanted(&format!("forward/{id}")) {
            continue;
        }
        let prompt = tokens(n, vocab);
        let mut run = || {
            session.rewind(0).expect("rewind");
            black_box(session.forward(&prompt, false).expect("prefill")[0]);
        };
        let t = median_time(7, &mut run);
        rows.push(format!("{id:<18} {:>9.0} tok/s   {:>8.2} ms", n as f64 / t, t * 1e3));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(&id, |b| b.iter(&mut run));
    }
    for ctx in [128, 1024] {
        let id = format!("decode/ctx{ctx}");
        if !wanted(&format!("forward/{id}")) {
            continue;
        }
        session.rewind(0).expect("rewind");
        session.forward(&tokens(ctx, vocab), false).expect("fill");
        let mut run = || {
            black_box(session.forward(&[42], false).expect("decode")[0]);
            session.rewind(ctx).expect("rewind");
        };
        let t = median_time(51, &mut run);
        let gbs = weight_bytes as f64 / t;
        rows.push(format!(
            "{id:<18} {:>9.0} tok/s   {:>8.2} ms   weights {:.1} GB/s = {:.0}% of read bandwidth",
            1.0 / t,
            t * 1e3,
            gbs / 1e9,
            100.0 * gbs / bandwidth
        ));
        g.throughput(Throughput::Elements(1));
        g.bench_function(&id, |b| b.iter(&mut run));
    }
    if wanted("forward/query") {
        let prompt = tokens(PROMPT, vocab);
        let runs: Vec<(f64, f64)> = (0..7).map(|_| query(&mut session, &prompt)).collect();
        let total = median(runs.iter().map(|(p, d)| p + d).collect());
        let prefill = median(runs.iter().map(|r| r.0).collect());
        let decode = median(runs.iter().map(|r| r.1).collect());
        rows.push(format!(
            "{:<18} {:>9.1} ms total: prefill {PROMPT} at {:.0} tok/s, decode {} at {:.0} tok/s",
            "query",
            total * 1e3,
            PROMPT as f64 / prefill,
            ANSWER - 1,
            (ANSWER - 1) as f64 / decode
        ));
        g.throughput(Throughput::Elements((PROMPT + ANSWER) as u64));
        g.bench_function("query", |b| b.iter(|| query(&mut session, &prompt)));
    }
    g.finish();
    println!("\nsummary (medians; {threads} threads; model load {load_ms:.0} ms, synthetic models include generating them):");
    rows.iter().for_each(|r| println!("  {r}"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
