//! Q6_K: 256 6-bit quants in 16 sub-blocks of 16 with signed 8-bit scales;
//! value = d·sc·(q − 32). Per 128-element half, `ql` holds the low nibbles (elements l and
//! l+64 in byte l, l+32 and l+96 in byte l+32) and `qh[l]` the 2-bit high parts of elements
//! l, l+32, l+64, l+96.

use crate::block::{as_blocks, as_blocks_mut, f16_to_f32, for_each_row, Block, GROUP_ROWS};
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

/// Q6_K rows grouped eight at a time, block by block, for kernels that keep one row per
/// 32-bit lane, as `q4_k::BlockQ4KGroup`: the quant bytes of the eight rows interleave four at
/// a time, and the scales of a sub-block lie together. The three words that make up four
/// quants of each of four chunks (two of `ql`, one of `qh`) lie side by side, so that a kernel
/// reads the group front to back. The same size as the eight blocks.
#[repr(C)]
pub(crate) struct BlockQ6KGroup {
    pub(crate) d: [[u8; 2]; 8],
    /// `scales[s][r]`: row r's scale of sub-block s.
    pub(crate) scales: [[i8; 8]; 16],
    /// `qs[h][k][i][r]`: for i = 0 and 1, bytes 32(2h+i)+4k..+3 of row r's `ql`; for i = 2,
    /// bytes 32h+4k..+3 of its `qh`.
    pub(crate) qs: [[[[[u8; 4]; 8]; 3]; 8]; 2],
}
const _: () = assert!(size_of::<BlockQ6KGroup>() == GROUP_ROWS * size_of::<BlockQ6K>());

// SAFETY: repr(C), only byte arrays, eight Q6_K blocks' worth of bytes.
unsafe impl Block for BlockQ6KGroup {}

/// Rewrites `GROUP_ROWS` rows of Q6_K (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    let rows: Vec<&[BlockQ6K]> = rows.chunks_exact(row_bytes).map(as_blocks).collect();
    assert_eq!(rows.len(), GROUP_ROWS, "a group is eight rows");
    for (b, g) in as_blocks_mut::<BlockQ6KGroup>(group).iter_mut().enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b];
            g.d[r] = x.d;
            for (s, &scale) in x.scales.iter().enumerate() {
                g.scales[s][r] = scale;
            }
            for (i, four) in x.ql.chunks_exact(4).enumerate() {
                let (stretch, k) = (i / 8, i % 8);
                g.qs[stretch / 2][k][stretch % 2][r].copy_from_slice(four);
            }
            for (i, four) in x.qh.chunks_exact(4).enumerate() {
                g.qs[i / 8][i % 8][2][r].copy_from_slice(four);
            }
        }
    }
}

/// Row `r` of a group, block by block, as plain Q6_K: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ6KGroup], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ6K>());
    for g in group {
        for stretch in 0..4 {
            row.extend((0..8).flat_map(|k| g.qs[stretch / 2][k][stretch % 2][r]));
        }
        for h in 0..2 {
            row.extend((0..8).flat_map(|k| g.qs[h][k][2][r]));
        }
        row.extend(g.scales.iter().map(|scales| scales[r] as u8));
        row.extend(g.d[r]);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_dot_against_dequantized, dot_groups_by_rows};
    use crate::GgmlType;

    #[test]
    fn grouping_rewrites_eight_rows_and_ungrouping_gives_them_back() {
        let mut rng = crate::test_util::Rng::new(8);
        let n = 3 * 256;
        let row_bytes = GgmlType::Q6_K.row_bytes(n).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        assert_ne!(grouped, rows);
        let groups = as_blocks::<BlockQ6KGroup>(&grouped);
        let qh = &rows[5 * row_bytes + 210 + 128 + 32 + 12..][..4];
        assert_eq!(groups[1].qs[1][3][2][5], qh);
        assert_eq!(
            groups[1].qs[1][3][1][5],
            rows[5 * row_bytes + 210 + 96 + 12..][..4]
        );
        assert_eq!(
            groups[2].scales[9][4] as u8,
            rows[4 * row_bytes + 2 * 210 + 192 + 9]
        );
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
        check_dot_against_dequantized(GgmlType::Q6_K, 22);
    }
}
