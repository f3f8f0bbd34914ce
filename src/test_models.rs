//! Where tests find the downloaded models (`scripts/fetch-models`).

use crate::engine::Engine;
use std::path::PathBuf;
use std::sync::Arc;

/// The synthetic Gemma 2 committed under tests/fixtures/models: small, random weights, Gemma's
/// vocabulary; what unit tests run the model and the tokenizer on.
pub fn synthetic_engine() -> Arc<Engine> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf"
    );
    let bytes = std::fs::read(path).expect("synthetic model in the repository");
    Engine::from_bytes(bytes, kernels::Kernels::detect()).expect("the synthetic model loads")
}

/// The model's path, or None (with a note on stderr) when it has not been fetched, so tests
/// that need it skip instead of failing on a machine without the download.
pub fn path(file_name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LLMFILE_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/llmfile/models"))
        })?;
    let path = dir.join(file_name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} not found (run scripts/fetch-models)",
            path.display()
        );
        None
    }
}

/// Prompt lengths in tokens on both sides of the session's 256-token prompt batches and of the
/// server's default 512-token steps. Any prompt longer than 256 tokens once crashed every front
/// end (issue #13): its first batch asked for no logits.
pub const BOUNDARY_PROMPTS: [usize; 6] = [255, 256, 257, 511, 512, 513];

/// A prompt of many batches.
pub const LONG_PROMPT: usize = 3000;

/// Text whose prompt is exactly `n` tokens by `count`: the longest run of words from the
/// fixture prose that fits, then one-token words until it is full. One line, so that the
/// terminal chat reads it as one turn.
pub fn exact_prompt(n: usize, count: impl Fn(&str) -> usize) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/perplexity-long.txt"
    );
    let prose = std::fs::read_to_string(path).expect("fixture prose in the repository");
    let words: Vec<&str> = prose.split_whitespace().collect();
    let (mut fits, mut too_many) = (0, words.len());
    while too_many - fits > 1 {
        let middle = (fits + too_many) / 2;
        if count(&words[..middle].join(" ")) <= n {
            fits = middle;
        } else {
            too_many = middle;
        }
    }
    let mut text = words[..fits].join(" ");
    while count(&text) < n {
        text.push_str(" a");
    }
    assert_eq!(count(&text), n, "no text of exactly {n} tokens");
    text
}

/// Top-two logits closer than this may swap between two kernels' roundings: a pass of many
/// rows, a few rows and one row add the same products in other orders, and a difference that
/// crosses an f16 rounding step grows through the layers (tests/batching.rs says by how much).
pub const NEAR_TIE: f32 = 0.5;
