//! Models: typed weights and hyperparameters read from a GGUF, and the forward pass.
//!
//! Every supported architecture is one recipe over the same decoder-only transformer: the
//! per-architecture files read the metadata and say which optional steps (post-norms, soft caps,
//! q/k norms, sliding windows, rope style) their layers use; `transformer.rs` runs them.

mod gemma2;
mod gemma3;
mod llama;
pub mod matmul;
pub mod ops;
mod transformer;

use crate::gguf::{Gguf, GgufError, Tensor};
use kernels::Kernels;
use matmul::Matrix;
use rayon::prelude::*;

pub use transformer::{KvCache, Sequence, Transformer};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture '{0}' (supported: gemma2, gemma3, llama)")]
    UnsupportedArchitecture(String),
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {got:?}, expected {expected:?}")]
    BadShape {
        name: String,
        expected: Vec<u64>,
        got: Vec<u64>,
    },
    #[error("bad hyperparameter: {0}")]
    BadHyperparameter(String),
    #[error("context of {requested} tokens is too large for this machine's memory")]
    ContextTooLarge { requested: usize },
    #[error("tokenizer.ggml.tokens lists {n_tokens} tokens but token_embd.weight has {n_rows} rows (one per token)")]
    VocabularyMismatch { n_tokens: usize, n_rows: usize },
    #[error("token_embd.weight has no rows: the model has no vocabulary")]
    EmptyVocabulary,
}

/// Rewrites, in place, the weights of `bytes` (a whole GGUF) that `kernels` reads faster
/// grouped (`Kernels::group_rows`): every matrix of a type with grouped kernels whose rows
/// are whole groups (the token embeddings too: Gemma's are also its output projection, the
/// largest matrix, and a lookup takes its row back out of its group), but for any whose bytes
/// another tensor also claims (a malformed file), which would otherwise read rewritten
/// bytes. [`load`] with `grouped` then reads them so. Returns whether any
/// matrix was grouped.
pub fn group_weights(bytes: &mut [u8], kernels: &Kernels) -> Result<bool, GgufError> {
    let start = bytes.as_ptr() as usize;
    let chosen: Vec<(std::ops::Range<usize>, kernels::GgmlType, usize, usize)> = {
        let gguf = Gguf::parse(bytes)?;
        gguf.tensors()
            .iter()
            .filter(|t| is_grouped(&gguf, t, kernels))
            .map(|t| {
                let at = t.data.as_ptr() as usize - start;
                let group_len = kernels.group_len(t.ty).expect("is_grouped checked");
                (at..at + t.data.len(), t.ty, t.row_len(), group_len)
            })
            .collect()
    };
    for (range, ty, cols, group_len) in &chosen {
        let stripe = ty.row_bytes(*cols).expect("the GGUF reader checked rows") * group_len;
        // Many stripes per task: each task copies its stripes aside one at a time.
        bytes[range.clone()]
            .par_chunks_mut(stripe * 64)
            .for_each(|stripes| {
                assert!(kernels.group_rows(*ty, *cols, stripes), "whole groups");
            });
    }
    Ok(!chosen.is_empty())
}

/// Whether `group_weights` groups this tensor of `gguf`.
fn is_grouped(gguf: &Gguf, tensor: &Tensor, kernels: &Kernels) -> bool {
    let span = |t: &Tensor| {
        let start = t.data.as_ptr() as usize;
        start..start + t.data.len()
    };
    let own = span(tensor);
    let shared = gguf.tensors().iter().any(|other| {
        let theirs = span(other);
        !std::ptr::eq(other, tensor) && theirs.start < own.end && own.start < theirs.end
    });
    tensor.dims.len() == 2
        && tensor.row_len() > 0
        && !shared
        && kernels
            .group_len(tensor.ty)
            .is_some_and(|len| tensor.n_rows().is_multiple_of(len))
}

