//! A paged key/value cache: fixed-size blocks of tokens from one pool, a block table per
//! sequence, copy-on-write prefix sharing.
//!
//! Layout (per layer, separately for keys and values; details in `storage`): one head's
//! `block_size` tokens of a block are contiguous, and one head's blocks adjacent, so attention
//! streams `block_size · head_dim` elements per head per block. Int8 storage adds one f32 scale
//! per (block, head, token).
//!
//! A block is shared by every layer (block `b` is the same token range in each layer's pool),
//! and reference-counted across sequences: [`KvCache::fork`] shares all of a sequence's blocks,
//! and the first write into a shared block copies it (all layers) first, so no write to one
//! sequence can change what another sees. Freed blocks return to the pool.
//!
//! [`KvCache::new`] leaves the pool zeroed (allocated lazily by the OS: a 4096-token cache costs
//! nothing until used). [`KvCache::new_poisoned`] fills every slot with NaN (f32/f16 values,
//! int8 scales) instead, so that reading a slot never written poisons results visibly — the
//! tests use it to prove attention reads only what it should.

mod buffer;
pub(crate) mod storage;

use crate::error::check_finite;
use crate::{Error, Result};
pub use storage::KvDtype;
use storage::Pool;

/// The largest head_dim an int8 cache takes: the int8 attention kernel quantizes each query
/// row into a stack buffer of this size (Llama-family models use 64–256). Its exact integer
/// score sums, at most `head_dim · 255 · 128`, stay far inside i32 at this size.
pub const MAX_INT8_HEAD_DIM: usize = 512;

/// Geometry and capacity of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Transformer layers: each has its own keys and values.
    pub n_layers: usize,
    /// Key/value heads per layer.
    pub n_kv_heads: usize,
    /// Elements per head (at most [`MAX_INT8_HEAD_DIM`] for an int8 cache).
    pub head_dim: usize,
    /// Tokens per block: 16 or 32.
    pub block_size: usize,
    /// Blocks in the pool (shared by all sequences).
    pub n_blocks: usize,
    /// The longest sequence allowed (the model's context length).
    pub max_seq_len: usize,
    /// How elements are stored.
    pub dtype: KvDtype,
}

/// A handle to one sequence. Stale handles (of freed sequences) are refused, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqId {
    slot: u32,
    generation: u32,
}

#[derive(Debug, Clone)]
struct Seq {
    generation: u32,
    len: usize,
    /// (ceil(len / block_size)) block ids into the pool
    blocks: Vec<u32>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct KvCache {
    config: KvCacheConfig,
    pool: Pool,
    /// (n_blocks) sequences holding each block
    refs: Vec<u32>,
    free: Vec<u32>,
    seqs: Vec<Seq>,
    /// slots of `seqs` whose sequence was freed (their `blocks` are empty)
    free_slots: Vec<u32>,
    live: Vec<bool>,
}

fn invalid<T>(detail: impl Into<String>) -> Result<T> {
    Err(Error::Invalid { what: "KV cache", detail: detail.into() })
}

impl KvCache {
    /// Allocates the whole pool up front (`n_layers · n_blocks · block bytes`, keys and values).
    pub fn new(config: KvCacheConfig) -> Result<KvCache> {
        KvCache::build(config, false)
    }

    /// Like [`KvCache::new`], but every slot starts as NaN (a testing aid: costs a full write
    /// of the pool up front).
    pub fn new_poisoned(config: KvCacheConfig) -> Result<KvCache> {
        KvCache::build(config, true)
    }

    fn build(config: KvCacheConfig, poisoned: bool) -> Result<KvCache> {
        let c = &config;
        if c.block_size != 16 && c.block_size != 32 {
            return invalid(format!("block_size must be 16 or 32, got {}", c.block_size));
        }
        if c.n_layers == 0 || c.n_kv_heads == 0 || c.head_dim == 0 || c.n_blocks == 0 || c.max_seq_len == 0 {
            return invalid(format!("every dimension must be positive: {config:?}"));
        }
        if c.dtype == KvDtype::I8 && c.head_dim > MAX_INT8_HEAD_DIM {
            return invalid(format!("an int8 cache takes head_dim ≤ {MAX_INT8_HEAD_DIM} (the int8 attention kernel's query buffer), got {}", c.head_dim));
        }
        if c.n_blocks > u32::MAX as usize / 2 {
            return invalid(format!("n_blocks = {} is too many", c.n_blocks));
        }
        let pool = Pool::new(c, poisoned)?;
        Ok(KvCache {
            config,
            pool,
            refs: vec![0; c.n_blocks],
            free: (0..c.n_blocks as u32).rev().collect(),
            seqs: Vec::new(),
            free_slots: Vec::new(),
            live: Vec::new(),
        })
    }

