//! The cache's memory: per layer, per KV head, per block, one head's `block_size` tokens of
//! keys and of values, heads outermost: `(n_kv_heads, n_blocks, block)` — plus
//! `(n_kv_heads, n_blocks, block_size)` f32 scales for int8. Within a block the elements are
//! arranged for the attention kernel's inner loops:
//! - f32 / f16 keys transposed, `(head_dim, block_size)`, so a block's scores are `head_dim`
//!   vector multiply-adds over `block_size` tokens with no horizontal sums; values
//!   `(block_size, head_dim)`, so a token's weighted value is a row of multiply-adds;
//! - int8 interleaved for integer dot products: keys in quads of dimensions for 8-bit products
//!   (`vpdpbusd`, four per 32-bit lane), `(head_dim / 4, block_size, 4)` — lane `t` holds
//!   dimensions `4i .. 4i + 4` of token `t` — stored excess-128 (`k + 128` as an unsigned byte,
//!   the operand `vpdpbusd` takes unsigned); values in pairs of tokens for 16-bit products
//!   (`vpdpwssd`, two per lane), `(block_size / 2, head_dim, 2)` — lane `d` holds dimension `d`
//!   of tokens `2j, 2j + 1`. `head_dim` is padded to a multiple of 4 ([`stored_head_dim`]); the
//!   padding is never read into a result (the kernel's padded query elements are 0).
//!
//! Heads outermost: one head's consecutive blocks are adjacent in memory, so a sequence whose
//! blocks were allocated in order streams as one long run per head (measured: with blocks
//! outermost, each head's 4 KiB block started a new page-sized stream and decode attention ran
//! at 8–17% of memory bandwidth, latency-bound).

use super::KvCacheConfig;
use super::buffer::Buffer;
use crate::{Error, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// How keys and values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// f32, exact.
    F32,
    /// IEEE f16 (round to nearest): relative error ≤ 2⁻¹¹ per element, as llama.cpp's default.
    F16,
    /// Symmetric int8 with one f32 scale per token and head: `x ≈ scale · q`,
    /// `scale = max|x| / 127`, `q = round(x / scale)`, so `|x − x̂| ≤ max|x| / 254` per element.
    I8,
}

impl KvDtype {
    /// Every storage type.
    pub const ALL: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::I8];

    /// Bytes per stored element.
    pub const fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
            KvDtype::I8 => 1,
        }
    }
    /// The name `--kv` and `FromStr` take (`"f16"`).
    pub const fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::I8 => "i8",
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<KvDtype> {
        KvDtype::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::Invalid { what: "KV dtype", detail: format!("{s:?} is not one of f32, f16, i8") })
    }
}

#[derive(Debug)]
struct Layer {
    /// (n_kv_heads, n_blocks, block_size · stored_head_dim) elements, arranged per block as
    /// the module documentation says
    k: Buffer<u8>,
    /// likewise
    v: Buffer<u8>,
    /// (n_kv_heads, n_blocks, block_size); empty unless int8
    k_scale: Buffer<f32>,
    v_scale: Buffer<f32>,
}

#[derive(Debug)]
pub(super) struct Pool {
    c: KvCacheConfig,
    layers: Vec<Layer>,
}

/// Elements stored per token and head: `head_dim`, padded to a multiple of 4 for int8's quads.
pub(crate) fn stored_head_dim(dtype: KvDtype, head_dim: usize) -> usize {
    if dtype == KvDtype::I8 { head_dim.next_multiple_of(4) } else { head_dim }
}

/// Int8 keys are stored excess-128: `k + 128` as an unsigned byte is `k`'s bits with the sign
/// bit flipped.
pub(crate) const KEY_BIAS: u8 = 0x80;

