//! Q3_K: 256 3-bit quants in 16 sub-blocks of 16 with signed 6-bit scales; value =
//! d·(sc − 32)·(q − 4). The low two bits lie as Q2_K's; bit 4h + j of `hmask[l]` is the third
//! bit of element 128h + 32j + l. The twelve `scales` bytes hold the low four bits of scales
//! 0-7 in their low nibbles and of 8-15 in their high nibbles (bytes 0-7), and the top two
//! bits of scale j in bits 2·(j / 4) of byte 8 + j % 4.

use crate::block::{as_blocks, f16_to_f32, for_each_row, Block};
use crate::q8_k::BlockQ8K;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ3K {
    pub(crate) hmask: [u8; 32],
    pub(crate) qs: [u8; 64],
    pub(crate) scales: [u8; 12],
    pub(crate) d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

// SAFETY: repr(C), only byte arrays, 110 bytes as in ggml.
unsafe impl Block for BlockQ3K {}

/// The sixteen six-bit scales (0..63, not yet less 32), four to a little-endian word, as
/// ggml unpacks them a word at a time.
#[inline]
pub(crate) fn scale_words(s: &[u8; 12]) -> [u32; 4] {
    const LOW: u32 = 0x0F0F_0F0F;
    const TOP: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes(s[4 * i..4 * i + 4].try_into().unwrap());
    let (a0, a1, tops) = (word(0), word(1), word(2));
    [
        a0 & LOW | (tops & TOP) << 4,
        a1 & LOW | (tops >> 2 & TOP) << 4,
        a0 >> 4 & LOW | (tops >> 4 & TOP) << 4,
        a1 >> 4 & LOW | (tops >> 6 & TOP) << 4,
    ]
}

/// The sixteen scales, less 32 (−32..31).
#[inline]
pub(crate) fn unpack_scales(s: &[u8; 12]) -> [i8; 16] {
    let words = scale_words(s);
    std::array::from_fn(|j| (words[j / 4] >> (8 * (j % 4))) as u8 as i8 - 32)
}

/// The 256 quants less 4 (−4..3) in element order.
#[inline]
fn unpack_quants(b: &BlockQ3K) -> [i8; 256] {
    std::array::from_fn(|e| {
        let (half, j, l) = (e / 128, e % 128 / 32, e % 32);
        let low = b.qs[32 * half + l] >> (2 * j) & 3;
        let high = b.hmask[l] >> (4 * half + j) & 1;
        (low | high << 2) as i8 - 4
    })
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ3K>(src);
    assert_eq!(dst.len(), blocks.len() * 256);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(256)) {
        let d = f16_to_f32(b.d);
        let scales = unpack_scales(&b.scales);
        let q = unpack_quants(b);
        for (e, (o, &v)) in y.iter_mut().zip(&q).enumerate() {
            *o = d * scales[e / 16] as f32 * v as f32;
        }
    }
}

/// `ggml_vec_dot_q3_K_q8_K_generic`, with its float accumulation order.
pub(crate) fn dot(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (xb, yb) in x.iter().zip(y) {
        let scales = unpack_scales(&xb.scales);
        let q = unpack_quants(xb);
        let mut aux32 = [0i32; 8];
        for (e, (&a, &b)) in q.iter().zip(&yb.qs).enumerate() {
            aux32[e % 8] += scales[e / 16] as i32 * (a as i32 * b as i32);
        }
        let d = f16_to_f32(xb.d) * yb.d();
        for (s, &a) in sums.iter_mut().zip(&aux32) {
            *s += d * a as f32;
        }
    }
    sums.iter().sum()
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
    fn scales_and_quants_follow_ggml_layout() {
        let mut s = [0u8; 12];
        s[1] = 0x5A; // scale 1 low bits 0xA, scale 9 low bits 0x5
        s[9] = 0b10_00_01_11; // top bits: scale 1: 3, scale 5: 1, scale 9: 0, scale 13: 2
        let scales = unpack_scales(&s);
        assert_eq!(scales[1], (0xA | 3 << 4) - 32);
        assert_eq!(scales[5], (1 << 4) - 32);
        assert_eq!(scales[9], 0x5 - 32);
        assert_eq!(scales[13], (2 << 4) - 32);
        let mut b = BlockQ3K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: s,
            d: [0; 2],
        };
        // Element 128 + 96 + 7: low bits 6-7 of byte 32 + 7, third bit 4 + 3 of hmask[7].
        b.qs[32 + 7] = 0b01 << 6;
        b.hmask[7] = 1 << 7;
        let q = unpack_quants(&b);
        assert_eq!(q[128 + 96 + 7], 0b101 - 4);
        assert_eq!(q.iter().filter(|&&v| v != -4).count(), 1);
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q3_K, 24);
    }
}