/// Loads whichever supported architecture the file declares; `grouped` says that
/// [`group_weights`] rewrote its weights with the same kernels.
pub fn load<'a>(
    gguf: &Gguf<'a>,
    kernels: Kernels,
    grouped: bool,
) -> Result<Transformer<'a>, ModelError> {
    let arch = gguf.architecture()?;
    let recipe = match arch {
        "gemma2" => gemma2::recipe(gguf)?,
        "gemma3" => gemma3::recipe(gguf)?,
        "llama" => llama::recipe(gguf)?,
        other => return Err(ModelError::UnsupportedArchitecture(other.to_string())),
    };
    let model = Transformer::load(gguf, recipe, kernels, grouped)?;
    if model.hparams.n_vocab == 0 {
        return Err(ModelError::EmptyVocabulary);
    }
    // Sampling picks among the embedding rows and the prompt's ids come from the vocabulary,
    // so the two must be the same set of ids, as llama.cpp also requires.
    if let Some(tokens) = gguf.get_array_opt("tokenizer.ggml.tokens")? {
        if tokens.len() != model.hparams.n_vocab {
            return Err(ModelError::VocabularyMismatch {
                n_tokens: tokens.len(),
                n_rows: model.hparams.n_vocab,
            });
        }
    }
    Ok(model)
}

/// The hyperparameters every architecture shares, under `<arch>.` keys.
struct Common {
    n_embd: usize,
    n_layer: usize,
    n_ff: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    head_dim_v: usize,
    rms_eps: f32,
    rope_base: f32,
    rope_freq_scale: f32,
    context_length: usize,
}

impl Common {
    fn read(gguf: &Gguf, arch: &str) -> Result<Common, ModelError> {
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = gguf.get_u32(&key("embedding_length"))? as usize;
        let n_head = gguf.get_u32(&key("attention.head_count"))? as usize;
        if n_head == 0 || n_embd == 0 {
            return Err(ModelError::BadHyperparameter(
                "embedding length and head count must be positive".into(),
            ));
        }
        let n_head_kv = gguf
            .get_u32_opt(&key("attention.head_count_kv"))?
            .map_or(n_head, |v| v as usize);
        if n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) {
            return Err(ModelError::BadHyperparameter(format!(
                "{n_head} attention heads cannot be shared among {n_head_kv} key/value heads"
            )));
        }
        let head_dim = gguf
            .get_u32_opt(&key("attention.key_length"))?
            .map_or(n_embd / n_head, |v| v as usize);
        let head_dim_v = gguf
            .get_u32_opt(&key("attention.value_length"))?
            .map_or(head_dim, |v| v as usize);
        if head_dim == 0 || head_dim_v == 0 {
            return Err(ModelError::BadHyperparameter(
                "key and value lengths must be positive".into(),
            ));
        }
        let n_ff = gguf.get_u32(&key("feed_forward_length"))? as usize;
        if n_ff == 0 {
            return Err(ModelError::BadHyperparameter(format!(
                "{} must be positive",
                key("feed_forward_length")
            )));
        }
        let rope_freq_scale = match gguf.get_f32_opt(&key("rope.scaling.factor"))? {
            Some(factor) if factor != 0.0 => 1.0 / factor,
            _ => 1.0,
        };
        let n_layer = gguf.get_u32(&key("block_count"))? as usize;
        // Per-layer plans are built before the tensors are looked up; each layer needs several
        // tensors, so a count beyond the file's tensors is corrupt and must not size anything.
        if n_layer > gguf.tensors().len() {
            return Err(ModelError::BadHyperparameter(format!(
                "{} is {n_layer}, but the file holds only {} tensors",
                key("block_count"),
                gguf.tensors().len()
            )));
        }
        Ok(Common {
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            rms_eps: gguf.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: gguf.get_f32_opt(&key("rope.freq_base"))?.unwrap_or(10000.0),
            rope_freq_scale,
            context_length: gguf.get_u32(&key("context_length"))? as usize,
        })
    }
}