/// One layer's pool, read-only, as attention kernels see it.
#[derive(Clone, Copy)]
pub(crate) struct LayerView<'a> {
    pub dtype: KvDtype,
    pub n_blocks: usize,
    pub block_size: usize,
    pub head_dim: usize,
    /// (n_kv_heads, n_blocks, block_size · stored_head_dim) keys, arranged per block as the
    /// module documentation says
    pub k: &'a [u8],
    /// (n_kv_heads, n_blocks, block_size · stored_head_dim) values, likewise
    pub v: &'a [u8],
    /// (n_kv_heads, n_blocks, block_size); empty unless int8
    pub k_scale: &'a [f32],
    pub v_scale: &'a [f32],
}

/// NaN in each format: unwritten slots read as NaN.
fn poison(dtype: KvDtype) -> &'static [u8] {
    match dtype {
        KvDtype::F32 => &[0x00, 0x00, 0xC0, 0x7F],
        KvDtype::F16 => &[0x00, 0x7E],
        KvDtype::I8 => &[0x00],
    }
}

impl Pool {
    /// A zeroed pool, or one whose every slot is NaN when `poisoned`.
    pub(super) fn new(c: &KvCacheConfig, poisoned: bool) -> Result<Pool> {
        let elems = [c.n_blocks, c.n_kv_heads, c.block_size, stored_head_dim(c.dtype, c.head_dim)].iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let bytes = elems.and_then(|e| e.checked_mul(c.dtype.bytes() * 2 * c.n_layers));
        let Some(elems) = elems.filter(|_| bytes.is_some_and(|b| b <= isize::MAX as usize / 2)) else {
            return Err(Error::Invalid { what: "KV cache", detail: format!("pool of {c:?} is too large") });
        };
        let scales = if c.dtype == KvDtype::I8 { c.n_blocks * c.n_kv_heads * c.block_size } else { 0 };
        let (fill, nan) = (poisoned.then_some(poison(c.dtype)), poisoned.then_some(&[f32::NAN][..]));
        let data = || Buffer::filled(elems * c.dtype.bytes(), fill);
        let scale = || Buffer::filled(scales, nan);
        let layers = (0..c.n_layers).map(|_| Ok(Layer { k: data()?, v: data()?, k_scale: scale()?, v_scale: scale()? })).collect::<Result<_>>()?;
        Ok(Pool { c: *c, layers })
    }

