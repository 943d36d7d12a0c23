//! The scalar level: the same kernel bodies on 8-lane arrays of plain Rust arithmetic. Valid on
//! every target; also the executable spec of each vocabulary word.

use super::{Simd, head};
use crate::quant::float::{bf16_bits_to_f32, f16_bits_to_f32};

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Scalar;

type F8 = [f32; 8];
type I8 = [i32; 8];

fn lane_bytes(v: i32) -> [u8; 4] {
    v.to_le_bytes()
}

/// The signed 16-bit (low, high) halves of a lane.
fn halves(v: i32) -> [i32; 2] {
    [v as i16 as i32, (v >> 16) as i16 as i32]
}

fn dot4(acc: i32, a: i32, b: i32) -> i32 {
    let (a, b) = (lane_bytes(a), lane_bytes(b));
    acc + (0..4).map(|i| a[i] as i32 * b[i] as i8 as i32).sum::<i32>()
}

impl Simd for Scalar {
    const LANES: usize = 8;
    type F = F8;
    type I = I8;
    type B = I8;
    type G = F8;

    #[inline(always)]
    fn zero(self) -> F8 {
        [0.0; 8]
    }
    #[inline(always)]
    fn splat(self, v: f32) -> F8 {
        [v; 8]
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> F8 {
        *head(x)
    }
    #[inline(always)]
    fn load_f32le(self, x: &[u8]) -> F8 {
        let x: &[u8; 32] = head(x);
        std::array::from_fn(|i| f32::from_le_bytes([x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]]))
    }
    #[inline(always)]
    fn load_f16(self, x: &[u8]) -> F8 {
        let x: &[u8; 16] = head(x);
        std::array::from_fn(|i| f16_bits_to_f32(u16::from_le_bytes([x[2 * i], x[2 * i + 1]])))
    }
    #[inline(always)]
    fn load_bf16(self, x: &[u8]) -> F8 {
        let x: &[u8; 16] = head(x);
        std::array::from_fn(|i| bf16_bits_to_f32(u16::from_le_bytes([x[2 * i], x[2 * i + 1]])))
    }
    #[inline(always)]
    fn store(self, v: F8, out: &mut [f32]) {
        out[..8].copy_from_slice(&v);
    }
    #[inline(always)]
    fn mul_add(self, a: F8, b: F8, c: F8) -> F8 {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn mul(self, a: F8, b: F8) -> F8 {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn add(self, a: F8, b: F8) -> F8 {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn div(self, a: F8, b: F8) -> F8 {
        std::array::from_fn(|i| a[i] / b[i])
    }
    #[inline(always)]
    fn abs(self, a: F8) -> F8 {
        a.map(f32::abs)
    }
    #[inline(always)]
    fn max(self, a: F8, b: F8) -> F8 {
        std::array::from_fn(|i| a[i].max(b[i]))
    }
    #[inline(always)]
    fn min(self, a: F8, b: F8) -> F8 {
        std::array::from_fn(|i| a[i].min(b[i]))
    }
    #[inline(always)]
    fn sum(self, v: F8) -> f32 {
        ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
    }
    #[inline(always)]
    fn reduce_max(self, v: F8) -> f32 {
        v.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }

    #[inline(always)]
    fn izero(self) -> I8 {
        [0; 8]
    }
    #[inline(always)]
    fn isplat(self, v: i32) -> I8 {
        [v; 8]
    }
    #[inline(always)]
    fn iload(self, x: &[u8]) -> I8 {
        let x: &[u8; 32] = head(x);
        std::array::from_fn(|i| i32::from_le_bytes([x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]]))
    }
    #[inline(always)]
    fn isplat4(self, x: &[i8]) -> I8 {
        [i32::from_le_bytes([x[0] as u8, x[1] as u8, x[2] as u8, x[3] as u8]); 8]
    }
    #[inline(always)]
    fn iadd(self, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn iand(self, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| a[i] & b[i])
    }
    #[inline(always)]
    fn ixor(self, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| a[i] ^ b[i])
    }
    #[inline(always)]
    fn ishr(self, a: I8, bits: u32) -> I8 {
        a.map(|v| ((v as u32) >> bits) as i32)
    }
    #[inline(always)]
    fn ishl(self, a: I8, bits: u32) -> I8 {
        a.map(|v| ((v as u32) << bits) as i32)
    }
    #[inline(always)]
    fn bits_to_f32(self, a: I8) -> F8 {
        a.map(|v| f32::from_bits(v as u32))
    }
    #[inline(always)]
    fn gather4(self, x: &[u8], stride: usize) -> I8 {
        std::array::from_fn(|l| i32::from_le_bytes(*head(&x[l * stride..])))
    }
    #[inline(always)]
    fn istore(self, v: I8, out: &mut [u8]) {
        for (o, x) in out[..32].chunks_exact_mut(4).zip(v) {
            o.copy_from_slice(&x.to_le_bytes());
        }
    }
    #[inline(always)]
    fn half_to_f32(self, v: I8) -> F8 {
        v.map(|h| f16_bits_to_f32(h as u16))
    }
    #[inline(always)]
    fn isub(self, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    fn isum(self, v: I8) -> i32 {
        v.iter().sum()
    }
    #[inline(always)]
    fn to_f32(self, v: I8) -> F8 {
        v.map(|x| x as f32)
    }
    #[inline(always)]
    fn round_to_i32(self, v: F8) -> I8 {
        v.map(|x| x.round() as i32)
    }
    #[inline(always)]
    fn round_nearest(self, v: F8) -> I8 {
        v.map(|x| x.round_ties_even() as i32)
    }
    #[inline(always)]
    fn store_i8(self, v: I8, out: &mut [i8]) {
        for (o, x) in out[..8].iter_mut().zip(v) {
            *o = x as i8;
        }
    }
    #[inline(always)]
    fn dot_u7(self, acc: I8, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| dot4(acc[i], a[i], b[i]))
    }
    #[inline(always)]
    fn dot_u8(self, acc: I8, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| dot4(acc[i], a[i], b[i]))
    }
    #[inline(always)]
    fn dot_i8(self, acc: I8, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| {
            let (a, b) = (lane_bytes(a[i]), lane_bytes(b[i]));
            acc[i] + (0..4).map(|j| a[j] as i8 as i32 * b[j] as i8 as i32).sum::<i32>()
        })
    }
    const DOT_SIGNED_Q8: bool = false;
    const UNPACK_TILES: bool = false;
    #[inline(always)]
    fn nib_dot(self, acc: I8, a: I8, b: I8) -> I8 {
        self.dot_u7(acc, a, b)
    }
    #[inline(always)]
    fn nib_sum(self, acc: I8) -> I8 {
        acc
    }
    #[inline(always)]
    fn load_i8_pairs(self, x: &[u8]) -> I8 {
        let x: &[u8; 16] = head(x);
        std::array::from_fn(|l| (x[2 * l] as i8 as u16 as u32 | (x[2 * l + 1] as i8 as u16 as u32) << 16) as i32)
    }
    #[inline(always)]
    fn dot_i16(self, acc: I8, a: I8, b: I8) -> I8 {
        std::array::from_fn(|l| {
            let ([a0, a1], [b0, b1]) = (halves(a[l]), halves(b[l]));
            acc[l].wrapping_add((a0 * b0).wrapping_add(a1 * b1))
        })
    }
    #[inline(always)]
    fn store_i16(self, v: I8, out: &mut [i16]) {
        for (o, x) in out[..8].iter_mut().zip(v) {
            *o = x as i16;
        }
    }

    #[inline(always)]
    fn interleave4(self, v: [I8; 4]) -> [I8; 4] {
        // Position order: vector t, lane l is position 8t + l.
        let bytes = v.map(|r| r.map(lane_bytes));
        std::array::from_fn(|t| std::array::from_fn(|l| i32::from_le_bytes(std::array::from_fn(|row| bytes[row][(8 * t + l) / 4][(8 * t + l) % 4]))))
    }
    #[inline(always)]
    fn natural4(self, v: [I8; 4]) -> [I8; 4] {
        v
    }
    #[inline(always)]
    fn nibbles(self, qs: [&[u8; 16]; 2]) -> I8 {
        self.bnibbles(qs[0])
    }
    #[inline(always)]
    fn block_scales(self, s: &[f32]) -> F8 {
        [s[0]; 8]
    }

    #[inline(always)]
    fn bload(self, x: &[u8; 32]) -> I8 {
        self.iload(x)
    }
    #[inline(always)]
    fn bnibbles(self, qs: &[u8; 16]) -> I8 {
        let q = crate::quant::q4_values(qs);
        self.iload(&q)
    }
    #[inline(always)]
    fn bsub_bytes(self, a: I8, v: i8) -> I8 {
        a.map(|x| i32::from_le_bytes(lane_bytes(x).map(|b| b.wrapping_sub(v as u8))))
    }
    #[inline(always)]
    fn bdot_u7(self, a: I8, b: I8) -> I8 {
        self.dot_u7([0; 8], a, b)
    }
    #[inline(always)]
    fn bdot_i8(self, a: I8, b: I8) -> I8 {
        std::array::from_fn(|i| {
            let (a, b) = (lane_bytes(a[i]), lane_bytes(b[i]));
            (0..4).map(|j| a[j] as i8 as i32 * b[j] as i8 as i32).sum()
        })
    }
    #[inline(always)]
    fn btof(self, v: I8) -> F8 {
        self.to_f32(v)
    }
    #[inline(always)]
    fn gzero(self) -> F8 {
        [0.0; 8]
    }
    #[inline(always)]
    fn gmul_add(self, a: F8, s: f32, acc: F8) -> F8 {
        std::array::from_fn(|i| a[i] * s + acc[i])
    }
    #[inline(always)]
    fn gsum(self, v: F8) -> f32 {
        self.sum(v)
    }
    #[inline(always)]
    fn prefetch(self, _x: &[u8], _at: usize) {}
    #[inline(always)]
    fn f16_to_f32(self, h: [u8; 2]) -> f32 {
        f16_bits_to_f32(u16::from_le_bytes(h))
    }
}
