//! Perplexity with llama-perplexity's chunking, so the two numbers compare.
//!
//! The text is tokenized once (with BOS), cut into chunks of `n_ctx` tokens, each chunk
//! evaluated from an empty cache with its first token replaced by BOS, and only the second half
//! of each chunk is scored, so every scored token has at least half a context of history.

use crate::engine::Engine;
use crate::session::SessionError;
use crate::tokenizer::TokenizerError;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("the text is {tokens} tokens; perplexity with a context of {n_ctx} needs at least {}", 2 * n_ctx)]
    TooShort { tokens: usize, n_ctx: usize },
    #[error("a context of {0} tokens is too small to score")]
    ContextTooSmall(usize),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Returns the perplexity; `progress` sees each chunk's index and the running estimate.
pub fn perplexity(
    engine: &Arc<Engine>,
    text: &str,
    n_ctx: usize,
    mut progress: impl FnMut(usize, f64),
) -> Result<f64, PerplexityError> {
    if n_ctx < 4 {
        return Err(PerplexityError::ContextTooSmall(n_ctx));
    }
    let tokenizer = engine.tokenizer();
    let tokens = tokenizer.encode(text, true, false)?;
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooShort {
            tokens: tokens.len(),
            n_ctx,
        });
    }
    let n_vocab = engine.model().hparams.n_vocab;
    let first = n_ctx / 2;
    let mut nll = 0f64;
    let mut count = 0usize;
    let mut session = engine.session(n_ctx)?;
    for (index, chunk) in tokens.chunks_exact(n_ctx).enumerate() {
        let mut input = chunk.to_vec();
        if let Some(bos) = tokenizer.bos().filter(|_| tokenizer.add_bos()) {
            input[0] = bos;
        }
        session.truncate(0);
        let logits = session.eval_from(&input, first)?;
        for i in first..n_ctx - 1 {
            let row = &logits[(i - first) * n_vocab..][..n_vocab];
            nll -= log_softmax(row, chunk[i + 1] as usize);
            count += 1;
        }
        progress(index, (nll / count as f64).exp());
    }
    Ok((nll / count as f64).exp())
}

fn log_softmax(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(logits[target] - max) - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::log_softmax;

    #[test]
    fn log_softmax_of_uniform_logits_is_minus_log_n() {
        let got = log_softmax(&[2.0; 8], 3);
        assert!((got + 8f64.ln()).abs() < 1e-9);
    }
}
