//! sparq's repacked layout for integer-block weights (Q8_0, Q4_0, Q4_1): rows interleaved in
//! tiles of [`TILE`], so that one vector instruction multiplies 4 weights of each of 16 rows by
//! 4 broadcast activation bytes (`vpdpbusd`), and a block's 16 row scales are one 32-byte load.
//!
//! GGUF stores a matrix row by row, each row a run of 32-element blocks (scale(s), then values).
//! A kernel reading that one row at a time must collect scales one by one and reduce each row
//! horizontally; at SmolLM2's sizes that costs as many instructions as the bytes take to arrive.
//! Here the same bytes are rearranged once, at load. For a tile of rows `16t .. 16t + 16`:
//!
//! ```text
//! nb blocks × [ values: V words × 16 rows × 4 bytes   (V = 4 for Q4, 8 for Q8_0)
//!               d:      16 rows × f16
//!               m:      16 rows × f16 ]               (Q4_1 only)
//! ```
//! then zero padding to a multiple of 64 bytes. Each block's record follows the previous one,
//! so decode reads the matrix as one sequential stream (values and scales kept in separate
//! sections of a tile measured 10–20% slower from memory: three short streams per tile). Value word `j` of a row is its block's bytes
//! `4j .. 4j + 4`: for Q4 those hold elements `4j..4j+4` in the low nibbles and `16+4j..` in the
//! high ones (ggml's nibble order, unchanged); for Q8_0 they are stored `q ^ 0x80 = q + 128`, the
//! unsigned form `vpdpbusd` wants (the kernel removes the offset exactly in integers). Rows past
//! `n` in the last tile are zeros (scale 0). The bytes are the file's, rearranged: packing then
//! unpacking (`Weights::gguf_bytes`) gives the file back, bit for bit (tested).

use super::Weights;
use crate::backend::cpu::simd::head;
use crate::error::shape_err;
use crate::quant::QK;
use crate::{DType, Error, Result};
use std::ops::Range;

/// Rows per tile.
pub const TILE: usize = 16;

/// Whether `dtype` has a tiled layout.
pub const fn can_tile(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q4_1)
}

/// Bytes of values per block per tile.
const fn value_bytes(dtype: DType) -> usize {
    match dtype {
        DType::Q8_0 => TILE * QK,
        _ => TILE * QK / 2,
    }
}

/// Scales per block per row: `d`, and Q4_1's `m`.
const fn scale_count(dtype: DType) -> usize {
    if matches!(dtype, DType::Q4_1) { 2 } else { 1 }
}

/// Bytes of one block's record in a tile: values, then the scales.
pub(crate) const fn record_bytes(dtype: DType) -> usize {
    value_bytes(dtype) + scale_count(dtype) * TILE * 2
}

/// Bytes of one tile of a `dtype` matrix with `k` columns (padded to whole cache lines).
pub(crate) const fn tile_stride(dtype: DType, k: usize) -> usize {
    (k / QK * record_bytes(dtype)).next_multiple_of(64)
}

/// Bytes of a whole tiled `n × k` matrix.
pub(crate) const fn tiled_len(dtype: DType, n: usize, k: usize) -> usize {
    n.div_ceil(TILE) * tile_stride(dtype, k)
}

/// Where a block's fields sit in a GGUF block: scale `d`, min `m` (Q4_1), values.
const fn block_fields(dtype: DType) -> (usize, Option<usize>, usize) {
    match dtype {
        DType::Q4_1 => (0, Some(2), 4),
        _ => (0, None, 2),
    }
}

/// Rearranges tiles `tiles` of `w` (GGUF rows) into `out` (exactly those tiles' bytes).
pub(crate) fn pack_tiles(w: &Weights, tiles: Range<usize>, out: &mut [u8]) {
    let (dtype, n, k) = (w.dtype(), w.n(), w.k());
    let (stride, vb, rb) = (tile_stride(dtype, k), value_bytes(dtype), record_bytes(dtype));
    let (block_bytes, row_bytes) = (dtype.info().block_bytes, w.row_bytes());
    let (d_at, m_at, q_at) = block_fields(dtype);
    let words = vb / (TILE * 4);
    let flip = if dtype == DType::Q8_0 { 0x8080_8080 } else { 0 };
    assert_eq!(out.len(), tiles.len() * stride, "pack_tiles: output size");
    let src = w.bytes();
    for (t, tile) in tiles.zip(out.chunks_exact_mut(stride.max(1))) {
        tile.fill(0);
        for r in 0..TILE.min(n.saturating_sub(t * TILE)) {
            let row = &src[(t * TILE + r) * row_bytes..][..row_bytes];
            for (block, record) in row.chunks_exact(block_bytes).zip(tile.chunks_exact_mut(rb)) {
                for j in 0..words {
                    let at = (j * TILE + r) * 4;
                    let word = u32::from_le_bytes(*head(&block[q_at + 4 * j..])) ^ flip;
                    record[at..at + 4].copy_from_slice(&word.to_le_bytes());
                }
                let s = vb + r * 2;
                record[s..s + 2].copy_from_slice(&block[d_at..d_at + 2]);
                if let Some(m_at) = m_at {
                    record[s + TILE * 2..s + TILE * 2 + 2].copy_from_slice(&block[m_at..m_at + 2]);
                }
            }
        }
    }
}

