//! Kernel demo: one matmul on a chosen shape and format, checked against the f64 reference,
//! then timed. Until the model example lands, this is the README's main job.
//!
//! cargo run --release --example demo -- [--format q4_1] [--n 14336] [--k 4096] [--m 1]
//!     [--threads 2] [--isa avx512vnni] [--iters 50]

use sparq::matmul::reference::{f32_error_bound, matmul_f64, matmul_q8_f64};
use sparq::{Cpu, DType, Isa, Scratch, Weights, quant};
use std::time::Instant;

struct Args {
    format: DType,
    n: usize,
    k: usize,
    m: usize,
    threads: usize,
    isa: Option<Isa>,
    iters: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { format: DType::Q4_1, n: 14336, k: 4096, m: 1, threads: 2, isa: None, iters: 50 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--format" => a.format = value.parse().map_err(|e: sparq::Error| e.to_string())?,
            "--n" => a.n = num()?,
            "--k" => a.k = num()?,
            "--m" => a.m = num()?,
            "--threads" => a.threads = num()?,
            "--iters" => a.iters = num()?.max(1),
            "--isa" => a.isa = Some(value.parse().map_err(|e: sparq::Error| e.to_string())?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("usage: demo [--format f32|f16|bf16|q8_0|q4_0|q4_1] [--n N] [--k K] [--m M] [--threads T] [--isa LEVEL] [--iters I]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("{}", sparq::isa_report());
    let cpu = match a.isa {
        Some(isa) => Cpu::with_isa(isa, a.threads)?,
        None => Cpu::new(a.threads)?,
    };
    let (n, k, m) = (a.n, a.k, a.m);
    let w_f32: Vec<f32> = (0..n * k).map(|i| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0).collect();
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 40503) % 997) as f32 / 498.5 - 1.0).collect();
    let bytes = quant::quantize(a.format, &w_f32)?;
    let w = Weights::new(a.format, n, k, &bytes)?;
    let mut y = vec![0f32; m * n];
    let mut scratch = Scratch::default();
    cpu.matmul(&w, &x, m, &mut y, &mut scratch)?;

    // Check a sample of rows against the f64 reference (all of it when small).
    let check_n = n.min(256);
    let w_head = Weights::new(a.format, check_n, k, &bytes[..check_n * w.row_bytes()])?;
    let reference = if a.format.is_block_quantized() { matmul_q8_f64(&w_head, &x, m) } else { matmul_f64(&w_head, &x, m) };
    let mut worst = 0f64;
    for r in 0..m {
        for c in 0..check_n {
            let i = r * check_n + c;
            let err = (y[r * n + c] as f64 - reference.y[i]).abs();
            worst = worst.max(err / f32_error_bound(a.format, k, reference.magnitude[i]).max(1e-30));
        }
    }
    let verdict = if worst <= 1.0 { "ok" } else { "FAILED" };
    println!("{} {n}x{k} m={m} on {} ({} threads): check vs f64 reference {verdict} (worst error {:.3} of bound)", a.format, cpu.isa(), cpu.threads(), worst);

    let mut times: Vec<f64> = (0..a.iters)
        .map(|_| {
            let t = Instant::now();
            cpu.matmul(&w, &x, m, &mut y, &mut scratch).expect("validated above");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|p, q| p.total_cmp(q));
    let med = times[times.len() / 2];
    println!(
        "median of {}: {:.1} µs  |  {:.1} GB/s of weights  |  {:.1} GOP/s (2·m·n·k)",
        a.iters,
        med * 1e6,
        bytes.len() as f64 / med / 1e9,
        2.0 * (m * n * k) as f64 / med / 1e9
    );
    if worst > 1.0 {
        return Err("result outside the derived error bound".into());
    }
    Ok(())
}