    pub(super) fn layer(&self, layer: usize) -> LayerView<'_> {
        let l = &self.layers[layer];
        LayerView {
            dtype: self.c.dtype,
            n_blocks: self.c.n_blocks,
            block_size: self.c.block_size,
            head_dim: self.c.head_dim,
            k: &l.k,
            v: &l.v,
            k_scale: &l.k_scale,
            v_scale: &l.v_scale,
        }
    }

    /// Copies block `from` to block `to` in every layer.
    pub(super) fn copy_block(&mut self, from: usize, to: usize) {
        let (bs, nb) = (self.c.block_size, self.c.n_blocks);
        let e = bs * stored_head_dim(self.c.dtype, self.c.head_dim) * self.c.dtype.bytes();
        for l in &mut self.layers {
            for h in 0..self.c.n_kv_heads {
                let (src, dst) = (h * nb + from, h * nb + to);
                l.k.copy_within(src * e..(src + 1) * e, dst * e);
                l.v.copy_within(src * e..(src + 1) * e, dst * e);
                if !l.k_scale.is_empty() {
                    l.k_scale.copy_within(src * bs..(src + 1) * bs, dst * bs);
                    l.v_scale.copy_within(src * bs..(src + 1) * bs, dst * bs);
                }
            }
        }
    }

    /// Element index of (block, head, slot, element `d`) in the layout of the module
    /// documentation, and the scale index of (block, head, slot).
    fn index(&self, key: bool, block: usize, head: usize, slot: usize) -> (impl Fn(usize) -> usize + use<>, usize) {
        let (bs, hd) = (self.c.block_size, stored_head_dim(self.c.dtype, self.c.head_dim));
        let int8 = self.c.dtype == KvDtype::I8;
        let scale_idx = (head * self.c.n_blocks + block) * bs + slot;
        let base = (scale_idx - slot) * hd;
        let at = move |d: usize| match (int8, key) {
            (false, true) => base + d * bs + slot,
            (false, false) => base + slot * hd + d,
            (true, true) => base + (d / 4) * 4 * bs + 4 * slot + d % 4,
            (true, false) => base + (slot / 2) * 2 * hd + 2 * d + slot % 2,
        };
        (at, scale_idx)
    }

    /// Stores one token: `k`, `v` are (n_kv_heads, head_dim).
    pub(super) fn write_token(&mut self, layer: usize, block: usize, slot: usize, k: &[f32], v: &[f32]) {
        let hd = self.c.head_dim;
        for h in 0..self.c.n_kv_heads {
            for key in [true, false] {
                let (at, si) = self.index(key, block, h, slot);
                let l = &mut self.layers[layer];
                let (data, scales, x) = if key { (&mut l.k, &mut l.k_scale, k) } else { (&mut l.v, &mut l.v_scale, v) };
                let bias = if key { KEY_BIAS } else { 0 };
                store(self.c.dtype, &x[h * hd..(h + 1) * hd], data, scales, si, at, bias);
            }
        }
    }

    /// One token, dequantized: (k, v), each (n_kv_heads, head_dim).
    pub(super) fn read_token(&self, layer: usize, block: usize, slot: usize) -> (Vec<f32>, Vec<f32>) {
        let (dtype, hd, width) = (self.c.dtype, self.c.head_dim, self.c.dtype.bytes());
        let l = &self.layers[layer];
        let read = |key: bool| {
            let (data, scales) = if key { (&l.k, &l.k_scale) } else { (&l.v, &l.v_scale) };
            let mut out = Vec::with_capacity(self.c.n_kv_heads * hd);
            for h in 0..self.c.n_kv_heads {
                let (at, si) = self.index(key, block, h, slot);
                out.extend((0..hd).map(|d| {
                    let b = &data[at(d) * width..(at(d) + 1) * width];
                    match dtype {
                        KvDtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        KvDtype::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
                        KvDtype::I8 => (b[0] ^ if key { KEY_BIAS } else { 0 }) as i8 as f32 * scales[si],
                    }
                }));
            }
            out
        };
        (read(true), read(false))
    }
}

/// Stores one head's `x` (head_dim) in `dtype`: element `d` at element index `at(d)` of `data`,
/// the int8 scale at `scales[si]`, int8 bytes XOR `bias`. The format is chosen once per head,
/// and f16 goes through `half`'s slice conversion (F16C where the CPU has it): converting
/// element by element was ~10% of a SmolLM2 prefill.
fn store(dtype: KvDtype, x: &[f32], data: &mut [u8], scales: &mut [f32], si: usize, at: impl Fn(usize) -> usize, bias: u8) {
    match dtype {
        KvDtype::F32 => {
            for (d, &x) in x.iter().enumerate() {
                data[at(d) * 4..][..4].copy_from_slice(&x.to_le_bytes());
            }
        }
        KvDtype::F16 => {
            const CHUNK: usize = 64;
            let mut half = [f16::ZERO; CHUNK];
            for (c, chunk) in x.chunks(CHUNK).enumerate() {
                let half = &mut half[..chunk.len()];
                half.convert_from_f32_slice(chunk);
                for (i, h) in half.iter().enumerate() {
                    data[at(c * CHUNK + i) * 2..][..2].copy_from_slice(&h.to_le_bytes());
                }
            }
        }
        KvDtype::I8 => {
            let scale = x.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            debug_assert!(scale.is_finite());
            scales[si] = scale;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (d, &x) in x.iter().enumerate() {
                data[at(d)] = (x * inv).round().clamp(-127.0, 127.0) as i8 as u8 ^ bias;
            }
        }
    }
}
