//! Speculative decoding: guess the next tokens cheaply, then let the model check every guess
//! in one forward pass. Generation on a CPU is bound by reading the weights once per pass, so
//! a pass over a token and its guesses costs little more than a pass over the token alone, and
//! each guess the model agrees with is a token gained.
//!
//! Guesses come from the text itself (an n-gram of the latest tokens found earlier, whatever
//! followed it then: edited code repeats most of its input) or from a smaller draft model of
//! the same vocabulary. [`Generation::step_drafted`](crate::generation::Generation::step_drafted)
//! checks them; this module only makes them.

use crate::engine::Engine;
use crate::generation::{Finish, Generation, Step};
use crate::sampling::argmax;
use crate::session::{Session, SessionError};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::sync::Arc;

/// Where guesses come from (llama.cpp's `--spec-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The tokens that followed the latest earlier occurrence of the last `size_n` tokens.
    NGramSimple,
    /// A draft model's greedy continuation.
    DraftModel,
}

/// How to speculate, with llama.cpp's defaults and meanings.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub kind: Kind,
    /// The most tokens a draft model guesses per pass.
    pub n_max: usize,
    /// Fewer guesses than this are not worth a pass and are dropped.
    pub n_min: usize,
    /// A draft model stops guessing where its own top token is less likely than this.
    pub p_min: f32,
    /// N-gram lookup: how many of the latest tokens must recur.
    pub size_n: usize,
    /// N-gram lookup: the most tokens taken from what followed them.
    pub size_m: usize,
    /// N-gram lookup: how often the latest tokens must have occurred before.
    pub min_hits: usize,
}

impl Params {
    pub fn new(kind: Kind) -> Params {
        Params {
            kind,
            n_max: 3,
            n_min: 0,
            p_min: 0.0,
            size_n: 12,
            size_m: 48,
            min_hits: 1,
        }
    }

    /// The most guesses one pass takes.
    fn most_guesses(&self) -> usize {
        match self.kind {
            Kind::NGramSimple => self.size_m,
            Kind::DraftModel => self.n_max,
        }
    }
}

/// Guesses made and guesses the model agreed with (llama-server's `draft_n` and
/// `draft_n_accepted`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub drafted: usize,
    pub accepted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the draft model's vocabulary differs from the model's ({0}); speculation needs the same tokens")]
    Vocabulary(String),
    #[error("--spec-type draft-simple needs a draft model (-md FILE)")]
    NoDraftModel,
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A run's speculation settings and draft model, from which each generation starts its own
/// [`Speculation`].
#[derive(Clone)]
pub struct Speculator {
    pub params: Params,
    pub draft: Option<Arc<Engine>>,
}

impl std::fmt::Debug for Speculator {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Speculator")
            .field("params", &self.params)
            .field(
                "draft",
                &self.draft.as_ref().map(|engine| &engine.info().name),
            )
            .finish()
    }
}

impl Speculator {
    /// A speculation for one generation in a context of `n_ctx`, with a draft cache of its own.
    pub fn start(&self, n_ctx: usize) -> Result<Speculation, SpecError> {
        let draft = match (self.params.kind, &self.draft) {
            (Kind::DraftModel, Some(engine)) => Some(engine.session(n_ctx)?),
            _ => None,
        };
        Speculation::new(self.params.clone(), draft)
    }
}

/// One request's speculation: its settings, the draft model's cache when there is one, and
/// what it has guessed so far.
pub struct Speculation {
    params: Params,
    draft: Option<Session>,
    pub stats: Stats,
}

impl Speculation {
    /// `draft` is the draft model's session, required for [`Kind::DraftModel`]; its model
    /// must share the target's vocabulary (see [`check_vocabularies`]). Whatever it holds is
    /// reused where it matches the text.
    pub fn new(params: Params, draft: Option<Session>) -> Result<Speculation, SpecError> {
        let draft = match params.kind {
            Kind::DraftModel => Some(draft.ok_or(SpecError::NoDraftModel)?),
            Kind::NGramSimple => None,
        };
        Ok(Speculation {
            params,
            draft,
            stats: Stats::default(),
        })
    }

