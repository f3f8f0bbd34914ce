//! Block formats and the kernels that read them.
//!
//! Knows nothing about models: the engine asks for "dot product of these weight rows with this
//! activation row" and this crate answers with the fastest variant the CPU can run, checked
//! against a scalar reference that stays in the tree forever.
//!
//! ```
//! use kernels::{GgmlType, Kernels};
//! let k = Kernels::detect();
//! let ty = GgmlType::Q8_0;
//! let n = 64;
//! let weights: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.1).sin()).collect();
//! // Q8_0 weights are laid out exactly like Q8_0 activations, so build them the same way.
//! let mut rows = vec![0u8; 2 * ty.row_bytes(n).unwrap()];
//! let half = rows.len() / 2;
//! k.quantize_activation(ty, &weights[..n], &mut rows[..half]);
//! k.quantize_activation(ty, &weights[n..], &mut rows[half..]);
//! let x = vec![1.0f32; n];
//! let mut act = vec![0u8; ty.vec_dot_type().row_bytes(n).unwrap()];
//! k.quantize_activation(ty, &x, &mut act);
//! let mut out = [0.0f32; 2];
//! k.dot_rows(ty, n, &rows, &act, &mut out);
//! let expected: f32 = weights[..n].iter().sum();
//! assert!((out[0] - expected).abs() < 0.05);
//! ```

mod block;
mod dispatch;
mod types;

mod bf16;
mod exp;
mod f16;
mod f32;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;
mod tanh;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod simd_tests;
#[cfg(test)]
mod test_util;

pub use dispatch::{Isa, IsaError, Kernels, PreparedActivation, ISA_ENV};
pub use types::GgmlType;
