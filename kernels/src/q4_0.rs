//! Q4_0: 32 4-bit quants with an f16 scale; value = (nibble − 8)·d. Byte j holds element j in
//! its low nibble and element j+16 in its high nibble.

use crate::block::{
    as_blocks, f16_to_f32, for_each_row, group_blocks, group_words, row_words, Block, GROUP_ROWS,
};
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

/// Rows grouped eight at a time for kernels that keep one row per 32-bit lane (as
/// `q5_0::BlockQ5_0Group`, without the fifth bits): block b of each of the eight rows. Each 32
/// bytes of `qs` hold four bytes of every row, whose low nibbles are quants 4k..4k+3 and high
/// nibbles 16+4k..16+4k+3. The same size as the eight blocks, so that a copy of the weights is
/// rewritten in place.
#[repr(C)]
pub(crate) struct BlockQ4_0Group {
    pub(crate) d: [[u8; 2]; 8],
    /// `qs[k][r]`: bytes 4k..4k+3 of row r's `qs`.
    pub(crate) qs: [[[u8; 4]; 8]; 4],
}
const _: () = assert!(size_of::<BlockQ4_0Group>() == GROUP_ROWS * size_of::<BlockQ4_0>());

// SAFETY: repr(C), only byte arrays, eight Q4_0 blocks' worth of bytes.
unsafe impl Block for BlockQ4_0Group {}

/// Rewrites `GROUP_ROWS` rows of Q4_0 (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    group_blocks(
        rows,
        row_bytes,
        group,
        |g: &mut BlockQ4_0Group, x: [&BlockQ4_0; 8]| {
            g.d = x.map(|x| x.d);
            g.qs = group_words(x.map(|x| &x.qs[..]));
        },
    );
}

/// Row `r` of a group, block by block, as plain Q4_0: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ4_0Group], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ4_0>());
    for g in group {
        row.extend(g.d[r]);
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
        let mut rng = Rng::new(10);
        let row_bytes = GgmlType::Q4_0.row_bytes(3 * 32).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        let groups = as_blocks::<BlockQ4_0Group>(&grouped);
        // Row 5's block 2: its scale, and bytes 12..15 of its qs.
        let block = &rows[5 * row_bytes + 2 * 18..][..18];
        assert_eq!(groups[2].d[5], block[..2]);
        assert_eq!(groups[2].qs[3][5], block[2 + 12..][..4]);
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            assert_eq!(ungroup_row(groups, r), row, "row {r}");
        }
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q4_0, 10);
    }
}
