//! A conversation with a model: its KV cache and the tokens the cache holds.

use crate::engine::Engine;
use crate::model::{KvCache, ModelError, Sequence, Transformer};
use std::sync::Arc;

/// Prompt tokens run through the model in one pass; bounds the activations' memory.
const PROMPT_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{needed} tokens do not fit the context of {n_ctx} (use -c to enlarge it)")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub struct Session {
    engine: Arc<Engine>,
    cache: KvCache,
    tokens: Vec<u32>,
}

/// One session's share of a batched evaluation: see [`Session::eval_batch`].
pub struct Part<'s> {
    pub session: &'s mut Session,
    pub tokens: &'s [u32],
    pub logits_from: usize,
}

impl Session {
    pub fn new(engine: Arc<Engine>, n_ctx: usize) -> Result<Session, SessionError> {
        Ok(Session {
            cache: engine.model().new_cache(n_ctx)?,
            engine,
            tokens: Vec::new(),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// Bytes of keys and values the cache holds now.
    pub fn cache_bytes(&self) -> usize {
        self.cache.used_bytes()
    }

    /// The tokens whose keys and values the cache holds, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Makes this session hold what `other` holds, as llama.cpp's copy of one sequence's cache
    /// to another: a prompt read once and continued several ways.
    pub fn copy_from(&mut self, other: &Session) {
        self.cache.clone_from(&other.cache);
        self.tokens.clone_from(&other.tokens);
    }

    /// Forgets everything after the first `len` tokens.
    /// Makes room in a full context (`--context-shift`): keeps the first `keep` tokens, drops
    /// the `discard` after them, and moves the rest down without evaluating them again.
    pub fn shift(&mut self, keep: usize, discard: usize) {
        let len = self.tokens.len();
        let discard = discard.min(len.saturating_sub(keep));
        if discard == 0 {
            return;
        }
        self.engine
            .model()
            .shift_cache(&mut self.cache, len, keep, discard);
        self.tokens.drain(keep..keep + discard);
    }

    /// Frees half of a full context after its first `keep` tokens (at least one token, however
    /// large `keep`), for `--context-shift`.
    pub fn make_room(&mut self, keep: usize) {
        let keep = keep.min(self.n_ctx().saturating_sub(1));
        let discard = ((self.n_ctx() - keep) / 2).max(1);
        self.shift(keep, discard);
    }

    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    /// Keeps the longest common prefix of the cache and `prompt`, leaving at least the last
    /// prompt token to evaluate (its logits are needed), and returns the part still to run.
    pub fn reuse_prefix<'p>(&mut self, prompt: &'p [u32]) -> &'p [u32] {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.truncate(common);
        &prompt[common..]
    }

    /// Appends `tokens` and returns the logits after the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SessionError> {
        self.eval_from(tokens, tokens.len().saturating_sub(1))
    }

    /// Appends `tokens` and returns the logits after each of `tokens[first_logits..]`
    /// (`(tokens.len() - first_logits) × n_vocab` values).
    pub fn eval_from(
        &mut self,
        tokens: &[u32],
        first_logits: usize,
    ) -> Result<Vec<f32>, SessionError> {
        self.check(tokens)?;
        let mut logits = Vec::new();
        for (index, batch) in tokens.chunks(PROMPT_BATCH).enumerate() {
            let from = first_logits
                .saturating_sub(index * PROMPT_BATCH)
                .min(batch.len());
            logits.extend(self.engine.model().forward(
                &mut self.cache,
                batch,
                self.tokens.len(),
                from,
            ));
            self.tokens.extend_from_slice(batch);
        }
        Ok(logits)
    }

    /// Appends each part's tokens to its session in one forward pass, whose weights are read
    /// once for all of them, and returns the logits each part asks for (after each of
    /// `tokens[logits_from..]`), part after part. The caller bounds the total number of tokens
    /// (the pass's activations grow with it). Nothing is evaluated when any part does not fit.
    ///
    /// # Panics
    /// If the sessions are not all of one engine.
    pub fn eval_batch(parts: &mut [Part]) -> Result<Vec<f32>, SessionError> {
        Session::run_batch(parts, |model, batch| model.forward_batch(batch))
    }

    /// [`Session::eval_batch`] returning final-normed hidden states (`n_embd` values per
    /// token asked for) instead of logits: what embeddings are made of.
    pub fn hidden_batch(parts: &mut [Part]) -> Result<Vec<f32>, SessionError> {
        Session::run_batch(parts, |model, batch| model.hidden_batch(batch))
    }