    /// The draft model's session back, for the next generation to reuse.
    pub fn into_draft(self) -> Option<Session> {
        self.draft
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Guesses up to `room` tokens to follow `history` (every token so far, the one about to
    /// be evaluated last). Returns none when fewer than `n_min` would come.
    pub fn draft(&mut self, history: &[u32], room: usize) -> Vec<u32> {
        let most = self.params.most_guesses().min(room);
        if most == 0 {
            return Vec::new();
        }
        let guesses = match &mut self.draft {
            None => ngram_simple(history, &self.params, most),
            // A draft that cannot run (its context is full) guesses nothing; the target goes on.
            Some(session) => {
                model_draft(session, history, self.params.p_min, most).unwrap_or_default()
            }
        };
        if guesses.len() < self.params.n_min.max(1) {
            return Vec::new();
        }
        self.stats.drafted += guesses.len();
        guesses
    }

    /// One line for the timings: guesses made and taken.
    pub fn describe(&self) -> String {
        let Stats { drafted, accepted } = self.stats;
        let rate = if drafted > 0 {
            100.0 * accepted as f64 / drafted as f64
        } else {
            0.0
        };
        format!("speculation: {drafted} tokens drafted, {accepted} accepted ({rate:.1}%)")
    }

    /// Records how many of the last guesses the model agreed with.
    pub fn accepted(&mut self, accepted: usize) {
        self.stats.accepted += accepted;
    }
}

/// Decodes one sequence to the end of its generation from `logits`, the logits after the
/// session's last token: evaluates each sampled token, followed by guesses when `speculation`
/// is given, and hands every step to `on_step`. With `keep_on_shift` (`--context-shift`) a
/// full context makes room keeping that many tokens instead of ending the text.
pub fn decode<E: From<SessionError>>(
    session: &mut Session,
    generation: &mut Generation,
    mut speculation: Option<&mut Speculation>,
    logits: Vec<f32>,
    keep_on_shift: Option<usize>,
    mut on_step: impl FnMut(&Step) -> Result<(), E>,
) -> Result<Option<Finish>, E> {
    let mut rows = logits;
    let mut drafts: Vec<u32> = Vec::new();
    loop {
        let (steps, taken) = generation.step_drafted(&rows, &drafts);
        if let Some(speculation) = speculation.as_deref_mut() {
            speculation.accepted(taken);
        }
        let evaluated = session.tokens().len();
        session.truncate(evaluated - (drafts.len() - taken));
        for step in &steps {
            on_step(step)?;
        }
        let last = steps.last().expect("a step per pass");
        let token = match (&last.finished, last.token) {
            (None, Some(token)) => token,
            (finished, _) => return Ok(finished.clone()),
        };
        if let (Some(keep), true) = (keep_on_shift, session.tokens().len() == session.n_ctx()) {
            session.make_room(keep);
        }
        drafts = match speculation.as_deref_mut() {
            Some(speculation) => {
                let room = guess_room(session, generation);
                let mut history = session.tokens().to_vec();
                history.push(token);
                speculation.draft(&history, room)
            }
            None => Vec::new(),
        };
        let mut input = Vec::with_capacity(1 + drafts.len());
        input.push(token);
        input.extend_from_slice(&drafts);
        rows = session.eval_from(&input, 0)?;
    }
}

/// How many guesses may follow the token about to be evaluated: they must fit the context
/// beside it, and a guess past the generation's limit could never be used.
pub fn guess_room(session: &Session, generation: &Generation) -> usize {
    let context = session.n_ctx().saturating_sub(session.tokens().len() + 1);
    context.min(generation.remaining().saturating_sub(1))
}

/// llama.cpp's `ngram-simple`: the latest `size_n` tokens are looked for earlier in the
/// history, newest occurrence first, and up to `most` of the tokens that followed it are the
/// guess. With `min_hits` above 1 the latest tokens must have occurred that often before.
pub fn ngram_simple(history: &[u32], params: &Params, most: usize) -> Vec<u32> {
    let n = params.size_n.max(1);
    if history.len() <= n {
        return Vec::new();
    }
    let pattern = &history[history.len() - n..];
    // Occurrences that end before the last token, so something followed them.
    let mut starts = (0..history.len() - n)
        .rev()
        .filter(|&start| &history[start..start + n] == pattern);
    let Some(newest) = starts.next() else {
        return Vec::new();
    };
    if 1 + starts.count() < params.min_hits {
        return Vec::new();
    }
    let follow = newest + n;
    history[follow..history.len().min(follow + most)].to_vec()
}

/// The draft model's greedy continuation of `history`: its cache is brought level with the
/// history (what it already holds is kept), then it guesses token by token while its top token
/// is at least `p_min` likely.
fn model_draft(
    session: &mut Session,
    history: &[u32],
    p_min: f32,
    most: usize,
) -> Result<Vec<u32>, SessionError> {
    if history.len() + most > session.n_ctx() {
        return Ok(Vec::new());
    }
    let missing = session.reuse_prefix(history);
    let mut logits = session.eval(missing)?;
    let mut guesses = Vec::with_capacity(most);
    loop {
        let token = argmax(&logits);
        if p_min > 0.0 && probability_of(&logits, token) < p_min {
            break;
        }
        guesses.push(token);
        if guesses.len() == most {
            break;
        }
        logits = session.eval(&[token])?;
    }
    Ok(guesses)
}

fn probability_of(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    (logits[token as usize] - max).exp() / sum
}

/// A draft model's guesses are token ids, so they mean the same text only when both
/// vocabularies give every id the same piece.
pub fn check_vocabularies(target: &Tokenizer, draft: &Tokenizer) -> Result<(), SpecError> {
    if target.n_vocab() != draft.n_vocab() {
        return Err(SpecError::Vocabulary(format!(
            "{} tokens against {}",
            draft.n_vocab(),
            target.n_vocab()
        )));
    }
    let differing = (0..target.n_vocab() as u32)
        .find(|&id| target.token_to_piece(id, true) != draft.token_to_piece(id, true));
    match differing {
        Some(id) => Err(SpecError::Vocabulary(format!(
            "token {id} is {:?} in the draft model and {:?} in the model",
            String::from_utf8_lossy(draft.token_to_piece(id, true)),
            String::from_utf8_lossy(target.token_to_piece(id, true)),
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ngram(size_n: usize, min_hits: usize) -> Params {
        Params {
            size_n,
            min_hits,
            ..Params::new(Kind::NGramSimple)
        }
    }

    #[test]
    fn ngram_guesses_what_followed_the_newest_earlier_occurrence() {
        let history = [1, 2, 3, 10, 11, 12, 1, 2, 3, 20, 21, 1, 2, 3];
        assert_eq!(ngram_simple(&history, &ngram(3, 1), 8), [20, 21, 1, 2, 3]);
        assert_eq!(ngram_simple(&history, &ngram(3, 1), 2), [20, 21]);
        assert_eq!(ngram_simple(&history, &ngram(3, 2), 2), [20, 21]);
        assert!(ngram_simple(&history, &ngram(3, 3), 2).is_empty());
        assert!(ngram_simple(&history, &ngram(4, 1), 8).is_empty());
    }

    #[test]
    fn ngram_needs_a_history_longer_than_its_pattern() {
        assert!(ngram_simple(&[5, 5], &ngram(2, 1), 4).is_empty());
        assert_eq!(ngram_simple(&[5, 5, 5], &ngram(2, 1), 4), [5]);
        assert!(ngram_simple(&[], &ngram(1, 1), 4).is_empty());
    }

    #[test]
    fn too_few_guesses_are_dropped_and_none_are_counted() {
        let mut speculation = Speculation::new(
            Params {
                n_min: 3,
                ..ngram(1, 1)
            },
            None,
        )
        .unwrap();
        assert!(speculation.draft(&[7, 8, 7], 8).is_empty());
        assert_eq!(speculation.draft(&[7, 8, 9, 10, 7], 8), [8, 9, 10, 7]);
        assert_eq!(speculation.draft(&[7, 8, 9, 10, 7], 2), Vec::<u32>::new());
        assert_eq!(speculation.stats.drafted, 4);
    }
}
