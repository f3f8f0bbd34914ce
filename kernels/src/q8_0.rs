//! Q8_0: 32 signed 8-bit quants with an f16 scale. A weight format and the activation format
//! for Q4_0, Q5_0 and Q8_0 weights.

use crate::block::{
    as_blocks, as_blocks_mut, f16_to_f32, f32_to_f16, for_each_row, Block, GROUP_ROWS,
};
use std::mem::size_of;

#[repr(C)]
pub(crate) struct BlockQ8_0 {
    pub(crate) d: [u8; 2],
    pub(crate) qs: [i8; 32],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

// SAFETY: repr(C), only byte arrays, 34 bytes as in ggml.
unsafe impl Block for BlockQ8_0 {}

impl BlockQ8_0 {
    #[inline]
    pub(crate) fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// The scale and its inverse for a block whose largest magnitude is `amax`.
///
/// llama.cpp has three Q8_0/Q8_1 activation quantizers: the portable `quantize_row_q8_0_ref`
/// (`id = 1/d`, `roundf`: ties away from zero), the NEON one (`id = 1/d`, ties to even) and
/// the AVX one (`id = 127/amax`, ties to even). The AVX one is what llama.cpp runs on the x86
/// machines we compare against, so every ISA here reproduces it and they all agree bit for bit.
#[inline]
pub(crate) fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// Quantizes `src` to Q8_0 (see [`scales`] for which llama.cpp variant this matches).
pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    let blocks = as_blocks_mut::<BlockQ8_0>(dst);
    assert_eq!(src.len(), blocks.len() * 32);
    for (x, y) in src.chunks_exact(32).zip(blocks) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = scales(amax);
        y.d = f32_to_f16(d);
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even() as i8;
        }
    }
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    let blocks = as_blocks::<BlockQ8_0>(src);
    assert_eq!(dst.len(), blocks.len() * 32);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(32)) {
        let d = b.d();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// `ggml_vec_dot_q8_0_q8_0_generic`.
pub(crate) fn dot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sumi: i32 = xb
            .qs
            .iter()
            .zip(&yb.qs)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sumf += sumi as f32 * (xb.d() * yb.d());
    }
    sumf
}

pub(crate) fn dot_rows(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, dot);
}

/// Rows grouped eight at a time for kernels that keep one row per 32-bit lane (as
/// `q4_k::BlockQ4KGroup`): block b of each of the eight rows, four quants of every row in
/// each 32 bytes. The quants are stored plus 128, as unsigned bytes, which is how `vpdpbusd`
/// takes its unsigned side; the kernels take the offset back out with −128·Σa per
/// activation block. The same size as the eight blocks, so that a copy of the weights is
/// rewritten in place.
#[repr(C)]
pub(crate) struct BlockQ8_0Group {
    pub(crate) d: [[u8; 2]; 8],
    /// `qs[k][r]`: quants 4k..4k+3 of row r, each plus 128.
    pub(crate) qs: [[[u8; 4]; 8]; 8],
}
const _: () = assert!(size_of::<BlockQ8_0Group>() == GROUP_ROWS * size_of::<BlockQ8_0>());

// SAFETY: repr(C), only byte arrays, eight Q8_0 blocks' worth of bytes.
unsafe impl Block for BlockQ8_0Group {}

/// A signed quant as the unsigned byte `q + 128`, and back: both flip the top bit.
fn plus_128(q: u8) -> u8 {
    q ^ 0x80
}

/// Rewrites `GROUP_ROWS` rows of Q8_0 (`rows`, each `row_bytes` long) as one group.
pub(crate) fn group(rows: &[u8], row_bytes: usize, group: &mut [u8]) {
    let rows: Vec<&[BlockQ8_0]> = rows.chunks_exact(row_bytes).map(as_blocks).collect();
    assert_eq!(rows.len(), GROUP_ROWS, "a group is eight rows");
    for (b, g) in as_blocks_mut::<BlockQ8_0Group>(group)
        .iter_mut()
        .enumerate()
    {
        for (r, row) in rows.iter().enumerate() {
            let x = &row[b];
            g.d[r] = x.d;
            for (k, four) in x.qs.chunks_exact(4).enumerate() {
                g.qs[k][r] = std::array::from_fn(|i| plus_128(four[i] as u8));
            }
        }
    }
}