/// The GGUF rows of a tiled `n × k` matrix: [`pack_tiles`] undone.
pub(crate) fn unpack(dtype: DType, n: usize, k: usize, tiled: &[u8]) -> Vec<u8> {
    let (stride, vb, rb) = (tile_stride(dtype, k), value_bytes(dtype), record_bytes(dtype));
    let (block_bytes, row_bytes) = (dtype.info().block_bytes, dtype.bytes_for(k).unwrap_or(0));
    let (d_at, m_at, q_at) = block_fields(dtype);
    let words = vb / (TILE * 4);
    let flip = if dtype == DType::Q8_0 { 0x8080_8080 } else { 0 };
    let mut out = vec![0u8; n * row_bytes];
    for (c, row) in out.chunks_exact_mut(row_bytes.max(1)).enumerate().take(n) {
        let (tile, r) = (&tiled[c / TILE * stride..][..stride], c % TILE);
        for (block, record) in row.chunks_exact_mut(block_bytes).zip(tile.chunks_exact(rb)) {
            for j in 0..words {
                let word = u32::from_le_bytes(*head(&record[(j * TILE + r) * 4..])) ^ flip;
                block[q_at + 4 * j..q_at + 4 * j + 4].copy_from_slice(&word.to_le_bytes());
            }
            let s = vb + r * 2;
            block[d_at..d_at + 2].copy_from_slice(&record[s..s + 2]);
            if let Some(m_at) = m_at {
                block[m_at..m_at + 2].copy_from_slice(&record[s + TILE * 2..s + TILE * 2 + 2]);
            }
        }
    }
    out
}

/// Integer-block weight matrices repacked into the tiled layout, stored together in one
/// anonymous memory mapping (page-aligned, so every tile starts on a cache line).
///
/// A model packs all its matrices once at load ([`crate::model::Llama::load`] does), then hands
/// [`PackedWeights::get`]'s views to the same [`crate::Cpu`] products as GGUF-layout weights:
/// results equal the packed-panel path's bit for bit, at every `m`.
#[derive(Default)]
pub struct PackedWeights {
    buf: Option<memmap2::MmapMut>,
    /// (dtype, n, k, byte range in `buf`)
    mats: Vec<(DType, usize, usize, Range<usize>)>,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights").field("matrices", &self.mats.len()).field("bytes", &self.bytes()).finish()
    }
}

/// Tiles packed per job when packing in parallel (~256 KiB of output at SmolLM2's widths).
const PACK_JOB_TILES: usize = 32;

impl PackedWeights {
    /// Repacks `ws` (GGUF layout; Q8_0, Q4_0 or Q4_1) using up to `threads` threads (0 = one per
    /// core). Errors, naming `PackedWeights::pack`, on another format or an already packed view.
    pub fn pack(ws: &[Weights], threads: usize) -> Result<PackedWeights> {
        const OP: &str = "PackedWeights::pack";
        let mut mats = Vec::with_capacity(ws.len());
        let mut total = 0usize;
        for w in ws {
            if !can_tile(w.dtype()) {
                return Err(Error::Unsupported { op: OP, dtype: w.dtype() });
            }
            if w.layout() != super::Layout::Rows {
                return Err(Error::Invalid { what: "weights to pack", detail: format!("{OP}: a {} matrix is already packed", w.dtype()) });
            }
            let len = tiled_len(w.dtype(), w.n(), w.k());
            mats.push((w.dtype(), w.n(), w.k(), total..total + len));
            total = total.checked_add(len).ok_or_else(|| Error::Shape { op: OP, detail: "total size overflows".into() })?;
        }
        if total == 0 {
            return Ok(PackedWeights { buf: None, mats });
        }
        // Plain 4 KiB pages: asking for huge pages measured no faster decode here, and the first
        // huge-page allocation of a process took 2–4× longer to fault in on this VM.
        let mut buf = memmap2::MmapMut::map_anon(total).map_err(|e| Error::Io(format!("{OP}: {total} bytes: {e}")))?;

        // Jobs of up to PACK_JOB_TILES tiles, each with its own disjoint slice of `buf`.
        let mut jobs: Vec<(&Weights, Range<usize>, &mut [u8])> = Vec::new();
        let mut rest: &mut [u8] = &mut buf;
        for (w, (dtype, n, k, _)) in ws.iter().zip(&mats) {
            let stride = tile_stride(*dtype, *k);
            let tiles = n.div_ceil(TILE);
            for t0 in (0..tiles).step_by(PACK_JOB_TILES) {
                let t1 = (t0 + PACK_JOB_TILES).min(tiles);
                let (part, tail) = std::mem::take(&mut rest).split_at_mut((t1 - t0) * stride);
                jobs.push((w, t0..t1, part));
                rest = tail;
            }
        }
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        // Round robin, so that every thread gets a share of each matrix (they differ in size).
        let mut shares: Vec<Vec<_>> = (0..threads.clamp(1, jobs.len().max(1))).map(|_| Vec::new()).collect();
        let count = shares.len();
        for (i, job) in jobs.into_iter().enumerate() {
            shares[i % count].push(job);
        }
        std::thread::scope(|scope| {
            for share in shares {
                scope.spawn(move || share.into_iter().for_each(|(w, tiles, out)| pack_tiles(w, tiles, out)));
            }
        });
        Ok(PackedWeights { buf: Some(buf), mats })
    }

    /// How many matrices this holds.
    pub fn len(&self) -> usize {
        self.mats.len()
    }

    /// Whether this holds no matrix.
    pub fn is_empty(&self) -> bool {
        self.mats.is_empty()
    }

    /// Total bytes of the packed matrices (the copy's memory cost).
    pub fn bytes(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len())
    }

    /// Matrix `i` (in the order given to [`PackedWeights::pack`]), for the matmul ops.
    pub fn get(&self, i: usize) -> Result<Weights<'_>> {
        let Some((dtype, n, k, range)) = self.mats.get(i) else {
            return shape_err("PackedWeights::get", format!("matrix {i} of {}", self.mats.len()));
        };
        let bytes = self.buf.as_ref().map_or(&[][..], |b| &b[range.clone()]);
        Ok(Weights::tiled(*dtype, *n, *k, bytes))
    }
}
