//! Q4_K: 256 4-bit quants in 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min;
//! value = d·sc·q − dmin·m. The 32 bytes of `qs` chunk c hold sub-block 2c in their low
//! nibbles and 2c+1 in their high nibbles.

use crate::block::{
    as_blocks, f16_to_f32, for_each_row, group_blocks, group_words, row_words, Block, GROUP_ROWS,
};
use crate::q8_k::BlockQ8K;
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ4K {
    pub(crate) d: [u8; 2],
    pub(crate) dmin: [u8; 2],
    pub(crate) scales: [u8; 12],
    pub(crate) qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

// SAFETY: repr(C), only byte arrays, 144 bytes as in ggml.
unsafe impl Block for BlockQ4K {}

/// The eight 6-bit scales and eight 6-bit mins packed into the 12 scale bytes of Q4_K and
/// Q5_K (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn unpack_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..4 {
        scales[j] = s[j] & 63;
        mins[j] = s[j + 4] & 63;
    }
    for j in 4..8 {
        scales[j] = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        mins[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    (scales, mins)
}

/// The 256 unsigned 4-bit quants in element order.
#[inline]
fn unpack_quants(qs: &[u8; 128]) -> [u8; 256] {
    let mut q = [0u8; 256];
    for (c, chunk) in qs.chunks_exact(32).enumerate() {
        for (l, &b) in chunk.iter().enumerate() {
            q[64 * c + l] = b & 0x0F;
            q[64 * c + 32 + l] = b >> 4;
        }
    }
    q
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ4K>(src);
    assert_eq!(dst.len(), blocks.len() * 256);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(256)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        let (scales, mins) = unpack_scales_mins(&b.scales);
        let q = unpack_quants(&b.qs);
        for (j, (ys, qs)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
            let d1 = d * scales[j] as f32;
            let m1 = min * mins[j] as f32;
            for (o, &v) in ys.iter_mut().zip(qs) {
                *o = d1 * v as f32 - m1;
            }
        }
    }
}

/// Σ over sub-blocks of sc·(q·q8), split into the eight lanes `l ≡ element mod 8` that
/// ggml's generic kernel accumulates separately before scaling by `d`.
#[inline]
pub(crate) fn lane_sums(q: &[u8; 256], scales: &[u8; 8], q8: &[i8; 256]) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (e, (&a, &b)) in q.iter().zip(q8).enumerate() {
        aux32[e % 8] += scales[e / 32] as i32 * (a as i32 * b as i32);
    }
    aux32
}

/// Σ over the 16 groups of 16 activations of m · (group sum): the minimums' share.
#[inline]
pub(crate) fn min_sum(mins: &[u8; 8], y: &BlockQ8K) -> i32 {
    (0..16).map(|g| y.bsum(g) as i32 * mins[g / 2] as i32).sum()
}

/// `ggml_vec_dot_q4_K_q8_K_generic`, with its float accumulation order.
pub(crate) fn dot(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (scales, mins) = unpack_scales_mins(&xb.scales);
        let aux32 = lane_sums(&unpack_quants(&xb.qs), &scales, &yb.qs);
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

/// Rows grouped eight at a time: a group holds, block by block, block b of each of its eight
/// rows, laid out for kernels that keep one row per 32-bit lane (llama.cpp's `repack.cpp`
/// interleaves its q4_K the same way). One 32-byte load holds four quants of every row, and
/// each row's twelve scale bytes are split into three words, word w of all eight rows
/// together, so that one load and a few shifts unpack every row's scales and mins. The same
/// size as the eight blocks, so that a copy of the weights is rewritten in place.
#[repr(C)]
pub(crate) struct BlockQ4KGroup {
    pub(crate) head: KQuantGroupHead,
    /// `qs[8c + k][r]`: bytes 32c+4k..32c+4k+3 of row r's `qs`.
    pub(crate) qs: [[[u8; 4]; 8]; 32],
}
const _: () = assert!(size_of::<BlockQ4KGroup>() == GROUP_ROWS * size_of::<BlockQ4K>());

// SAFETY: repr(C), only byte arrays, eight Q4_K blocks' worth of bytes.
unsafe impl Block for BlockQ4KGroup {}

/// What a group of eight rows' Q4_K or Q5_K blocks holds before the quants.
#[repr(C)]
pub(crate) struct KQuantGroupHead {
    pub(crate) d: [[u8; 2]; 8],
    pub(crate) dmin: [[u8; 2]; 8],
    /// `scales[w][r]`: bytes 4w..4w+3 of row r's `scales`.
    pub(crate) scales: [[[u8; 4]; 8]; 3],
}

impl KQuantGroupHead {
    /// From eight rows' blocks' `d`, `dmin` and `scales`.
    pub(crate) fn of(d: [[u8; 2]; 8], dmin: [[u8; 2]; 8], scales: [&[u8; 12]; 8]) -> Self {
        KQuantGroupHead {
            d,
            dmin,
            scales: group_words(scales.map(|s| &s[..])),
        }
    }

    /// Row r's `d`, `dmin` and `scales` bytes, as its block begins.
    pub(crate) fn row(&self, r: usize) -> impl Iterator<Item = u8> + '_ {
        (self.d[r].into_iter())
            .chain(self.dmin[r])
            .chain(row_words(&self.scales, r))
    }
}

/// Rewrites `GROUP_ROWS` rows of Q4_K (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    group_blocks(
        rows,
        row_bytes,
        group,
        |g: &mut BlockQ4KGroup, x: [&BlockQ4K; 8]| {
            g.head = KQuantGroupHead::of(x.map(|x| x.d), x.map(|x| x.dmin), x.map(|x| &x.scales));
            g.qs = group_words(x.map(|x| &x.qs[..]));
        },
    );
}

/// Row `r` of a group, block by block, as plain Q4_K: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ4KGroup], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ4K>());
    for g in group {
        row.extend(g.head.row(r));
        row.extend(row_words(&g.qs, r));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_dot_against_dequantized, dot_groups_by_rows};
    use crate::GgmlType;

    #[test]
    fn scale_and_min_unpacking_follows_ggml() {
        let s = [
            0b11_000001,
            0b01_000010,
            0b00_000011,
            0b10_111111, // sc 0..3 + high bits of sc 4..7
            0b11_000101,
            0b00_000110,
            0b01_000111,
            0b10_001000, // m 0..3 + high bits of m 4..7
            0x21,
            0x43,
            0x65,
            0x87, // low nibbles: sc 4..7, high nibbles: m 4..7
        ];
        let (sc, m) = unpack_scales_mins(&s);
        assert_eq!(sc, [1, 2, 3, 63, 1 | 3 << 4, 3 | 1 << 4, 5, 7 | 2 << 4]);
        assert_eq!(m, [5, 6, 7, 8, 2 | 3 << 4, 4, 6 | 1 << 4, 8 | 2 << 4]);
    }

    #[test]
    fn grouping_rewrites_eight_rows_and_ungrouping_gives_them_back() {
        let mut rng = crate::test_util::Rng::new(7);
        let n = 3 * 256;
        let row_bytes = GgmlType::Q4_K.row_bytes(n).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        assert_ne!(grouped, rows);
        let groups = as_blocks::<BlockQ4KGroup>(&grouped);
        assert_eq!(
            groups[1].qs[8 * 2 + 3][5],
            rows[5 * row_bytes + 144 + 16 + 64 + 12..][..4]
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
        check_dot_against_dequantized(GgmlType::Q4_K, 20);
    }
}