/// Row `r` of a group, block by block, as plain Q8_0: `group`'s inverse.
pub(crate) fn ungroup_row(group: &[BlockQ8_0Group], r: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(group.len() * size_of::<BlockQ8_0>());
    for g in group {
        row.extend(g.d[r]);
        row.extend(g.qs.iter().flat_map(|words| words[r].map(plus_128)));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_dot_against_dequantized, Rng};
    use crate::GgmlType;

    #[test]
    fn ties_round_half_to_even() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0; // amax 127: id = 1 exactly
        let ties = [0.5f32, 1.5, 2.5, -2.5, -0.5, 126.5, -3.5];
        x[1..1 + ties.len()].copy_from_slice(&ties);
        let mut out = [0u8; 34];
        quantize(&x, &mut out);
        let b = &as_blocks::<BlockQ8_0>(&out)[0];
        assert_eq!(b.d(), 1.0);
        assert_eq!(&b.qs[..8], &[127, 0, 2, 2, -2, 0, 126, -4]);
    }

    #[test]
    fn inverse_scale_is_127_over_amax_not_one_over_d() {
        // Find a block where llama.cpp's reference quantizer (x·(1/d)) and its AVX one
        // (x·(127/amax)) give different quants, and check we give the AVX answer.
        let found = (1..10_000).find_map(|i| {
            let amax = 0.37 + i as f32 * 1e-4;
            let d = amax / 127.0;
            (0..127).map(|k| (k as f32 + 0.5) * d).find_map(|x| {
                let avx = (x * (127.0 / amax)).round_ties_even();
                let reference = (x * (1.0 / d)).round_ties_even();
                (avx != reference).then_some((amax, x, avx))
            })
        });
        let (amax, x, expected) = found.expect("the two formulas disagree somewhere");
        let mut block = [0.0f32; 32];
        block[0] = amax;
        block[1] = x;
        let mut out = [0u8; 34];
        quantize(&block, &mut out);
        assert_eq!(as_blocks::<BlockQ8_0>(&out)[0].qs[1] as f32, expected);
    }

    #[test]
    fn round_trip_error_is_within_half_a_step_plus_scale_rounding() {
        let mut rng = Rng::new(2);
        let x = rng.normal_vec(1024, 2.0);
        let mut q = vec![0u8; 32 * 34];
        quantize(&x, &mut q);
        let mut back = vec![0.0f32; x.len()];
        dequantize(&q, &mut back);
        for (i, (a, b)) in x.iter().zip(&back).enumerate() {
            let amax = x[i / 32 * 32..][..32]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            // half a quant step, plus f16 rounding of the scale (2^-11 relative) times 127 steps
            let bound = amax / 127.0 * 0.5 + amax * 2.0f32.powi(-11) * 1.01;
            assert!((a - b).abs() <= bound, "{a} vs {b}");
        }
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::Q8_0, 3);
    }

    #[test]
    fn grouping_rewrites_eight_rows_and_ungrouping_gives_them_back() {
        let mut rng = Rng::new(8);
        let row_bytes = GgmlType::Q8_0.row_bytes(3 * 32).unwrap();
        let rows = rng.bytes(GROUP_ROWS * row_bytes);
        let mut grouped = vec![0u8; rows.len()];
        group(&rows, row_bytes, &mut grouped);
        let groups = as_blocks::<BlockQ8_0Group>(&grouped);
        // Row 5's block 1: its scale, and its quants 12..15 plus 128.
        let block = &rows[5 * row_bytes + 34..][..34];
        assert_eq!(groups[1].d[5], block[..2]);
        let quants: [u8; 4] = block[2 + 12..][..4].try_into().unwrap();
        assert_eq!(groups[1].qs[3][5], quants.map(|q| q ^ 0x80));
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            assert_eq!(ungroup_row(groups, r), row, "row {r}");
        }
    }
}
