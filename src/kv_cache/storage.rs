//! The cache's memory: per layer, keys and values as `(n_blocks, n_kv_heads, block_size,
//! head_dim)` elements of the storage dtype, plus `(n_blocks, n_kv_heads, block_size)` f32
//! scales for int8.

use super::KvCacheConfig;
use crate::{Error, Result};
use half::f16;

/// How keys and values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvDtype {
    F32,
    F16,
    /// Symmetric int8 with one f32 scale per token and head: `x ≈ scale · q`,
    /// `scale = max|x| / 127`, `q = round(x / scale)`, so `|x − x̂| ≤ max|x| / 254` per element.
    I8,
}

impl KvDtype {
    pub const ALL: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::I8];

    /// Bytes per stored element.
    pub const fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
            KvDtype::I8 => 1,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::I8 => "i8",
        }
    }
    /// Position in [`KvDtype::ALL`] (the kernel tables' index).
    pub const fn index(self) -> usize {
        self as usize
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
        KvDtype::ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| Error::Invalid {
            what: "KV dtype",
            detail: format!("{s:?} is not one of f32, f16, i8"),
        })
    }
}

#[derive(Debug)]
struct Layer {
    /// (n_blocks, n_kv_heads, block_size, head_dim) elements
    k: Vec<u8>,
    v: Vec<u8>,
    /// (n_blocks, n_kv_heads, block_size); empty unless int8
    k_scale: Vec<f32>,
    v_scale: Vec<f32>,
}

#[derive(Debug)]
pub(super) struct Pool {
    c: KvCacheConfig,
    layers: Vec<Layer>,
}

/// One layer's pool, read-only, as attention kernels see it.
#[derive(Clone, Copy)]
pub(crate) struct LayerView<'a> {
    pub dtype: KvDtype,
    pub n_kv_heads: usize,
    pub block_size: usize,
    pub head_dim: usize,
    /// (n_blocks, n_kv_heads, block_size, head_dim)
    pub k: &'a [u8],
    pub v: &'a [u8],
    /// (n_blocks, n_kv_heads, block_size); empty unless int8
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
    pub(super) fn new(c: &KvCacheConfig) -> Result<Pool> {
        let elems = [c.n_blocks, c.n_kv_heads, c.block_size, c.head_dim].iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let bytes = elems.and_then(|e| e.checked_mul(c.dtype.bytes() * 2 * c.n_layers));
        let Some(elems) = elems.filter(|_| bytes.is_some_and(|b| b <= isize::MAX as usize / 2)) else {
            return Err(Error::Invalid { what: "KV cache", detail: format!("pool of {c:?} is too large") });
        };
        let scales = if c.dtype == KvDtype::I8 { c.n_blocks * c.n_kv_heads * c.block_size } else { 0 };
        let fill = poison(c.dtype);
        let data = || fill.iter().copied().cycle().take(elems * c.dtype.bytes()).collect::<Vec<u8>>();
        let layers = (0..c.n_layers)
            .map(|_| Layer { k: data(), v: data(), k_scale: vec![f32::NAN; scales], v_scale: vec![f32::NAN; scales] })
            .collect();
        Ok(Pool { c: *c, layers })
    }

    pub(super) fn layer(&self, layer: usize) -> LayerView<'_> {
        let l = &self.layers[layer];
        LayerView {
            dtype: self.c.dtype,
            n_kv_heads: self.c.n_kv_heads,
            block_size: self.c.block_size,
            head_dim: self.c.head_dim,
            k: &l.k,
            v: &l.v,
            k_scale: &l.k_scale,
            v_scale: &l.v_scale,
        }
    }

    fn block_elems(&self) -> usize {
        self.c.n_kv_heads * self.c.block_size * self.c.head_dim
    }

    /// Copies block `from` to block `to` in every layer.
    pub(super) fn copy_block(&mut self, from: usize, to: usize) {
        let (e, s) = (self.block_elems() * self.c.dtype.bytes(), self.c.n_kv_heads * self.c.block_size);
        for l in &mut self.layers {
            l.k.copy_within(from * e..(from + 1) * e, to * e);
            l.v.copy_within(from * e..(from + 1) * e, to * e);
            if !l.k_scale.is_empty() {
                l.k_scale.copy_within(from * s..(from + 1) * s, to * s);
                l.v_scale.copy_within(from * s..(from + 1) * s, to * s);
            }
        }
    }

    /// Element offset of (block, head, slot, 0), and the scale index of (block, head, slot).
    fn offsets(&self, block: usize, head: usize, slot: usize) -> (usize, usize) {
        let scale_idx = (block * self.c.n_kv_heads + head) * self.c.block_size + slot;
        (scale_idx * self.c.head_dim, scale_idx)
    }

    /// Stores one token: `k`, `v` are (n_kv_heads, head_dim).
    pub(super) fn write_token(&mut self, layer: usize, block: usize, slot: usize, k: &[f32], v: &[f32]) {
        let (dtype, hd) = (self.c.dtype, self.c.head_dim);
        for h in 0..self.c.n_kv_heads {
            let (off, si) = self.offsets(block, h, slot);
            let l = &mut self.layers[layer];
            let (k, v) = (&k[h * hd..(h + 1) * hd], &v[h * hd..(h + 1) * hd]);
            for (data, scales, x) in [(&mut l.k, &mut l.k_scale, k), (&mut l.v, &mut l.v_scale, v)] {
                let dst = &mut data[off * dtype.bytes()..(off + hd) * dtype.bytes()];
                match dtype {
                    KvDtype::F32 => dst.copy_from_slice(bytemuck::cast_slice(x)),
                    KvDtype::F16 => {
                        for (d, &x) in dst.chunks_exact_mut(2).zip(x) {
                            d.copy_from_slice(&f16::from_f32(x).to_le_bytes());
                        }
                    }
                    KvDtype::I8 => {
                        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                        let scale = amax / 127.0;
                        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                        for (d, &x) in dst.iter_mut().zip(x) {
                            *d = (x * inv).round().clamp(-127.0, 127.0) as i8 as u8;
                        }
                        scales[si] = scale;
                    }
                }
            }
        }
    }

    /// One token, dequantized: (k, v), each (n_kv_heads, head_dim).
    pub(super) fn read_token(&self, layer: usize, block: usize, slot: usize) -> (Vec<f32>, Vec<f32>) {
        let (dtype, hd) = (self.c.dtype, self.c.head_dim);
        let l = &self.layers[layer];
        let read = |data: &[u8], scales: &[f32]| {
            let mut out = Vec::with_capacity(self.c.n_kv_heads * hd);
            for h in 0..self.c.n_kv_heads {
                let (off, si) = self.offsets(block, h, slot);
                let src = &data[off * dtype.bytes()..(off + hd) * dtype.bytes()];
                match dtype {
                    KvDtype::F32 => out.extend(src.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()))),
                    KvDtype::F16 => out.extend(src.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
                    KvDtype::I8 => out.extend(src.iter().map(|&q| q as i8 as f32 * scales[si])),
                }
            }
            out
        };
        (read(&l.k, &l.k_scale), read(&l.v, &l.v_scale))
    }
}
