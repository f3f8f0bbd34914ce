//! Q2_K: 256 2-bit quants in 16 sub-blocks of 16, each with a 4-bit scale and a 4-bit min
//! (`scales[j]`: scale in the low nibble, min in the high); value = d·sc·q − dmin·m. Per
//! 128-element half, byte l of its 32 `qs` bytes holds, two bits at a time from the lowest,
//! elements l, l+32, l+64 and l+96 of the half.

use crate::block::{as_blocks, f16_to_f32, for_each_row, Block};
use crate::q8_k::BlockQ8K;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ2K {
    pub(crate) scales: [u8; 16],
    pub(crate) qs: [u8; 64],
    pub(crate) d: [u8; 2],
    pub(crate) dmin: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

// SAFETY: repr(C), only byte arrays, 84 bytes as in ggml.
unsafe impl Block for BlockQ2K {}

/// The 256 quants (0..3) in element order.
#[inline]
fn unpack_quants(qs: &[u8; 64]) -> [u8; 256] {
    let mut q = [0u8; 256];
    for (e, q) in q.iter_mut().enumerate() {
        let (half, j, l) = (e / 128, e % 128 / 32, e % 32);
        *q = qs[32 * half + l] >> (2 * j) & 3;
    }
    q
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ2K>(src);
    assert_eq!(dst.len(), blocks.len() * 256);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(256)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        let q = unpack_quants(&b.qs);
        for (e, (o, &v)) in y.iter_mut().zip(&q).enumerate() {
            let sc = b.scales[e / 16];
            *o = d * (sc & 0xF) as f32 * v as f32 - min * (sc >> 4) as f32;
        }
    }
}

/// Σ over the 16 sub-blocks of m · (the activation's sum over the sub-block): the mins' share.
#[inline]
pub(crate) fn min_sum(x: &BlockQ2K, y: &BlockQ8K) -> i32 {
    (0..16)
        .map(|j| y.bsum(j) as i32 * (x.scales[j] >> 4) as i32)
        .sum()
}

/// `ggml_vec_dot_q2_K_q8_K_generic`, with its float accumulation order.
pub(crate) fn dot(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let q = unpack_quants(&xb.qs);
        let isum: i32 = (q.iter().zip(&yb.qs).enumerate())
            .map(|(e, (&a, &b))| (xb.scales[e / 16] & 0xF) as i32 * a as i32 * b as i32)
            .sum();
        let mins = min_sum(xb, yb);
        let dall = yb.d() * f16_to_f32(xb.d);
        let dmin = yb.d() * f16_to_f32(xb.dmin);
        sumf += dall * isum as f32 - dmin * mins as f32;
    }
    sumf
}

pub(crate) fn dot_rows(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, dot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::check_dot_against_dequantized;
    use crate::GgmlType;

    #[test]
    fn quants_follow_ggml_layout() {
        let mut qs = [0u8; 64];
        // Element 128 + 64 + 5: half 1, bits 4-5 of byte 5 of that half.
        qs[32 + 5] = 0b10 << 4;
        let q = unpack_quants(&qs);
        assert_eq!(q[128 + 64 + 5], 2);
        assert_eq!(q.iter().filter(|&&v| v != 0).count(), 1);
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q2_K, 23);
    }
}