    /// The geometry this cache was made with.
    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    /// Blocks not held by any sequence.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// A new, empty sequence.
    pub fn new_sequence(&mut self) -> SeqId {
        match self.free_slots.pop() {
            Some(slot) => {
                let s = &mut self.seqs[slot as usize];
                s.generation = s.generation.wrapping_add(1);
                s.len = 0;
                self.live[slot as usize] = true;
                SeqId { slot, generation: s.generation }
            }
            None => {
                self.seqs.push(Seq { generation: 0, len: 0, blocks: Vec::new() });
                self.live.push(true);
                SeqId { slot: self.seqs.len() as u32 - 1, generation: 0 }
            }
        }
    }

    fn seq(&self, id: SeqId) -> Result<&Seq> {
        match self.seqs.get(id.slot as usize) {
            Some(s) if self.live[id.slot as usize] && s.generation == id.generation => Ok(s),
            _ => invalid(format!("unknown or freed sequence {id:?}")),
        }
    }

    /// Tokens stored for `seq`.
    pub fn len(&self, seq: SeqId) -> Result<usize> {
        Ok(self.seq(seq)?.len)
    }

    /// A new sequence sharing all of `seq`'s tokens (no copy: blocks are shared until written).
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId> {
        let src = self.seq(seq)?.clone();
        for &b in &src.blocks {
            self.refs[b as usize] += 1;
        }
        let id = self.new_sequence();
        let s = &mut self.seqs[id.slot as usize];
        s.len = src.len;
        s.blocks = src.blocks;
        Ok(id)
    }

    /// Frees `seq`; its handle becomes invalid. Blocks shared with other sequences stay theirs.
    pub fn free(&mut self, seq: SeqId) -> Result<()> {
        self.seq(seq)?;
        self.truncate(seq, 0)?;
        self.live[seq.slot as usize] = false;
        self.free_slots.push(seq.slot);
        Ok(())
    }

    /// Keeps the first `len` tokens of `seq` (rolls back); `len` larger than the current length
    /// is an error.
    pub fn truncate(&mut self, seq: SeqId, len: usize) -> Result<()> {
        let cur = self.seq(seq)?.len;
        if len > cur {
            return invalid(format!("truncate to {len} tokens, but the sequence holds {cur}"));
        }
        let keep = len.div_ceil(self.config.block_size);
        let s = &mut self.seqs[seq.slot as usize];
        s.len = len;
        for b in s.blocks.drain(keep..) {
            self.refs[b as usize] -= 1;
            if self.refs[b as usize] == 0 {
                self.free.push(b);
            }
        }
        Ok(())
    }

    /// Reserves `n` more token slots at the end of `seq` and returns their positions. The
    /// caller then writes every layer's keys and values there with [`KvCache::write`].
    /// Fails, changing nothing, if this would pass `max_seq_len` or the pool has too few
    /// free blocks.
    pub fn append(&mut self, seq: SeqId, n: usize) -> Result<std::ops::Range<usize>> {
        let bs = self.config.block_size;
        let s = self.seq(seq)?;
        let (old, held) = (s.len, s.blocks.len());
        let new = old.checked_add(n).filter(|&l| l <= self.config.max_seq_len).ok_or_else(|| Error::Invalid {
            what: "KV cache",
            detail: format!("{old} + {n} tokens would pass the maximum sequence length {}", self.config.max_seq_len),
        })?;
        // A shared, partly filled last block will be copied before its first write.
        let cow = usize::from(old % bs != 0 && self.refs[s.blocks[held - 1] as usize] > 1);
        let needed = new.div_ceil(bs) - held + cow;
        if needed > self.free.len() {
            return Err(Error::Invalid {
                what: "KV cache",
                detail: format!("out of blocks: {needed} needed, {} free of {}", self.free.len(), self.config.n_blocks),
            });
        }
        if cow == 1 {
            self.make_exclusive(seq.slot as usize, held - 1);
        }
        for _ in held..new.div_ceil(bs) {
            let b = self.free.pop().expect("counted above");
            self.refs[b as usize] = 1;
            self.seqs[seq.slot as usize].blocks.push(b);
        }
        self.seqs[seq.slot as usize].len = new;
        Ok(old..new)
    }

