//! A conversation with a model: its KV cache and the tokens the cache holds.

use crate::model::{KvCache, ModelError, Transformer};

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

pub struct Session<'m> {
    model: &'m Transformer<'m>,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Transformer<'m>, n_ctx: usize) -> Result<Session<'m>, SessionError> {
        Ok(Session {
            cache: model.new_cache(n_ctx)?,
            model,
            tokens: Vec::new(),
        })
    }

    pub fn model(&self) -> &'m Transformer<'m> {
        self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// The tokens whose keys and values the cache holds, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
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
            logits.extend(
                self.model
                    .forward(&mut self.cache, batch, self.tokens.len(), from),
            );
            self.tokens.extend_from_slice(batch);
        }
        Ok(logits)
    }

    fn check(&self, tokens: &[u32]) -> Result<(), SessionError> {
        let n_vocab = self.model.hparams.n_vocab;
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
