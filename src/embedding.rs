//! Embeddings: each token's final-normed hidden state (llama.cpp's `result_norm`), pooled
//! into one vector per input and normalised as llama.cpp does (`llama-graph.cpp`'s pooling,
//! `common_embd_normalize`).

use crate::engine::Engine;
use crate::gguf::Gguf;
use crate::session::{Part, Session, SessionError};
use std::sync::Arc;

/// How the vectors of an input's tokens become the input's embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Every token's vector, unpooled.
    None,
    /// The average of the tokens' vectors.
    Mean,
    /// The first token's vector.
    Cls,
    /// The last token's vector: the one that has read the whole input in a causal model.
    Last,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("unknown pooling {0:?}: use none, mean, cls or last")]
    UnknownPooling(String),
    #[error("input {index} is empty: an embedding needs at least one token")]
    EmptyInput { index: usize },
    #[error("stopped before the last pass")]
    Stopped,
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl std::str::FromStr for Pooling {
    type Err = EmbeddingError;

    fn from_str(name: &str) -> Result<Pooling, EmbeddingError> {
        match name {
            "none" => Ok(Pooling::None),
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last" => Ok(Pooling::Last),
            other => Err(EmbeddingError::UnknownPooling(other.to_string())),
        }
    }
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }

    /// The pooling the model's GGUF names (`{arch}.pooling_type`, llama.cpp's enum), if any.
    /// Rank (4, a reranker's classifier head) belongs to architectures this engine does not
    /// load, so it reads as absent.
    pub fn from_gguf(gguf: &Gguf) -> Option<Pooling> {
        let key = format!("{}.pooling_type", gguf.architecture().ok()?);
        match gguf.get(&key)?.as_i64()? {
            0 => Some(Pooling::None),
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }

    /// What a model gets without `--pooling`: its GGUF's pooling, else mean. llama.cpp falls
    /// back to none for a model without the key (every causal LM), which makes its
    /// `/v1/embeddings` refuse every request on them; mean is what the sentence embedders
    /// made from causal LMs mostly use, and gives one vector per input as clients expect.
    pub fn default_for(model: Option<Pooling>) -> Pooling {
        model.unwrap_or(Pooling::Mean)
    }

    /// `states` (`n_embd` values per token of one input) pooled: one vector, or one per token
    /// for `None`.
    pub fn pool(self, states: &[f32], n_embd: usize) -> Vec<Vec<f32>> {
        let mut rows = states.chunks_exact(n_embd);
        match self {
            Pooling::None => rows.map(<[f32]>::to_vec).collect(),
            Pooling::Cls => rows.next().map(<[f32]>::to_vec).into_iter().collect(),
            Pooling::Last => rows.next_back().map(<[f32]>::to_vec).into_iter().collect(),
            Pooling::Mean => {
                let n = rows.len();
                let mut sum = vec![0f64; n_embd];
                for row in rows {
                    sum.iter_mut()
                        .zip(row)
                        .for_each(|(s, &v)| *s += f64::from(v));
                }
                vec![sum.iter().map(|s| (s / n as f64) as f32).collect()]
            }
        }
    }
}

/// Scales `vector` as llama.cpp's `--embd-normalize` does: -1 leaves it, 0 scales its largest
/// magnitude to 32760 (an int16 range), 2 to unit Euclidean length, any other p to unit
/// p-norm (1: taxicab). A zero vector stays zero.
pub fn normalize(vector: &mut [f32], norm: i32) {
    let sum: f64 = match norm {
        -1 => 1.0,
        0 => vector.iter().fold(0f64, |m, &v| m.max(f64::from(v.abs()))) / 32760.0,
        2 => vector
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt(),
        p => vector
            .iter()
            .map(|&v| f64::from(v.abs()).powi(p))
            .sum::<f64>()
            .powf(1.0 / f64::from(p)),
    };
    let scale = if sum > 0.0 { (1.0 / sum) as f32 } else { 0.0 };
    vector.iter_mut().for_each(|v| *v *= scale);
}

/// One input's embedding: one vector, or one per token with [`Pooling::None`].
pub type Vectors = Vec<Vec<f32>>;

