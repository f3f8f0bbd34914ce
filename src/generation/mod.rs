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
    /// Never end at an end-of-generation token: they are banned, as llama.cpp's field does.
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

/// The chosen token and the likeliest ones, with their probabilities before sampling (the
/// softmax of the raw logits), in llama.cpp's `completion_probabilities` shape; the ids, bytes
/// and log-probabilities are for OpenAI's `logprobs`.
#[derive(Debug, Clone, Serialize)]
pub struct TokenProbs {
    pub content: String,
    pub probs: Vec<Candidate>,
    #[serde(skip)]
    pub id: u32,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    #[serde(skip)]
    pub logprob: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub tok_str: String,
    pub prob: f32,
    #[serde(skip)]
    pub id: u32,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    #[serde(skip)]
    pub logprob: f32,
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
        let mut sampling = limits.sampling.clone();
        // As llama-server: ignoring end-of-generation bans those tokens rather than passing
        // over them, so the text is the one llama.cpp gives.
        if limits.ignore_eos {
            let banned = tokenizer.end_of_generation_tokens().iter();
            sampling
                .logit_bias
                .extend(banned.map(|&id| (id, f32::NEG_INFINITY)));
        }
        let mut sampler = Sampler::new(sampling);
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

    /// Tokens the limit still allows.
    pub fn remaining(&self) -> usize {
        self.limits.n_predict.saturating_sub(self.generated)
    }

