//! The decoder-only transformer that every supported architecture is a recipe of.

use super::matmul::Matrix;
use super::ops::{self, Rope};
use super::{is_grouped, matrix, vector, FeedForward, ModelError, Recipe};
use crate::gguf::Gguf;
use half::f16;
use half::slice::HalfFloatSliceExt;
use kernels::{GgmlType, Kernels};
use rayon::prelude::*;

/// Shapes and constants of a loaded model.
#[derive(Debug, Clone)]
pub struct Hyperparameters {
    pub architecture: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub context_length: usize,
}

struct Layer<'a> {
    attn_norm: Vec<f32>,
    wq: Matrix<'a>,
    wk: Matrix<'a>,
    wv: Matrix<'a>,
    wo: Matrix<'a>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Matrix<'a>,
    up: Matrix<'a>,
    down: Matrix<'a>,
    post_ffn_norm: Option<Vec<f32>>,
    rope: Rope,
    window: Option<usize>,
}

pub struct Transformer<'a> {
    pub hparams: Hyperparameters,
    kernels: Kernels,
    token_embd: Matrix<'a>,
    embed_scale: f32,
    layers: Vec<Layer<'a>>,
    output_norm: Vec<f32>,
    output: Matrix<'a>,
    rms_eps: f32,
    query_scale: f32,
    attn_soft_cap: Option<f32>,
    final_soft_cap: Option<f32>,
    ffn: FeedForward,
}

/// Keys and values of every layer for positions `0..n_ctx`, in f16 as llama.cpp keeps them:
/// half the memory and bandwidth of f32, and the same rounding llama.cpp's attention sees.
///
/// One vector per layer and KV head, so the keys (and values) one query reads are contiguous
/// rows for the kernels. Each is reserved for `n_ctx` positions up front but only grows as
/// positions are written: the untouched reservation costs address space, not memory, so a
/// large `-c` uses memory only for the tokens a conversation reaches.
#[derive(Clone)]
pub struct KvCache {
    n_ctx: usize,
    /// `[layer][kv head]`, each `positions × head_dim`.
    keys: Vec<Vec<Vec<f16>>>,
    /// `[layer][kv head]`, each `positions × head_dim_v`.
    values: Vec<Vec<Vec<f16>>>,
}

impl KvCache {
    /// One KV head's cached keys and values of one layer, as f32, position after position.
    #[cfg(test)]
    pub(crate) fn rows(&self, layer: usize, head: usize) -> (Vec<f32>, Vec<f32>) {
        let widen = |rows: &[f16]| rows.iter().map(|x| x.to_f32()).collect();
        (
            widen(&self.keys[layer][head]),
            widen(&self.values[layer][head]),
        )
    }

    #[cfg(test)]
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.keys.len(), self.keys.first().map_or(0, Vec::len))
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes the cache holds now: only the positions written so far take memory.
    pub fn used_bytes(&self) -> usize {
        self.halves(Vec::len) * 2
    }

    /// Bytes the cache takes when full.
    pub fn bytes(&self) -> usize {
        self.halves(Vec::capacity) * 2
    }

    fn halves(&self, count: impl Fn(&Vec<f16>) -> usize) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .flatten()
            .map(count)
            .sum()
    }
}

impl Transformer<'_> {
    /// Forgets cached positions `keep..keep + discard` of the first `len` and moves the later
    /// ones down by `discard`. Each moved key was rotated for its old position; rotating it by
    /// `-discard` makes it the key of its new one (rotations add), so nothing is evaluated
    /// again. The keys are rounded to f16 once more on the way, as llama.cpp's shift does.
    pub fn shift_cache(&self, cache: &mut KvCache, len: usize, keep: usize, discard: usize) {
        for (layer, (keys, values)) in self
            .layers
            .iter()
            .zip(cache.keys.iter_mut().zip(&mut cache.values))
        {
            for rows in keys {
                let width = rows.len() / len.max(1);
                rows.truncate(len * width);
                rows.drain(keep * width..(keep + discard) * width);
                let mut row = vec![0.0; width];
                for moved in rows[keep * width..].chunks_exact_mut(width) {
                    moved.convert_to_f32_slice(&mut row);
                    layer.rope.rotate(&mut row, width, -(discard as f32));
                    moved.convert_from_f32_slice(&row);
                }
            }
            for rows in values {
                let width = rows.len() / len.max(1);
                rows.truncate(len * width);
                rows.drain(keep * width..(keep + discard) * width);
            }
        }
    }
}

