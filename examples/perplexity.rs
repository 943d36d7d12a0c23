//! Perplexity over a text file, computed like llama.cpp's `llama-perplexity`: the text is
//! tokenized once (a BOS token first only if the model asks for one), cut into non-overlapping
//! windows of `--ctx` tokens, and each window scores its second half (the prediction of token
//! `j + 1` from the logits at `j`, for `j` from `ctx/2` to `ctx − 2`).
//!
//! ```text
//! cargo run --release --example perplexity -- --file alice29.txt [--ctx 512] [--kv f32|f16|i8] [--json]
//! ```
//! It also reports next-token accuracy (the share of scored positions whose most likely token
//! is the text's next token). With `--act-sparsity P --calib FILE` every position runs the
//! activation-sparse products decode would run (see `--help`).

mod common;

use common::{ActOptions, GgufTokenizer, find_model};
use sparq::model::{Llama, Session};
use sparq::{Cpu, KvDtype};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let (mut file, mut ctx, mut json, mut threads, mut model, mut kv) = (None, 512usize, false, 0usize, None, KvDtype::F32);
    let (mut act, mut max_chunks) = (ActOptions::default(), usize::MAX);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--file" | "-f" => file = Some(PathBuf::from(value()?)),
            "--ctx" | "-c" => ctx = value()?.parse().map_err(|_| "--ctx: not a number")?,
            "--threads" | "-t" => threads = value()?.parse().map_err(|_| "--threads: not a number")?,
            "--model" | "-m" => model = Some(PathBuf::from(value()?)),
            "--kv" => kv = value()?.parse().map_err(|e: sparq::Error| format!("--kv: {e}"))?,
            "--json" => json = true,
            "--chunks" => max_chunks = value()?.parse().map_err(|_| "--chunks: not a number")?,
            "--help" | "-h" => {
                println!("perplexity --file F [--ctx 512] [--chunks N] [--threads N] [--model PATH] [--kv f32|f16|i8] [--json]\n{}", ActOptions::HELP);
                return Ok(());
            }
            other => {
                if !act.parse(other, &mut value)? {
                    return Err(format!("unknown option {other:?} (see --help)"));
                }
            }
        }
    }
    let file = file.ok_or("--file is required")?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut model = Llama::load(find_model(model.as_deref())?).map_err(|e| e.to_string())?;
    if ctx < 4 || ctx > model.config.context_length {
        return Err(format!("--ctx must be in 4..={}", model.config.context_length));
    }
    let tokenizer = GgufTokenizer::from_gguf(model.gguf())?;
    let add_bos = matches!(model.gguf().get("tokenizer.ggml.add_bos_token"), Some(sparq::model::gguf::Value::Bool(true)));
    let mut tokens = tokenizer.encode(&text)?;
    if add_bos {
        tokens.insert(0, tokenizer.bos.ok_or("model wants a BOS token but names none")?);
    }
    let chunks = (tokens.len() / ctx).min(max_chunks);
    if chunks == 0 {
        return Err(format!("{} tokens is less than one window of {ctx}", tokens.len()));
    }
    let cpu = Cpu::new(threads).map_err(|e| e.to_string())?;
    // Sparse at every position: what decode computes, scored.
    let act = act.setup(&mut model, &cpu, &tokenizer, json)?.map(|mut a| {
        a.prefill = true;
        a
    });
    let act_sparsity = act.as_ref().map(|a| a.target);
    let vocab = model.config.vocab_size;
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count, mut correct) = (0f64, 0f64, 0usize, 0usize);
    let t0 = Instant::now();
    for c in 0..chunks {
        let window = &tokens[c * ctx..(c + 1) * ctx];
        let mut session = Session::new(&model, &cpu, ctx, kv).map_err(|e| e.to_string())?;
        session.set_act_sparsity(act.clone()).map_err(|e| e.to_string())?;
        let logits = session.forward(window, true).map_err(|e| e.to_string())?;
        for j in first..ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
            let v = lse - row[window[j + 1] as usize] as f64;
            let best = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &l)| if l > b.1 { (i, l) } else { b }).0;
            correct += usize::from(best == window[j + 1] as usize);
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        if !json {
            eprint!("\r[{}/{chunks}] ppl {:.4}  ({:.0} tok/s)", c + 1, (nll / count as f64).exp(), ((c + 1) * ctx) as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let mean = nll / count as f64;
    let accuracy = correct as f64 / count as f64;
    let ppl = mean.exp();
    // llama.cpp's uncertainty: the standard error of the mean NLL, propagated through exp.
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let err = ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt();
    if json {
        println!(
            "{}",
            serde_json::json!({ "ppl": ppl, "ppl_err": err, "accuracy": accuracy, "tokens": count, "chunks": chunks, "ctx": ctx, "kv": kv.name(), "act_sparsity": act_sparsity })
        );
    } else {
        eprintln!();
        println!(
            "perplexity {ppl:.4} ± {err:.4}, next-token accuracy {:.2}% over {count} scored tokens ({chunks} windows of {ctx}, {kv} KV cache)",
            100.0 * accuracy
        );
    }
    Ok(())
}
