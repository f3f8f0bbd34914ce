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
