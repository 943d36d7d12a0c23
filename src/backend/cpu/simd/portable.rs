//! The portable level: 8-lane vectors from the `wide` crate, which lowers to SSE/AVX/NEON/WASM
//! SIMD as the *compile-time* target allows. It is the fast path on targets without a dedicated
//! level (e.g. aarch64). Its float words are `wide` vector ops; its byte dot products, rarely hot
//! where this level is chosen, reuse the scalar words lane by lane.

use super::scalar::Scalar;
use super::{Simd, head};
use wide::{f32x8, i8x16, i16x16, i32x8};

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Portable;

fn arr(v: i32x8) -> [i32; 8] {
    v.to_array()
}

impl Simd for Portable {
    const LANES: usize = 8;
    type F = f32x8;
    type I = i32x8;
    type B = i32x8;
    type G = f32x8;

    #[inline(always)]
    fn zero(self) -> f32x8 {
        f32x8::ZERO
    }
    #[inline(always)]
    fn splat(self, v: f32) -> f32x8 {
        f32x8::splat(v)
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> f32x8 {
        f32x8::new(*head(x))
    }
    #[inline(always)]
    fn load_f32le(self, x: &[u8]) -> f32x8 {
        f32x8::new(Scalar.load_f32le(x))
    }
    #[inline(always)]
    fn load_f16(self, x: &[u8]) -> f32x8 {
        f32x8::new(Scalar.load_f16(x))
    }
    #[inline(always)]
    fn load_bf16(self, x: &[u8]) -> f32x8 {
        let x: &[u8; 16] = head(x);
        let bits: [i32; 8] = std::array::from_fn(|i| (u16::from_le_bytes([x[2 * i], x[2 * i + 1]]) as i32) << 16);
        bytemuck::cast(i32x8::new(bits))
    }
    #[inline(always)]
    fn store(self, v: f32x8, out: &mut [f32]) {
        out[..8].copy_from_slice(&v.to_array());
    }
    #[inline(always)]
    fn mul_add(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn div(self, a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    fn abs(self, a: f32x8) -> f32x8 {
        a.abs()
    }
    #[inline(always)]
    fn max(self, a: f32x8, b: f32x8) -> f32x8 {
        a.max(b)
    }
    #[inline(always)]
    fn min(self, a: f32x8, b: f32x8) -> f32x8 {
        a.min(b)
    }
    #[inline(always)]
    fn sum(self, v: f32x8) -> f32 {
        Scalar.sum(v.to_array())
    }
    #[inline(always)]
    fn reduce_max(self, v: f32x8) -> f32 {
        Scalar.reduce_max(v.to_array())
    }

    #[inline(always)]
    fn izero(self) -> i32x8 {
        i32x8::ZERO
    }
    #[inline(always)]
    fn isplat(self, v: i32) -> i32x8 {
        i32x8::splat(v)
    }
    #[inline(always)]
    fn iload(self, x: &[u8]) -> i32x8 {
        i32x8::new(Scalar.iload(x))
    }
    #[inline(always)]
    fn isplat4(self, x: &[i8]) -> i32x8 {
        i32x8::new(Scalar.isplat4(x))
    }
    #[inline(always)]
    fn iadd(self, a: i32x8, b: i32x8) -> i32x8 {
        a + b
    }
    #[inline(always)]
    fn iand(self, a: i32x8, b: i32x8) -> i32x8 {
        a & b
    }
    #[inline(always)]
    fn ixor(self, a: i32x8, b: i32x8) -> i32x8 {
        a ^ b
    }
    #[inline(always)]
    fn ishr(self, a: i32x8, bits: u32) -> i32x8 {
        i32x8::new(Scalar.ishr(arr(a), bits))
    }
    #[inline(always)]
    fn ishl(self, a: i32x8, bits: u32) -> i32x8 {
        i32x8::new(Scalar.ishl(arr(a), bits))
    }
    #[inline(always)]
    fn bits_to_f32(self, a: i32x8) -> f32x8 {
        bytemuck::cast(a)
    }
    #[inline(always)]
    fn gather4(self, x: &[u8], stride: usize) -> i32x8 {
        i32x8::new(Scalar.gather4(x, stride))
    }
    #[inline(always)]
    fn istore(self, v: i32x8, out: &mut [u8]) {
        Scalar.istore(arr(v), out)
    }
    #[inline(always)]
    fn half_to_f32(self, v: i32x8) -> f32x8 {
        f32x8::new(Scalar.half_to_f32(arr(v)))
    }
    #[inline(always)]
    fn isub(self, a: i32x8, b: i32x8) -> i32x8 {
        a - b
    }
    #[inline(always)]
    fn isum(self, v: i32x8) -> i32 {
        v.to_array().iter().sum()
    }
    #[inline(always)]
    fn to_f32(self, v: i32x8) -> f32x8 {
        f32x8::from_i32x8(v)
    }
    #[inline(always)]
    fn round_to_i32(self, v: f32x8) -> i32x8 {
        // `wide`'s round is half away from zero, like `roundf`; the value is then integral.
        v.round().trunc_int()
    }
    #[inline(always)]
    fn round_nearest(self, v: f32x8) -> i32x8 {
        v.fast_round_int()
    }
    #[inline(always)]
    fn store_i8(self, v: i32x8, out: &mut [i8]) {
        Scalar.store_i8(arr(v), out)
    }
    #[inline(always)]
    fn dot_u7(self, acc: i32x8, a: i32x8, b: i32x8) -> i32x8 {
        i32x8::new(Scalar.dot_u7(arr(acc), arr(a), arr(b)))
    }
    #[inline(always)]
    fn dot_u8(self, acc: i32x8, a: i32x8, b: i32x8) -> i32x8 {
        i32x8::new(Scalar.dot_u8(arr(acc), arr(a), arr(b)))
    }
    #[inline(always)]
    fn dot_i8(self, acc: i32x8, a: i32x8, b: i32x8) -> i32x8 {
        i32x8::new(Scalar.dot_i8(arr(acc), arr(a), arr(b)))
    }
    const DOT_SIGNED_Q8: bool = false;
    const UNPACK_TILES: bool = false;
    #[inline(always)]
    fn nib_dot(self, acc: i32x8, a: i32x8, b: i32x8) -> i32x8 {
        self.dot_u7(acc, a, b)
    }
    #[inline(always)]
    fn nib_sum(self, acc: i32x8) -> i32x8 {
        acc
    }
    #[inline(always)]
    fn load_i8_pairs(self, x: &[u8]) -> i32x8 {
        let x: &[u8; 16] = head(x);
        bytemuck::cast(i16x16::from_i8x16(i8x16::new(bytemuck::cast(*x))))
    }
    #[inline(always)]
    fn dot_i16(self, acc: i32x8, a: i32x8, b: i32x8) -> i32x8 {
        let (a, b): (i16x16, i16x16) = (bytemuck::cast(a), bytemuck::cast(b));
        acc + a.dot(b)
    }
    #[inline(always)]
    fn store_i16(self, v: i32x8, out: &mut [i16]) {
        Scalar.store_i16(arr(v), out)
    }

    #[inline(always)]
    fn interleave4(self, v: [i32x8; 4]) -> [i32x8; 4] {
        Scalar.interleave4(v.map(|r| r.to_array())).map(i32x8::from)
    }
    #[inline(always)]
    fn natural4(self, v: [i32x8; 4]) -> [i32x8; 4] {
        v
    }
    #[inline(always)]
    fn nibbles(self, qs: [&[u8; 16]; 2]) -> i32x8 {
        self.bnibbles(qs[0])
    }
    #[inline(always)]
    fn block_scales(self, s: &[f32]) -> f32x8 {
        f32x8::splat(s[0])
    }

    #[inline(always)]
    fn bload(self, x: &[u8; 32]) -> i32x8 {
        self.iload(x)
    }
    #[inline(always)]
    fn bnibbles(self, qs: &[u8; 16]) -> i32x8 {
        i32x8::new(Scalar.bnibbles(qs))
    }
    #[inline(always)]
    fn bsub_bytes(self, a: i32x8, v: i8) -> i32x8 {
        i32x8::new(Scalar.bsub_bytes(arr(a), v))
    }
    #[inline(always)]
    fn bdot_u7(self, a: i32x8, b: i32x8) -> i32x8 {
        i32x8::new(Scalar.bdot_u7(arr(a), arr(b)))
    }
    #[inline(always)]
    fn bdot_i8(self, a: i32x8, b: i32x8) -> i32x8 {
        i32x8::new(Scalar.bdot_i8(arr(a), arr(b)))
    }
    #[inline(always)]
    fn btof(self, v: i32x8) -> f32x8 {
        self.to_f32(v)
    }
    #[inline(always)]
    fn gzero(self) -> f32x8 {
        f32x8::ZERO
    }
    #[inline(always)]
    fn gmul_add(self, a: f32x8, s: f32, acc: f32x8) -> f32x8 {
        a.mul_add(f32x8::splat(s), acc)
    }
    #[inline(always)]
    fn gsum(self, v: f32x8) -> f32 {
        self.sum(v)
    }
    #[inline(always)]
    fn prefetch(self, _x: &[u8], _at: usize) {}
    #[inline(always)]
    fn f16_to_f32(self, h: [u8; 2]) -> f32 {
        Scalar.f16_to_f32(h)
    }
}
