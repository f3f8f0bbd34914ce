//! The element-wise and row-wise operations of a transformer layer.
//!
//! Each follows the arithmetic of llama.cpp's CPU backend where that choice moves the logits
//! (sums of squares in f64, rope angles advanced by repeated multiplication, GELU through an f16
//! table), because greedy parity with llama.cpp is what the tests hold us to.

use half::f16;
use half::slice::HalfFloatSliceExt;
use kernels::Kernels;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Elements per task of the element-wise operations: large enough that rayon's cost per task
/// is small beside the work, so one token's vectors stay on one thread.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// `x / sqrt(mean(x²) + eps) * weight`, row by row.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let rows_per_task = (ELEMENTS_PER_TASK / weight.len()).max(1);
    x.par_chunks_mut(rows_per_task * weight.len())
        .for_each(|rows| rms_norm_rows(rows, weight, eps));
}

fn rms_norm_rows(x: &mut [f32], weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(weight.len()) {
        let mean = (sum_of_squares(row) / row.len() as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = *v * scale * w;
        }
    }
}

/// Σv² in f64 over eight interleaved partial sums: one running sum is a chain of dependent
/// adds, one element per add latency, and Gemma 3's per-head q and k norms made it 4% of a
/// 270M prompt. The order of f64 additions of f32 squares does not move the f32 result.
fn sum_of_squares(row: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = row.chunks_exact(lanes.len());
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(v) * f64::from(v);
        }
    }
    let tail: f64 = rest.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    lanes.iter().sum::<f64>() + tail
}

/// Which elements rope rotates together: GPT-NeoX pairs `i` with `i + d/2`, the original
/// Llama layout pairs neighbours `2i` and `2i + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Neox,
    Adjacent,
}

#[derive(Debug, Clone, Copy)]
pub struct Rope {
    pub style: RopeStyle,
    /// How many leading elements of each head are rotated.
    pub dims: usize,
    pub base: f32,
    /// Linear position interpolation: 1 / `rope.scaling.factor`.
    pub freq_scale: f32,
}

impl Rope {
    /// Rotates every head of one token's `q` and `k` vectors in place, with the angles worked
    /// out once for both.
    pub fn apply(&self, q: &mut [f32], k: &mut [f32], head_dim: usize, pos: usize) {
        let angles = self.angles(pos as f32);
        self.rotate_by(&angles, q, head_dim);
        self.rotate_by(&angles, k, head_dim);
    }

    /// Rotates by `positions`, which may be negative: rotations add, so a key rotated for
    /// position p and then by -d is the key for position p - d (a context shift).
    pub fn rotate(&self, heads: &mut [f32], head_dim: usize, positions: f32) {
        self.rotate_by(&self.angles(positions), heads, head_dim);
    }

    fn rotate_by(&self, (cos, sin): &(Vec<f32>, Vec<f32>), heads: &mut [f32], head_dim: usize) {
        for head in heads.chunks_exact_mut(head_dim) {
            for i in 0..self.dims / 2 {
                let (a, b) = match self.style {
                    RopeStyle::Neox => (i, i + self.dims / 2),
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }

    fn angles(&self, positions: f32) -> (Vec<f32>, Vec<f32>) {
        let theta_scale = self.base.powf(-2.0 / self.dims as f32);
        let mut theta = positions;
        let mut cos = Vec::with_capacity(self.dims / 2);
        let mut sin = Vec::with_capacity(self.dims / 2);
        for _ in 0..self.dims / 2 {
            let angle = self.freq_scale * theta;
            cos.push(angle.cos());
            sin.push(angle.sin());
            theta *= theta_scale;
        }
        (cos, sin)
    }
}

/// `cap · tanh(x / cap)`: Gemma's soft limit on attention scores and logits.
pub fn soft_cap(kernels: &Kernels, x: &mut [f32], cap: f32) {
    x.par_chunks_mut(ELEMENTS_PER_TASK)
        .for_each(|x| kernels.soft_cap(x, cap));
}

/// Numerically stable softmax in place, as ggml's CPU backend takes it: the exponentials by its
/// polynomial, their sum in f64 (see `Kernels::softmax_exponentials`).
pub fn softmax(kernels: &Kernels, x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv = (1.0 / kernels.softmax_exponentials(x, max)) as f32;
    for v in x {
        *v *= inv;
    }
}

/// GELU with the tanh approximation, looked up through an f16 table: ggml rounds the input to
/// f16 and reads a precomputed f16 result, and matching that keeps our activations bit-close.
pub fn gelu_in_place(x: &mut [f32]) {
    let table = gelu_table();
    x.par_chunks_mut(ELEMENTS_PER_TASK).for_each(|x| {
        // The inputs go to f16 a slice at a time (F16C converts eight per instruction).
        let mut keys = [f16::ZERO; 256];
        for x in x.chunks_mut(keys.len()) {
            let keys = &mut keys[..x.len()];
            keys.convert_from_f32_slice(x);
            for (v, key) in x.iter_mut().zip(keys.iter()) {
                *v = if *v <= -10.0 {
                    0.0
                } else if *v >= 10.0 {
                    *v
                } else {
                    table[key.to_bits() as usize]
                };
            }
        }
    });
}

/// The f16 results widened to f32 once, so a lookup needs no conversion.
fn gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())).to_f32())
            .collect()
    })
}

fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

pub fn silu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(ELEMENTS_PER_TASK).for_each(|x| {
        for v in x {
            *v /= 1.0 + (-*v).exp();
        }
    });
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(y.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(x, y)| {
            for (a, &b) in x.iter_mut().zip(y) {
                *a += b;
            }
        });
}

pub fn mul_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(y.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(x, y)| {
            for (a, &b) in x.iter_mut().zip(y) {
                *a *= b;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_gives_unit_rms_rows() {
        let mut x = vec![3.0, 4.0, 0.0, -5.0, 12.0, 0.0];
        rms_norm(&mut x, &[1.0, 1.0, 2.0], 0.0);
        let rms0 = (x[..3].iter().map(|v| v * v).sum::<f32>() / 3.0).sqrt();
        assert!((rms0 - 1.0).abs() < 1e-6);
        assert!((x[3] / x[4] - (-5.0 / 12.0)).abs() < 1e-6);
    }

    #[test]
    fn sum_of_squares_matches_one_running_sum() {
        for len in [0, 1, 7, 8, 9, 17, 640, 2307] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
                .collect();
            let running: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let got = sum_of_squares(&row);
            assert!(
                (got - running).abs() <= 1e-12 * running,
                "len {len}: {got} vs {running}"
            );
        }
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_position_zero() {
        for style in [RopeStyle::Neox, RopeStyle::Adjacent] {
            let rope = Rope {
                style,
                dims: 8,
                base: 10000.0,
                freq_scale: 1.0,
            };
            let original: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
            let mut x = original.clone();
            rope.rotate(&mut x, 8, 0.0);
            assert_eq!(x, original);
            rope.rotate(&mut x, 8, 17.0);
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
            assert!((norm(&x[..8]) - norm(&original[..8])).abs() < 1e-3);
            assert_ne!(x, original);
        }
    }

    #[test]
    fn rope_of_q_and_k_together_is_each_rotated_alone() {
        for style in [RopeStyle::Neox, RopeStyle::Adjacent] {
            let rope = Rope {
                style,
                dims: 6,
                base: 1e6,
                freq_scale: 0.25,
            };
            let q: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
            let k: Vec<f32> = (0..16).map(|i| (i as f32 * 0.91).cos()).collect();
            let (mut q_both, mut k_both) = (q.clone(), k.clone());
            rope.apply(&mut q_both, &mut k_both, 8, 300);
            let (mut q_alone, mut k_alone) = (q, k);
            rope.rotate(&mut q_alone, 8, 300.0);
            rope.rotate(&mut k_alone, 8, 300.0);
            assert_eq!((q_both, k_both), (q_alone, k_alone));
        }
    }

    #[test]
    fn neox_rope_rotates_first_pair_by_position() {
        let rope = Rope {
            style: RopeStyle::Neox,
            dims: 4,
            base: 10000.0,
            freq_scale: 1.0,
        };
        let mut x = vec![1.0, 0.0, 0.0, 0.0];
        rope.rotate(&mut x, 4, 1.0);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6);
        assert!((x[2] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_inputs() {
        let kernels = Kernels::detect();
        // Lengths below and above the kernel's sixteen-element groups.
        for len in [3, 40] {
            let mut x: Vec<f32> = (0..len).map(|i| 1000.0 + (i % 5) as f32 * 0.25).collect();
            x[1] = 1001.0;
            x[2] = f32::NEG_INFINITY;
            softmax(&kernels, &mut x);
            assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6, "length {len}");
            assert_eq!(x[2], 0.0);
            assert!(x[1] > x[0]);
        }
    }

    #[test]
    fn gelu_table_matches_the_formula_within_f16_precision() {
        let mut x: Vec<f32> = (-120..120).map(|i| i as f32 / 10.0).collect();
        let expected: Vec<f32> = x.iter().map(|&v| gelu_tanh(v)).collect();
        gelu_in_place(&mut x);
        for (got, want) in x.iter().zip(expected) {
            assert!(
                (got - want).abs() <= 2e-3 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn soft_cap_bounds_values() {
        let mut x = vec![0.0, 1e6, -1e6, 1.0];
        soft_cap(&Kernels::detect(), &mut x, 30.0);
        assert_eq!(x[0], 0.0);
        assert!((x[1] - 30.0).abs() < 1e-4 && (x[2] + 30.0).abs() < 1e-4);
        assert!((x[3] - 30.0 * (1.0f32 / 30.0).tanh()).abs() < 1e-7);
    }
}