/// What an architecture's layers do beyond the plain pre-norm transformer.
struct Recipe {
    common: Common,
    /// Gemma multiplies embeddings by sqrt(n_embd).
    scale_embeddings: bool,
    /// Gemma normalizes each sub-layer's output again before the residual add.
    post_norms: bool,
    /// Gemma 3 normalizes each head of q and k before rope.
    qk_norms: bool,
    ffn: FeedForward,
    attn_soft_cap: Option<f32>,
    final_soft_cap: Option<f32>,
    query_scale: f32,
    /// Per layer: the rope and the sliding window (None: attends to everything).
    layers: Vec<LayerRecipe>,
}

#[derive(Clone, Copy)]
struct LayerRecipe {
    rope: ops::Rope,
    window: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FeedForward {
    /// ffn_down(gelu(ffn_gate·x) ⊙ ffn_up·x)
    GeluGated,
    /// ffn_down(silu(ffn_gate·x) ⊙ ffn_up·x)
    SiluGated,
}

/// Which layers slide, from `attention.sliding_window_pattern` when the file has it (a per-layer
/// bool array, or a period n meaning every n-th layer is global), else the architecture's
/// default period. llama.cpp's rule: layer `il` slides when `il % n < n - 1`.
fn sliding_layers(
    gguf: &Gguf,
    arch: &str,
    n_layer: usize,
    default_period: usize,
) -> Result<Vec<bool>, ModelError> {
    let key = format!("{arch}.attention.sliding_window_pattern");
    let period = match gguf.get(&key) {
        Some(value) => {
            if let Some(items) = value.as_array() {
                let flags: Option<Vec<bool>> = items.iter().map(|v| v.as_bool()).collect();
                return match flags {
                    Some(flags) if flags.len() == n_layer => Ok(flags),
                    _ => Err(ModelError::BadHyperparameter(format!(
                        "{key} must hold one boolean per layer"
                    ))),
                };
            }
            value
                .as_i64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| ModelError::BadHyperparameter(format!("{key} is not a count")))?
        }
        None => default_period,
    };
    Ok((0..n_layer)
        .map(|il| period == 0 || il % period < period - 1)
        .collect())
}

/// The matrix `name`, of `rows` rows of `cols`; `grouped` as [`load`] has it.
fn matrix<'a>(
    gguf: &Gguf<'a>,
    kernels: &Kernels,
    grouped: bool,
    name: &str,
    cols: usize,
    rows: usize,
) -> Result<Matrix<'a>, ModelError> {
    let tensor = gguf
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    let expected = vec![cols as u64, rows as u64];
    if tensor.dims != expected {
        return Err(ModelError::BadShape {
            name: name.to_string(),
            expected,
            got: tensor.dims.clone(),
        });
    }
    Ok(Matrix {
        grouped: grouped && is_grouped(gguf, tensor, kernels),
        ..Matrix::from_tensor(tensor)
    })
}

