//! Page-aligned, zero-filled memory for the cache's pools: one anonymous mapping per stream.
//!
//! Why not a `Vec`: the allocator placed each layer's keys and values 16 bytes into a page, so
//! every 64-byte vector load of the attention kernels straddled two cache lines. Measured on an
//! Intel Ice Lake VM (PERFORMANCE.md step 17): decode attention with the KV in cache, one thread,
//! 52 → 47 µs (int8, SmolLM2 geometry, ctx 2048). Zero pages come lazily, as `calloc`'s did.
//!
//! Not huge pages: `MADV_HUGEPAGE` on these mappings made int8 decode attention from memory
//! faster at ctx 4096 (2 threads, alternating binaries, µs: SmolLM2 geometry 127.8 → 116.3,
//! Llama-8B 563 → 483) but the SmolLM2 model's time to first token 45–61 → 75–191 ms: each
//! first touch of a head's region in prefill faulted in and zeroed a whole 2 MiB page.

use crate::{Error, Result};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// `len` zeroed `T`s in their own anonymous mapping.
pub(super) struct Buffer<T> {
    map: memmap2::MmapMut,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Buffer<T> {
    pub(super) fn zeroed(len: usize) -> Result<Buffer<T>> {
        let refuse = |detail: String| Error::Invalid { what: "KV cache", detail };
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| refuse(format!("{len} elements overflow the address space")))?;
        let map = memmap2::MmapMut::map_anon(bytes).map_err(|e| refuse(format!("cannot map {bytes} bytes: {e}")))?;
        Ok(Buffer { map, len, _t: PhantomData })
    }

    /// `len` `T`s, zero or, with `pattern`, that pattern repeated (`len` a multiple of its length).
    pub(super) fn filled(len: usize, pattern: Option<&[T]>) -> Result<Buffer<T>> {
        let mut b = Buffer::zeroed(len)?;
        if let Some(p) = pattern {
            debug_assert!(!p.is_empty() && len.is_multiple_of(p.len()), "a pattern that tiles the buffer");
            b.chunks_exact_mut(p.len()).for_each(|x| x.copy_from_slice(p));
        }
        Ok(b)
    }
}

impl<T: Pod> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // A mapping starts on a page (even an empty one: memmap2 maps one byte), so it is
        // aligned for any `T`.
        bytemuck::cast_slice(&self.map[..self.len * size_of::<T>()])
    }
}

impl<T: Pod> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(&mut self.map[..self.len * size_of::<T>()])
    }
}

impl<T> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} × {})", self.len, std::any::type_name::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_aligned_and_writable() {
        for len in [0, 1, 17, 4096 + 3] {
            let mut b = Buffer::<f32>::zeroed(len).unwrap();
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0.0));
            assert_eq!(b.as_ptr() as usize % 4096, 0, "a mapping starts on a page");
            b.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
            assert!(b.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
        let nan = Buffer::<f32>::filled(6, Some(&[1.0, f32::NAN])).unwrap();
        assert!(nan.iter().step_by(2).all(|&x| x == 1.0) && nan.iter().skip(1).step_by(2).all(|x| x.is_nan()));
        assert!(Buffer::<f32>::zeroed(usize::MAX / 2).is_err(), "a size that overflows is an error, not a panic");
        assert!(Buffer::<u8>::zeroed(1 << 62).is_err(), "so is one the address space cannot hold");
    }
}
