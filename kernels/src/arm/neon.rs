//! AArch64 Advanced SIMD kernels. Integer dot products widen with `smull`/`sadalp`, which
//! every AArch64 CPU has (the `sdot` intrinsics are not yet stable in Rust).

use crate::bf16::{bf16_to_f32, Bf16};
use crate::block::{as_blocks, as_blocks_mut, f16_to_f32, f32_to_f16, for_each_row};
use crate::dispatch::Table;
use crate::f16::F16;
use crate::q2_k::BlockQ2K;
use crate::q3_k::{unpack_scales, BlockQ3K};
use crate::q4_0::BlockQ4_0;
use crate::q4_1::BlockQ4_1;
use crate::q4_k::{min_sum, unpack_scales_mins, BlockQ4K};
use crate::q5_0::BlockQ5_0;
use crate::q5_1::BlockQ5_1;
use crate::q5_k::BlockQ5K;
use crate::q6_k::BlockQ6K;
use crate::q8_0::{scales, BlockQ8_0};
use crate::q8_1::BlockQ8_1;
use crate::q8_k::BlockQ8K;
use crate::types::GgmlType;
use std::arch::aarch64::*;

/// Puts the NEON kernels into `table`.
pub(crate) fn install(table: &mut Table) {
    table.dot_rows[GgmlType::Q2_K as usize] = Some(dot_rows_q2_k);
    table.dot_rows[GgmlType::Q3_K as usize] = Some(dot_rows_q3_k);
    table.dot_rows[GgmlType::Q4_K as usize] = Some(dot_rows_q4_k);
    table.dot_rows[GgmlType::Q6_K as usize] = Some(dot_rows_q6_k);
    table.dot_rows[GgmlType::Q8_0 as usize] = Some(dot_rows_q8_0);
    table.dot_rows[GgmlType::Q4_0 as usize] = Some(dot_rows_q4_0);
    table.dot_rows[GgmlType::Q5_0 as usize] = Some(dot_rows_q5_0);
    table.dot_rows[GgmlType::Q4_1 as usize] = Some(dot_rows_q4_1);
    table.dot_rows[GgmlType::Q5_1 as usize] = Some(dot_rows_q5_1);
    table.dot_rows[GgmlType::Q5_K as usize] = Some(dot_rows_q5_k);
    table.dot_rows[GgmlType::BF16 as usize] = Some(dot_rows_bf16);
    table.dot_rows[GgmlType::F16 as usize] = Some(dot_rows_f16);
    table.accumulate_f16_rows = accumulate_f16_rows;
    table.quantize[GgmlType::Q8_0 as usize] = Some(quantize_q8_0);
    table.quantize[GgmlType::Q8_K as usize] = Some(quantize_q8_k);
}

/// Σ a·b of 16 signed byte pairs, added into four i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load(p: *const i8) -> int8x16_t {
    vld1q_s8(p)
}

/// Same float order as the scalar kernel: one `sumi · (dx·dy)` per block.
#[target_feature(enable = "neon")]
unsafe fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let p = xb.qs.as_ptr();
        let s = block_dot(load(p), load(p.add(16)), &yb.qs);
        sumf += s as f32 * (f16_to_f32(xb.d) * yb.d());
    }
    sumf
}

/// The 32 quants of a 4-bit block, unsigned: elements 0..16 (low nibbles) and 16..32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    let q = vld1q_u8(qs.as_ptr());
    (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q))
}

/// 0x10 in byte j where bit j of `bits` is set.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn fifth_bits(bits: u16) -> uint8x16_t {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bytes = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
    vandq_u8(vtstq_u8(bytes, vld1q_u8(BIT.as_ptr())), vdupq_n_u8(0x10))
}

/// The 32 quants of a 5-bit block (Q5_0, Q5_1), unsigned (0..31): elements 0..16 and 16..32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    let qh = u32::from_le_bytes(qh);
    let (lo, hi) = nibbles(qs);
    (
        vorrq_u8(lo, fifth_bits(qh as u16)),
        vorrq_u8(hi, fifth_bits((qh >> 16) as u16)),
    )
}

/// Σ q·a of a block's 32 quants (two halves) with a Q8 activation block's.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn block_dot(lo: int8x16_t, hi: int8x16_t, a: &[i8; 32]) -> i32 {
    let p = a.as_ptr();
    vaddvq_s32(dot16(
        dot16(vdupq_n_s32(0), lo, load(p)),
        hi,
        load(p.add(16)),
    ))
}

