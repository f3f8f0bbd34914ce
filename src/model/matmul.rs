//! Weight matrix × activations, split across threads by output rows.

use crate::gguf::Tensor;
use kernels::{GgmlType, Kernels, PreparedActivation};
use rayon::prelude::*;

/// Output rows handed to one task in generation. Long runs of rows read memory faster (the
/// 2B-shaped Gemma 2 at -t 2: 10.2-10.4 t/s with 32 rows, 10.4-10.9 with 128), while several
/// tasks per thread still let a thread that finishes early take over another's work. A
/// multiple of the rows of every grouped layout, so that tasks split grouped matrices between
/// groups.
const ROWS_PER_TASK: usize = 128;

/// Up to this many tokens (generation, one token from each of a few sequences), the weight
/// rows are split among the tasks and each task takes every token over its rows while they
/// are in cache (`Matrix::matmul_by_rows`): the weights are read from memory once per pass, as
/// for one token. The grouped kernels give each token bit for bit what it gets alone, and so
/// do the K-quants' 256-bit tiles (a 512-bit row kernel, where `Kernels::detect` takes one,
/// adds in other lanes).
const MAX_TOKENS_BY_ROWS: usize = 8;

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
    /// The rows were rewritten by `Kernels::group_rows` and go through the grouped kernels.
    pub grouped: bool,
}

