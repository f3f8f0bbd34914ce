//! One request's generation, step by step: sample a token from the logits, end at an
//! end-of-generation token, a stop string or the token limit, and release the text that is
//! safe to show (whole UTF-8 characters, nothing that may still become a stop string).
//!
//! The CLI's completion, `--chat` and every server slot drive a `Generation`; nothing else
//! samples or matches stop strings. The caller owns the model side: it evaluates the token a
//! step returns and hands the next logits to the next step.

mod stop;

pub use stop::{Released, StopMatcher};

use crate::grammar::{Grammar, GrammarError, GrammarFilter};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{Decoder, Tokenizer};
use serde::Serialize;
use std::sync::Arc;

/// What one generation may do.
#[derive(Debug, Clone)]
pub struct Limits {
    pub sampling: SamplingParams,
    /// The most tokens to generate; the caller caps it to what the context leaves.
    pub n_predict: usize,
    pub stop: Vec<String>,
    /// Generate through end-of-generation tokens (their text is empty), as llama.cpp's field.
    pub ignore_eos: bool,
    /// Control tokens print their text (`--special`).
    pub special: bool,
    /// The most likely tokens to report with each token's probability (0: none).
    pub n_probs: usize,
    /// Only text this grammar allows is generated, and it may end only where the grammar may.
    pub grammar: Option<Arc<Grammar>>,
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    EndOfGeneration,
    /// The stop string found; neither it nor anything after it is released.
    StopString(String),
    /// `n_predict` tokens were generated.
    Limit,
    /// The grammar could not be followed (it grew too ambiguous); the message says why.
    Failed(String),
}

/// What one step did.
#[derive(Debug)]
pub struct Step {
    /// The sampled token; None when the limit allowed no token at all.
    pub token: Option<u32>,
    /// Text safe to show now; may be empty.
    pub text: String,
    pub probs: Option<TokenProbs>,
    /// None: evaluate `token` and step again with its logits.
    pub finished: Option<Finish>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenProbs {
    pub content: String,
    pub probs: Vec<Candidate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub tok_str: String,
    pub prob: f32,
}

pub struct Generation<'t> {
    tokenizer: &'t Tokenizer,
    sampler: Sampler,
    decoder: Decoder<'t>,
    matcher: StopMatcher,
    grammar: Option<GrammarFilter>,
    limits: Limits,
    generated: usize,
}

