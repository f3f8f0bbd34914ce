//! `Session::eval_from` on the synthetic Gemma 2 with fuzzed shapes: context size, token count,
//! the first position whose logits are wanted, an optional split into two calls, and the ids.
//! Every shape must either be refused with an error that leaves the session as it was (a token
//! outside the vocabulary, more tokens than the context holds) or return exactly one finite row
//! of logits per wanted position. A batch that wanted no logits once divided by zero (issue #13).
//!
//! Input: bytes 0-1 the context size (1..=600, past the model's trained 512), 2-3 the token
//! count (0..=600, so some do not fit), 4-5 `first_logits` (0..=count), 6 the split (0: one
//! call, else after `byte % count` tokens), then the ids as little-endian u16, repeated to the
//! count; an id with its top bit set is taken as it is (outside the 4096-token vocabulary),
//! any other modulo the vocabulary.
#![no_main]

use kernels::Kernels;
use libfuzzer_sys::fuzz_target;
use llmfile::engine::Engine;
use llmfile::session::Session;
use std::sync::{Arc, OnceLock};

const SYNTHETIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf"
);

fn engine() -> &'static Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let bytes = std::fs::read(SYNTHETIC).expect("the synthetic model is in the repository");
        Engine::from_bytes(bytes, Kernels::detect()).expect("the synthetic model loads")
    })
}

fn u16_at(data: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([
        data.get(at).copied().unwrap_or(0),
        data.get(at + 1).copied().unwrap_or(0),
    ]))
}

/// Evaluates `tokens` as `eval_from` does, checking what comes back against the shape asked
/// for; returns whether they were evaluated.
fn eval_checked(session: &mut Session, tokens: &[u32], first_logits: usize) -> bool {
    let n_vocab = session.engine().model().hparams.n_vocab;
    let before = session.tokens().to_vec();
    match session.eval_from(tokens, first_logits) {
        Ok(logits) => {
            assert_eq!(logits.len(), (tokens.len() - first_logits) * n_vocab);
            assert!(
                logits.iter().all(|l| l.is_finite()),
                "a logit is not finite"
            );
            assert_eq!(session.tokens()[..before.len()], before[..]);
            assert_eq!(&session.tokens()[before.len()..], tokens);
            true
        }
        Err(_) => {
            assert_eq!(
                session.tokens(),
                &before[..],
                "a refused call changed the session"
            );
            false
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let engine = engine();
    let n_vocab = engine.model().hparams.n_vocab;
    let n_ctx = 1 + u16_at(data, 0) % 600;
    let n = u16_at(data, 2) % 601;
    let first_logits = u16_at(data, 4) % (n + 1);
    let split = data.get(6).copied().unwrap_or(0);
    let ids = data.get(7..).unwrap_or_default();
    let tokens: Vec<u32> = (0..n)
        .map(|i| {
            if ids.len() < 2 {
                return (i % n_vocab) as u32;
            }
            let at = 2 * i % (ids.len() - 1);
            let id = u16_at(ids, at);
            if id & 0x8000 != 0 {
                id as u32
            } else {
                (id % n_vocab) as u32
            }
        })
        .collect();

    let mut session = engine
        .session(n_ctx)
        .expect("a context of at most 600 tokens");
    if split == 0 || n == 0 {
        eval_checked(&mut session, &tokens, first_logits);
    } else {
        let k = usize::from(split) % n;
        if eval_checked(&mut session, &tokens[..k], first_logits.min(k)) {
            eval_checked(&mut session, &tokens[k..], first_logits.saturating_sub(k));
        }
    }
});