impl<'a> Matrix<'a> {
    pub fn from_tensor(tensor: &Tensor<'a>) -> Matrix<'a> {
        Matrix {
            ty: tensor.ty,
            rows: tensor.n_rows(),
            cols: tensor.row_len(),
            data: tensor.data,
            grouped: false,
        }
    }

    fn row_bytes(&self) -> usize {
        self.ty
            .row_bytes(self.cols)
            .expect("the GGUF reader checked the row length")
    }

    /// Dequantizes one row (an embedding lookup).
    pub fn row(&self, kernels: &Kernels, index: usize, out: &mut [f32]) {
        if self.grouped {
            kernels.dequantize_grouped_row(self.ty, self.data, index, out);
            return;
        }
        let bytes = self.row_bytes();
        kernels.dequantize_row(self.ty, &self.data[index * bytes..(index + 1) * bytes], out);
    }

    /// `out[t] = self · input[t]` for each of the `n` input rows: `input` is `n × cols`, `out`
    /// is `n × rows`. Each input row is quantized once to the format the weight's dot product
    /// wants, then every weight row is read once for all `n` inputs.
    pub fn matmul(&self, kernels: &Kernels, input: &[f32], out: &mut [f32]) {
        self.matmul_quantized(kernels, &self.quantize(kernels, input), out);
    }

    /// `input` (`n × cols`) in this matrix's activation format, for `matmul_quantized` by
    /// this matrix and any other of the same activation format and width.
    pub fn quantize(&self, kernels: &Kernels, input: &[f32]) -> Activations {
        let n = input.len() / self.cols;
        debug_assert_eq!(input.len(), n * self.cols);
        let ty = self.ty.vec_dot_type();
        let row_bytes = ty
            .row_bytes(self.cols)
            .expect("activation blocks match weight blocks");
        let mut bytes = vec![0u8; n * row_bytes];
        bytes
            .par_chunks_mut(row_bytes)
            .zip(input.par_chunks(self.cols))
            .for_each(|(dst, src)| kernels.quantize_activation(self.ty, src, dst));
        Activations {
            ty,
            cols: self.cols,
            n,
            row_bytes,
            bytes,
        }
    }

    /// `matmul` of an input already quantized by `quantize`.
    ///
    /// No inputs, or a matrix of no rows, is no work: the task split below would otherwise
    /// divide by a task count of zero or chunk by zero bytes.
    pub fn matmul_quantized(&self, kernels: &Kernels, input: &Activations, out: &mut [f32]) {
        assert!(
            input.ty == self.ty.vec_dot_type() && input.cols == self.cols,
            "activations quantized for another format or width"
        );
        let (n, act_bytes, acts) = (input.n, input.row_bytes, &input.bytes);
        debug_assert_eq!(out.len(), n * self.rows);
        if n == 0 || self.rows == 0 {
            return;
        }
        if n == 1 {
            one_token_products(kernels, vec![(*self, input, out)]);
            return;
        }
        if n <= MAX_TOKENS_BY_ROWS {
            self.matmul_by_rows(kernels, acts, act_bytes, out);
            return;
        }

        // Many tokens per task, every weight row for each: the kernels write token-major
        // results, so each task's output is contiguous, and each weight block is read once for
        // all the task's tokens.
        let threads = rayon::current_num_threads().max(1);
        let tasks = n.div_ceil(MAX_TOKENS_PER_TASK).div_ceil(threads) * threads;
        let tokens_per_task = n.div_ceil(tasks);
        out.par_chunks_mut(tokens_per_task * self.rows)
            .zip(acts.par_chunks(tokens_per_task * act_bytes))
            .for_each(|(out_tokens, acts)| self.batch(kernels, self.data, acts, out_tokens));
    }

    /// `out_i = matrix_i · input` for matrices that read the same input (a layer's `wq`,
    /// `wk` and `wv`; `gate` and `up`): the input is quantized once per activation format
    /// among them, not once per matrix.
    pub fn matmul_each<const N: usize>(
        kernels: &Kernels,
        input: &[f32],
        products: [(&Matrix, &mut [f32]); N],
    ) {
        let mut quantized: Vec<Activations> = Vec::new();
        let mut formats = [0; N];
        for ((matrix, _), format) in products.iter().zip(&mut formats) {
            let fits = |a: &Activations| a.ty == matrix.ty.vec_dot_type() && a.cols == matrix.cols;
            *format = match quantized.iter().position(fits) {
                Some(at) => at,
                None => {
                    quantized.push(matrix.quantize(kernels, input));
                    quantized.len() - 1
                }
            };
        }
        if quantized.first().is_some_and(|a| a.n == 1) {
            let one_token = products
                .into_iter()
                .zip(formats)
                .map(|((matrix, out), format)| (*matrix, &quantized[format], out))
                .collect();
            one_token_products(kernels, one_token);
            return;
        }
        for ((matrix, out), format) in products.into_iter().zip(formats) {
            matrix.matmul_quantized(kernels, &quantized[format], out);
        }
    }

    /// `out[t] = self · acts[t]` for a few tokens, the rows split among tasks of
    /// [`ROWS_PER_TASK`], each going through kernels that unpack each weight block once for
    /// all the tokens: the prompt tiles, or for grouped rows the grouped kernels over the
    /// tokens prepared once for every task.
    fn matmul_by_rows(&self, kernels: &Kernels, acts: &[u8], act_bytes: usize, out: &mut [f32]) {
        let row_bytes = self.row_bytes();
        let n = acts.len() / act_bytes;
        let prepared = self
            .grouped
            .then(|| kernels.prepare_groups(self.ty, self.cols, acts));
        let out = TokenRows {
            start: out.as_mut_ptr(),
            len: out.len(),
            rows: self.rows,
        };
        let tasks = self.rows.div_ceil(ROWS_PER_TASK);
        (0..tasks)
            .into_par_iter()
            .for_each_init(Vec::new, |block, task| {
                let first = task * ROWS_PER_TASK;
                let count = ROWS_PER_TASK.min(self.rows - first);
                let rows = &self.data[first * row_bytes..(first + count) * row_bytes];
                block.resize(n * count, 0.0);
                match &prepared {
                    Some(acts) => {
                        kernels.dot_prepared_groups(self.ty, self.cols, rows, acts, block)
                    }
                    None => self.batch(kernels, rows, acts, block),
                }
                for (t, results) in block.chunks_exact(count).enumerate() {
                    // SAFETY: each task writes only its own rows `first..first + count` of each
                    // token's output, so no two tasks touch the same element.
                    unsafe { out.rows_of(t, first, count) }.copy_from_slice(results);
                }
            });
    }
}

impl Matrix<'_> {
    /// The prompt kernels over `rows`, some or all of this matrix's (whole groups where it is
    /// grouped).
    fn batch(&self, kernels: &Kernels, rows: &[u8], acts: &[u8], out: &mut [f32]) {
        if self.grouped {
            kernels.dot_groups_batch(self.ty, self.cols, rows, acts, out);
        } else {
            kernels.dot_rows_batch(self.ty, self.cols, rows, acts, out);
        }
    }
}

