//! Weight matrix × activations, split across threads by output rows.

use crate::gguf::Tensor;
use kernels::{GgmlType, Kernels};
use rayon::prelude::*;

/// Output rows handed to one task in generation. Long runs of rows read memory faster (the
/// 2B-shaped Gemma 2 at -t 2: 10.2-10.4 t/s with 32 rows, 10.4-10.9 with 128), while several
/// tasks per thread still let a thread that finishes early take over another's work.
const ROWS_PER_TASK: usize = 128;

/// Prompt tokens per task at most. The prompt kernels themselves cut a task's tokens into
/// groups that stay in L2, and pack each group of weight rows once per group, so larger tasks
/// pack less often: 256 instead of 64 took pp512 from 57.2 to 60.4 t/s (2B-shaped Gemma 2,
/// -t 1) and from 739 to 778 (Gemma 3 270M Q4_K_M). The tasks are made equal and a multiple of
/// the thread count, so every thread gets the same work.
const MAX_TOKENS_PER_TASK: usize = 256;

/// A 2-D weight: `rows` rows of `cols` elements in the GGUF's block format, viewed in place.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> Matrix<'a> {
    pub fn from_tensor(tensor: &Tensor<'a>) -> Matrix<'a> {
        Matrix {
            ty: tensor.ty,
            rows: tensor.n_rows(),
            cols: tensor.row_len(),
            data: tensor.data,
        }
    }

    fn row_bytes(&self) -> usize {
        self.ty
            .row_bytes(self.cols)
            .expect("the GGUF reader checked the row length")
    }

    /// Dequantizes one row (an embedding lookup).
    pub fn row(&self, kernels: &Kernels, index: usize, out: &mut [f32]) {
        let bytes = self.row_bytes();
        kernels.dequantize_row(self.ty, &self.data[index * bytes..(index + 1) * bytes], out);
    }

    /// `out[t] = self · input[t]` for each of the `n` input rows: `input` is `n × cols`, `out`
    /// is `n × rows`. Each input row is quantized once to the format the weight's dot product
    /// wants, then every weight row is read once for all `n` inputs.
    ///
    /// No inputs, or a matrix of no rows, is no work: the task split below would otherwise
    /// divide by a task count of zero or chunk by zero bytes.
    pub fn matmul(&self, kernels: &Kernels, input: &[f32], out: &mut [f32]) {
        let n = input.len() / self.cols;
        debug_assert_eq!(input.len(), n * self.cols);
        debug_assert_eq!(out.len(), n * self.rows);
        if n == 0 || self.rows == 0 {
            return;
        }
        let act_type = self.ty.vec_dot_type();
        let act_bytes = act_type
            .row_bytes(self.cols)
            .expect("activation blocks match weight blocks");
        let mut acts = vec![0u8; n * act_bytes];
        acts.par_chunks_mut(act_bytes)
            .zip(input.par_chunks(self.cols))
            .for_each(|(dst, src)| kernels.quantize_activation(self.ty, src, dst));

        let row_bytes = self.row_bytes();
        if n == 1 {
            out.par_chunks_mut(ROWS_PER_TASK)
                .enumerate()
                .for_each(|(task, out_rows)| {
                    let first = task * ROWS_PER_TASK;
                    let rows = &self.data[first * row_bytes..(first + out_rows.len()) * row_bytes];
                    kernels.dot_rows(self.ty, self.cols, rows, &acts, out_rows);
                });
            return;
        }

        // Several tokens per task, every weight row for each: the kernels write token-major
        // results, so each task's output is contiguous, and each weight block is read once for
        // all the task's tokens.
        let threads = rayon::current_num_threads().max(1);
        let tasks = n.div_ceil(MAX_TOKENS_PER_TASK).div_ceil(threads) * threads;
        let tokens_per_task = n.div_ceil(tasks);
        out.par_chunks_mut(tokens_per_task * self.rows)
            .zip(acts.par_chunks(tokens_per_task * act_bytes))
            .for_each(|(out_tokens, acts)| {
                kernels.dot_rows_batch(self.ty, self.cols, self.data, acts, out_tokens);
            });
    }
}
