//! Q5_K: Q4_K with a fifth bit per quant: bit j of `qh[l]` is the high bit of element l of
//! sub-block j.

use crate::block::{
    as_blocks, f16_to_f32, for_each_row, group_blocks, group_words, row_words, Block, GROUP_ROWS,
};
use crate::q4_k::{lane_sums, min_sum, unpack_scales_mins, KQuantGroupHead};
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

/// Rows grouped eight at a time, as `q4_k::BlockQ4KGroup` (scales, mins and nibbles laid out
/// alike), with `qh` grouped as the nibbles are: one 32-byte load holds the fifth bits of four
/// elements of every row in all eight sub-blocks, so a shift and a mask give any sub-block's
/// to the register of nibbles beside them. The same size as the eight blocks, so that a copy
/// of the weights is rewritten in place.
#[repr(C)]
pub(crate) struct BlockQ5KGroup {
    pub(crate) head: KQuantGroupHead,
    /// `qh[k][r]`: bytes 4k..4k+3 of row r's `qh`.
    pub(crate) qh: [[[u8; 4]; 8]; 8],
    /// `qs[8c + k][r]`: bytes 32c+4k..32c+4k+3 of row r's `qs`.
    pub(crate) qs: [[[u8; 4]; 8]; 32],
}
const _: () = assert!(size_of::<BlockQ5KGroup>() == GROUP_ROWS * size_of::<BlockQ5K>());

// SAFETY: repr(C), only byte arrays, eight Q5_K blocks' worth of bytes.
unsafe impl Block for BlockQ5KGroup {}

/// Rewrites `GROUP_ROWS` rows of Q5_K (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    group_blocks(
        rows,
        row_bytes,
        group,
        |g: &mut BlockQ5KGroup, x: [&BlockQ5K; 8]| {
            g.head = KQuantGroupHead::of(x.map(|x| x.d), x.map(|x| x.dmin), x.map(|x| &x.scales));
            g.qh = group_words(x.map(|x| &x.qh[..]));
            g.qs = group_words(x.map(|x| &x.qs[..]));
        },
    );
}

/// Row `r` of a group, block by block, as plain Q5_K: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ5KGroup], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ5K>());
    for g in group {
        row.extend(g.head.row(r));
        row.extend(row_words(&g.qh, r));
        row.extend(row_words(&g.qs, r));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_dot_against_dequantized, dot_groups_by_rows, Rng};
    use crate::GgmlType;

    #[test]
    fn grouping_rewrites_eight_rows_and_ungrouping_gives_them_back() {
        let mut rng = Rng::new(11);
        let n = 3 * 256;
        let row_bytes = GgmlType::Q5_K.row_bytes(n).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        let groups = as_blocks::<BlockQ5KGroup>(&grouped);
        // Row 5's block 1: bytes 32·2 + 12.. of its qs, and bytes 24..27 of its qh.
        let block = &rows[5 * row_bytes + 176..][..176];
        assert_eq!(groups[1].qs[8 * 2 + 3][5], block[48 + 64 + 12..][..4]);
        assert_eq!(groups[1].qh[6][5], block[16 + 24..][..4]);
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            assert_eq!(ungroup_row(groups, r), row, "row {r}");
        }
        let mut act = vec![0u8; GgmlType::Q8_K.row_bytes(n).unwrap()];
        crate::q8_k::quantize(&rng.normal_vec(n, 1.0), &mut act);
        let (mut by_rows, mut by_groups) = ([0f32; GROUP_ROWS], [0f32; GROUP_ROWS]);
        dot_rows(&rows, &act, &mut by_rows);
        dot_groups_by_rows(&grouped, &act, &mut by_groups, ungroup_row, dot);
        assert_eq!(by_groups.map(f32::to_bits), by_rows.map(f32::to_bits));
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q5_K, 21);
    }
}
