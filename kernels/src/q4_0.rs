//! Q4_0: 32 4-bit quants with an f16 scale; value = (nibble − 8)·d. Byte j holds element j in
//! its low nibble and element j+16 in its high nibble.

use crate::block::{as_blocks, f16_to_f32, for_each_row, Block};
use crate::q8_0::BlockQ8_0;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ4_0 {
    pub(crate) d: [u8; 2],
    pub(crate) qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

// SAFETY: repr(C), only byte arrays, 18 bytes as in ggml.
unsafe impl Block for BlockQ4_0 {}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ4_0>(src);
    assert_eq!(dst.len(), blocks.len() * 32);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// `ggml_vec_dot_q4_0_q8_0_generic`.
pub(crate) fn dot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for (j, &q) in xb.qs.iter().enumerate() {
            sumi += ((q & 0x0F) as i32 - 8) * yb.qs[j] as i32;
            sumi += ((q >> 4) as i32 - 8) * yb.qs[j + 16] as i32;
        }
        sumf += sumi as f32 * f16_to_f32(xb.d) * yb.d();
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
        check_dot_against_dequantized(GgmlType::Q4_0, 10);
    }
}