/// Writes one KV head's rows for positions `start..`, forgetting any rows after them: they
/// belong to tokens the session has dropped. `new` holds `token_width` values per token, of
/// which this head's are `head`.
fn store_rows(
    rows: &mut Vec<f16>,
    new: &[f32],
    token_width: usize,
    head: std::ops::Range<usize>,
    start: usize,
) {
    rows.truncate(start * head.len());
    for token in new.chunks_exact(token_width) {
        let at = rows.len();
        rows.resize(at + head.len(), f16::ZERO);
        rows[at..].convert_from_f32_slice(&token[head.clone()]);
    }
}

impl<'a> Transformer<'a> {
    pub(super) fn load(
        gguf: &Gguf<'a>,
        recipe: Recipe,
        kernels: Kernels,
        grouped: bool,
    ) -> Result<Transformer<'a>, ModelError> {
        let c = &recipe.common;
        let matrix = |name: &str, cols, rows| matrix(gguf, &kernels, grouped, name, cols, rows);
        let embd = gguf
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        if embd.dims.len() != 2 || embd.dims[0] != c.n_embd as u64 {
            return Err(ModelError::BadShape {
                name: "token_embd.weight".into(),
                expected: vec![c.n_embd as u64, embd.dims.get(1).copied().unwrap_or(0)],
                got: embd.dims.clone(),
            });
        }
        let n_vocab = embd.dims[1] as usize;
        let token_embd = Matrix {
            grouped: grouped && is_grouped(gguf, embd, &kernels),
            ..Matrix::from_tensor(embd)
        };
        let output = match gguf.tensor("output.weight") {
            Some(_) => matrix("output.weight", c.n_embd, n_vocab)?,
            None => token_embd,
        };
        let q_dim = c.n_head * c.head_dim;
        let k_dim = c.n_head_kv * c.head_dim;
        let v_dim = c.n_head_kv * c.head_dim_v;
        let mut layers = Vec::with_capacity(c.n_layer);
        for (il, layer) in recipe.layers.iter().enumerate() {
            let name = |t: &str| format!("blk.{il}.{t}.weight");
            let optional_norm = |present: bool, t: &str, len: usize| {
                present
                    .then(|| vector(gguf, &kernels, &name(t), len))
                    .transpose()
            };
            layers.push(Layer {
                attn_norm: vector(gguf, &kernels, &name("attn_norm"), c.n_embd)?,
                wq: matrix(&name("attn_q"), c.n_embd, q_dim)?,
                wk: matrix(&name("attn_k"), c.n_embd, k_dim)?,
                wv: matrix(&name("attn_v"), c.n_embd, v_dim)?,
                wo: matrix(&name("attn_output"), c.n_head * c.head_dim_v, c.n_embd)?,
                q_norm: optional_norm(recipe.qk_norms, "attn_q_norm", c.head_dim)?,
                k_norm: optional_norm(recipe.qk_norms, "attn_k_norm", c.head_dim)?,
                post_attn_norm: optional_norm(recipe.post_norms, "post_attention_norm", c.n_embd)?,
                ffn_norm: vector(gguf, &kernels, &name("ffn_norm"), c.n_embd)?,
                gate: matrix(&name("ffn_gate"), c.n_embd, c.n_ff)?,
                up: matrix(&name("ffn_up"), c.n_embd, c.n_ff)?,
                down: matrix(&name("ffn_down"), c.n_ff, c.n_embd)?,
                post_ffn_norm: optional_norm(recipe.post_norms, "post_ffw_norm", c.n_embd)?,
                rope: layer.rope,
                window: layer.window,
            });
        }
        Ok(Transformer {
            hparams: Hyperparameters {
                architecture: gguf.architecture()?.to_string(),
                n_vocab,
                n_embd: c.n_embd,
                n_layer: c.n_layer,
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: c.head_dim,
                head_dim_v: c.head_dim_v,
                n_ff: c.n_ff,
                context_length: c.context_length,
            },
            output_norm: vector(gguf, &kernels, "output_norm.weight", c.n_embd)?,
            kernels,
            token_embd,
            embed_scale: if recipe.scale_embeddings {
                (c.n_embd as f32).sqrt()
            } else {
                1.0
            },
            layers,
            output,
            rms_eps: c.rms_eps,
            query_scale: recipe.query_scale,
            attn_soft_cap: recipe.attn_soft_cap,
            final_soft_cap: recipe.final_soft_cap,
            ffn: recipe.ffn,
        })
    }

    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// The weight types of the matrices the loader grouped (`model::group_weights`).
    pub fn grouped_types(&self) -> Vec<GgmlType> {
        let mut types: Vec<GgmlType> = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
            .chain([&self.output, &self.token_embd])
            .filter(|m| m.grouped)
            .map(|m| m.ty)
            .collect();
        types.sort_by_key(|t| t.id());
        types.dedup();
        types
    }

    /// The kernels, and the weight types read grouped: `avx512 (512-bit rows: q4_K), grouped
    /// q4_K`, as the benchmarks and `--verbose` print it.
    pub fn backend(&self) -> String {
        let grouped: Vec<&str> = self.grouped_types().iter().map(|t| t.name()).collect();
        if grouped.is_empty() {
            self.kernels.to_string()
        } else {
            format!("{}, grouped {}", self.kernels, grouped.join(", "))
        }
    }

    /// A cache for `n_ctx` positions, or `ContextTooLarge` when the memory cannot be had.
    pub fn new_cache(&self, n_ctx: usize) -> Result<KvCache, ModelError> {
        let h = &self.hparams;
        let too_large = || ModelError::ContextTooLarge { requested: n_ctx };
        let per_head = |dim: usize| {
            n_ctx
                .checked_mul(dim)
                .filter(|&n| n <= isize::MAX as usize / 2)
                .ok_or_else(too_large)
        };
        // A failed allocation would abort the process; reserving first turns it into an error.
        let reserved = |len: usize| -> Result<Vec<f16>, ModelError> {
            let mut rows = Vec::new();
            rows.try_reserve_exact(len).map_err(|_| too_large())?;
            Ok(rows)
        };
        let layer = |len: usize| (0..h.n_head_kv).map(|_| reserved(len)).collect();
        let k_len = per_head(h.head_dim)?;
        let v_len = per_head(h.head_dim_v)?;
        Ok(KvCache {
            n_ctx,
            keys: (0..h.n_layer)
                .map(|_| layer(k_len))
                .collect::<Result<_, _>>()?,
            values: (0..h.n_layer)
                .map(|_| layer(v_len))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Runs `tokens` at positions `start..start + tokens.len()`, writing their keys and values
    /// into `cache`, and returns the logits after each of `tokens[logits_from..]` (none when
    /// `logits_from == tokens.len()`): the vocabulary projection is the largest matmul of a small
    /// model, so it is only done where someone reads the result.
    ///
    /// The caller guarantees the positions fit the cache and the ids fit the vocabulary.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        start: usize,
        logits_from: usize,
    ) -> Vec<f32> {
        self.forward_batch(&mut [Sequence {
            cache,
            tokens,
            start,
            logits_from,
        }])
    }

    /// One forward pass over the tokens of several sequences: every weight matrix is multiplied
    /// once for all of them (generation reads the weights once per pass, whatever the number
    /// of sequences), and each token attends to its own sequence's cache. Returns the logits
    /// each sequence asks for, sequence after sequence.
    ///
    /// The caller guarantees each sequence's positions fit its cache, the ids fit the
    /// vocabulary, and no cache appears twice.
    pub fn forward_batch(&self, batch: &mut [Sequence]) -> Vec<f32> {
        self.run(batch, Head::Logits)
    }

    /// [`Self::forward_batch`] without the vocabulary projection: the final-normed hidden
    /// state (llama.cpp's `result_norm`, what it calls the embeddings) after each token a
    /// sequence asks logits for, `n_embd` values each, sequence after sequence.
    pub fn hidden_batch(&self, batch: &mut [Sequence]) -> Vec<f32> {
        self.run(batch, Head::Hidden)
    }

    fn run(&self, batch: &mut [Sequence], head: Head) -> Vec<f32> {
        // Run on one of rayon's threads: a parallel loop started from any other thread hands
        // its work over and sleeps until it is done, and a forward pass starts hundreds of
        // them. One hand-over per pass instead of one per matmul (at one token and -t 1 those
        // were 8% of the time, in futex waits and wake-ups).
        rayon::scope(|_| {
            let rows = Rows::of(batch);
            let x = self.layers_pass(batch, &rows);
            let mut wanted = Vec::new();
            for (sequence, first) in batch.iter().zip(&rows.first_row) {
                let from = first + sequence.logits_from.min(sequence.tokens.len());
                let to = first + sequence.tokens.len();
                wanted.extend_from_slice(&x[from * self.hparams.n_embd..to * self.hparams.n_embd]);
            }
            ops::rms_norm(&mut wanted, &self.output_norm, self.rms_eps);
            match head {
                Head::Hidden => wanted,
                Head::Logits => self.logits(&wanted),
            }
        })
    }

    /// The token embeddings through every layer: the residual stream after the last one.
    fn layers_pass(&self, batch: &mut [Sequence], rows: &Rows) -> Vec<f32> {
        let h = &self.hparams;
        let n = rows.positions.len();
        let mut x = vec![0f32; n * h.n_embd];
        let tokens = batch.iter().flat_map(|s| s.tokens);
        for (row, &token) in x.chunks_exact_mut(h.n_embd).zip(tokens) {
            self.token_embd.row(&self.kernels, token as usize, row);
            row.iter_mut().for_each(|v| *v *= self.embed_scale);
        }

        let mut scratch = Scratch::new(h, n);
        for (il, layer) in self.layers.iter().enumerate() {
            scratch.normed.copy_from_slice(&x);
            ops::rms_norm(&mut scratch.normed, &layer.attn_norm, self.rms_eps);
            self.attention(layer, &mut scratch, batch, rows, il);
            if let Some(norm) = &layer.post_attn_norm {
                ops::rms_norm(&mut scratch.out, norm, self.rms_eps);
            }
            ops::add_in_place(&mut x, &scratch.out);

            scratch.normed.copy_from_slice(&x);
            ops::rms_norm(&mut scratch.normed, &layer.ffn_norm, self.rms_eps);
            self.feed_forward(layer, &mut scratch);
            if let Some(norm) = &layer.post_ffn_norm {
                ops::rms_norm(&mut scratch.out, norm, self.rms_eps);
            }
            ops::add_in_place(&mut x, &scratch.out);
        }
        x
    }

    /// The vocabulary projection of final-normed hidden states: the largest matmul of a small
    /// model, so it is only done for the rows someone reads.
    fn logits(&self, normed: &[f32]) -> Vec<f32> {
        let h = &self.hparams;
        let mut logits = vec![0f32; normed.len() / h.n_embd * h.n_vocab];
        if logits.is_empty() {
            return logits;
        }
        self.output.matmul(&self.kernels, normed, &mut logits);
        if let Some(cap) = self.final_soft_cap {
            ops::soft_cap(&self.kernels, &mut logits, cap);
        }
        logits
    }

    /// Attention over `scratch.normed`, leaving the result in `scratch.out`.
    fn attention(
        &self,
        layer: &Layer,
        scratch: &mut Scratch,
        batch: &mut [Sequence],
        rows: &Rows,
        il: usize,
    ) {
        let h = &self.hparams;
        let (q_dim, k_dim, v_dim) = (
            h.n_head * h.head_dim,
            h.n_head_kv * h.head_dim,
            h.n_head_kv * h.head_dim_v,
        );
        let n = scratch.normed.len() / h.n_embd;
        let Scratch {
            normed: input,
            first,
            second,
            out,
        } = scratch;
        let (q, rest) = first.split_at_mut(n * q_dim);
        let (k, rest) = rest.split_at_mut(n * k_dim);
        let v = &mut rest[..n * v_dim];
        let heads_out = &mut second[..n * h.n_head * h.head_dim_v];
        Matrix::matmul_each(
            &self.kernels,
            input,
            [(&layer.wq, q), (&layer.wk, k), (&layer.wv, v)],
        );
        if let Some(norm) = &layer.q_norm {
            ops::rms_norm(q, norm, self.rms_eps);
        }
        if let Some(norm) = &layer.k_norm {
            ops::rms_norm(k, norm, self.rms_eps);
        }
        q.par_chunks_mut(q_dim)
            .zip(k.par_chunks_mut(k_dim))
            .zip(&rows.positions)
            .for_each(|((q, k), &(_, pos))| {
                layer.rope.apply(q, k, h.head_dim, pos);
            });
        // llama.cpp's attention converts queries to f16 before the dot with the f16 keys.
        let mut q_f16 = vec![f16::ZERO; q.len()];
        q_f16
            .par_chunks_mut(q_dim)
            .zip(q.par_chunks_mut(q_dim))
            .for_each(|(to, from)| {
                from.iter_mut().for_each(|v| *v *= self.query_scale);
                to.convert_from_f32_slice(from);
            });
        let q = q_f16;

        for (sequence, &first_row) in batch.iter_mut().zip(&rows.first_row) {
            let own = first_row..first_row + sequence.tokens.len();
            let (k, v) = (
                &k[own.start * k_dim..own.end * k_dim],
                &v[own.start * v_dim..own.end * v_dim],
            );
            let cache = &mut *sequence.cache;
            for kv_head in 0..h.n_head_kv {
                let (keys, values) = (&mut cache.keys[il][kv_head], &mut cache.values[il][kv_head]);
                let (kd, vd) = (h.head_dim, h.head_dim_v);
                store_rows(
                    keys,
                    k,
                    k_dim,
                    kv_head * kd..(kv_head + 1) * kd,
                    sequence.start,
                );
                store_rows(
                    values,
                    v,
                    v_dim,
                    kv_head * vd..(kv_head + 1) * vd,
                    sequence.start,
                );
            }
        }

        let caches: Vec<&KvCache> = batch.iter().map(|sequence| &*sequence.cache).collect();
        let group = h.n_head / h.n_head_kv;
        // The query heads of one key head read the same keys and values, so a task takes them
        // together and the kernels convert each key and value once for all of them; with few
        // tokens, a head per task keeps every thread busy. A head's result is the same either way.
        let heads_per_task = if n * h.n_head_kv >= 4 * rayon::current_num_threads() {
            group
        } else {
            1
        };
        heads_out
            .par_chunks_mut(heads_per_task * h.head_dim_v)
            .enumerate()
            .for_each_init(
                || (Vec::<f32>::new(), Vec::<f16>::new()),
                |(scores, rounded), (task, out)| {
                    let first_head = task * heads_per_task;
                    let (t, head) = (first_head / h.n_head, first_head % h.n_head);
                    let (sequence, pos) = rows.positions[t];
                    let (keys, values) = (&caches[sequence].keys[il], &caches[sequence].values[il]);
                    let kv_head = head / group;
                    let dim = h.head_dim;
                    let queries = &q[t * q_dim + head * dim..][..heads_per_task * dim];
                    // A sliding layer masks key position p0 for query position p when
                    // p - p0 >= window.
                    let first = layer.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    let n_keys = pos + 1 - first;
                    scores.resize(heads_per_task * n_keys, 0.0);
                    let keys = &keys[kv_head][first * dim..(pos + 1) * dim];
                    self.kernels.attention_scores(queries, keys, dim, scores);
                    if let Some(cap) = self.attn_soft_cap {
                        ops::soft_cap(&self.kernels, scores, cap);
                    }
                    scores
                        .chunks_exact_mut(n_keys)
                        .for_each(|scores| ops::softmax(&self.kernels, scores));
                    // llama.cpp multiplies the f16 values by f16 weights; Gemma 3's large attention
                    // scores make the logits sensitive to that rounding.
                    rounded.resize(scores.len(), f16::ZERO);
                    rounded.convert_from_f32_slice(scores);
                    rounded.convert_to_f32_slice(scores);
                    let dim = h.head_dim_v;
                    let values = &values[kv_head][first * dim..(pos + 1) * dim];
                    // The values are added to what `out` holds, left from the layer before.
                    out.fill(0.0);
                    self.kernels.attention_values(scores, values, dim, out);
                },
            );

        layer.wo.matmul(&self.kernels, heads_out, out);
    }

    /// The gated feed-forward over `scratch.normed`, leaving the result in `scratch.out`.
    fn feed_forward(&self, layer: &Layer, scratch: &mut Scratch) {
        let n = scratch.normed.len() / self.hparams.n_embd;
        let Scratch {
            normed: input,
            first,
            second,
            out,
        } = scratch;
        let gate = &mut first[..n * self.hparams.n_ff];
        let up = &mut second[..n * self.hparams.n_ff];
        Matrix::matmul_each(&self.kernels, input, [(&layer.gate, gate), (&layer.up, up)]);
        match self.ffn {
            FeedForward::GeluGated => ops::gelu_in_place(gate),
            FeedForward::SiluGated => ops::silu_in_place(gate),
        }
        ops::mul_in_place(gate, up);
        layer.down.matmul(&self.kernels, gate, out);
    }
}

/// What a forward pass ends with.
#[derive(Clone, Copy)]
enum Head {
    /// The vocabulary projection: logits, for sampling and scoring.
    Logits,
    /// The final-normed hidden states themselves, for embeddings.
    Hidden,
}

/// One sequence's share of a forward pass: `tokens` at positions `start..start + tokens.len()`,
/// their keys and values written into `cache` (anything it held from `start` on is forgotten),
/// and logits (or hidden states) wanted after each of `tokens[logits_from..]`.
pub struct Sequence<'b> {
    pub cache: &'b mut KvCache,
    pub tokens: &'b [u32],
    pub start: usize,
    pub logits_from: usize,
}