/// The quants less `offset`, as signed bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn centred((lo, hi): (uint8x16_t, uint8x16_t), offset: i8) -> (int8x16_t, int8x16_t) {
    let offset = vdupq_n_s8(offset);
    (
        vsubq_s8(vreinterpretq_s8_u8(lo), offset),
        vsubq_s8(vreinterpretq_s8_u8(hi), offset),
    )
}

/// Same float order as the scalar kernel.
#[target_feature(enable = "neon")]
unsafe fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (lo, hi) = centred(nibbles(&xb.qs), 8);
        sumf += block_dot(lo, hi, &yb.qs) as f32 * f16_to_f32(xb.d) * yb.d();
    }
    sumf
}

/// Same float order as the scalar kernel.
#[target_feature(enable = "neon")]
unsafe fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (lo, hi) = centred(five_bits(&xb.qs, xb.qh), 16);
        sumf += (f16_to_f32(xb.d) * yb.d()) * block_dot(lo, hi, &yb.qs) as f32;
    }
    sumf
}

/// A 32-element format with a scale and a min per block (value = q·d + m), whose dot products
/// take Q8_1 activations.
trait QuantsWithMin {
    /// The 32 quants, unsigned: elements 0..16 and 16..32.
    unsafe fn quants(&self) -> (uint8x16_t, uint8x16_t);
    fn scale_and_min(&self) -> ([u8; 2], [u8; 2]);
}

impl QuantsWithMin for BlockQ4_1 {
    #[inline]
    unsafe fn quants(&self) -> (uint8x16_t, uint8x16_t) {
        nibbles(&self.qs)
    }

    fn scale_and_min(&self) -> ([u8; 2], [u8; 2]) {
        (self.d, self.m)
    }
}

impl QuantsWithMin for BlockQ5_1 {
    #[inline]
    unsafe fn quants(&self) -> (uint8x16_t, uint8x16_t) {
        five_bits(&self.qs, self.qh)
    }

    fn scale_and_min(&self) -> ([u8; 2], [u8; 2]) {
        (self.d, self.m)
    }
}

/// Same float order as the scalar kernels: the min meets the activation's `s` = d'·Σa.
#[target_feature(enable = "neon")]
unsafe fn dot_with_min<B: QuantsWithMin>(x: &[B], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (lo, hi) = xb.quants();
        let sumi = block_dot(vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi), &yb.qs);
        let (d, m) = xb.scale_and_min();
        sumf += (f16_to_f32(d) * yb.d()) * sumi as f32 + f16_to_f32(m) * yb.s();
    }
    sumf
}

#[target_feature(enable = "neon")]
unsafe fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    dot_with_min(x, y)
}

#[target_feature(enable = "neon")]
unsafe fn dot_q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    dot_with_min(x, y)
}

/// A Q4_K or Q5_K block's share of the dot product: its eight sub-blocks' quants (each as two
/// halves of 16, unsigned) against the activation, each sub-block's sum times its scale, less
/// the mins' term.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn k_quant_block(
    sub_blocks: &[[uint8x16_t; 2]; 8],
    packed_scales: &[u8; 12],
    (d, dmin): ([u8; 2], [u8; 2]),
    yb: &BlockQ8K,
) -> f32 {
    let (sc, mins) = unpack_scales_mins(packed_scales);
    let mut isum = 0i32;
    for (j, [lo, hi]) in sub_blocks.iter().enumerate() {
        let a = &*yb.qs.as_ptr().add(32 * j).cast::<[i8; 32]>();
        let s = block_dot(vreinterpretq_s8_u8(*lo), vreinterpretq_s8_u8(*hi), a);
        isum += s * sc[j] as i32;
    }
    let d = f16_to_f32(d) * yb.d();
    let dmin = f16_to_f32(dmin) * yb.d();
    d * isum as f32 - dmin * min_sum(&mins, yb) as f32
}

#[target_feature(enable = "neon")]
unsafe fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let m4 = vdupq_n_u8(0x0F);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        // Chunk c of 32 bytes holds sub-block 2c in its low nibbles and 2c + 1 in its high.
        let mut sub_blocks = [[vdupq_n_u8(0); 2]; 8];
        for c in 0..4 {
            let q = xb.qs.as_ptr().add(32 * c);
            let (q0, q1) = (vld1q_u8(q), vld1q_u8(q.add(16)));
            sub_blocks[2 * c] = [vandq_u8(q0, m4), vandq_u8(q1, m4)];
            sub_blocks[2 * c + 1] = [vshrq_n_u8::<4>(q0), vshrq_n_u8::<4>(q1)];
        }
        sumf += k_quant_block(&sub_blocks, &xb.scales, (xb.d, xb.dmin), yb);
    }
    sumf
}