    fn run_batch(
        parts: &mut [Part],
        pass: impl FnOnce(&Transformer, &mut [Sequence]) -> Vec<f32>,
    ) -> Result<Vec<f32>, SessionError> {
        for part in parts.iter() {
            part.session.check(part.tokens)?;
        }
        let Some(first) = parts.first() else {
            return Ok(Vec::new());
        };
        let engine = Arc::clone(&first.session.engine);
        assert!(
            parts
                .iter()
                .all(|p| Arc::ptr_eq(&p.session.engine, &engine)),
            "one forward pass runs one model"
        );
        let mut batch: Vec<Sequence> = parts
            .iter_mut()
            .map(|part| Sequence {
                start: part.session.tokens.len(),
                cache: &mut part.session.cache,
                tokens: part.tokens,
                logits_from: part.logits_from,
            })
            .collect();
        let output = pass(engine.model(), &mut batch);
        for part in parts.iter_mut() {
            part.session.tokens.extend_from_slice(part.tokens);
        }
        Ok(output)
    }

    fn check(&self, tokens: &[u32]) -> Result<(), SessionError> {
        let n_vocab = self.engine.model().hparams.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(SessionError::BadToken { id, n_vocab });
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.n_ctx() {
            return Err(SessionError::ContextFull {
                needed,
                n_ctx: self.n_ctx(),
            });
        }
        Ok(())
    }
}

/// The tokens a context shift keeps (llama.cpp's `n_keep`): that many from the start of the
/// prompt, the BOS token always besides; -1 keeps the whole prompt.
pub fn keep_on_shift(keep: i64, prompt: &[u32], adds_bos: bool) -> usize {
    match usize::try_from(keep) {
        Err(_) => prompt.len(),
        Ok(n) => (n + usize::from(adds_bos)).min(prompt.len()),
    }
}

#[cfg(test)]
mod shift_tests {
    use crate::test_models::synthetic_engine;

    /// After a shift the values of the kept tokens are the same rows, moved; the keys are the
    /// same rows re-rotated for their new positions. The first layer's keys depend on nothing
    /// but each token and its position, so a fresh session that evaluates the kept tokens
    /// computes them at those positions directly: the shifted keys must match them to f16
    /// rounding, which checks the rotation against the forward pass's own. (Deeper layers'
    /// keys rightly differ from a fresh session's: their tokens attended to the dropped ones
    /// when they were evaluated, in llama.cpp's shift as here.)
    #[test]
    fn a_shift_moves_the_cache_and_rotates_keys_to_their_new_positions() {
        let engine = synthetic_engine();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/perplexity.txt"
        ))
        .unwrap();
        let tokens = engine.tokenizer().encode(&text, true, false).unwrap();
        for (len, keep, discard) in [(64, 1, 31), (100, 10, 45), (40, 0, 20), (257, 4, 126)] {
            let prompt = &tokens[..len];
            let mut shifted = engine.session(len).unwrap();
            shifted.eval(prompt).unwrap();
            let (layers, heads) = shifted.cache.shape();
            let before: Vec<Vec<(Vec<f32>, Vec<f32>)>> = (0..layers)
                .map(|l| (0..heads).map(|h| shifted.cache.rows(l, h)).collect())
                .collect();
            shifted.shift(keep, discard);
            let kept: Vec<u32> = prompt[..keep]
                .iter()
                .chain(&prompt[keep + discard..])
                .copied()
                .collect();
            assert_eq!(shifted.tokens(), &kept[..]);
            let mut fresh = engine.session(len).unwrap();
            fresh.eval(&kept).unwrap();
            for (l, layer) in before.iter().enumerate() {
                for (h, (keys, values)) in layer.iter().enumerate() {
                    let (new_keys, new_values) = shifted.cache.rows(l, h);
                    let width = keys.len() / len;
                    let moved = |rows: &[f32]| -> Vec<f32> {
                        rows[..keep * width]
                            .iter()
                            .chain(&rows[(keep + discard) * width..len * width])
                            .copied()
                            .collect()
                    };
                    assert_eq!(new_values, moved(values), "layer {l} head {h}: values");
                    assert_eq!(new_keys[..keep * width], keys[..keep * width]);
                    // A rotation keeps each head's length.
                    let norm = |row: &[f32]| row.iter().map(|x| x * x).sum::<f32>().sqrt();
                    for (new, old) in new_keys
                        .chunks_exact(width)
                        .zip(moved(keys).chunks_exact(width))
                    {
                        assert!((norm(new) - norm(old)).abs() <= 2e-3 * norm(old) + 1e-3);
                    }
                    if l == 0 {
                        let (fresh_keys, _) = fresh.cache.rows(0, h);
                        for (position, (a, b)) in new_keys
                            .chunks_exact(width)
                            .zip(fresh_keys.chunks_exact(width))
                            .enumerate()
                        {
                            let off = a
                                .iter()
                                .zip(b)
                                .map(|(x, y)| (x - y).abs())
                                .fold(0.0, f32::max);
                            assert!(
                                off <= 4e-3 * norm(b) + 1e-3,
                                "len {len} keep {keep} discard {discard}: head {h} position {position} is {off} off"
                            );
                        }
                    }
                }
            }
            let after = &tokens[len..len + 3];
            let logits = shifted.eval(after).unwrap();
            assert!(logits.iter().all(|x| x.is_finite()));
        }
    }
}
