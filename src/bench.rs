//! `llmfile bench`: prompt-processing and generation speed, measured the way llama-bench
//! measures them, so the two tables can be read side by side.
//!
//! A prompt test (`ppN`) evaluates N random tokens in one batch from an empty cache, asking for
//! the logits of the last one only; a generation test (`tgN`) evaluates N single tokens one after
//! another from an empty cache, each with its logits. Each test runs once untimed to warm caches
//! and page in the weights (a full prompt, or one generated token, as llama-bench does), then
//! `repetitions` timed times.

use crate::engine::Engine;
use crate::gguf::Gguf;
use crate::model::{ModelError, Transformer};
use std::fmt;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// Tokens evaluated in one batch.
    Prompt(usize),
    /// Tokens evaluated one at a time.
    Generation(usize),
}

impl Test {
    fn tokens(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Generation(n) => n,
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Prompt(n) => write!(f, "pp{n}"),
            Test::Generation(n) => write!(f, "tg{n}"),
        }
    }
}

/// The speed of each timed repetition of one test, in tokens per second.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub test: Test,
    pub tokens_per_second: Vec<f64>,
}

impl Measurement {
    pub fn mean(&self) -> f64 {
        self.tokens_per_second.iter().sum::<f64>() / self.tokens_per_second.len().max(1) as f64
    }

    /// Sample standard deviation, as llama-bench prints it (0 for a single repetition).
    pub fn std_dev(&self) -> f64 {
        let n = self.tokens_per_second.len();
        if n < 2 {
            return 0.0;
        }
        let mean = self.mean();
        let sum_sq: f64 = self
            .tokens_per_second
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        (sum_sq / (n - 1) as f64).sqrt()
    }

    pub fn median(&self) -> f64 {
        let mut sorted = self.tokens_per_second.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }
}

/// Runs `test` once untimed, then `repetitions` timed times, each from an empty cache.
pub fn measure(
    model: &Transformer,
    test: Test,
    repetitions: usize,
) -> Result<Measurement, ModelError> {
    let mut cache = model.new_cache(test.tokens().max(1))?;
    let mut tokens = RandomTokens::new(model.hparams.n_vocab);
    let run = |cache: &mut _, tokens: &mut RandomTokens, test| match test {
        Test::Prompt(n) => {
            let batch: Vec<u32> = (0..n).map(|_| tokens.next()).collect();
            model.forward(cache, &batch, 0, n.saturating_sub(1));
        }
        Test::Generation(n) => {
            for pos in 0..n {
                model.forward(cache, &[tokens.next()], pos, 0);
            }
        }
    };
    let warmup = match test {
        Test::Prompt(_) => test,
        Test::Generation(n) => Test::Generation(n.min(1)),
    };
    run(&mut cache, &mut tokens, warmup);
    let tokens_per_second = (0..repetitions)
        .map(|_| {
            let started = Instant::now();
            run(&mut cache, &mut tokens, test);
            test.tokens() as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    Ok(Measurement {
        test,
        tokens_per_second,
    })
}

/// Prints the table for a prompt test of each of `n_prompt`'s token counts, then a generation
/// test of each of `n_gen`'s (zeros skipped), each line as soon as it is measured.
pub fn run(
    engine: &Engine,
    n_prompt: &[usize],
    n_gen: &[usize],
    repetitions: usize,
) -> Result<(), ModelError> {
    let model = engine.model();
    let summary = ModelSummary::of(&engine.gguf());
    let isa = model.backend();
    let threads = rayon::current_num_threads();
    println!("{}", header());
    let prompts = n_prompt.iter().map(|&n| (n, Test::Prompt(n)));
    let generations = n_gen.iter().map(|&n| (n, Test::Generation(n)));
    for (_, test) in prompts.chain(generations).filter(|&(n, _)| n > 0) {
        let m = measure(model, test, repetitions)?;
        println!("{}", row(&summary, &isa, threads, &m));
    }
    Ok(())
}

/// Token ids drawn uniformly from the vocabulary (xorshift64*: no dependency, and the ids only
/// have to be spread over the embedding table).
pub(crate) struct RandomTokens {
    state: u64,
    n_vocab: u64,
}

impl RandomTokens {
    pub(crate) fn new(n_vocab: usize) -> RandomTokens {
        RandomTokens {
            state: 0x9E37_79B9_7F4A_7C15,
            n_vocab: n_vocab as u64,
        }
    }

    pub(crate) fn next(&mut self) -> u32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.n_vocab) as u32
    }
}

/// What describes the model in the table: llama-bench's model, size and params columns.
pub struct ModelSummary {
    pub name: String,
    pub bytes: u64,
    pub params: u64,
}

