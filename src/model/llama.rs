//! A Llama-family forward pass built only on sparq's public primitives (matmul, attention, the
//! paged KV cache, ops). It reads like llama2.c's `run.c`: a config, the weights (borrowed from
//! the memory-mapped GGUF), a per-session state, and `forward`.

use super::act_sparsity::{ActSparsity, Histograms, Site};
use super::gguf::Gguf;
use crate::attention::AttnParams;
use crate::kv_cache::{KvCache, KvCacheConfig, KvDtype, SeqId};
use crate::matmul::tiled;
use crate::ops::{Rope, add_assign, rms_norm};
use crate::sparse::{InputMajorWeights, can_input_major};
use crate::{AttnScratch, Cpu, DType, Error, PackedWeights, Result, Scratch, Weights, quant};
use std::path::Path;

/// The hyper-parameters, read from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Transformer blocks.
    pub n_layers: usize,
    /// The residual stream's width (embedding length).
    pub dim: usize,
    /// The feed-forward block's inner width.
    pub hidden_dim: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (fewer than `n_heads`: grouped-query attention).
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Tokens in the vocabulary: the logits' length.
    pub vocab_size: usize,
    /// The longest sequence the model was trained for.
    pub context_length: usize,
    /// RoPE's frequency base (`rope.freq_base`).
    pub rope_base: f64,
    /// RMSNorm's epsilon.
    pub norm_eps: f32,
}

impl Config {
    /// Reads a Llama-family config; other architectures are refused by name.
    pub fn from_gguf(g: &Gguf) -> Result<Config> {
        let arch = g.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::Model(format!("architecture {arch:?} is not supported (only \"llama\")")));
        }
        let key = |k: &str| format!("llama.{k}");
        let dim = g.get_usize(&key("embedding_length"))?;
        let n_heads = g.get_usize(&key("attention.head_count"))?;
        let n_kv_heads = g.get_usize(&key("attention.head_count_kv")).unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || dim % n_heads != 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::Model(format!("inconsistent heads: dim {dim}, {n_heads} heads, {n_kv_heads} KV heads")));
        }
        let head_dim = dim / n_heads;
        if let Ok(rot) = g.get_usize(&key("rope.dimension_count"))
            && rot != head_dim
        {
            return Err(Error::Model(format!("partial rotary embedding ({rot} of {head_dim}) is not supported")));
        }
        let vocab_size = match g.get_usize(&key("vocab_size")) {
            Ok(v) => v,
            Err(_) => g.tensor_info("token_embd.weight")?.dims.get(1).copied().unwrap_or(0),
        };
        Ok(Config {
            n_layers: g.get_usize(&key("block_count"))?,
            dim,
            hidden_dim: g.get_usize(&key("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: g.get_usize(&key("context_length"))?,
            rope_base: g.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            norm_eps: g.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
        })
    }
}

/// A weight matrix inside the file: where it is and its shape.
#[derive(Debug, Clone, Copy)]
struct Matrix {
    dtype: DType,
    n: usize,
    k: usize,
    /// index into the file's tensors
    index: usize,
    /// index into the model's [`PackedWeights`], when repacked
    packed: Option<usize>,
}

/// How a loaded model holds its weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightLayout {
    /// Q8_0 and Q4_1 matrices repacked at load into sparq's tiled layout
    /// ([`crate::matmul::tiled`]): the fastest kernels, at the cost of an owned copy of those
    /// matrices (the mapped file is then only read for the token embeddings and norms).
    #[default]
    Tiled,
    /// Every matrix read in place from the memory-mapped file: no copy, slower kernels.
    Mapped,
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    w_gate: Matrix,
    w_up: Matrix,
    w_down: Matrix,
}

/// A loaded model: the memory-mapped file and its tensors, checked once. Shared read-only by
/// any number of [`Session`]s (it is `Sync`).
#[derive(Debug)]
pub struct Llama {
    /// The geometry read from the file.
    pub config: Config,
    gguf: Gguf,
    /// (vocab_size, dim)
    token_embd: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// (vocab_size, dim); the embedding itself when tied
    output: Matrix,
    rope: Rope,
    packed: PackedWeights,
    /// (n_layers) input-major copies of each block's matrices, in `Layer` order (q, k, v, o,
    /// gate, up, down), for activation-sparse decoding (`None` for a format without one);
    /// empty unless prepared.
    input_major: Vec<[Option<InputMajorWeights>; 7]>,
}