/// Q4_K's nibbles with the fifth bits of `qh`: bit 2c of byte l for element l of sub-block
/// 2c, bit 2c + 1 for sub-block 2c + 1.
#[target_feature(enable = "neon")]
unsafe fn dot_q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let m4 = vdupq_n_u8(0x0F);
    let (one, two) = (vdupq_n_u8(1), vdupq_n_u8(2));
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut high = [vld1q_u8(xb.qh.as_ptr()), vld1q_u8(xb.qh.as_ptr().add(16))];
        let mut sub_blocks = [[vdupq_n_u8(0); 2]; 8];
        for c in 0..4 {
            let q = xb.qs.as_ptr().add(32 * c);
            let q = [vld1q_u8(q), vld1q_u8(q.add(16))];
            for h in 0..2 {
                let low_fifth = vshlq_n_u8::<4>(vandq_u8(high[h], one));
                let high_fifth = vshlq_n_u8::<3>(vandq_u8(high[h], two));
                sub_blocks[2 * c][h] = vorrq_u8(vandq_u8(q[h], m4), low_fifth);
                sub_blocks[2 * c + 1][h] = vorrq_u8(vshrq_n_u8::<4>(q[h]), high_fifth);
                high[h] = vshrq_n_u8::<2>(high[h]);
            }
        }
        sumf += k_quant_block(&sub_blocks, &xb.scales, (xb.d, xb.dmin), yb);
    }
    sumf
}

/// The two-bit quants of Q2_K and Q3_K: for register 4h + j (j < 4), bits 2j..2j+1 of the 32
/// `qs` bytes of half h, elements 128h + 32j.. + 32, as two halves of 16.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn two_bits(qs: &[u8; 64], h: usize, j: usize) -> [uint8x16_t; 2] {
    let shift = vdupq_n_s8(-2 * j as i8);
    [0, 16].map(|at| {
        vandq_u8(
            vshlq_u8(vld1q_u8(qs.as_ptr().add(32 * h + at)), shift),
            vdupq_n_u8(3),
        )
    })
}

/// Same float order as the scalar kernel.
#[target_feature(enable = "neon")]
unsafe fn dot_q2_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut isum = 0i32;
        for h in 0..2 {
            for j in 0..4 {
                let quants = two_bits(&xb.qs, h, j);
                for (half, q) in quants.into_iter().enumerate() {
                    let sub = 8 * h + 2 * j + half;
                    let a = load(yb.qs.as_ptr().add(16 * sub));
                    let s = vaddvq_s32(dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(q), a));
                    isum += s * (xb.scales[sub] & 0xF) as i32;
                }
            }
        }
        let mins = crate::q2_k::min_sum(xb, yb);
        let dall = yb.d() * f16_to_f32(xb.d);
        let dmin = yb.d() * f16_to_f32(xb.dmin);
        sumf += dall * isum as f32 - dmin * mins as f32;
    }
    sumf
}

/// Q2_K's two bits with the third from `hmask` (bit 4h + j of byte l), less 4.
#[target_feature(enable = "neon")]
unsafe fn dot_q3_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let scales = unpack_scales(&xb.scales);
        let hmask = [
            vld1q_u8(xb.hmask.as_ptr()),
            vld1q_u8(xb.hmask.as_ptr().add(16)),
        ];
        let mut isum = 0i32;
        for h in 0..2 {
            for j in 0..4 {
                let shift = vdupq_n_s8(-((4 * h + j) as i8));
                let quants = two_bits(&xb.qs, h, j);
                for (half, low) in quants.into_iter().enumerate() {
                    let third = vandq_u8(vshlq_u8(hmask[half], shift), vdupq_n_u8(1));
                    let q = vorrq_u8(low, vshlq_n_u8::<2>(third));
                    let q = vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(4));
                    let sub = 8 * h + 2 * j + half;
                    let a = load(yb.qs.as_ptr().add(16 * sub));
                    isum += vaddvq_s32(dot16(vdupq_n_s32(0), q, a)) * scales[sub] as i32;
                }
            }
        }
        sumf += f16_to_f32(xb.d) * yb.d() * isum as f32;
    }
    sumf
}