/// The embeddings of `inputs` (token ids, which the caller has checked against the vocabulary),
/// pooled, not normalised. Inputs are packed into forward passes of at most `pass_tokens`
/// tokens: several short ones share a pass, and a long one goes on in the next pass from its
/// own cache. Each input gets a fresh cache of its own length, kept only while it is read, so
/// memory holds one pass and the inputs in it, whatever the number of inputs. `stop` is asked
/// before each pass (a server's client that has left): a large request ends there.
pub fn embed(
    engine: &Arc<Engine>,
    inputs: &[Vec<u32>],
    pooling: Pooling,
    pass_tokens: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Vectors>, EmbeddingError> {
    if let Some(index) = inputs.iter().position(Vec::is_empty) {
        return Err(EmbeddingError::EmptyInput { index });
    }
    let n_embd = engine.model().hparams.n_embd;
    let pass_tokens = pass_tokens.max(1);
    let mut done = Vec::with_capacity(inputs.len());
    // The inputs being read: (index, session, states so far).
    let mut reading: Vec<(usize, Session, Vec<f32>)> = Vec::new();
    let mut next = 0;
    while done.len() < inputs.len() {
        if stop() {
            return Err(EmbeddingError::Stopped);
        }
        // Each pass takes what is left of the inputs already being read (at most one: a pass
        // ends only inside an input when its budget runs out there), then starts new ones.
        let mut budget = pass_tokens;
        let mut takes = Vec::new();
        for (index, session, _) in &reading {
            let take = (inputs[*index].len() - session.tokens().len()).min(budget);
            budget -= take;
            takes.push(take);
        }
        while budget > 0 && next < inputs.len() {
            let input = &inputs[next];
            let session = engine.session(input.len())?;
            let take = input.len().min(budget);
            budget -= take;
            takes.push(take);
            reading.push((next, session, Vec::with_capacity(input.len() * n_embd)));
            next += 1;
        }
        let mut parts: Vec<Part> = reading
            .iter_mut()
            .zip(&takes)
            .filter(|(_, &take)| take > 0)
            .map(|((index, session, _), &take)| {
                let from = session.tokens().len();
                Part {
                    session,
                    tokens: &inputs[*index][from..from + take],
                    logits_from: 0,
                }
            })
            .collect();
        let states = Session::hidden_batch(&mut parts)?;
        let mut states = states.chunks_exact(n_embd);
        for ((_, _, gathered), &take) in reading.iter_mut().zip(&takes) {
            for row in states.by_ref().take(take) {
                gathered.extend_from_slice(row);
            }
        }
        reading.retain_mut(|(index, session, gathered)| {
            if session.tokens().len() < inputs[*index].len() {
                return true;
            }
            done.push((*index, pooling.pool(gathered, n_embd)));
            false
        });
    }
    done.sort_by_key(|(index, _)| *index);
    Ok(done.into_iter().map(|(_, vectors)| vectors).collect())
}

/// Cosine similarity, in f64 as llama.cpp's `common_embd_similarity_cos`.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return if aa == bb { 1.0 } else { 0.0 };
    }
    dot / (aa.sqrt() * bb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_models::synthetic_engine;

    #[test]
    fn pooling_picks_or_averages_the_token_vectors() {
        let states = [1.0, 2.0, 3.0, 4.0, 8.0, 0.0];
        assert_eq!(Pooling::Mean.pool(&states, 2), vec![vec![4.0, 2.0]]);
        assert_eq!(Pooling::Cls.pool(&states, 2), vec![vec![1.0, 2.0]]);
        assert_eq!(Pooling::Last.pool(&states, 2), vec![vec![8.0, 0.0]]);
        assert_eq!(Pooling::None.pool(&states, 2).len(), 3);
        assert_eq!("last".parse::<Pooling>().unwrap(), Pooling::Last);
        assert!("rank".parse::<Pooling>().is_err());
    }

    #[test]
    fn normalisation_follows_llama_cpp() {
        let unit = |norm| {
            let mut v = vec![3.0, -4.0];
            normalize(&mut v, norm);
            v
        };
        assert_eq!(unit(-1), vec![3.0, -4.0]);
        assert_eq!(unit(2), vec![0.6, -0.8]);
        let taxicab = unit(1);
        assert!((taxicab[0] - 3.0 / 7.0).abs() < 1e-7 && (taxicab[1] + 4.0 / 7.0).abs() < 1e-7);
        assert_eq!(unit(0), vec![24570.0, -32760.0]);
        let p3 = unit(3);
        let length: f32 = p3.iter().map(|v| v.abs().powi(3)).sum();
        assert!((length - 1.0).abs() < 1e-6, "{p3:?}");
        let mut zero = vec![0.0; 3];
        normalize(&mut zero, 2);
        assert_eq!(zero, vec![0.0; 3]);
    }

    /// Inputs packed together, split across passes, or read alone give the same vectors: each
    /// token attends only to its own input, whatever shares its pass. Passes of 16 tokens cut
    /// the second and third inputs across passes. Not much smaller passes: passes of 5 move
    /// the sentence to a cosine of 0.9997 here, as they do a single input read alone in
    /// passes of 5 on Gemma 3 (0.998 against one pass), where llama.cpp's vectors do not move
    /// with -ub at all; matmuls of at most 8 tokens run other kernels than longer ones.
    #[test]
    fn batched_inputs_embed_as_each_alone() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let texts = [
            "Hi",
            "The quick brown fox jumps over the lazy dog.",
            "A third input, a little longer than the first two, to cross a pass of 16 tokens.",
        ];
        let inputs: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tokenizer.encode(t, true, false).unwrap())
            .collect();
        assert!(inputs[0].len() < 16 && inputs[0].len() + inputs[1].len() > 16);
        assert!(inputs[2].len() > 16);
        for pooling in [Pooling::Mean, Pooling::Last, Pooling::None] {
            let alone: Vec<Vectors> = inputs
                .iter()
                .map(|input| {
                    embed(&engine, std::slice::from_ref(input), pooling, 512, &|| {
                        false
                    })
                    .unwrap()
                })
                .map(|mut one| one.remove(0))
                .collect();
            for pass in [512, 16] {
                let together = embed(&engine, &inputs, pooling, pass, &|| false).unwrap();
                assert_eq!(together.len(), inputs.len());
                for (index, (a, b)) in together.iter().zip(&alone).enumerate() {
                    assert_eq!(a.len(), b.len());
                    for (x, y) in a.iter().zip(b) {
                        let similarity = cosine(x, y);
                        assert!(
                            similarity > 0.99999,
                            "{pooling:?}, pass of {pass}: input {index} at {similarity}"
                        );
                    }
                }
            }
        }
        let error = embed(&engine, &[vec![1], vec![]], Pooling::Mean, 8, &|| false).unwrap_err();
        assert!(matches!(error, EmbeddingError::EmptyInput { index: 1 }));
        let error = embed(&engine, &inputs, Pooling::Mean, 8, &|| true).unwrap_err();
        assert!(matches!(error, EmbeddingError::Stopped));
    }
}
