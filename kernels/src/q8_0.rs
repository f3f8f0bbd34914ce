//! Q8_0: 32 signed 8-bit quants with an f16 scale. A weight format and the activation format
//! for Q4_0, Q5_0 and Q8_0 weights.

use crate::block::{as_blocks, as_blocks_mut, f16_to_f32, f32_to_f16, for_each_row, Block};
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
}
