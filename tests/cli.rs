//! The command line as a user meets it: bad files and bad flags get one line on stderr naming
//! the problem and exit code 1, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn llmfile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmfile"))
        .args(args)
        .output()
        .expect("llmfile runs")
}

fn synthetic_model() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    std::fs::read(path).expect("synthetic model in the repository")
}

struct TempFile(PathBuf);

impl TempFile {
    fn with(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("llmfile-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a completion on a corrupted model and checks the failure is one clean line.
fn assert_clean_failure(name: &str, bytes: &[u8], expected: &str) {
    let file = TempFile::with(name, bytes);
    let output = llmfile(&["-m", file.path(), "-p", "hi", "-n", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{name}: not one line: {stderr}");
    assert!(
        stderr.contains(file.path()),
        "{name}: file not named: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "{name}: {stderr} lacks {expected:?}"
    );
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
}

/// Byte offset just past the first occurrence of `needle`.
fn after(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
        + needle.len()
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

#[test]
fn bad_magic() {
    let mut bytes = synthetic_model();
    bytes[..4].copy_from_slice(b"GGML");
    assert_clean_failure("magic", &bytes, "neither a GGUF file nor an llmfile");
}

#[test]
fn unsupported_version() {
    let mut bytes = synthetic_model();
    bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert_clean_failure("version", &bytes, "unsupported GGUF version 7");
}

#[test]
fn truncated_header_and_data() {
    let bytes = synthetic_model();
    assert_clean_failure("truncated-header", &bytes[..1000], "truncated");
    assert_clean_failure(
        "truncated-data",
        &bytes[..bytes.len() - 4096],
        "past the end",
    );
}

#[test]
fn absurd_counts() {
    let mut bytes = synthetic_model();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_clean_failure("tensor-count", &bytes, "truncated");
    let mut bytes = synthetic_model();
    bytes[16..24].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
    assert_clean_failure("kv-count", &bytes, "truncated");
}

#[test]
fn unknown_tensor_type() {
    let mut bytes = synthetic_model();
    let name = gguf_string("output_norm.weight");
    let info = after(&bytes, &name);
    let n_dims = u32::from_le_bytes(bytes[info..info + 4].try_into().unwrap()) as usize;
    let type_at = info + 4 + 8 * n_dims;
    bytes[type_at..type_at + 4].copy_from_slice(&1234u32.to_le_bytes());
    assert_clean_failure("tensor-type", &bytes, "unknown type id 1234");
}

#[test]
fn missing_metadata_key() {
    let mut bytes = synthetic_model();
    let key_end = after(&bytes, b"gemma2.block_count");
    bytes[key_end - 1] = b'X';
    assert_clean_failure(
        "missing-key",
        &bytes,
        "missing metadata key 'gemma2.block_count'",
    );
}

#[test]
fn unsupported_architecture() {
    let mut bytes = synthetic_model();
    let mut key = gguf_string("general.architecture");
    key.extend(8u32.to_le_bytes());
    key.extend(6u64.to_le_bytes());
    let value = after(&bytes, &key);
    bytes[value..value + 6].copy_from_slice(b"mamba9");
    assert_clean_failure(
        "architecture",
        &bytes,
        "unsupported architecture 'mamba9' (supported: gemma2, gemma3, llama)",
    );
}

#[test]
fn missing_file_and_unknown_flag() {
    let output = llmfile(&["-m", "/nonexistent/model.gguf", "-p", "hi"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/model.gguf"));

    let output = llmfile(&["--no-such-flag"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn greedy_completion_on_the_synthetic_model() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let run = || {
        llmfile(&[
            "-m",
            file.to_str().unwrap(),
            "-p",
            "Hello",
            "-n",
            "8",
            "--temp",
            "0",
            "-ngl",
            "99",
        ])
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8(first.stdout.clone()).unwrap();
    assert!(
        stdout.starts_with("Hello"),
        "prompt echoed first: {stdout:?}"
    );
    assert!(
        stdout.len() > "Hello\n".len(),
        "something generated: {stdout:?}"
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("runs on the CPU"), "{stderr}");
    assert!(stderr.contains("tokens/s"), "{stderr}");
    assert_eq!(run().stdout, first.stdout, "greedy output is deterministic");
}

#[test]
fn mapped_and_copied_weights_give_the_same_text() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let run = |placement: &[&str]| {
        let mut args = vec![
            "-m",
            file.to_str().unwrap(),
            "-p",
            "Hello",
            "-n",
            "8",
            "--temp",
            "0",
        ];
        args.extend_from_slice(placement);
        let output = llmfile(&args);
        assert!(
            output.status.success(),
            "{placement:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let mapped = run(&[]);
    assert_eq!(run(&["--no-mmap"]), mapped);
    // Both may be given, the last winning, so a user's flag overrides one in a bundle's .args.
    assert_eq!(run(&["--no-mmap", "--mmap"]), mapped);
}
