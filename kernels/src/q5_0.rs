//! Q5_0: 32 5-bit quants with an f16 scale; value = (q − 16)·d. The low four bits are packed
//! as in Q4_0; bit j of the little-endian u32 `qh` is the fifth bit of element j.

use crate::block::{as_blocks, f16_to_f32, for_each_row, Block};
use crate::q8_0::BlockQ8_0;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ5_0 {
    pub(crate) d: [u8; 2],
    pub(crate) qh: [u8; 4],
    pub(crate) qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

// SAFETY: repr(C), only byte arrays, 22 bytes as in ggml.
unsafe impl Block for BlockQ5_0 {}

/// The 5-bit quants of elements j and j+16, without the −16 offset.
#[inline]
pub(crate) fn quant_pair(qs: &[u8; 16], qh: u32, j: usize) -> (i32, i32) {
    let lo = (qs[j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
    let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
    (lo as i32, hi as i32)
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ5_0>(src);
    assert_eq!(dst.len(), blocks.len() * 32);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let (lo, hi) = quant_pair(&b.qs, qh, j);
            y[j] = (lo - 16) as f32 * d;
            y[j + 16] = (hi - 16) as f32 * d;
        }
    }
}

/// `ggml_vec_dot_q5_0_q8_0_generic`.
pub(crate) fn dot(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(xb.qh);
        let mut sumi = 0i32;
        for j in 0..16 {
            let (lo, hi) = quant_pair(&xb.qs, qh, j);
            sumi += (lo - 16) * yb.qs[j] as i32 + (hi - 16) * yb.qs[j + 16] as i32;
        }
        sumf += (f16_to_f32(xb.d) * yb.d()) * sumi as f32;
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
        check_dot_against_dequantized(GgmlType::Q5_0, 12);
    }
}