impl Llama {
    /// Maps the GGUF file at `path`, checks every tensor, and repacks the integer matrices
    /// ([`WeightLayout::Tiled`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Llama> {
        Llama::from_gguf(Gguf::open(path)?, WeightLayout::Tiled)
    }

    /// As [`Llama::load`], holding the weights as `layout` says.
    pub fn load_with(path: impl AsRef<Path>, layout: WeightLayout) -> Result<Llama> {
        Llama::from_gguf(Gguf::open(path)?, layout)
    }

    /// A model over an opened GGUF file. Repacking ([`WeightLayout::Tiled`]) runs on one thread
    /// per core (SmolLM2-135M: a ~96 MB copy in ~30–45 ms on two cores, most of it faulting in
    /// and zeroing the new pages).
    pub fn from_gguf(gguf: Gguf, layout: WeightLayout) -> Result<Llama> {
        let c = Config::from_gguf(&gguf)?;
        let kv_dim = c.n_kv_heads * c.head_dim;
        let matrix = |name: &str, n: usize, k: usize| -> Result<Matrix> {
            let (t, bytes) = gguf.tensor(name)?;
            if t.dims != [k, n] {
                return Err(Error::Model(format!("{name}: dims {:?}, expected [{k}, {n}]", t.dims)));
            }
            Weights::new(t.dtype, n, k, bytes).map_err(|e| Error::Model(format!("{name}: {e}")))?;
            Ok(Matrix { dtype: t.dtype, n, k, index: gguf.tensor_index(name)?, packed: None })
        };
        let vector = |name: &str| -> Result<Vec<f32>> {
            let (t, bytes) = gguf.tensor(name)?;
            if t.dims != [c.dim] {
                return Err(Error::Model(format!("{name}: dims {:?}, expected [{}]", t.dims, c.dim)));
            }
            let mut out = vec![0f32; c.dim];
            quant::dequantize(t.dtype, bytes, &mut out).map_err(|e| Error::Model(format!("{name}: {e}")))?;
            Ok(out)
        };
        let layers = (0..c.n_layers)
            .map(|i| {
                let name = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(Layer {
                    attn_norm: vector(&name("attn_norm"))?,
                    wq: matrix(&name("attn_q"), c.dim, c.dim)?,
                    wk: matrix(&name("attn_k"), kv_dim, c.dim)?,
                    wv: matrix(&name("attn_v"), kv_dim, c.dim)?,
                    wo: matrix(&name("attn_output"), c.dim, c.dim)?,
                    ffn_norm: vector(&name("ffn_norm"))?,
                    w_gate: matrix(&name("ffn_gate"), c.hidden_dim, c.dim)?,
                    w_up: matrix(&name("ffn_up"), c.hidden_dim, c.dim)?,
                    w_down: matrix(&name("ffn_down"), c.dim, c.hidden_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = matrix("token_embd.weight", c.vocab_size, c.dim)?;
        let output = if gguf.tensor_info("output.weight").is_ok() { matrix("output.weight", c.vocab_size, c.dim)? } else { token_embd };
        let output_norm = vector("output_norm.weight")?;
        let rope = Rope::new(c.head_dim, c.rope_base, c.context_length);
        let mut model = Llama { config: c, gguf, token_embd, layers, output_norm, output, rope, packed: PackedWeights::default(), input_major: Vec::new() };
        if layout == WeightLayout::Tiled {
            model.repack()?;
        }
        Ok(model)
    }

    /// Repacks every Q8_0 / Q4_1 matrix the products read (all but the embedding lookup), in one
    /// pass over all of them.
    fn repack(&mut self) -> Result<()> {
        let mut mats: Vec<&mut Matrix> = Vec::new();
        for l in &mut self.layers {
            mats.extend([&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down]);
        }
        mats.push(&mut self.output);
        // Q4_0 has a tiled layout too, but from memory it measured slower tiled than in the
        // file's layout (52–77% vs 76% of bandwidth at 14336 × 4096; its 288-byte block records
        // are the suspect), so a Q4_0 model keeps the file's layout until that is understood.
        mats.retain(|m| tiled::can_tile(m.dtype) && m.dtype != DType::Q4_0);
        let gguf = &self.gguf;
        let ws: Vec<Weights> = mats.iter().map(|m| Weights::new(m.dtype, m.n, m.k, gguf.tensor_bytes(m.index)).expect("validated at load")).collect();
        self.packed = PackedWeights::pack(&ws, 0)?;
        for (i, m) in mats.into_iter().enumerate() {
            m.packed = Some(i);
        }
        Ok(())
    }

    /// Makes the input-major copies of the block matrices that activation-sparse decoding reads
    /// ([`crate::sparse::InputMajorWeights`]: the same values rearranged, so that only the
    /// weights of kept inputs are read) — every Q8_0, Q4_0 and Q4_1 matrix; others stay dense
    /// (thresholded inputs, no saving). The copies cost as much memory as those matrices. Runs
    /// on one thread per core.
    pub fn prepare_act_sparsity(&mut self) -> Result<()> {
        let mats: Vec<Matrix> = self.layers.iter().flat_map(|l| [l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down]).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let this = &*self;
        let mut done: Vec<(usize, Option<Result<InputMajorWeights>>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(m) = mats.get(i) else { break out };
                            out.push((i, can_input_major(m.dtype).then(|| InputMajorWeights::from_weights(&this.weights(m)))));
                        }
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("input-major worker")).collect()
        });
        done.sort_by_key(|(i, _)| *i);
        let mut copies = done.into_iter().map(|(_, r)| r.transpose());
        let mut layers = Vec::with_capacity(self.layers.len());
        for _ in 0..self.layers.len() {
            let next: Vec<Option<InputMajorWeights>> = copies.by_ref().take(7).collect::<Result<_>>()?;
            layers.push(next.try_into().expect("seven matrices a layer"));
        }
        self.input_major = layers;
        Ok(())
    }

    /// Whether [`Llama::prepare_act_sparsity`] has made the input-major copies.
    pub fn has_input_major(&self) -> bool {
        !self.input_major.is_empty()
    }

    /// How the weight matrices are held.
    pub fn layout(&self) -> WeightLayout {
        if self.packed.is_empty() { WeightLayout::Mapped } else { WeightLayout::Tiled }
    }

    /// The file the model was loaded from (metadata, tokenizer tables, the mapped tensors).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// Bytes of weights one decode step streams: every layer's matrices and the LM head (the
    /// embedding's single row is negligible).
    pub fn decode_weight_bytes(&self) -> usize {
        let layer = |l: &Layer| [l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down].iter().map(|m| self.weights(m).bytes().len()).sum::<usize>();
        self.layers.iter().map(layer).sum::<usize>() + self.weights(&self.output).bytes().len()
    }

    fn weights(&self, m: &Matrix) -> Weights<'_> {
        match m.packed {
            Some(i) => self.packed.get(i).expect("packed at load"),
            None => Weights::new(m.dtype, m.n, m.k, self.gguf.tensor_bytes(m.index)).expect("validated at load"),
        }
    }
}

