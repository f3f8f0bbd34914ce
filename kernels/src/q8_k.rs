//! Q8_K: the activation format for K-quant dot products (256 elements, f32 scale, and the sum
//! of every 16 quants so that K-quant minimums cost one multiply per sub-block).

use crate::block::{as_blocks, as_blocks_mut, Block};
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ8K {
    /// f32 scale, little-endian.
    pub(crate) d: [u8; 4],
    pub(crate) qs: [i8; 256],
    /// Sixteen little-endian i16 sums of consecutive groups of 16 quants.
    pub(crate) bsums: [u8; 32],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

// SAFETY: repr(C), only byte arrays, 292 bytes as in ggml.
unsafe impl Block for BlockQ8K {}

impl BlockQ8K {
    #[inline]
    pub(crate) fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    #[inline]
    pub(crate) fn bsum(&self, group: usize) -> i16 {
        i16::from_le_bytes([self.bsums[2 * group], self.bsums[2 * group + 1]])
    }
}

/// Quantizes `src` to Q8_K exactly as llama.cpp's `quantize_row_q8_K_ref` (which every
/// llama.cpp build uses for Q8_K): the scale comes from the element of largest magnitude with
/// its sign, `iscale = -127/max`, quants round half to even, and `d = 1/iscale`.
pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8K>(dst);
    assert_eq!(src.len(), blocks.len() * 256);
    for (x, y) in src.chunks_exact(256).zip(blocks) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            y.d = 0.0f32.to_le_bytes();
            y.qs = [0; 256];
            y.bsums = [0; 32];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (group, sum) in y.qs.chunks_exact(16).zip(y.bsums.chunks_exact_mut(2)) {
            let s: i32 = group.iter().map(|&q| q as i32).sum();
            sum.copy_from_slice(&(s as i16).to_le_bytes());
        }
        y.d = (1.0 / iscale).to_le_bytes();
    }
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ8K>(src);
    assert_eq!(dst.len(), blocks.len() * 256);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(256)) {
        let d = b.d();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = d * q as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;

    fn quantized(x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; x.len() / 256 * 292];
        quantize(x, &mut out);
        out
    }

    #[test]
    fn ties_round_half_to_even() {
        // The largest magnitude is -127, so iscale = 1 and each value is its own quant.
        let mut x = vec![0.0f32; 256];
        x[0] = -127.0;
        let ties = [0.5f32, 1.5, 2.5, -2.5, -0.5, 126.5, -3.5];
        x[1..1 + ties.len()].copy_from_slice(&ties);
        let out = quantized(&x);
        let b = &as_blocks::<BlockQ8K>(&out)[0];
        assert_eq!(b.d(), 1.0);
        assert_eq!(&b.qs[..8], &[-127, 0, 2, 2, -2, 0, 126, -4]);
    }

    #[test]
    fn sign_of_the_largest_element_sets_the_scale() {
        let mut x = vec![0.0f32; 256];
        x[3] = 2.0;
        x[4] = -1.0;
        let out = quantized(&x);
        let b = &as_blocks::<BlockQ8K>(&out)[0];
        // iscale = -127/2, so the positive maximum maps to -127 and d is negative.
        assert_eq!(b.qs[3], -127);
        assert_eq!(b.qs[4], 64); // 63.5 rounds to the even 64
        assert_eq!(b.d(), 1.0 / (-127.0f32 / 2.0));
    }

    #[test]
    fn bsums_are_group_sums_and_zero_rows_are_zero() {
        let mut rng = Rng::new(7);
        let mut x = rng.normal_vec(512, 3.0);
        x[256..].fill(0.0);
        let out = quantized(&x);
        let blocks = as_blocks::<BlockQ8K>(&out);
        for g in 0..16 {
            let s: i32 = blocks[0].qs[16 * g..16 * g + 16]
                .iter()
                .map(|&q| q as i32)
                .sum();
            assert_eq!(blocks[0].bsum(g) as i32, s);
        }
        assert_eq!(blocks[1].d(), 0.0);
        assert!(blocks[1].qs.iter().all(|&q| q == 0));
        assert!(blocks[1].bsums.iter().all(|&b| b == 0));
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        let mut rng = Rng::new(1);
        let x = rng.normal_vec(1024, 1.0);
        let out = quantized(&x);
        let mut back = vec![0.0f32; x.len()];
        dequantize(&out, &mut back);
        for (chunk, (xs, bs)) in x.chunks(256).zip(back.chunks(256)).enumerate() {
            let step = as_blocks::<BlockQ8K>(&out)[chunk].d().abs();
            for (a, b) in xs.iter().zip(bs) {
                assert!((a - b).abs() <= step * 0.5001, "{a} vs {b}, step {step}");
            }
        }
    }
}