impl ModelSummary {
    pub fn of(gguf: &Gguf) -> ModelSummary {
        let tensors = gguf.tensors();
        ModelSummary {
            name: gguf
                .get_str_opt("general.name")
                .ok()
                .flatten()
                .or_else(|| gguf.architecture().ok())
                .unwrap_or("?")
                .to_string(),
            bytes: tensors.iter().map(|t| t.data.len() as u64).sum(),
            params: tensors.iter().map(|t| t.n_elements()).sum(),
        }
    }
}

/// The table's columns: title, width, right-aligned (llama-bench's markdown layout).
const COLUMNS: [(&str, usize, bool); 7] = [
    ("model", 30, false),
    ("size", 10, true),
    ("params", 10, true),
    ("isa", 10, false),
    ("threads", 7, true),
    ("test", 15, true),
    ("t/s", 20, true),
];

fn table_line(cells: [&str; 7]) -> String {
    let mut line = String::from("|");
    for (cell, (_, width, right)) in cells.iter().zip(COLUMNS) {
        if right {
            line += &format!(" {cell:>width$} |");
        } else {
            line += &format!(" {cell:<width$} |");
        }
    }
    line
}

/// The two header lines of the table [`row`] prints lines of.
pub fn header() -> String {
    let rule = COLUMNS.map(|(_, width, right)| {
        if right {
            format!("{}:", "-".repeat(width - 1))
        } else {
            "-".repeat(width)
        }
    });
    format!(
        "{}\n{}",
        table_line(COLUMNS.map(|(title, _, _)| title)),
        table_line(rule.each_ref().map(String::as_str))
    )
}

/// One line of the table: the mean speed ± its standard deviation over the repetitions.
pub fn row(model: &ModelSummary, isa: &str, threads: usize, m: &Measurement) -> String {
    let size = format!("{:.2} MiB", model.bytes as f64 / (1024.0 * 1024.0));
    let params = format!("{:.2} M", model.params as f64 / 1e6);
    let threads = threads.to_string();
    let test = m.test.to_string();
    let speed = format!("{:.2} ± {:.2}", m.mean(), m.std_dev());
    table_line([&model.name, &size, &params, isa, &threads, &test, &speed])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(values: &[f64]) -> Measurement {
        Measurement {
            test: Test::Prompt(512),
            tokens_per_second: values.to_vec(),
        }
    }

    #[test]
    fn statistics_match_llama_bench_definitions() {
        let m = measurement(&[10.0, 12.0, 14.0, 100.0]);
        assert_eq!(m.mean(), 34.0);
        assert_eq!(m.median(), 13.0);
        let expected = ((24.0f64 * 24.0 + 22.0 * 22.0 + 20.0 * 20.0 + 66.0 * 66.0) / 3.0).sqrt();
        assert!((m.std_dev() - expected).abs() < 1e-9);
        assert_eq!(measurement(&[5.0]).std_dev(), 0.0);
        assert_eq!(measurement(&[3.0, 1.0, 2.0]).median(), 2.0);
    }

    #[test]
    fn random_tokens_stay_in_the_vocabulary_and_spread() {
        let mut tokens = RandomTokens::new(1000);
        let drawn: Vec<u32> = (0..10_000).map(|_| tokens.next()).collect();
        assert!(drawn.iter().all(|&t| t < 1000));
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 950, "{} distinct ids", distinct.len());
    }

    #[test]
    fn table_rows_line_up_with_the_header() {
        let model = ModelSummary {
            name: "gemma3 270M".into(),
            bytes: 3 * 1024 * 1024,
            params: 268_100_000,
        };
        let m = Measurement {
            test: Test::Generation(128),
            tokens_per_second: vec![50.0, 52.0],
        };
        let line = row(&model, "avx512", 2, &m);
        assert!(line.contains(" tg128 |"), "{line}");
        assert!(line.contains("51.00 ± 1.41"), "{line}");
        assert!(
            line.contains("3.00 MiB") && line.contains("268.10 M"),
            "{line}"
        );
        for header_line in header().lines() {
            assert_eq!(
                header_line.chars().count(),
                line.chars().count(),
                "{header_line}"
            );
        }
    }

    #[test]
    fn prompt_and_generation_runs_time_every_repetition() {
        let Some(path) = crate::test_models::path("gemma-3-270m-q4_k_m.gguf") else {
            return;
        };
        let bytes = std::fs::read(path).unwrap();
        let engine = Engine::from_bytes(bytes, kernels::Kernels::detect()).unwrap();
        for test in [Test::Prompt(8), Test::Generation(2)] {
            let m = measure(engine.model(), test, 2).unwrap();
            assert_eq!(m.tokens_per_second.len(), 2);
            assert!(m
                .tokens_per_second
                .iter()
                .all(|&v| v > 0.0 && v.is_finite()));
        }
    }
}