    /// Copies block `i` of sequence `slot` if it is shared, so writes cannot reach others.
    fn make_exclusive(&mut self, slot: usize, i: usize) {
        let b = self.seqs[slot].blocks[i];
        if self.refs[b as usize] > 1 {
            let copy = self.free.pop().expect("callers check a free block exists");
            self.pool.copy_block(b as usize, copy as usize);
            self.refs[b as usize] -= 1;
            self.refs[copy as usize] = 1;
            self.seqs[slot].blocks[i] = copy;
        }
    }

    /// Stores keys and values for positions `pos..pos + t` of `seq` in `layer`:
    /// `k`, `v` are (t, n_kv_heads, head_dim). The positions must have been appended.
    /// A shared block is copied first (copy-on-write), which can fail when the pool is empty.
    pub fn write(&mut self, seq: SeqId, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let c = self.config;
        let row = c.n_kv_heads * c.head_dim;
        let len = self.seq(seq)?.len;
        if layer >= c.n_layers {
            return invalid(format!("layer {layer} of {}", c.n_layers));
        }
        if k.len() != v.len() || !k.len().is_multiple_of(row) {
            return crate::error::shape_err(
                "KvCache::write",
                format!("k and v must both be (t, n_kv_heads · head_dim = {row}); got {} and {}", k.len(), v.len()),
            );
        }
        let t = k.len() / row;
        if pos.checked_add(t).is_none_or(|end| end > len) {
            return invalid(format!("write of {t} tokens at {pos} past the sequence length {len} (append first)"));
        }
        check_finite("KvCache::write", &[k, v])?;
        let slot = seq.slot as usize;
        if t > 0 {
            let (first, last) = (pos / c.block_size, (pos + t - 1) / c.block_size);
            let shared = (first..=last).filter(|&i| self.refs[self.seqs[slot].blocks[i] as usize] > 1).count();
            if shared > self.free.len() {
                return invalid(format!("out of blocks for copy-on-write: {shared} needed, {} free", self.free.len()));
            }
            for i in first..=last {
                self.make_exclusive(slot, i);
            }
        }
        for (j, (kt, vt)) in k.chunks(row).zip(v.chunks(row)).enumerate() {
            let p = pos + j;
            let block = self.seqs[slot].blocks[p / c.block_size] as usize;
            self.pool.write_token(layer, block, p % c.block_size, kt, vt);
        }
        Ok(())
    }

    /// The stored (dequantized) key and value of one token: each (n_kv_heads, head_dim).
    /// For tests and references; attention reads the blocks directly.
    pub fn read(&self, seq: SeqId, layer: usize, pos: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let s = self.seq(seq)?;
        if layer >= self.config.n_layers || pos >= s.len {
            return invalid(format!("read of layer {layer}, position {pos}: sequence holds {} tokens", s.len));
        }
        let block = s.blocks[pos / self.config.block_size] as usize;
        Ok(self.pool.read_token(layer, block, pos % self.config.block_size))
    }

    /// What attention kernels read: `seq`'s block table and length, and `layer`'s pool.
    pub(crate) fn view(&self, seq: SeqId, layer: usize) -> Result<SeqView<'_>> {
        let s = self.seq(seq)?;
        if layer >= self.config.n_layers {
            return invalid(format!("layer {layer} of {}", self.config.n_layers));
        }
        Ok(SeqView { len: s.len, blocks: &s.blocks, layer: self.pool.layer(layer) })
    }
}

/// One sequence in one layer, as attention reads it.
#[derive(Clone, Copy)]
pub(crate) struct SeqView<'a> {
    pub len: usize,
    /// (ceil(len / block_size))
    pub blocks: &'a [u32],
    pub layer: storage::LayerView<'a>,
}
