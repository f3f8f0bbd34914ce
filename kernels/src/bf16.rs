//! BF16 weights and activations: the top half of an f32, little-endian.

use crate::block::{as_blocks, for_each_row, Block};
use std::mem::size_of;

#[repr(C)]
pub(crate) struct Bf16(pub(crate) [u8; 2]);
const _: () = assert!(size_of::<Bf16>() == 2);

// SAFETY: repr(C), one byte array, 2 bytes.
unsafe impl Block for Bf16 {}

#[inline]
pub(crate) fn bf16_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even; NaNs stay NaN with the quiet bit set.
#[inline]
pub(crate) fn f32_to_bf16(x: f32) -> [u8; 2] {
    let bits = x.to_bits();
    let h = if bits & 0x7fff_ffff > 0x7f80_0000 {
        (bits >> 16) | 64
    } else {
        bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16
    };
    (h as u16).to_le_bytes()
}

pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 2);
    for (o, &x) in dst.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&f32_to_bf16(x));
    }
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (o, x) in dst.iter_mut().zip(as_blocks::<Bf16>(src)) {
        *o = bf16_to_f32(x.0);
    }
}

/// `ggml_vec_dot_bf16` without SIMD: f32 products summed in f64.
pub(crate) fn dot(x: &[Bf16], y: &[Bf16]) -> f32 {
    x.iter().zip(y).fold(0.0f64, |s, (a, b)| {
        s + (bf16_to_f32(a.0) * bf16_to_f32(b.0)) as f64
    }) as f32
}

pub(crate) fn dot_rows(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, dot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::check_dot_against_dequantized;
    use crate::GgmlType;

    #[test]
    fn conversion_rounds_to_nearest_even_and_quiets_nan() {
        let tie_down = f32::from_bits(0x3f80_8000); // halfway between bf16 0x3f80 and 0x3f81
        let tie_up = f32::from_bits(0x3f81_8000); // halfway between 0x3f81 and 0x3f82
        let above = f32::from_bits(0x3f80_8001);
        assert_eq!(u16::from_le_bytes(f32_to_bf16(tie_down)), 0x3f80);
        assert_eq!(u16::from_le_bytes(f32_to_bf16(tie_up)), 0x3f82);
        assert_eq!(u16::from_le_bytes(f32_to_bf16(above)), 0x3f81);
        let signalling_nan = f32::from_bits(0x7f80_0001);
        assert_eq!(u16::from_le_bytes(f32_to_bf16(signalling_nan)), 0x7fc0);
        assert_eq!(u16::from_le_bytes(f32_to_bf16(f32::INFINITY)), 0x7f80);
        let mut back = [0.0f32];
        let mut h = [0u8; 2];
        quantize(&[-1.5], &mut h);
        dequantize(&h, &mut back);
        assert_eq!(back[0], -1.5);
    }

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::BF16, 32);
    }
}
