//! Q8_1: Q8_0 plus `s = d·Σq`, the activation format for Q4_1 and Q5_1 weights, whose offset
//! `m` then costs one multiply per block.

use crate::block::{as_blocks, as_blocks_mut, f16_to_f32, f32_to_f16, Block};
use crate::q8_0::scales;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ8_1 {
    pub(crate) d: [u8; 2],
    /// f16 of `d · Σ qs`.
    pub(crate) s: [u8; 2],
    pub(crate) qs: [i8; 32],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

// SAFETY: repr(C), only byte arrays, 36 bytes as in ggml.
unsafe impl Block for BlockQ8_1 {}

impl BlockQ8_1 {
    #[inline]
    pub(crate) fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }

    #[inline]
    pub(crate) fn s(&self) -> f32 {
        f16_to_f32(self.s)
    }
}

/// Quantizes `src` to Q8_1 with the same scale and rounding as Q8_0 (llama.cpp's AVX
/// `quantize_row_q8_1`); `s` is the f32 product `d · (Σq as f32)` rounded to f16, from the
/// unrounded f32 `d`.
pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8_1>(dst);
    assert_eq!(src.len(), blocks.len() * 32);
    for (x, y) in src.chunks_exact(32).zip(blocks) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = scales(amax);
        y.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        y.s = f32_to_f16(d * sum as f32);
    }
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ8_1>(src);
    assert_eq!(dst.len(), blocks.len() * 32);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(32)) {
        let d = b.d();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;

    #[test]
    fn s_is_scale_times_quant_sum_and_ties_go_to_even() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -0.5;
        x[3] = 3.5;
        let mut out = [0u8; 36];
        quantize(&x, &mut out);
        let b = &as_blocks::<BlockQ8_1>(&out)[0];
        assert_eq!(&b.qs[..4], &[127, 2, 0, 4]);
        assert_eq!(b.s(), 133.0);
    }

    #[test]
    fn round_trip_and_s_agree_with_the_quants() {
        let mut rng = Rng::new(3);
        let x = rng.normal_vec(512, 1.0);
        let mut q = vec![0u8; 16 * 36];
        quantize(&x, &mut q);
        let mut back = vec![0.0f32; x.len()];
        dequantize(&q, &mut back);
        for (xs, (b, ys)) in x
            .chunks(32)
            .zip(as_blocks::<BlockQ8_1>(&q).iter().zip(back.chunks(32)))
        {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, y) in xs.iter().zip(ys) {
                assert!((a - y).abs() <= amax / 127.0 * 0.5 + amax * 2.0f32.powi(-11) * 1.01);
            }
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            let d = amax / 127.0;
            assert_eq!(b.s, f32_to_f16(d * sum as f32));
        }
    }
}
