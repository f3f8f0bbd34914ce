//! Q6_K: 256 6-bit quants in 16 sub-blocks of 16 with signed 8-bit scales;
//! value = d·sc·(q − 32). Per 128-element half, `ql` holds the low nibbles (elements l and
//! l+64 in byte l, l+32 and l+96 in byte l+32) and `qh[l]` the 2-bit high parts of elements
//! l, l+32, l+64, l+96.

use crate::block::{as_blocks, f16_to_f32, for_each_row, Block};
use crate::q8_k::BlockQ8K;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ6K {
    pub(crate) ql: [u8; 128],
    pub(crate) qh: [u8; 64],
    pub(crate) scales: [i8; 16],
    pub(crate) d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

// SAFETY: repr(C), only byte arrays, 210 bytes as in ggml.
unsafe impl Block for BlockQ6K {}

/// The 256 signed quants (q − 32) in element order.
#[inline]
fn unpack_quants(b: &BlockQ6K) -> [i8; 256] {
    let mut a = [0i8; 256];
    for h in 0..2 {
        let ql = &b.ql[64 * h..64 * h + 64];
        let qh = &b.qh[32 * h..32 * h + 32];
        let a = &mut a[128 * h..128 * h + 128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ6K>(src);
    assert_eq!(dst.len(), blocks.len() * 256);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(256)) {
        let d = f16_to_f32(b.d);
        let q = unpack_quants(b);
        for (e, (o, &v)) in y.iter_mut().zip(&q).enumerate() {
            *o = d * b.scales[e / 16] as f32 * v as f32;
        }
    }
}

/// `ggml_vec_dot_q6_K_q8_K_generic`, with its float accumulation order.
pub(crate) fn dot(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (xb, yb) in x.iter().zip(y) {
        let q = unpack_quants(xb);
        let mut aux32 = [0i32; 8];
        for (e, (&a, &b)) in q.iter().zip(&yb.qs).enumerate() {
            aux32[e % 8] += xb.scales[e / 16] as i32 * (a as i32 * b as i32);
        }
        let d = f16_to_f32(xb.d) * yb.d();
        for (s, &a) in sums.iter_mut().zip(&aux32) {
            *s += d * a as f32;
        }
    }
    let mut sumf = 0.0f32;
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
        check_dot_against_dequantized(GgmlType::Q6_K, 22);
    }
}