/// One token through each matrix, `out = matrix · input`, in one parallel loop over every
/// matrix's tasks of [`ROWS_PER_TASK`] rows: in generation a fork and join per matrix, with its
/// thread wake-ups, costs as much as a small matrix's work. The activation is laid out for the
/// kernel once per input, weight type and layout (`wq`, `wk` and `wv` of one type share it),
/// not once per task.
fn one_token_products(kernels: &Kernels, products: Vec<(Matrix, &Activations, &mut [f32])>) {
    type Prepared<'a> = (&'a Activations, GgmlType, bool, PreparedActivation<'a>);
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut which = Vec::with_capacity(products.len());
    for (matrix, input, _) in &products {
        assert!(
            input.n == 1 && input.ty == matrix.ty.vec_dot_type() && input.cols == matrix.cols,
            "activations quantized for another format or width"
        );
        let same = |(made_from, ty, grouped, _): &Prepared| {
            std::ptr::eq(*made_from, *input) && *ty == matrix.ty && *grouped == matrix.grouped
        };
        which.push(prepared.iter().position(same).unwrap_or_else(|| {
            let (ty, cols, bytes) = (matrix.ty, matrix.cols, &input.bytes);
            let act = if matrix.grouped {
                kernels.prepare_groups(ty, cols, bytes)
            } else {
                kernels.prepare_rows(ty, cols, bytes)
            };
            prepared.push((input, ty, matrix.grouped, act));
            prepared.len() - 1
        }));
    }
    let mut tasks = Vec::new();
    for ((matrix, _, out), at) in products.into_iter().zip(which) {
        let act = &prepared[at].3;
        let row_bytes = matrix.row_bytes();
        let rows = matrix.data.chunks(ROWS_PER_TASK * row_bytes);
        tasks.extend(
            rows.zip(out.chunks_mut(ROWS_PER_TASK))
                .map(|(rows, out)| (matrix, act, rows, out)),
        );
    }
    tasks.into_par_iter().for_each(|(matrix, act, rows, out)| {
        let (ty, cols) = (matrix.ty, matrix.cols);
        if matrix.grouped {
            kernels.dot_prepared_groups(ty, cols, rows, act, out)
        } else {
            kernels.dot_prepared_rows(ty, cols, rows, act, out)
        }
    });
}

/// Input rows quantized to one activation format (see `Matrix::quantize`).
pub struct Activations {
    ty: GgmlType,
    cols: usize,
    n: usize,
    row_bytes: usize,
    bytes: Vec<u8>,
}

/// A token-major output (`tokens × rows`) that tasks split by rows write into at once: each
/// task's share of a token's output is contiguous, but its shares of different tokens are not,
/// so they cannot be handed out as disjoint slices up front.
struct TokenRows {
    start: *mut f32,
    len: usize,
    rows: usize,
}

// SAFETY: `TokenRows` is only a way to reach one `&mut [f32]` that its creator holds for the
// whole parallel loop; the loop's tasks write disjoint parts of it (see `rows_of`).
unsafe impl Sync for TokenRows {}