impl<'t> Generation<'t> {
    /// A generation continuing `prompt`, whose tokens the repeat penalty counts as seen.
    pub fn new(tokenizer: &'t Tokenizer, limits: Limits, prompt: &[u32]) -> Generation<'t> {
        let mut sampler = Sampler::new(limits.sampling.clone());
        prompt.iter().for_each(|&t| sampler.accept(t));
        Generation {
            tokenizer,
            sampler,
            decoder: tokenizer.decoder(limits.special),
            matcher: StopMatcher::new(limits.stop.iter().cloned()),
            // `Grammar::parse` has already expanded the start once, so this cannot fail.
            grammar: limits
                .grammar
                .as_ref()
                .map(|g| GrammarFilter::new(g).expect("a parsed grammar starts")),
            limits,
            generated: 0,
        }
    }

    /// Tokens generated so far, the end-of-generation token included.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Chooses the next token from the logits after the last token evaluated.
    pub fn step(&mut self, logits: &[f32]) -> Step {
        if self.generated >= self.limits.n_predict {
            return self.finish(None, String::new(), Finish::Limit);
        }
        let token = match &mut self.grammar {
            None => self.sampler.sample(logits),
            Some(grammar) => {
                let mut tokens = grammar.tokens(self.tokenizer);
                match self.sampler.sample_constrained(logits, &mut tokens) {
                    Ok(Some(token)) => token,
                    // Only where the grammar is complete and end-of-generation is ignored.
                    Ok(None) => return self.finish(None, String::new(), Finish::EndOfGeneration),
                    Err(error) => return self.fail(None, &error),
                }
            }
        };
        self.generated += 1;
        if let Some(grammar) = &mut self.grammar {
            if let Err(error) = grammar.accept(token, self.tokenizer) {
                return self.fail(Some(token), &error);
            }
        }
        if !self.limits.ignore_eos && self.tokenizer.is_end_of_generation(token) {
            return self.finish(Some(token), String::new(), Finish::EndOfGeneration);
        }
        self.sampler.accept(token);
        let probs = (self.limits.n_probs > 0)
            .then(|| top_probs(logits, token, self.limits.n_probs, self.tokenizer));
        let released = self.matcher.push(&self.decoder.push(token));
        if let Some(word) = released.stop {
            return Step {
                token: Some(token),
                text: released.text,
                probs,
                finished: Some(Finish::StopString(word)),
            };
        }
        if self.generated == self.limits.n_predict {
            let mut step = self.finish(Some(token), released.text, Finish::Limit);
            step.probs = probs;
            return step;
        }
        Step {
            token: Some(token),
            text: released.text,
            probs,
            finished: None,
        }
    }

    fn fail(&mut self, token: Option<u32>, error: &GrammarError) -> Step {
        self.finish(token, String::new(), Finish::Failed(error.to_string()))
    }

    /// Ends for a reason other than a stop string: what was held back (text that turned out
    /// to be no stop string, an unfinished UTF-8 character) is released after `text`.
    fn finish(&mut self, token: Option<u32>, mut text: String, finish: Finish) -> Step {
        text.push_str(&self.matcher.finish());
        text.push_str(&self.decoder.finish());
        Step {
            token,
            text,
            probs: None,
            finished: Some(finish),
        }
    }
}

/// The `n` most likely tokens after the softmax of the raw logits, and the chosen token's text.
fn top_probs(logits: &[f32], chosen: u32, n: usize, tokenizer: &Tokenizer) -> TokenProbs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(order.len());
    order.select_nth_unstable_by(n.saturating_sub(1), |&a, &b| {
        logits[b as usize].total_cmp(&logits[a as usize])
    });
    order.truncate(n);
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let piece = |id: u32| String::from_utf8_lossy(tokenizer.token_to_piece(id, true)).into_owned();
    TokenProbs {
        content: piece(chosen),
        probs: order
            .into_iter()
            .map(|id| Candidate {
                tok_str: piece(id),
                prob: (logits[id as usize] - max).exp() / sum,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_models::synthetic_engine;

    fn limits(n_predict: usize, stop: &[&str]) -> Limits {
        Limits {
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            n_predict,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ignore_eos: false,
            special: false,
            n_probs: 0,
            grammar: None,
        }
    }

    /// Logits under which greedy sampling picks `id`.
    fn choosing(tokenizer: &Tokenizer, id: u32) -> Vec<f32> {
        let mut logits = vec![0.0; tokenizer.n_vocab()];
        logits[id as usize] = 10.0;
        logits
    }

    /// Steps through `ids` until the generation ends; returns the text and how it ended.
    fn run(tokenizer: &Tokenizer, limits: Limits, ids: &[u32]) -> (String, Option<Finish>, usize) {
        let mut generation = Generation::new(tokenizer, limits, &[]);
        let mut text = String::new();
        for &id in ids {
            let step = generation.step(&choosing(tokenizer, id));
            text += &step.text;
            if step.finished.is_some() {
                return (text, step.finished, generation.generated());
            }
            assert_eq!(step.token, Some(id));
        }
        (text, None, generation.generated())
    }

    #[test]
    fn ends_at_the_limit_with_everything_released() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let ids = tokenizer.encode("one two three", false, false).unwrap();
        let (text, finished, generated) = run(tokenizer, limits(ids.len(), &[]), &ids);
        assert_eq!(finished, Some(Finish::Limit));
        assert_eq!(generated, ids.len());
        assert_eq!(text, tokenizer.decode(&ids, false));
    }

    #[test]
    fn a_limit_of_zero_samples_nothing() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let mut generation = Generation::new(tokenizer, limits(0, &[]), &[]);
        let step = generation.step(&choosing(tokenizer, 5));
        assert_eq!(step.token, None);
        assert_eq!(step.finished, Some(Finish::Limit));
        assert_eq!(generation.generated(), 0);
    }

    #[test]
    fn a_stop_string_ends_it_and_is_never_released() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let ids = tokenizer
            .encode("one two three four", false, false)
            .unwrap();
        let (text, finished, _) = run(tokenizer, limits(100, &["three"]), &ids);
        assert_eq!(finished, Some(Finish::StopString("three".into())));
        assert_eq!(text.trim_end(), "one two");
    }

    #[test]
    fn an_end_of_generation_token_ends_it_unless_ignored() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let eos = (0..tokenizer.n_vocab() as u32)
            .find(|&id| tokenizer.is_end_of_generation(id))
            .expect("the vocabulary has an end-of-generation token");
        let (text, finished, generated) = run(tokenizer, limits(10, &[]), &[eos]);
        assert_eq!(
            (text.as_str(), finished, generated),
            ("", Some(Finish::EndOfGeneration), 1)
        );
        let ignoring = Limits {
            ignore_eos: true,
            ..limits(2, &[])
        };
        let (text, finished, generated) = run(tokenizer, ignoring, &[eos, eos]);
        assert_eq!(
            (text.as_str(), finished, generated),
            ("", Some(Finish::Limit), 2)
        );
    }
}
