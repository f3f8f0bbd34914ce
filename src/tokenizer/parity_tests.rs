//! Parity with llama.cpp on the downloaded models. The expected ids come from llama.cpp's own
//! tokenizer (`llama-tokenize`, or `llama_tokenize` for the fixtures) on the same GGUF files.
//! Each test skips with a note when its model is not on this machine.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::Tokenizer;
use crate::gguf::Gguf;

const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
const SMOLLM2_FILE: &str = "smollm2-135m-instruct-q4_1.gguf";

fn load(file_name: &str) -> Option<Tokenizer> {
    let path = crate::test_models::path(file_name)?;
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gguf = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn gemma3() -> Option<&'static Tokenizer> {
    static TOKENIZER: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOKENIZER.get_or_init(|| load(GEMMA3_FILE)).as_ref()
}

fn smollm2() -> Option<&'static Tokenizer> {
    static TOKENIZER: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOKENIZER.get_or_init(|| load(SMOLLM2_FILE)).as_ref()
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    /// Whether control tokens written in the text are parsed.
    special: bool,
    ids: Vec<u32>,
}

/// Encodes every case of `tests/fixtures/<model_id>/tokens.json` (with BOS as the model asks,
/// as `llama-tokenize` does) and lists each mismatch.
fn check_fixture(tokenizer: &Tokenizer, model_id: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model_id)
        .join("tokens.json");
    let Ok(json) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let cases: Vec<Case> = serde_json::from_str(&json).expect("fixture is valid JSON");
    assert!(!cases.is_empty(), "{} has no cases", path.display());
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let ids = tokenizer
                .encode(&case.text, true, case.special)
                .unwrap_or_else(|e| panic!("{:?}: {e}", case.text));
            (ids != case.ids).then(|| {
                format!(
                    "{:?} (special: {}):\n  llama.cpp {:?}\n  ours      {:?}",
                    case.text, case.special, case.ids, ids
                )
            })
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from llama.cpp:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
    eprintln!("{model_id}: all {} cases match llama.cpp", cases.len());
}

#[test]
fn gemma3_matches_llama_cpp_on_fixture() {
    if let Some(tokenizer) = gemma3() {
        check_fixture(tokenizer, "gemma3-270m-q4_k_m");
    }
}

#[test]
fn smollm2_matches_llama_cpp_on_fixture() {
    if let Some(tokenizer) = smollm2() {
        check_fixture(tokenizer, "smollm2-135m-q4_1");
    }
}