/// Where each row of a pass comes from: the batch's tokens one after another, sequence by
/// sequence.
struct Rows {
    /// Per row: the index of its sequence in the batch, and its position in that sequence.
    positions: Vec<(usize, usize)>,
    /// Per sequence: its first row.
    first_row: Vec<usize>,
}

impl Rows {
    fn of(batch: &[Sequence]) -> Rows {
        let mut positions = Vec::new();
        let mut first_row = Vec::with_capacity(batch.len());
        for (index, sequence) in batch.iter().enumerate() {
            assert!(
                sequence.start + sequence.tokens.len() <= sequence.cache.n_ctx,
                "positions past the cache"
            );
            first_row.push(positions.len());
            positions.extend((0..sequence.tokens.len()).map(|t| (index, sequence.start + t)));
        }
        Rows {
            positions,
            first_row,
        }
    }
}

/// The activations one forward pass works in, allocated once per pass rather than once per
/// layer: zeroing fresh buffers on every layer was serial work that kept the other threads
/// waiting. Attention and the feed-forward block take turns with `first` and `second`, so
/// the pass holds the larger of their buffers, not both.
struct Scratch {
    /// The normalized input of the current attention or feed-forward block.
    normed: Vec<f32>,
    /// Attention's queries, keys and values, or the feed-forward gate.
    first: Vec<f32>,
    /// Attention's per-head outputs, or the feed-forward up projection.
    second: Vec<f32>,
    /// The output of the current block.
    out: Vec<f32>,
}

impl Scratch {
    fn new(h: &Hyperparameters, n: usize) -> Scratch {
        let qkv = h.n_head * h.head_dim + h.n_head_kv * (h.head_dim + h.head_dim_v);
        Scratch {
            normed: vec![0.0; n * h.n_embd],
            first: vec![0.0; n * qkv.max(h.n_ff)],
            second: vec![0.0; n * (h.n_head * h.head_dim_v).max(h.n_ff)],
            out: vec![0.0; n * h.n_embd],
        }
    }
}
