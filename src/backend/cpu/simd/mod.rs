//! The SIMD vocabulary: the few operations every CPU kernel body is written over.
//!
//! Each instruction-set level is a zero-sized *token* type implementing [`Simd`]. A token can only
//! be created where its instructions are known to exist — `Scalar` and `Portable` anywhere,
//! the x86 ones through an `unsafe` constructor that the per-ISA entry points (stamped by
//! `isa_entry_points!` in `../mod.rs`) call after run-time detection. Kernel bodies are generic
//! over the token, `#[inline(always)]`, and compiled once per level inside a
//! `#[target_feature]` entry point, so the vocabulary's intrinsics inline into real AVX code.
//!
//! Two vector shapes:
//! - full width: `F` (`LANES` × f32) and `I` (`LANES` × i32, i.e. `4 · LANES` bytes), for
//!   float kernels, activation quantization and the packed integer GEMM;
//! - one 32-element quant block: `B` (32 bytes seen as 8 × i32 partial sums) and `G`
//!   (8 × f32), for row-by-row quantized dot products.
//!
//! Integer dot products come in two strengths, because without VNNI the 8-bit multiply
//! (`pmaddubsw`) saturates its 16-bit pair sums: `dot_u7` and the block words require the
//! unsigned operand `≤ 128` and the signed one in `-127..=127` (pair sums `≤ 2·128·127 < 2¹⁵`,
//! exact), `dot_u8` is exact for any `u8`. Activations quantized by sparq are always in
//! `-127..=127`.

