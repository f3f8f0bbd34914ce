//! Q5_0: 32 5-bit quants with an f16 scale; value = (q − 16)·d. The low four bits are packed
//! as in Q4_0; bit j of the little-endian u32 `qh` is the fifth bit of element j.

use crate::block::{
    as_blocks, f16_to_f32, for_each_row, group_blocks, group_words, row_words, Block, GROUP_ROWS,
};
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

/// Rows grouped eight at a time for kernels that keep one row per 32-bit lane (as
/// `q4_k::BlockQ4KGroup`): block b of each of the eight rows. Each 32 bytes of `qs` hold four
/// bytes of every row, whose low nibbles are quants 4k..4k+3 and high nibbles 16+4k..16+4k+3;
/// the fifth bits are transposed to match, one 32-bit mask per four quants of every row, so
/// that one masked add (AVX-512) puts them into a whole register. The same size as the eight
/// blocks, so that a copy of the weights is rewritten in place.
#[repr(C)]
pub(crate) struct BlockQ5_0Group {
    pub(crate) d: [[u8; 2]; 8],
    /// `high_bits[k]`, little-endian: bit 4r + i is the fifth bit of quant 4k + i of row r.
    pub(crate) high_bits: [[u8; 4]; 8],
    /// `qs[k][r]`: bytes 4k..4k+3 of row r's `qs`.
    pub(crate) qs: [[[u8; 4]; 8]; 4],
}
const _: () = assert!(size_of::<BlockQ5_0Group>() == GROUP_ROWS * size_of::<BlockQ5_0>());

// SAFETY: repr(C), only byte arrays, eight Q5_0 blocks' worth of bytes.
unsafe impl Block for BlockQ5_0Group {}

/// Rewrites `GROUP_ROWS` rows of Q5_0 (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    group_blocks(
        rows,
        row_bytes,
        group,
        |g: &mut BlockQ5_0Group, x: [&BlockQ5_0; 8]| {
            g.d = x.map(|x| x.d);
            g.high_bits = group_fifth_bits(x.map(|x| x.qh));
            g.qs = group_words(x.map(|x| &x.qs[..]));
        },
    );
}

/// The fifth bits (`qh`) of eight rows' blocks of Q5_0 or Q5_1 as their groups hold them:
/// mask k has bit 4r + i set where quant 4k + i of row r has its fifth bit.
pub(crate) fn group_fifth_bits(qh: [[u8; 4]; 8]) -> [[u8; 4]; 8] {
    let mut masks = [0u32; 8];
    for (r, qh) in qh.iter().enumerate() {
        let qh = u32::from_le_bytes(*qh);
        for (k, mask) in masks.iter_mut().enumerate() {
            *mask |= (qh >> (4 * k) & 0xF) << (4 * r);
        }
    }
    masks.map(u32::to_le_bytes)
}

/// Row r's `qh` back out of `group_fifth_bits`.
pub(crate) fn row_fifth_bits(masks: &[[u8; 4]; 8], r: usize) -> [u8; 4] {
    let qh = masks.iter().enumerate().fold(0u32, |qh, (k, mask)| {
        qh | (u32::from_le_bytes(*mask) >> (4 * r) & 0xF) << (4 * k)
    });
    qh.to_le_bytes()
}

/// Row `r` of a group, block by block, as plain Q5_0: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ5_0Group], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ5_0>());
    for g in group {
        row.extend(g.d[r]);
        row.extend(row_fifth_bits(&g.high_bits, r));
        row.extend(row_words(&g.qs, r));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_dot_against_dequantized, Rng};
    use crate::GgmlType;

    #[test]
    fn grouping_rewrites_eight_rows_and_ungrouping_gives_them_back() {
        let mut rng = Rng::new(9);
        let row_bytes = GgmlType::Q5_0.row_bytes(3 * 32).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        let groups = as_blocks::<BlockQ5_0Group>(&grouped);
        // Row 5's block 1: bytes 12..15 of its qs, and the fifth bits of its quants 24..27.
        let block = &rows[5 * row_bytes + 22..][..22];
        assert_eq!(groups[1].qs[3][5], block[6 + 12..][..4]);
        let qh = u32::from_le_bytes(block[2..6].try_into().unwrap());
        let mask = u32::from_le_bytes(groups[1].high_bits[6]);
        assert_eq!(mask >> 20 & 0xF, qh >> 24 & 0xF);
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            assert_eq!(ungroup_row(groups, r), row, "row {r}");
        }
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q5_0, 12);
    }
}