impl TokenRows {
    /// Rows `first..first + count` of token `t`'s output.
    ///
    /// # Safety
    /// No two live slices from this value may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn rows_of(&self, t: usize, first: usize, count: usize) -> &mut [f32] {
        let at = t * self.rows + first;
        assert!(first + count <= self.rows && at + count <= self.len);
        // SAFETY: in bounds (checked above) of the slice this was made from, which outlives
        // the loop; exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.start.add(at), count) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rows × cols` weights of `ty` (Q8_0 or F32), from a smooth pattern.
    fn weights(kernels: &Kernels, ty: GgmlType, rows: usize, cols: usize, seed: f32) -> Vec<u8> {
        let floats: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32 + seed) * 0.618).sin())
            .collect();
        let row_bytes = ty.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; rows * row_bytes];
        for (dst, src) in bytes
            .chunks_exact_mut(row_bytes)
            .zip(floats.chunks_exact(cols))
        {
            kernels.quantize_activation(ty, src, dst);
        }
        bytes
    }

    #[test]
    fn matmul_each_gives_each_matrix_its_own_product() {
        let kernels = Kernels::detect();
        let cols = 64;
        // Two Q8_0 matrices share one quantized input; the F32 one gets its own. Token counts
        // on both sides of MAX_TOKENS_BY_ROWS, and row counts on both sides of ROWS_PER_TASK
        // (one token's tasks from all three matrices share one parallel loop).
        let shapes = [
            (GgmlType::Q8_0, 2 * ROWS_PER_TASK + 44),
            (GgmlType::F32, 24),
            (GgmlType::Q8_0, ROWS_PER_TASK + 1),
        ];
        let data: Vec<Vec<u8>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(ty, rows))| weights(&kernels, ty, rows, cols, i as f32 * 100.0))
            .collect();
        let matrices: Vec<Matrix> = shapes
            .iter()
            .zip(&data)
            .map(|(&(ty, rows), data)| Matrix {
                ty,
                rows,
                cols,
                data,
                grouped: false,
            })
            .collect();
        for n in [1, MAX_TOKENS_BY_ROWS, MAX_TOKENS_BY_ROWS + 1] {
            let input: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.31).cos()).collect();
            let alone: Vec<Vec<f32>> = matrices
                .iter()
                .map(|m| {
                    let mut out = vec![0.0; n * m.rows];
                    m.matmul(&kernels, &input, &mut out);
                    out
                })
                .collect();
            let mut outs: Vec<Vec<f32>> = matrices.iter().map(|m| vec![0.0; n * m.rows]).collect();
            let [a, b, c] = &mut outs[..] else {
                unreachable!()
            };
            Matrix::matmul_each(
                &kernels,
                &input,
                [(&matrices[0], a), (&matrices[1], b), (&matrices[2], c)],
            );
            assert_eq!(outs, alone, "{n} tokens");
        }
    }

    /// K-quant rows of pseudo-random quants whose f16 scale fields (Q4_K's d and dmin at the
    /// start of each block, Q6_K's d at the end) hold small values, as real weights do.
    fn k_quant_weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut bytes: Vec<u8> = (0..rows * ty.row_bytes(cols).unwrap())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let scale = half::f16::from_f32(0.004).to_bits().to_le_bytes();
        for block in bytes.chunks_exact_mut(ty.block_bytes()) {
            match ty {
                GgmlType::Q4_K | GgmlType::Q5_K => {
                    block[..2].copy_from_slice(&scale);
                    block[2..4].copy_from_slice(&scale);
                }
                _ => {
                    let at = block.len() - 2;
                    block[at..].copy_from_slice(&scale);
                }
            }
        }
        bytes
    }

    /// Grouped matrices (`--no-mmap`'s layout) against the same rows as the file has them:
    /// rows looked up, and every path of `matmul`: one token (tasks of `ROWS_PER_TASK` rows),
    /// a few tokens by rows, and prompts; row counts on both sides of a task and of the
    /// sixteen-row tiles.
    #[test]
    fn grouped_matrices_give_the_products_of_their_rows() {
        let kernels = Kernels::detect();
        let cols = 512;
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            let Some(group_len) = kernels.group_len(ty) else {
                eprintln!("no grouped kernels for {} here", ty.name());
                continue;
            };
            for rows in [group_len, 3 * group_len, ROWS_PER_TASK + group_len] {
                let data = k_quant_weights(ty, rows, cols);
                let mut grouped = data.clone();
                assert!(kernels.group_rows(ty, cols, &mut grouped));
                let plain = Matrix {
                    ty,
                    rows,
                    cols,
                    data: &data,
                    grouped: false,
                };
                let by_groups = Matrix {
                    data: &grouped,
                    grouped: true,
                    ..plain
                };
                let (mut want, mut got) = (vec![0.0; cols], vec![f32::NAN; cols]);
                for r in [0, group_len - 1, rows - 1] {
                    plain.row(&kernels, r, &mut want);
                    by_groups.row(&kernels, r, &mut got);
                    assert_eq!(got, want, "{} row {r} of {rows} looked up", ty.name());
                }
                for n in [1, 2, MAX_TOKENS_BY_ROWS, MAX_TOKENS_BY_ROWS + 1, 40] {
                    let input: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
                    let (mut want, mut got) = (vec![0.0; n * rows], vec![f32::NAN; n * rows]);
                    plain.matmul(&kernels, &input, &mut want);
                    by_groups.matmul(&kernels, &input, &mut got);
                    let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-5 * largest,
                            "{} {rows} rows, {n} tokens, output {i}: {g} grouped, {w} plain",
                            ty.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "activations quantized for another format or width")]
    fn activations_of_another_width_are_refused() {
        let kernels = Kernels::detect();
        let data = weights(&kernels, GgmlType::Q8_0, 2, 64, 0.0);
        let narrow = Matrix {
            ty: GgmlType::Q8_0,
            rows: 4,
            cols: 32,
            data: &data,
            grouped: false,
        };
        let wide = Matrix {
            rows: 2,
            cols: 64,
            ..narrow
        };
        let input = narrow.quantize(&kernels, &[0.5; 32]);
        wide.matmul_quantized(&kernels, &input, &mut [0.0; 2]);
    }
}
