//! Q5_1: 32 5-bit quants with f16 scale and offset; value = q·d + m, bits laid out as Q5_0.

use crate::block::{
    as_blocks, f16_to_f32, for_each_row, group_blocks, group_words, row_words, Block, GROUP_ROWS,
};
use crate::q5_0::{group_fifth_bits, quant_pair, row_fifth_bits};
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

/// Rows grouped eight at a time for kernels that keep one row per 32-bit lane (as
/// `q5_0::BlockQ5_0Group`, with the rows' mins beside their scales).
#[repr(C)]
pub(crate) struct BlockQ5_1Group {
    pub(crate) d: [[u8; 2]; 8],
    pub(crate) m: [[u8; 2]; 8],
    /// `high_bits[k]`, little-endian: bit 4r + i is the fifth bit of quant 4k + i of row r.
    pub(crate) high_bits: [[u8; 4]; 8],
    /// `qs[k][r]`: bytes 4k..4k+3 of row r's `qs`.
    pub(crate) qs: [[[u8; 4]; 8]; 4],
}
const _: () = assert!(size_of::<BlockQ5_1Group>() == GROUP_ROWS * size_of::<BlockQ5_1>());

// SAFETY: repr(C), only byte arrays, eight Q5_1 blocks' worth of bytes.
unsafe impl Block for BlockQ5_1Group {}

/// Rewrites `GROUP_ROWS` rows of Q5_1 (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    group_blocks(
        rows,
        row_bytes,
        group,
        |g: &mut BlockQ5_1Group, x: [&BlockQ5_1; 8]| {
            g.d = x.map(|x| x.d);
            g.m = x.map(|x| x.m);
            g.high_bits = group_fifth_bits(x.map(|x| x.qh));
            g.qs = group_words(x.map(|x| &x.qs[..]));
        },
    );
}

/// Row `r` of a group, block by block, as plain Q5_1: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ5_1Group], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ5_1>());
    for g in group {
        row.extend(g.d[r]);
        row.extend(g.m[r]);
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
        let mut rng = Rng::new(12);
        let row_bytes = GgmlType::Q5_1.row_bytes(3 * 32).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        let groups = as_blocks::<BlockQ5_1Group>(&grouped);
        // Row 5's block 1: its min, bytes 12..15 of its qs, and the fifth bits of quants 24..27.
        let block = &rows[5 * row_bytes + 24..][..24];
        assert_eq!(groups[1].m[5], block[2..4]);
        assert_eq!(groups[1].qs[3][5], block[8 + 12..][..4]);
        let qh = u32::from_le_bytes(block[4..8].try_into().unwrap());
        let mask = u32::from_le_bytes(groups[1].high_bits[6]);
        assert_eq!(mask >> 20 & 0xF, qh >> 24 & 0xF);
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            assert_eq!(ungroup_row(groups, r), row, "row {r}");
        }
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q5_1, 13);
    }
}