fn vector(gguf: &Gguf, kernels: &Kernels, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let tensor = gguf
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if tensor.dims != [len as u64] {
        return Err(ModelError::BadShape {
            name: name.to_string(),
            expected: vec![len as u64],
            got: tensor.dims.clone(),
        });
    }
    let mut out = vec![0f32; len];
    kernels.dequantize_row(tensor.ty, tensor.data, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic_model() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf"
        );
        std::fs::read(path).expect("synthetic model in the repository")
    }

    /// Byte offset just past the GGUF string `s` (its length, then its bytes).
    fn after_string(bytes: &[u8], s: &str) -> usize {
        let mut needle = (s.len() as u64).to_le_bytes().to_vec();
        needle.extend(s.as_bytes());
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("string present")
            + needle.len()
    }

    fn load_error(bytes: &[u8]) -> ModelError {
        let gguf = Gguf::parse(bytes).expect("still a well-formed GGUF");
        match load(&gguf, Kernels::detect(), false) {
            Ok(_) => panic!("the model loaded"),
            Err(e) => e,
        }
    }

    #[test]
    fn tensors_that_share_bytes_are_not_grouped() {
        let kernels = Kernels::detect();
        let mut bytes = synthetic_model();
        // A malformed file: attn_k's data offset (after its name, dimension count, two
        // dimensions and type) made attn_q's, so the two tensors claim the same bytes.
        let offset_field = |bytes: &[u8], name: &str| after_string(bytes, name) + 4 + 16 + 4;
        let q = offset_field(&bytes, "blk.0.attn_q.weight");
        let k = offset_field(&bytes, "blk.0.attn_k.weight");
        let q_offset: [u8; 8] = bytes[q..q + 8].try_into().unwrap();
        bytes[k..k + 8].copy_from_slice(&q_offset);
        let file = bytes.clone();
        let gguf = Gguf::parse(&file).unwrap();
        let range = |name: &str| {
            let t = gguf.tensor(name).unwrap();
            assert_eq!(t.ty, kernels::GgmlType::Q4_K, "{name}");
            let at = t.data.as_ptr() as usize - file.as_ptr() as usize;
            at..at + t.data.len()
        };
        if kernels.group_len(kernels::GgmlType::Q4_K).is_none() {
            eprintln!("no grouped kernels here");
            return;
        }
        assert!(group_weights(&mut bytes, &kernels).unwrap());
        let q = range("blk.0.attn_q.weight");
        assert!(
            bytes[q.clone()] == file[q],
            "a tensor whose bytes another claims was grouped"
        );
        let gate = range("blk.0.ffn_gate.weight");
        assert!(bytes[gate.clone()] != file[gate], "the others are grouped");
        let grouped = Gguf::parse(&bytes).unwrap();
        let model = load(&grouped, kernels, true).unwrap();
        assert!(!model.grouped_types().is_empty());
    }

    #[test]
    fn the_synthetic_model_loads() {
        let bytes = synthetic_model();
        let gguf = Gguf::parse(&bytes).unwrap();
        assert_eq!(
            load(&gguf, Kernels::detect(), false)
                .unwrap()
                .hparams
                .n_vocab,
            4096
        );
    }

    #[test]
    fn a_block_count_beyond_the_tensors_is_refused() {
        // A block count of 2^32 - 1 used to size the per-layer plans (gigabytes) before any
        // tensor was looked up, and the failed allocation aborted the process.
        let mut bytes = synthetic_model();
        let value = after_string(&bytes, "gemma2.block_count") + 4;
        bytes[value..value + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = load_error(&bytes).to_string();
        assert!(
            error.contains("gemma2.block_count is 4294967295, but the file holds only 46 tensors"),
            "{error}"
        );
    }

    #[test]
    fn a_cache_beyond_the_address_space_is_an_error() {
        // 2^40 positions of 2 x 64-dim f16 keys are 256 TiB per layer: the allocation used to
        // abort the process.
        let bytes = synthetic_model();
        let gguf = Gguf::parse(&bytes).unwrap();
        let model = load(&gguf, Kernels::detect(), false).unwrap();
        assert!(matches!(
            model.new_cache(1 << 40),
            Err(ModelError::ContextTooLarge { requested }) if requested == 1 << 40
        ));
        assert_eq!(model.new_cache(8).unwrap().n_ctx(), 8);
    }

    #[test]
    fn a_vocabulary_of_another_size_than_the_embeddings_is_refused() {
        // One embedding row fewer than the 4096 tokens; the tied output projection follows it.
        let mut bytes = synthetic_model();
        let rows = after_string(&bytes, "token_embd.weight") + 4 + 8;
        bytes[rows..rows + 8].copy_from_slice(&4095u64.to_le_bytes());
        assert!(matches!(
            load_error(&bytes),
            ModelError::VocabularyMismatch {
                n_tokens: 4096,
                n_rows: 4095
            }
        ));
    }

    #[test]
    fn an_embedding_without_rows_is_refused() {
        // Without tokenizer.ggml.tokens to compare against, a model with no token could load
        // and then fail on the first token it was given.
        let mut bytes = synthetic_model();
        let rows = after_string(&bytes, "token_embd.weight") + 4 + 8;
        bytes[rows..rows + 8].copy_from_slice(&0u64.to_le_bytes());
        let key = after_string(&bytes, "tokenizer.ggml.tokens");
        bytes[key - 1] = b'X';
        assert!(matches!(load_error(&bytes), ModelError::EmptyVocabulary));
    }
}