pub(crate) mod portable;
pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// f32 (and i32) lanes in `F` (and `I`).
    const LANES: usize;
    type F: Copy;
    type I: Copy;
    type B: Copy;
    type G: Copy;

    // ---- f32, full width ----
    fn zero(self) -> Self::F;
    fn splat(self, v: f32) -> Self::F;
    /// The first `LANES` values of `x`.
    fn load(self, x: &[f32]) -> Self::F;
    /// `LANES` little-endian f32 from the first `4 · LANES` bytes of `x` (any alignment).
    fn load_f32le(self, x: &[u8]) -> Self::F;
    /// `LANES` little-endian f16 from the first `2 · LANES` bytes of `x`.
    fn load_f16(self, x: &[u8]) -> Self::F;
    /// `LANES` little-endian bf16 from the first `2 · LANES` bytes of `x`.
    fn load_bf16(self, x: &[u8]) -> Self::F;
    fn store(self, v: Self::F, out: &mut [f32]);
    /// `a · b + c` (fused where the ISA has FMA).
    fn mul_add(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a / b`, correctly rounded.
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    fn abs(self, a: Self::F) -> Self::F;
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    fn sum(self, v: Self::F) -> f32;
    fn reduce_max(self, v: Self::F) -> f32;

    // ---- i32 / bytes, full width ----
    fn izero(self) -> Self::I;
    fn isplat(self, v: i32) -> Self::I;
    /// The first `4 · LANES` bytes of `x`.
    fn iload(self, x: &[u8]) -> Self::I;
    /// The 4 bytes `x[0..4]` broadcast to every lane.
    fn isplat4(self, x: &[i8]) -> Self::I;
    fn iadd(self, a: Self::I, b: Self::I) -> Self::I;
    fn iand(self, a: Self::I, b: Self::I) -> Self::I;
    fn ixor(self, a: Self::I, b: Self::I) -> Self::I;
    /// Logical right shift of each 32-bit lane.
    fn ishr(self, a: Self::I, bits: u32) -> Self::I;
    /// Left shift of each 32-bit lane.
    fn ishl(self, a: Self::I, bits: u32) -> Self::I;
    /// The lanes' bits as f32 (no conversion).
    fn bits_to_f32(self, a: Self::I) -> Self::F;
    /// Lane `l` = the little-endian u32 at `x[l · stride ..]`, for `l < LANES` (one 4-byte
    /// group from each of `LANES` rows). Panics unless `x` holds all of them.
    fn gather4(self, x: &[u8], stride: usize) -> Self::I;
    /// Stores the `4 · LANES` bytes of `v`.
    fn istore(self, v: Self::I, out: &mut [u8]);
    /// The low 16 bits of each lane as an f16, widened to f32.
    fn half_to_f32(self, v: Self::I) -> Self::F;
    fn isub(self, a: Self::I, b: Self::I) -> Self::I;
    fn isum(self, v: Self::I) -> i32;
    fn to_f32(self, v: Self::I) -> Self::F;
    /// `round(v)` with C `roundf` semantics (halves away from zero), as i32.
    fn round_to_i32(self, v: Self::F) -> Self::I;
    /// The nearest integer to `v` (within i32 range) as i32, ties either way — whichever the
    /// hardware converts in one instruction (to even on x86): for callers whose error budget is
    /// half a step whatever the tie rule.
    fn round_nearest(self, v: Self::F) -> Self::I;
    /// Stores the lanes of `v` (each in `-128..=127`) as `LANES` bytes.
    fn store_i8(self, v: Self::I, out: &mut [i8]);
    /// `acc + Σ₄ a·b` per lane: `a` unsigned bytes `≤ 128`, `b` signed bytes in `-127..=127`.
    fn dot_u7(self, acc: Self::I, a: Self::I, b: Self::I) -> Self::I;
    /// `acc + Σ₄ a·b` per lane: `a` any unsigned byte, `b` signed bytes.
    fn dot_u8(self, acc: Self::I, a: Self::I, b: Self::I) -> Self::I;
    /// `acc + Σ₄ a·b` per lane: `a` any signed byte, `b` signed in `-127..=127`.
    fn dot_i8(self, acc: Self::I, a: Self::I, b: Self::I) -> Self::I;
    /// Whether kernels holding excess-128 bytes (`u = q + 128`: the tiled Q8_0 words) should
    /// flip them back to `q` (`ixor` with `0x80`) and use `dot_i8`, rather than `dot_u8` on `u`
    /// with the offset removed once per block. True where that is measured faster: on AVX2,
    /// `dot_u8` is an 8-instruction emulation and `dot_i8` is 4 (`vpsignb` twice, `vpmaddubsw`,
    /// `vpmaddwd`) plus the add, each `vpsignb` of a weight word shared by every activation row.
    const DOT_SIGNED_Q8: bool;
    /// Whether the tiled 4-bit product unpacks each tile's nibbles into bytes once per task when
    /// `m` is large (`quant_tiles::unpack`), so that every activation broadcast feeds all the
    /// tile's rows instead of one `LANES`-row half. True where a tile is two halves and the
    /// shuffle/broadcast ports, not the multipliers, limit the loop (AVX2, measured).
    const UNPACK_TILES: bool;
    /// Nibble products, summed narrow: `acc + a·b` in this level's running form, for `a` in
    /// `0..=15` and `b` in `-127..=127`. Start from `izero()`; after at most 8 calls,
    /// `nib_sum` gives each lane the sum of its `4 · calls` products. Without VNNI the running
    /// form is 16-bit — each half gathers two products per call, at most `8·2·15·127 = 30480 <
    /// 2¹⁵` after 8, so it is exact — and one widening `vpmaddwd` in `nib_sum` replaces one per
    /// call (the multiply ports are what limits these loops on AVX2). Elsewhere it is `dot_u7`'s.
    fn nib_dot(self, acc: Self::I, a: Self::I, b: Self::I) -> Self::I;
    /// The 32-bit lane sums of a `nib_dot` running form (see there).
    fn nib_sum(self, acc: Self::I) -> Self::I;
    /// `2 · LANES` signed bytes from the start of `x`, each widened to a signed 16-bit half:
    /// lane `l` holds `x[2l]` in its low half and `x[2l + 1]` in its high half.
    fn load_i8_pairs(self, x: &[u8]) -> Self::I;
    /// `acc + a.lo · b.lo + a.hi · b.hi` per lane, the 16-bit halves signed (wrapping, so exact
    /// unless both products are `(−2¹⁵)²`).
    fn dot_i16(self, acc: Self::I, a: Self::I, b: Self::I) -> Self::I;
    /// Stores the lanes of `v` (each in `-32768..=32767`) as `LANES` i16.
    fn store_i16(self, v: Self::I, out: &mut [i16]);

    /// Four byte rows side by side: for `v` holding 4 · LANES bytes each (positions
    /// `0 .. 4 · LANES`), the 4 · LANES lanes of `[v[0][j], v[1][j], v[2][j], v[3][j]]` — each
    /// position's bytes from the four rows as one 32-bit lane, what a 4-byte dot product (`dot_*`,
    /// `nib_dot`) reads — spread over four vectors in an order of this level's choosing (x86:
    /// within each 128-bit lane, the order its byte and word unpacks give). Lane sums computed
    /// on them are put back in position order by `natural4`.
    fn interleave4(self, v: [Self::I; 4]) -> [Self::I; 4];
    /// Per-lane results on `interleave4`'s lanes, in position order: `out[t]` lane `l` is
    /// position `t · LANES + l`.
    fn natural4(self, v: [Self::I; 4]) -> [Self::I; 4];

    // ---- `LANES / 8` consecutive quant blocks per full-width vector ----
    /// Unpacks the 16 nibble bytes of each of the first `LANES / 8` blocks in `qs` into their 32
    /// values (low nibbles, then high, block after block), each `0..=15`.
    fn nibbles(self, qs: [&[u8; 16]; 2]) -> Self::I;
    /// Each of the first `LANES / 8` values of `s` repeated over 8 lanes (one block's partial sums).
    fn block_scales(self, s: &[f32]) -> Self::F;

    // ---- one 32-element quant block ----
    fn bload(self, x: &[u8; 32]) -> Self::B;
    /// Unpacks a Q4 block's 16 bytes into its 32 values (low nibbles, then high), each `0..=15`.
    fn bnibbles(self, qs: &[u8; 16]) -> Self::B;
    /// Subtracts `v` from every byte (wrapping).
    fn bsub_bytes(self, a: Self::B, v: i8) -> Self::B;
    /// 8 partial sums of `a · b`: `a` unsigned bytes `≤ 128`, `b` signed in `-127..=127`.
    fn bdot_u7(self, a: Self::B, b: Self::B) -> Self::B;
    /// 8 partial sums of `a · b`, both signed bytes, `b` in `-127..=127` (`a` may be -128).
    fn bdot_i8(self, a: Self::B, b: Self::B) -> Self::B;
    fn btof(self, v: Self::B) -> Self::G;
    fn gzero(self) -> Self::G;
    /// `a · s + acc`.
    fn gmul_add(self, a: Self::G, s: f32, acc: Self::G) -> Self::G;
    fn gsum(self, v: Self::G) -> f32;

    /// Hints that the cache line holding byte `at` of `x` will be read soon, fetching it into
    /// L2, not L1 (no-op where unsupported). Unchecked, for hot loops: an `at` past the end only
    /// wastes a request (a prefetch never faults and reads nothing architecturally).
    fn prefetch(self, x: &[u8], at: usize);

    /// A little-endian f16 as f32 (hardware conversion where available).
    fn f16_to_f32(self, h: [u8; 2]) -> f32;
}

/// The first `N` elements of `x` as an array reference (bounds-checked once).
#[inline(always)]
pub(crate) fn head<T, const N: usize>(x: &[T]) -> &[T; N] {
    x[..N].try_into().expect("slice of length N")
}
