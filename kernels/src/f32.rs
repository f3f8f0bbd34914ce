//! F32 weights and activations (one element per "block").

use crate::block::{as_blocks, for_each_row, Block};
use std::mem::size_of;

#[repr(C)]
pub(crate) struct F32([u8; 4]);
const _: () = assert!(size_of::<F32>() == 4);

// SAFETY: repr(C), one byte array, 4 bytes.
unsafe impl Block for F32 {}

impl F32 {
    #[inline]
    pub(crate) fn get(&self) -> f32 {
        f32::from_le_bytes(self.0)
    }
}

pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 4);
    for (o, &x) in dst.chunks_exact_mut(4).zip(src) {
        o.copy_from_slice(&x.to_le_bytes());
    }
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (o, x) in dst.iter_mut().zip(as_blocks::<F32>(src)) {
        *o = x.get();
    }
}

/// `ggml_vec_dot_f32` without SIMD: f32 products summed in f64.
pub(crate) fn dot(x: &[F32], y: &[F32]) -> f32 {
    x.iter()
        .zip(y)
        .fold(0.0f64, |s, (a, b)| s + (a.get() * b.get()) as f64) as f32
}

pub(crate) fn dot_rows(rows: &[u8], act: &[u8], out: &mut [f32]) {
    for_each_row(rows, act, out, dot);
}

#[cfg(test)]
mod tests {
    use crate::test_util::check_dot_against_dequantized;
    use crate::GgmlType;

    #[test]
    fn dot_matches_dequantized_dot() {
        check_dot_against_dequantized(GgmlType::F32, 30);
    }
}
