//! Weight matrix × activations, split across threads by output rows.

use crate::gguf::Tensor;
use kernels::{GgmlType, Kernels};
use rayon::prelude::*;

/// Output rows handed to one task. Large enough that rayon's scheduling cost is small next to
/// the dot products even for one token, small enough that both cores get work on small matrices.
const ROWS_PER_TASK: usize = 32;

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
    pub fn matmul(&self, kernels: &Kernels, input: &[f32], out: &mut [f32]) {
        let n = input.len() / self.cols;
        debug_assert_eq!(input.len(), n * self.cols);
        debug_assert_eq!(out.len(), n * self.rows);
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

        // Row-major results per task (rows × n) keep each task's writes contiguous; one
        // transpose at the end puts them in token-major order.
        let mut by_row = vec![0f32; self.rows * n];
        by_row
            .par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(task, out_rows)| {
                let first = task * ROWS_PER_TASK;
                let count = out_rows.len() / n;
                let rows = &self.data[first * row_bytes..(first + count) * row_bytes];
                kernels.dot_rows_batch(self.ty, self.cols, rows, &acts, out_rows);
            });
        // Sixteen tokens at a time: each by_row line read feeds sixteen sequential writers.
        const TOKENS_PER_TASK: usize = 16;
        out.par_chunks_mut(TOKENS_PER_TASK * self.rows)
            .enumerate()
            .for_each(|(task, out_tokens)| {
                let first = task * TOKENS_PER_TASK;
                let count = out_tokens.len() / self.rows;
                for (r, row) in by_row.chunks_exact(n).enumerate() {
                    for (t, &v) in row[first..first + count].iter().enumerate() {
                        out_tokens[t * self.rows + r] = v;
                    }
                }
            });
    }
}