#[target_feature(enable = "neon")]
unsafe fn dot_q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let m4 = vdupq_n_u8(0x0F);
    let m2 = vdupq_n_u8(0x30);
    let thirty_two = vdupq_n_s8(32);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut isum = 0i32;
        for h in 0..2 {
            let ql = xb.ql.as_ptr().add(64 * h);
            let qh = xb.qh.as_ptr().add(32 * h);
            for m in 0..2 {
                // Elements 128h + 32k + 16m + (0..16) for k = 0..3: sub-block 8h + 2k + m.
                let l0 = vld1q_u8(ql.add(16 * m));
                let l1 = vld1q_u8(ql.add(32 + 16 * m));
                let hb = vld1q_u8(qh.add(16 * m));
                let quarters = [
                    vorrq_u8(vandq_u8(l0, m4), vandq_u8(vshlq_n_u8::<4>(hb), m2)),
                    vorrq_u8(vandq_u8(l1, m4), vandq_u8(vshlq_n_u8::<2>(hb), m2)),
                    vorrq_u8(vshrq_n_u8::<4>(l0), vandq_u8(hb, m2)),
                    vorrq_u8(vshrq_n_u8::<4>(l1), vandq_u8(vshrq_n_u8::<2>(hb), m2)),
                ];
                for (k, q) in quarters.into_iter().enumerate() {
                    let a = vsubq_s8(vreinterpretq_s8_u8(q), thirty_two);
                    let y8 = yb.qs.as_ptr().add(128 * h + 32 * k + 16 * m);
                    let s = vaddvq_s32(dot16(vdupq_n_s32(0), a, load(y8)));
                    isum += s * xb.scales[8 * h + 2 * k + m] as i32;
                }
            }
        }
        sumf += f16_to_f32(xb.d) * yb.d() * isum as f32;
    }
    sumf
}

/// A 16-bit float format, widened to f32 eight at a time.
trait Half: Sized {
    unsafe fn widen8(p: *const Self) -> (float32x4_t, float32x4_t);
    fn to_f32(&self) -> f32;
}

impl Half for Bf16 {
    #[inline]
    unsafe fn widen8(p: *const Bf16) -> (float32x4_t, float32x4_t) {
        let v = vld1q_u16(p.cast());
        (
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(v)),
        )
    }

    fn to_f32(&self) -> f32 {
        bf16_to_f32(self.0)
    }
}

/// `fcvtl`, which every AArch64 CPU has (half-precision arithmetic is not needed).
impl Half for F16 {
    #[inline]
    unsafe fn widen8(p: *const F16) -> (float32x4_t, float32x4_t) {
        let v = vreinterpretq_f16_u16(vld1q_u16(p.cast()));
        (vcvt_f32_f16(vget_low_f16(v)), vcvt_high_f32_f16(v))
    }

    fn to_f32(&self) -> f32 {
        f16_to_f32(self.0)
    }
}

#[target_feature(enable = "neon")]
unsafe fn dot_halves<H: Half>(x: &[H], y: &[H]) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    let whole = x.len() / 8 * 8;
    for i in (0..whole).step_by(8) {
        let (x0, x1) = H::widen8(x.as_ptr().add(i));
        let (y0, y1) = H::widen8(y.as_ptr().add(i));
        acc[0] = vfmaq_f32(acc[0], x0, y0);
        acc[1] = vfmaq_f32(acc[1], x1, y1);
    }
    let mut sum = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    for (a, b) in x[whole..].iter().zip(&y[whole..]) {
        sum += a.to_f32() * b.to_f32();
    }
    sum
}

#[target_feature(enable = "neon")]
unsafe fn dot_bf16(x: &[Bf16], y: &[Bf16]) -> f32 {
    dot_halves(x, y)
}

#[target_feature(enable = "neon")]
unsafe fn dot_f16(x: &[F16], y: &[F16]) -> f32 {
    dot_halves(x, y)
}

/// Attention's weighted sums of f16 value rows (see `f16::accumulate_rows`), sixteen and then
/// four elements at a time, each element's sum taken over the rows in order with one fused
/// multiply-add per row wherever it lies, so a query's sums do not depend on the others'.
#[target_feature(enable = "neon")]
unsafe fn accumulate_f16_rows(weights: &[f32], rows: &[u8], out: &mut [f32], queries: usize) {
    let (dim, n_rows) = (out.len() / queries, weights.len() / queries);
    let rows = as_blocks::<F16>(rows);
    let value = |i: usize, d: usize| rows.as_ptr().add(i * dim + d);
    for (weights, out) in weights.chunks_exact(n_rows).zip(out.chunks_exact_mut(dim)) {
        let out = out.as_mut_ptr();
        let at = |d: usize| out.add(d);
        let mut d = 0;
        while d + 16 <= dim {
            let mut acc = [0, 4, 8, 12].map(|k| vld1q_f32(at(d + k)));
            for (i, &w) in weights.iter().enumerate() {
                let (v0, v1) = F16::widen8(value(i, d));
                let (v2, v3) = F16::widen8(value(i, d + 8));
                for (a, v) in acc.iter_mut().zip([v0, v1, v2, v3]) {
                    *a = vfmaq_n_f32(*a, v, w);
                }
            }
            for (k, a) in acc.into_iter().enumerate() {
                vst1q_f32(at(d + 4 * k), a);
            }
            d += 16;
        }
        while d + 4 <= dim {
            let mut acc = vld1q_f32(at(d));
            for (i, &w) in weights.iter().enumerate() {
                let v = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(value(i, d).cast())));
                acc = vfmaq_n_f32(acc, v, w);
            }
            vst1q_f32(at(d), acc);
            d += 4;
        }
        for d in d..dim {
            for (i, &w) in weights.iter().enumerate() {
                *at(d) = w.mul_add((*value(i, d)).to_f32(), *at(d));
            }
        }
    }
}

