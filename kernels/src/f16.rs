//! F16 weights and activations: IEEE half, little-endian.

use crate::block::{as_blocks, f16_to_f32, f32_to_f16, for_each_row, Block};
use std::mem::size_of;

#[repr(C)]
pub(crate) struct F16(pub(crate) [u8; 2]);
const _: () = assert!(size_of::<F16>() == 2);

// SAFETY: repr(C), one byte array, 2 bytes.
unsafe impl Block for F16 {}

/// Rounds to nearest even, as ggml's `ggml_cpu_fp32_to_fp16`.
pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 2);
    for (o, &x) in dst.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&f32_to_f16(x));
    }
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (o, x) in dst.iter_mut().zip(as_blocks::<F16>(src)) {
        *o = f16_to_f32(x.0);
    }
}

/// `ggml_vec_dot_f16` without SIMD: f32 products summed in f64.
pub(crate) fn dot(x: &[F16], y: &[F16]) -> f32 {
    x.iter().zip(y).fold(0.0f64, |s, (a, b)| {
        s + (f16_to_f32(a.0) * f16_to_f32(b.0)) as f64
    }) as f32
}

pub(crate) fn dot_rows(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, dot);
}

/// For each of `queries` queries: `out[d] += Σ_i weights[i] · rows[i][d]` over rows of
/// `out.len() / queries` halves, each element's sum taken over `i` in order: the weighted sum
/// of values in attention.
pub(crate) fn accumulate_rows(weights: &[f32], rows: &[u8], out: &mut [f32], queries: usize) {
    let (dim, n_rows) = (out.len() / queries, weights.len() / queries);
    for (weights, out) in weights.chunks_exact(n_rows).zip(out.chunks_exact_mut(dim)) {
        for (&w, row) in weights.iter().zip(rows.chunks_exact(2 * dim)) {
            for (o, x) in out.iter_mut().zip(as_blocks::<F16>(row)) {
                *o += w * f16_to_f32(x.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::check_dot_against_dequantized;
    use crate::GgmlType;

    #[test]
    fn conversion_rounds_to_nearest_even_and_round_trips() {
        // 1 + 2^-11 lies halfway between 1 and the next half (1 + 2^-10): ties go to even (1).
        let x = [
            1.0 + 2.0f32.powi(-11),
            1.0 + 3.0 * 2.0f32.powi(-11),
            -0.0,
            65504.0,
            1e-7,
        ];
        let mut h = [0u8; 10];
        quantize(&x, &mut h);
        let mut back = [0.0f32; 5];
        dequantize(&h, &mut back);
        assert_eq!(back[0], 1.0);
        assert_eq!(back[1], 1.0 + 2.0 * 2.0f32.powi(-10));
        assert!(back[2] == 0.0 && back[2].is_sign_negative());
        assert_eq!(back[3], 65504.0);
        assert_eq!(back[4], 2.0f32.powi(-24) * 2.0); // 1e-7 ≈ 1.68 subnormal steps → 2 steps
    }

    #[test]
    fn accumulate_rows_sums_weighted_rows() {
        let mut rows = [0u8; 12];
        quantize(&[1.0, 2.0, 3.0, -1.0, 0.5, 4.0], &mut rows);
        let mut out = [10.0f32, 20.0, 30.0];
        accumulate_rows(&[2.0, -1.0], &rows, &mut out, 1);
        assert_eq!(out, [13.0, 23.5, 32.0]);
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::F16, 31);
    }
}
