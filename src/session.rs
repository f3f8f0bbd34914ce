//! A conversation with a model: its KV cache and the tokens the cache holds.

use crate::engine::Engine;
use crate::model::{KvCache, ModelError, Sequence};
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
        let logits = engine.model().forward_batch(&mut batch);
        for part in parts.iter_mut() {
            part.session.tokens.extend_from_slice(part.tokens);
        }
        Ok(logits)
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