/// One conversation's state: its KV cache and working buffers. Many sessions may share one
/// [`Llama`] and run on different threads.
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Llama,
    cpu: &'m Cpu,
    cache: KvCache,
    seq: SeqId,
    scratch: Scratch,
    attn_scratch: AttnScratch,
    /// (m, dim) residual stream, normed copy, attention output
    x: Vec<f32>,
    xb: Vec<f32>,
    att: Vec<f32>,
    /// (m, dim) queries; (m, kv_dim) keys, values
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// (m, hidden_dim) silu(gate) · up
    gate: Vec<f32>,
    /// (m or 1, vocab_size)
    logits: Vec<f32>,
    /// Activation-sparsity thresholds, when set.
    act: Option<ActSparsity>,
}

impl<'m> Session<'m> {
    /// A session holding up to `max_tokens` tokens (at most the model's context length), with
    /// its KV cache in `kv_dtype`.
    pub fn new(model: &'m Llama, cpu: &'m Cpu, max_tokens: usize, kv_dtype: KvDtype) -> Result<Session<'m>> {
        let c = &model.config;
        if max_tokens == 0 || max_tokens > c.context_length {
            return Err(Error::Model(format!("max_tokens {max_tokens} must be in 1..={}", c.context_length)));
        }
        let block_size = 16;
        let mut cache = KvCache::new(KvCacheConfig {
            n_layers: c.n_layers,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            block_size,
            n_blocks: max_tokens.div_ceil(block_size),
            max_seq_len: max_tokens,
            dtype: kv_dtype,
        })?;
        let seq = cache.new_sequence();
        Ok(Session {
            model,
            cpu,
            cache,
            seq,
            scratch: Scratch::default(),
            attn_scratch: AttnScratch::default(),
            x: vec![],
            xb: vec![],
            att: vec![],
            q: vec![],
            k: vec![],
            v: vec![],
            gate: vec![],
            logits: vec![],
            act: None,
        })
    }

    /// Makes later forwards activation-sparse with `act`'s thresholds (`None`: dense). They read
    /// the model's input-major copies where [`Llama::prepare_act_sparsity`] made them (the fast
    /// path), and otherwise multiply the thresholded inputs with the dense weights (the same
    /// sparsity's quality on the original weights, at dense speed).
    pub fn set_act_sparsity(&mut self, act: Option<ActSparsity>) -> Result<()> {
        if let Some(a) = &act
            && a.n_layers() != self.model.config.n_layers
        {
            return Err(Error::Model(format!("activation-sparsity thresholds for {} layers, the model has {}", a.n_layers(), self.model.config.n_layers)));
        }
        self.act = act;
        Ok(())
    }

    /// The activation-sparsity thresholds in use.
    pub fn act_sparsity(&self) -> Option<&ActSparsity> {
        self.act.as_ref()
    }

    /// A dense forward of `tokens` whose every thresholded site's inputs are counted in `hist`
    /// (calibration).
    pub(crate) fn observe(&mut self, hist: &mut Histograms, tokens: &[u32]) -> Result<()> {
        let act = self.act.take();
        let r = self.forward_inner(tokens, false, Some(hist)).map(|_| ());
        self.act = act;
        r
    }

    /// Tokens processed so far (the next token's position).
    pub fn pos(&self) -> usize {
        self.cache.len(self.seq).expect("own sequence")
    }

    /// Forgets everything after the first `len` tokens.
    pub fn rewind(&mut self, len: usize) -> Result<()> {
        self.cache.truncate(self.seq, len)
    }

    /// Runs `tokens` through the model at the next positions. Returns the logits of the last
    /// token (vocab_size), or of every token (len · vocab_size) when `all_logits`.
    pub fn forward(&mut self, tokens: &[u32], all_logits: bool) -> Result<&[f32]> {
        self.forward_inner(tokens, all_logits, None)
    }

    fn forward_inner(&mut self, tokens: &[u32], all_logits: bool, hist: Option<&mut Histograms>) -> Result<&[f32]> {
        let (model, c) = (self.model, &self.model.config);
        let m = tokens.len();
        if m == 0 {
            return Err(Error::Model("forward of zero tokens".into()));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::Model(format!("token id {t} is outside the vocabulary ({})", c.vocab_size)));
        }
        let pos0 = self.pos();
        if pos0 + m > self.cache.config().max_seq_len {
            return Err(Error::Model(format!("{} tokens would pass this session's context of {} tokens ({pos0} used)", m, self.cache.config().max_seq_len)));
        }
        let (dim, kv_dim) = (c.dim, c.n_kv_heads * c.head_dim);
        for (buf, len) in [
            (&mut self.x, m * dim),
            (&mut self.xb, m * dim),
            (&mut self.att, m * dim),
            (&mut self.q, m * dim),
            (&mut self.k, m * kv_dim),
            (&mut self.v, m * kv_dim),
            (&mut self.gate, m * c.hidden_dim),
        ] {
            buf.resize(len, 0.0);
        }
        // Embedding: dequantize each token's row.
        let embd = model.gguf.tensor_bytes(model.token_embd.index);
        let row_bytes = model.token_embd.dtype.bytes_for(dim).expect("validated");
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &embd[tok as usize * row_bytes..][..row_bytes];
            quant::dequantize(model.token_embd.dtype, row, &mut self.x[t * dim..(t + 1) * dim])?;
        }
        // The positions are taken before the layers run (each layer writes its K and V there)
        // and given back if any step fails, so that an error leaves the session as it was.
        self.cache.append(self.seq, m)?;
        match self.layers_and_head(m, pos0, all_logits, hist) {
            Ok(()) => Ok(&self.logits),
            Err(e) => {
                self.cache.truncate(self.seq, pos0)?;
                Err(e)
            }
        }
    }

    /// The blocks and the LM head over the `m` embedded rows in `self.x`, at positions `pos0..`
    /// (already appended to the cache).
    fn layers_and_head(&mut self, m: usize, pos0: usize, all_logits: bool, mut hist: Option<&mut Histograms>) -> Result<()> {
        let (model, c) = (self.model, &self.model.config);
        let (dim, hd) = (c.dim, c.head_dim);
        let params = AttnParams::new(c.n_heads, c.n_kv_heads, hd);
        let (cpu, s) = (self.cpu, &mut self.scratch);
        // Sparse at this `m`: the thresholds, and the input-major copies when the model has them.
        let act = self.act.as_ref().filter(|a| m == 1 || a.prefill);
        for (l, layer) in model.layers.iter().enumerate() {
            let t = |site: Site| act.map_or(0.0, |a| a.threshold(l, site));
            let sparse = model.input_major.get(l).filter(|_| act.is_some());
            let w = |i: usize, dense: &Matrix| sparse.and_then(|copies| copies[i].as_ref()).map_or_else(|| model.weights(dense), |copy| copy.weights());
            let mut observe = |site: Site, x: &[f32]| {
                if let Some(h) = hist.as_deref_mut() {
                    h.observe(l, site, x);
                }
            };
            // Attention block.
            rms_norm(&self.x, &layer.attn_norm, c.norm_eps, &mut self.xb)?;
            observe(Site::Qkv, &self.xb);
            let (wq, wk, wv) = (w(0, &layer.wq), w(1, &layer.wk), w(2, &layer.wv));
            cpu.matmul_many_act_sparse(&[&wq, &wk, &wv], &self.xb, m, &mut [&mut self.q, &mut self.k, &mut self.v], t(Site::Qkv), s)?;
            model.rope.apply(&mut self.q, c.n_heads, pos0)?;
            model.rope.apply(&mut self.k, c.n_kv_heads, pos0)?;
            self.cache.write(self.seq, l, pos0, &self.k, &self.v)?;
            if m == 1 {
                cpu.attention_decode(&self.cache, l, &[self.seq], &self.q, &mut self.att, &params, &mut self.attn_scratch)?;
            } else {
                cpu.attention_prefill(&self.cache, l, self.seq, &self.q, &mut self.att, &params, &mut self.attn_scratch)?;
            }
            observe(Site::AttnOutput, &self.att);
            cpu.matmul_act_sparse(&w(3, &layer.wo), &self.att, m, &mut self.xb, t(Site::AttnOutput), s)?;
            add_assign(&mut self.x, &self.xb)?;
            // Feed-forward block.
            rms_norm(&self.x, &layer.ffn_norm, c.norm_eps, &mut self.xb)?;
            observe(Site::GateUp, &self.xb);
            cpu.matmul_swiglu_act_sparse(&w(4, &layer.w_gate), &w(5, &layer.w_up), &self.xb, m, &mut self.gate, t(Site::GateUp), s)?;
            observe(Site::Down, &self.gate);
            cpu.matmul_act_sparse(&w(6, &layer.w_down), &self.gate, m, &mut self.xb, t(Site::Down), s)?;
            add_assign(&mut self.x, &self.xb)?;
        }
        // Final norm and LM head, for the last token only unless every token's logits are wanted.
        let rows = if all_logits { 0..m } else { m - 1..m };
        let n = rows.len();
        rms_norm(&self.x[rows.start * dim..rows.end * dim], &model.output_norm, c.norm_eps, &mut self.xb[..n * dim])?;
        self.logits.resize(n * c.vocab_size, 0.0);
        cpu.matmul(&model.weights(&model.output), &self.xb[..n * dim], n, &mut self.logits, s)?;
        Ok(())
    }
}
