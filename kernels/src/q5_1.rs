//! Q5_1: 32 5-bit quants with f16 scale and offset; value = q·d + m, bits laid out as Q5_0.

use crate::block::{as_blocks, f16_to_f32, for_each_row, Block};
use crate::q5_0::quant_pair;
use crate::q8_1::BlockQ8_1;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ5_1 {
    pub(crate) d: [u8; 2],
    pub(crate) m: [u8; 2],
    pub(crate) qh: [u8; 4],
    pub(crate) qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

// SAFETY: repr(C), only byte arrays, 24 bytes as in ggml.
unsafe impl Block for BlockQ5_1 {}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ5_1>(src);
    assert_eq!(dst.len(), blocks.len() * 32);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let (lo, hi) = quant_pair(&b.qs, qh, j);
            y[j] = lo as f32 * d + m;
            y[j + 16] = hi as f32 * d + m;
        }
    }
}

/// `ggml_vec_dot_q5_1_q8_1_generic`.
pub(crate) fn dot(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(xb.qh);
        let mut sumi = 0i32;
        for j in 0..16 {
            let (lo, hi) = quant_pair(&xb.qs, qh, j);
            sumi += lo * yb.qs[j] as i32 + hi * yb.qs[j + 16] as i32;
        }
        sumf += (f16_to_f32(xb.d) * yb.d()) * sumi as f32 + f16_to_f32(xb.m) * yb.s();
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
        check_dot_against_dequantized(GgmlType::Q5_1, 13);
    }
}
