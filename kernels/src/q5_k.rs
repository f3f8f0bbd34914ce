//! Q5_K: Q4_K with a fifth bit per quant: bit j of `qh[l]` is the high bit of element l of
//! sub-block j.

use crate::block::{as_blocks, f16_to_f32, for_each_row, Block};
use crate::q4_k::{lane_sums, min_sum, unpack_scales_mins};
use crate::q8_k::BlockQ8K;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ5K {
    pub(crate) d: [u8; 2],
    pub(crate) dmin: [u8; 2],
    pub(crate) scales: [u8; 12],
    pub(crate) qh: [u8; 32],
    pub(crate) qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

// SAFETY: repr(C), only byte arrays, 176 bytes as in ggml.
unsafe impl Block for BlockQ5K {}

/// The 256 unsigned 5-bit quants in element order.
#[inline]
fn unpack_quants(b: &BlockQ5K) -> [u8; 256] {
    let mut q = [0u8; 256];
    for (c, chunk) in b.qs.chunks_exact(32).enumerate() {
        for (l, &byte) in chunk.iter().enumerate() {
            let lo_bit = (b.qh[l] >> (2 * c)) & 1;
            let hi_bit = (b.qh[l] >> (2 * c + 1)) & 1;
            q[64 * c + l] = (byte & 0x0F) | lo_bit << 4;
            q[64 * c + 32 + l] = (byte >> 4) | hi_bit << 4;
        }
    }
    q
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ5K>(src);
    assert_eq!(dst.len(), blocks.len() * 256);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(256)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        let (scales, mins) = unpack_scales_mins(&b.scales);
        let q = unpack_quants(b);
        for (j, (ys, qs)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
            let d1 = d * scales[j] as f32;
            let m1 = min * mins[j] as f32;
            for (o, &v) in ys.iter_mut().zip(qs) {
                *o = d1 * v as f32 - m1;
            }
        }
    }
}

/// `ggml_vec_dot_q5_K_q8_K_generic`, with its float accumulation order.
pub(crate) fn dot(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (scales, mins) = unpack_scales_mins(&xb.scales);
        let aux32 = lane_sums(&unpack_quants(xb), &scales, &yb.qs);
        let d = f16_to_f32(xb.d) * yb.d();
        for (s, &a) in sums.iter_mut().zip(&aux32) {
            *s += d * a as f32;
        }
        let dmin = f16_to_f32(xb.dmin) * yb.d();
        sumf -= dmin * min_sum(&mins, yb) as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

pub(crate) fn dot_rows(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, dot);
}

#[cfg(test)]
mod tests {
    use crate::test_util::check_dot_against_dequantized;
    use crate::GgmlType;

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q5_K, 21);
    }
}