macro_rules! rows_fn {
    ($name:ident, $dot:ident) => {
        #[target_feature(enable = "neon")]
        unsafe fn $name(rows: &[u8], act: &[u8], out: &mut [f32]) {
            // SAFETY: reachable only through a table built after checking for NEON.
            for_each_row(rows, act, out, |x, y| unsafe { $dot(x, y) });
        }
    };
}
rows_fn!(dot_rows_q2_k, dot_q2_k);
rows_fn!(dot_rows_q3_k, dot_q3_k);
rows_fn!(dot_rows_q4_k, dot_q4_k);
rows_fn!(dot_rows_q6_k, dot_q6_k);
rows_fn!(dot_rows_q8_0, dot_q8_0);
rows_fn!(dot_rows_q4_0, dot_q4_0);
rows_fn!(dot_rows_q5_0, dot_q5_0);
rows_fn!(dot_rows_q4_1, dot_q4_1);
rows_fn!(dot_rows_q5_1, dot_q5_1);
rows_fn!(dot_rows_q5_k, dot_q5_k);
rows_fn!(dot_rows_bf16, dot_bf16);
rows_fn!(dot_rows_f16, dot_f16);

#[inline]
#[target_feature(enable = "neon")]
unsafe fn abs_max(x: &[f32]) -> f32 {
    let mut m = vdupq_n_f32(0.0);
    for c in x.chunks_exact(4) {
        // The "number" maximum skips NaNs, as the scalar references do.
        m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(c.as_ptr())));
    }
    vmaxnmvq_f32(m)
}

/// Rounds 16 floats times `scale` to even, stores them as bytes and returns their sum.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn round_store16(x: *const f32, scale: f32, dst: *mut i8) -> i32 {
    let mut ints = [vdupq_n_s32(0); 4];
    for (k, v) in ints.iter_mut().enumerate() {
        *v = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x.add(4 * k)), scale));
    }
    let lo = vcombine_s16(vqmovn_s32(ints[0]), vqmovn_s32(ints[1]));
    let hi = vcombine_s16(vqmovn_s32(ints[2]), vqmovn_s32(ints[3]));
    let bytes = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
    vst1q_s8(dst, bytes);
    vaddlvq_s8(bytes) as i32
}

/// Bit-identical to `q8_0::quantize`.
#[target_feature(enable = "neon")]
unsafe fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8_0>(dst);
    assert_eq!(src.len(), blocks.len() * 32);
    for (x, y) in src.chunks_exact(32).zip(blocks) {
        let (d, id) = scales(abs_max(x));
        y.d = f32_to_f16(d);
        round_store16(x.as_ptr(), id, y.qs.as_mut_ptr());
        round_store16(x.as_ptr().add(16), id, y.qs.as_mut_ptr().add(16));
    }
}

/// Bit-identical to `q8_k::quantize`.
#[target_feature(enable = "neon")]
unsafe fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8K>(dst);
    assert_eq!(src.len(), blocks.len() * 256);
    for (x, y) in src.chunks_exact(256).zip(blocks) {
        let amax = abs_max(x);
        if amax == 0.0 {
            y.d = 0.0f32.to_le_bytes();
            y.qs = [0; 256];
            y.bsums = [0; 32];
            continue;
        }
        // The first element of largest magnitude, as the reference's strict `>` finds.
        let max = *x
            .iter()
            .find(|v| v.abs() == amax)
            .expect("amax is some |x|");
        let iscale = -127.0 / max;
        for g in 0..16 {
            let s = round_store16(
                x.as_ptr().add(16 * g),
                iscale,
                y.qs.as_mut_ptr().add(16 * g),
            );
            y.bsums[2 * g..2 * g + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        y.d = (1.0 / iscale).to_le_bytes();
    }
}
