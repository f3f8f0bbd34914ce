//! `llmfile batched-bench`: throughput of several sequences decoded together, measured and
//! printed as llama.cpp's `llama-batched-bench` does, so the two tables read side by side.
//!
//! For every prompt length `pp`, generation length `tg` and number of parallel sequences `pl`:
//! `pl` sequences each read a prompt of `pp` random tokens (or, with `-pps`, one prompt that
//! all of them share), passes of at most `-ub` tokens spanning the sequences; then `tg` passes
//! each give every sequence one more token. PP/S_PP time and rate the prompts, TG/S_TG the
//! generation, T/S the whole, N_KV the cache positions used in all.

use crate::bench::RandomTokens;
use crate::engine::Engine;
use crate::session::{Part, Session, SessionError};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Settings {
    pub prompt_lengths: Vec<usize>,
    pub generation_lengths: Vec<usize>,
    pub parallel: Vec<usize>,
    /// The prompt is read once and shared by every sequence.
    pub shared_prompt: bool,
    /// Tokens in one forward pass at most.
    pub ubatch: usize,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub pp: usize,
    pub tg: usize,
    pub pl: usize,
    pub n_kv: usize,
    pub shared_prompt: bool,
    pub prompt_seconds: f64,
    pub generation_seconds: f64,
}

impl Measurement {
    fn prompt_tokens(&self) -> usize {
        if self.shared_prompt {
            self.pp
        } else {
            self.pl * self.pp
        }
    }

    pub fn line(&self) -> String {
        let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let total = self.prompt_seconds + self.generation_seconds;
        format!(
            "|{:>6} | {:>6} | {:>4} | {:>6} | {:>8.3} | {:>8.2} | {:>8.3} | {:>8.2} | {:>8.3} | {:>8.2} |",
            self.pp,
            self.tg,
            self.pl,
            self.n_kv,
            self.prompt_seconds,
            rate(self.prompt_tokens(), self.prompt_seconds),
            self.generation_seconds,
            rate(self.pl * self.tg, self.generation_seconds),
            total,
            rate(self.n_kv, total),
        )
    }
}

pub const HEADER: &str = "|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |\n|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|";

/// Measures every combination, printing each line as soon as it is measured.
pub fn run(engine: &Arc<Engine>, settings: &Settings) -> Result<Vec<Measurement>, SessionError> {
    println!("{HEADER}");
    // One pass that pages the weights in and starts the threads, as llama-batched-bench warms
    // up before its first measurement.
    engine.session(1)?.eval(&[0])?;
    let mut lines = Vec::new();
    for &pp in &settings.prompt_lengths {
        for &tg in &settings.generation_lengths {
            for &pl in &settings.parallel {
                let measured = measure(engine, settings, pp, tg, pl)?;
                println!("{}", measured.line());
                lines.push(measured);
            }
        }
    }
    Ok(lines)
}

fn measure(
    engine: &Arc<Engine>,
    settings: &Settings,
    pp: usize,
    tg: usize,
    pl: usize,
) -> Result<Measurement, SessionError> {
    let n_vocab = engine.model().hparams.n_vocab;
    let mut random = RandomTokens::new(n_vocab);
    let mut sessions = (0..pl)
        .map(|_| engine.session((pp + tg).max(1)))
        .collect::<Result<Vec<Session>, _>>()?;
    let readers = if settings.shared_prompt { 1 } else { pl };
    let prompts: Vec<Vec<u32>> = (0..readers)
        .map(|_| (0..pp).map(|_| random.next()).collect())
        .collect();

    let started = Instant::now();
    read_prompts(&mut sessions[..readers], &prompts, settings.ubatch)?;
    if settings.shared_prompt {
        let (first, rest) = sessions.split_first_mut().expect("at least one sequence");
        for session in rest {
            session.copy_from(first);
        }
    }
    let prompt_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for _ in 0..tg {
        let tokens: Vec<[u32; 1]> = (0..pl).map(|_| [random.next()]).collect();
        let mut parts: Vec<Part> = sessions
            .iter_mut()
            .zip(&tokens)
            .map(|(session, token)| Part {
                session,
                tokens: token,
                logits_from: 0,
            })
            .collect();
        Session::eval_batch(&mut parts)?;
    }
    let generation_seconds = started.elapsed().as_secs_f64();

    let n_kv = if settings.shared_prompt {
        pp + pl * tg
    } else {
        pl * (pp + tg)
    };
    Ok(Measurement {
        pp,
        tg,
        pl,
        n_kv,
        shared_prompt: settings.shared_prompt,
        prompt_seconds,
        generation_seconds,
    })
}

/// Reads each session's prompt in passes of at most `ubatch` tokens that span the sessions,
/// with the logits of each prompt's last token, as a server reading several prompts would.
fn read_prompts(
    sessions: &mut [Session],
    prompts: &[Vec<u32>],
    ubatch: usize,
) -> Result<(), SessionError> {
    let mut read = vec![0; prompts.len()];
    while read.iter().zip(prompts).any(|(&r, p)| r < p.len()) {
        let mut budget = ubatch;
        let mut parts = Vec::new();
        for ((session, prompt), read) in sessions.iter_mut().zip(prompts).zip(&mut read) {
            let take = (prompt.len() - *read).min(budget);
            if take == 0 {
                continue;
            }
            let tokens = &prompt[*read..*read + take];
            *read += take;
            budget -= take;
            parts.push(Part {
                session,
                tokens,
                logits_from: if *read == prompt.len() {
                    take - 1
                } else {
                    take
                },
            });
        }
        Session::eval_batch(&mut parts)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_llama_batched_bench_columns_and_rates() {
        let line = Measurement {
            pp: 128,
            tg: 128,
            pl: 2,
            n_kv: 512,
            shared_prompt: false,
            prompt_seconds: 0.5,
            generation_seconds: 2.0,
        }
        .line();
        assert_eq!(
            line,
            "|   128 |    128 |    2 |    512 |    0.500 |   512.00 |    2.000 |   128.00 |    2.500 |   204.80 |"
        );
        let columns = HEADER.lines().next().unwrap().matches('|').count();
        assert_eq!(line.matches('|').count(), columns);
    }

    #[test]
    fn a_shared_prompt_counts_once() {
        let shared = Measurement {
            pp: 100,
            tg: 10,
            pl: 4,
            n_kv: 140,
            shared_prompt: true,
            prompt_seconds: 1.0,
            generation_seconds: 1.0,
        };
        assert_eq!(shared.prompt_tokens(), 100);
    }
}
