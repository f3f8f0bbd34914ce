//! Q4_1: 32 4-bit quants with f16 scale and offset; value = nibble·d + m, elements ordered as
//! in Q4_0.

use crate::block::{
    as_blocks, f16_to_f32, for_each_row, group_blocks, group_words, row_words, Block, GROUP_ROWS,
};
use crate::q8_1::BlockQ8_1;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ4_1 {
    pub(crate) d: [u8; 2],
    pub(crate) m: [u8; 2],
    pub(crate) qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

// SAFETY: repr(C), only byte arrays, 20 bytes as in ggml.
unsafe impl Block for BlockQ4_1 {}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ4_1>(src);
    assert_eq!(dst.len(), blocks.len() * 32);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

/// `ggml_vec_dot_q4_1_q8_1_generic`: the offset contributes `m · s` per block.
pub(crate) fn dot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for (j, &q) in xb.qs.iter().enumerate() {
            sumi += (q & 0x0F) as i32 * yb.qs[j] as i32;
            sumi += (q >> 4) as i32 * yb.qs[j + 16] as i32;
        }
        sumf += (f16_to_f32(xb.d) * yb.d()) * sumi as f32 + f16_to_f32(xb.m) * yb.s();
    }
    sumf
}

pub(crate) fn dot_rows(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, dot);
}

/// Rows grouped eight at a time for kernels that keep one row per 32-bit lane (as
/// `q4_0::BlockQ4_0Group`, with the rows' mins beside their scales).
#[repr(C)]
pub(crate) struct BlockQ4_1Group {
    pub(crate) d: [[u8; 2]; 8],
    pub(crate) m: [[u8; 2]; 8],
    /// `qs[k][r]`: bytes 4k..4k+3 of row r's `qs`.
    pub(crate) qs: [[[u8; 4]; 8]; 4],
}
const _: () = assert!(size_of::<BlockQ4_1Group>() == GROUP_ROWS * size_of::<BlockQ4_1>());

// SAFETY: repr(C), only byte arrays, eight Q4_1 blocks' worth of bytes.
unsafe impl Block for BlockQ4_1Group {}

/// Rewrites `GROUP_ROWS` rows of Q4_1 (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    group_blocks(
        rows,
        row_bytes,
        group,
        |g: &mut BlockQ4_1Group, x: [&BlockQ4_1; 8]| {
            g.d = x.map(|x| x.d);
            g.m = x.map(|x| x.m);
            g.qs = group_words(x.map(|x| &x.qs[..]));
        },
    );
}

/// Row `r` of a group, block by block, as plain Q4_1: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ4_1Group], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ4_1>());
    for g in group {
        row.extend(g.d[r]);
        row.extend(g.m[r]);
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
        let mut rng = Rng::new(11);
        let row_bytes = GgmlType::Q4_1.row_bytes(3 * 32).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        let groups = as_blocks::<BlockQ4_1Group>(&grouped);
        // Row 6's block 1: its scale, its min, and bytes 8..11 of its qs.
        let block = &rows[6 * row_bytes + 20..][..20];
        assert_eq!(groups[1].d[6], block[..2]);
        assert_eq!(groups[1].m[6], block[2..4]);
        assert_eq!(groups[1].qs[2][6], block[4 + 8..][..4]);
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            assert_eq!(ungroup_row(groups, r), row, "row {r}");
        }
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q4_1, 11);
    }
}