    /// Steps through the logits after the last token and after each guess in `drafts`
    /// (`drafts.len() + 1` rows), reading a row only while every earlier guess was the token
    /// sampled there. Returns the steps and how many guesses were taken.
    ///
    /// Each row is sampled exactly as [`Generation::step`] samples it, so the text is the one
    /// plain decoding gives, for any sampling settings and seed. For a guess that is one
    /// token for sure, drawing from the model's distribution and comparing is the rejection
    /// scheme of speculative sampling: the guess is taken with the probability the model gives
    /// it, and otherwise the token comes from the model's distribution without it.
    pub fn step_drafted(&mut self, rows: &[f32], drafts: &[u32]) -> (Vec<Step>, usize) {
        let n_vocab = rows.len() / (drafts.len() + 1);
        let mut steps = Vec::with_capacity(drafts.len() + 1);
        let mut taken = 0;
        for (index, logits) in rows.chunks_exact(n_vocab).enumerate() {
            let step = self.step(logits);
            let goes_on = step.finished.is_none() && step.token == drafts.get(index).copied();
            steps.push(step);
            if !goes_on {
                break;
            }
            taken += 1;
        }
        (steps, taken)
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

/// The `n` most likely tokens after the softmax of the raw logits, and the chosen token.
fn top_probs(logits: &[f32], chosen: u32, n: usize, tokenizer: &Tokenizer) -> TokenProbs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let logprob = |id: u32| logits[id as usize] - max - log_sum;
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(order.len());
    order.select_nth_unstable_by(n.saturating_sub(1), |&a, &b| {
        logits[b as usize].total_cmp(&logits[a as usize])
    });
    order.truncate(n);
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let bytes = |id: u32| tokenizer.token_to_piece(id, true).to_vec();
    let text = |id: u32| String::from_utf8_lossy(tokenizer.token_to_piece(id, true)).into_owned();
    TokenProbs {
        content: text(chosen),
        probs: order
            .into_iter()
            .map(|id| Candidate {
                tok_str: text(id),
                prob: logprob(id).exp(),
                id,
                bytes: bytes(id),
                logprob: logprob(id),
            })
            .collect(),
        id: chosen,
        bytes: bytes(chosen),
        logprob: logprob(chosen),
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
    fn an_end_of_generation_token_ends_it_unless_banned() {
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
        let mut generation = Generation::new(tokenizer, ignoring, &[]);
        for _ in 0..2 {
            let step = generation.step(&choosing(tokenizer, eos));
            let token = step.token.expect("a token");
            assert!(!tokenizer.is_end_of_generation(token), "{token} is banned");
        }
        assert_eq!(generation.generated(), 2);
    }

    /// Logits over `values.len()` candidates (tokens 10, 11, ...); every other token is
    /// out of reach.
    fn candidates(tokenizer: &Tokenizer, values: &[f32]) -> Vec<f32> {
        let mut logits = vec![-1e9; tokenizer.n_vocab()];
        logits[10..10 + values.len()].copy_from_slice(values);
        logits
    }

    fn softmax(values: &[f32]) -> Vec<f64> {
        let sum: f64 = values.iter().map(|&v| f64::from(v).exp()).sum();
        values.iter().map(|&v| f64::from(v).exp() / sum).collect()
    }

    /// Checks counts against probabilities within five standard deviations each.
    fn assert_follows(counts: &[usize], probabilities: &[f64], what: &str) {
        let n: usize = counts.iter().sum();
        for (token, (&count, &p)) in counts.iter().zip(probabilities).enumerate() {
            let expected = n as f64 * p;
            let spread = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
            assert!(
                (count as f64 - expected).abs() <= 5.0 * spread,
                "{what}: candidate {token} came {count} times of {n}, expected {expected:.0}"
            );
        }
    }

    /// At temperature 1 with nothing cut, a guess is taken as often as the model gives it, the
    /// first token follows the model's distribution whatever was guessed, the token sampled
    /// where the guess was refused follows the distribution without the guess, and after a
    /// taken guess the next token follows the next row's distribution.
    #[test]
    fn guessed_tokens_leave_the_distribution_the_models() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let first = [1.0, 2.0, 0.5, 1.5];
        let second = [0.0, 1.0, 3.0];
        let guess = 11;
        let mut rows = candidates(tokenizer, &first);
        rows.extend(candidates(tokenizer, &second));
        let trials = 20_000;
        let (mut firsts, mut refused, mut seconds) = ([0; 4], [0; 4], [0; 3]);
        let mut taken = 0;
        for seed in 0..trials {
            let limits = Limits {
                sampling: SamplingParams {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    seed,
                    ..SamplingParams::default()
                },
                ..limits(10, &[])
            };
            let mut generation = Generation::new(tokenizer, limits, &[]);
            let (steps, took) = generation.step_drafted(&rows, &[guess]);
            let token = steps[0].token.unwrap() as usize - 10;
            firsts[token] += 1;
            if took == 1 {
                taken += 1;
                assert_eq!(steps.len(), 2);
                seconds[steps[1].token.unwrap() as usize - 10] += 1;
            } else {
                assert_eq!(steps.len(), 1);
                refused[token] += 1;
            }
        }
        let p = softmax(&first);
        assert_follows(&firsts, &p, "first token");
        let p_guess = p[(guess - 10) as usize];
        assert_follows(
            &[taken, trials as usize - taken],
            &[p_guess, 1.0 - p_guess],
            "guess taken",
        );
        let without: Vec<f64> = p
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                if i == (guess - 10) as usize {
                    0.0
                } else {
                    q / (1.0 - p_guess)
                }
            })
            .collect();
        assert_follows(&refused, &without, "refused guess");
        assert_follows(&seconds, &softmax(&second), "after a taken guess");
    }

    /// Sampling each row as plain decoding does draws the same random numbers in the same
    /// order, so a seed gives the same text with guesses or without.
    #[test]
    fn a_seed_gives_the_same_tokens_with_guesses_or_without() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let rows: Vec<Vec<f32>> = (0..6)
            .map(|i| candidates(tokenizer, &[1.0, 1.0 + i as f32 * 0.1, 0.7, 1.2]))
            .collect();
        for seed in 0..200 {
            let limits = Limits {
                sampling: SamplingParams {
                    temperature: 1.0,
                    seed,
                    ..SamplingParams::default()
                },
                ..limits(10, &[])
            };
            let mut plain = Generation::new(tokenizer, limits.clone(), &[]);
            let want: Vec<u32> = rows
                .iter()
                .map(|row| plain.step(row).token.unwrap())
                .collect();
            let mut guessing = Generation::new(tokenizer, limits, &[]);
            let mut got = Vec::new();
            let mut at = 0;
            while at < rows.len() {
                // Guess the plain tokens, wrong every third time.
                let guesses: Vec<u32> = (at + 1..rows.len().min(at + 3))
                    .map(|i| if i % 3 == 0 { 12 } else { want[i] })
                    .collect();
                let chunk = rows[at..at + guesses.len() + 1].concat();
                let (steps, _) = guessing.step_drafted(&chunk, &guesses);
                got.extend(steps.iter().map(|s| s.token.unwrap()));
                at += steps.len();
            }
            assert_eq!(got, want, "seed {seed}");
        }
    }
}
