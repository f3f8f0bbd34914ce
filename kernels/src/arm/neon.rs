//! AArch64 Advanced SIMD kernels. Integer dot products widen with `smull`/`sadalp`, which
//! every AArch64 CPU has (the `sdot` intrinsics are not yet stable in Rust).

use crate::bf16::{bf16_to_f32, Bf16};
use crate::block::{as_blocks_mut, f16_to_f32, f32_to_f16, for_each_row};
use crate::dispatch::Table;
use crate::q4_0::BlockQ4_0;
use crate::q4_k::{min_sum, unpack_scales_mins, BlockQ4K};
use crate::q6_k::BlockQ6K;
use crate::q8_0::{scales, BlockQ8_0};
use crate::q8_k::BlockQ8K;
use crate::types::GgmlType;
use std::arch::aarch64::*;

/// Puts the NEON kernels into `table`.
pub(crate) fn install(table: &mut Table) {
    table.dot_rows[GgmlType::Q4_K as usize] = Some(dot_rows_q4_k);
    table.dot_rows[GgmlType::Q6_K as usize] = Some(dot_rows_q6_k);
    table.dot_rows[GgmlType::Q8_0 as usize] = Some(dot_rows_q8_0);
    table.dot_rows[GgmlType::Q4_0 as usize] = Some(dot_rows_q4_0);
    table.dot_rows[GgmlType::BF16 as usize] = Some(dot_rows_bf16);
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
        let q = yb.qs.as_ptr();
        let s = dot16(
            dot16(vdupq_n_s32(0), load(p), load(q)),
            load(p.add(16)),
            load(q.add(16)),
        );
        sumf += vaddvq_s32(s) as f32 * (f16_to_f32(xb.d) * yb.d());
    }
    sumf
}

/// Same float order as the scalar kernel.
#[target_feature(enable = "neon")]
unsafe fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let m4 = vdupq_n_u8(0x0F);
    let eight = vdupq_n_s8(8);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let q = vld1q_u8(xb.qs.as_ptr());
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m4)), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
        let p = yb.qs.as_ptr();
        let s = dot16(dot16(vdupq_n_s32(0), lo, load(p)), hi, load(p.add(16)));
        sumf += vaddvq_s32(s) as f32 * f16_to_f32(xb.d) * yb.d();
    }
    sumf
}

#[target_feature(enable = "neon")]
unsafe fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let m4 = vdupq_n_u8(0x0F);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (sc, mins) = unpack_scales_mins(&xb.scales);
        let mut isum = 0i32;
        for c in 0..4 {
            let q = xb.qs.as_ptr().add(32 * c);
            let (q0, q1) = (vld1q_u8(q), vld1q_u8(q.add(16)));
            let y8 = yb.qs.as_ptr().add(64 * c);
            let lo0 = vreinterpretq_s8_u8(vandq_u8(q0, m4));
            let lo1 = vreinterpretq_s8_u8(vandq_u8(q1, m4));
            let hi0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0));
            let hi1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1));
            let s_lo = dot16(dot16(vdupq_n_s32(0), lo0, load(y8)), lo1, load(y8.add(16)));
            let s_hi = dot16(
                dot16(vdupq_n_s32(0), hi0, load(y8.add(32))),
                hi1,
                load(y8.add(48)),
            );
            isum += vaddvq_s32(s_lo) * sc[2 * c] as i32 + vaddvq_s32(s_hi) * sc[2 * c + 1] as i32;
        }
        let d = f16_to_f32(xb.d) * yb.d();
        let dmin = f16_to_f32(xb.dmin) * yb.d();
        sumf += d * isum as f32 - dmin * min_sum(&mins, yb) as f32;
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

#[target_feature(enable = "neon")]
unsafe fn dot_bf16(x: &[Bf16], y: &[Bf16]) -> f32 {
    let widen = |p: *const Bf16| -> (float32x4_t, float32x4_t) {
        let v = vld1q_u16(p.cast());
        (
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(v)),
        )
    };
    let mut acc = [vdupq_n_f32(0.0); 2];
    let whole = x.len() / 8 * 8;
    for i in (0..whole).step_by(8) {
        let (x0, x1) = widen(x.as_ptr().add(i));
        let (y0, y1) = widen(y.as_ptr().add(i));
        acc[0] = vfmaq_f32(acc[0], x0, y0);
        acc[1] = vfmaq_f32(acc[1], x1, y1);
    }
    let mut sum = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    for (a, b) in x[whole..].iter().zip(&y[whole..]) {
        sum += bf16_to_f32(a.0) * bf16_to_f32(b.0);
    }
    sum
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
rows_fn!(dot_rows_q4_k, dot_q4_k);
rows_fn!(dot_rows_q6_k, dot_q6_k);
rows_fn!(dot_rows_q8_0, dot_q8_0);
rows_fn!(dot_rows_q4_0, dot_q4_0);
rows_fn!(dot_rows_bf16, dot_bf16);

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
