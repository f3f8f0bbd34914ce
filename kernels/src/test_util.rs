//! Deterministic random data for kernel tests.

use crate::block::{as_blocks, f32_to_f16, Block};
use crate::q8_k::BlockQ8K;
use crate::{GgmlType, Isa, Kernels};

/// SplitMix64: tiny, deterministic, good enough to fill test blocks.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal (sum of four uniforms), mean 0, standard deviation ≈ `scale`.
    pub(crate) fn normal(&mut self, scale: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * 1.732 * scale
    }

    pub(crate) fn normal_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal(scale)).collect()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Byte ranges of the f16 fields (scales, mins) inside one block of `ty`.
pub(crate) fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// `blocks` random blocks of the quantized weight type `ty` with random quants and scales
/// drawn from `scale()`.
pub(crate) fn random_quant_row(
    ty: GgmlType,
    blocks: usize,
    rng: &mut Rng,
    mut scale: impl FnMut(&mut Rng) -> f32,
) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut row = rng.bytes(blocks * bb);
    for block in row.chunks_exact_mut(bb) {
        for &at in f16_fields(ty) {
            let s = scale(rng);
            block[at..at + 2].copy_from_slice(&f32_to_f16(s));
        }
    }
    row
}

/// A random row of `n` elements of any supported weight type, with typical magnitudes.
pub(crate) fn random_weight_row(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let k = Kernels::for_isa(Isa::Scalar).unwrap();
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let x = rng.normal_vec(n, 0.5);
            let mut row = vec![0u8; ty.row_bytes(n).unwrap()];
            k.quantize_activation(ty, &x, &mut row);
            row
        }
        _ => random_quant_row(ty, n / ty.block_len(), rng, |r| r.normal(0.01)),
    }
}

/// Dequantizes with the scalar kernels.
pub(crate) fn dequantized(ty: GgmlType, row: &[u8]) -> Vec<f32> {
    let n = row.len() / ty.block_bytes() * ty.block_len();
    let mut out = vec![0.0f32; n];
    Kernels::for_isa(Isa::Scalar)
        .unwrap()
        .dequantize_row(ty, row, &mut out);
    out
}

/// Checks that the scalar dot of random weights of `ty` with quantized random activations
/// equals the f64 dot of both dequantized, within 1e-5 of Σ|w·a| (float rounding of scale
/// products and of the running f32 sum; the integer parts are exact).
pub(crate) fn check_dot_against_dequantized(ty: GgmlType, seed: u64) {
    let k = Kernels::for_isa(Isa::Scalar).unwrap();
    let mut rng = Rng::new(seed);
    let act_ty = ty.vec_dot_type();
    for n in [256usize, 1024, 4096] {
        let rows = 3;
        let weights: Vec<u8> = (0..rows)
            .flat_map(|_| random_weight_row(ty, n, &mut rng))
            .collect();
        let x = rng.normal_vec(n, 1.0);
        let mut act = vec![0u8; act_ty.row_bytes(n).unwrap()];
        k.quantize_activation(ty, &x, &mut act);
        let mut out = vec![0.0f32; rows];
        k.dot_rows(ty, n, &weights, &act, &mut out);
        let a = dequantized(act_ty, &act);
        let row_bytes = ty.row_bytes(n).unwrap();
        for (r, &got) in out.iter().enumerate() {
            let w = dequantized(ty, &weights[r * row_bytes..][..row_bytes]);
            let exact: f64 = w.iter().zip(&a).map(|(&p, &q)| p as f64 * q as f64).sum();
            let magnitude: f64 = w
                .iter()
                .zip(&a)
                .map(|(&p, &q)| (p as f64 * q as f64).abs())
                .sum();
            let err = (got as f64 - exact).abs();
            assert!(
                err <= 1e-5 * magnitude,
                "{} n={n} row {r}: {got} vs {exact} (Σ|w·a| = {magnitude})",
                ty.name()
            );
        }
    }
}

/// The scalar reference for grouped rows: each row taken back out of its group by `ungroup`
/// and dotted by the plain format's `dot`, so that grouped kernels answer to the same sums as
/// row kernels.
pub(crate) fn dot_groups_by_rows<G: Block, W: Block>(
    groups: &[u8],
    act: &[u8],
    out: &mut [f32],
    ungroup: fn(&[G], usize) -> Vec<u8>,
    dot: fn(&[W], &[BlockQ8K]) -> f32,
) {
    let act = as_blocks::<BlockQ8K>(act);
    if act.is_empty() {
        out.fill(0.0);
        return;
    }
    for (group, out) in as_blocks::<G>(groups)
        .chunks_exact(act.len())
        .zip(out.chunks_exact_mut(crate::block::GROUP_ROWS))
    {
        for (r, o) in out.iter_mut().enumerate() {
            *o = dot(as_blocks(&ungroup(group, r)), act);
        }
    }
}
