//! The command line as a user meets it: bad files and bad flags get one line on stderr naming
//! the problem and exit code 1, never a panic; prompts of any length get a completion.

use llmfile::chat_format::{Message, Role};
use llmfile::engine::Engine;
use llmfile::test_models::{exact_prompt, BOUNDARY_PROMPTS, LONG_PROMPT};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

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

/// llama-bench's lists: a test per prompt length, then per generation length, zeros skipped,
/// in the order given; a bad entry is a one-line error.
#[test]
fn bench_takes_comma_separated_lengths() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let model = file.to_str().unwrap();
    let output = llmfile(&[
        "bench", "-m", model, "-p", "32,0,16", "-n", "0,4", "-r", "1", "-t", "1",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tests: Vec<&str> = stdout
        .lines()
        .skip(2)
        .map(|line| line.split('|').nth(6).unwrap_or_default().trim())
        .collect();
    assert_eq!(tests, ["pp32", "pp16", "tg4"], "{stdout}");

    let output = llmfile(&["bench", "-m", model, "-p", "16,x"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("'x'"), "{stderr}");
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
        (
            output.stdout,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (mapped, said) = run(&[]);
    assert!(!said.contains("grouped"), "{said}");
    let (copied, said) = run(&["--no-mmap", "--no-repack"]);
    assert_eq!(copied, mapped);
    assert!(!said.contains("grouped"), "{said}");
    // Copied weights are regrouped for the kernels where they have a grouped layout, which
    // the closing line names; their sums add in another order, and on this prompt the text
    // is the same.
    let (grouped, said) = run(&["--no-mmap"]);
    let groups = kernels::Kernels::from_env()
        .unwrap()
        .group_len(kernels::GgmlType::Q4_K)
        .is_some();
    assert_eq!(said.contains("grouped q4_K, q6_K"), groups, "{said}");
    assert_eq!(grouped, mapped);
    // --repack regroups mapped weights through a private mapping, the file left as it was.
    let before = std::fs::read(&file).unwrap();
    let (regrouped, said) = run(&["--repack"]);
    assert_eq!(said.contains("grouped q4_K, q6_K"), groups, "{said}");
    assert_eq!(regrouped, mapped);
    assert!(
        std::fs::read(&file).unwrap() == before,
        "--repack wrote to the model file"
    );
    assert_eq!(run(&["--repack", "--no-repack"]).0, mapped);
    // Both may be given, the last winning, so a user's flag overrides one in a bundle's .args.
    assert_eq!(run(&["--no-mmap", "--mmap"]).0, mapped);
}

/// Counts tokens as the command line does.
struct Tokens(Arc<Engine>);

impl Tokens {
    fn of(model: &Path) -> Tokens {
        let bytes = std::fs::read(model).unwrap();
        Tokens(Engine::from_bytes(bytes, kernels::Kernels::detect()).unwrap())
    }

    /// Tokens of a completion prompt, as `-f` tokenizes it.
    fn plain(&self, text: &str) -> usize {
        self.0.tokenizer().encode(text, true, false).unwrap().len()
    }

    /// Tokens of a first chat turn saying `line`, as `--chat` renders and tokenizes it.
    fn chat(&self, line: &str) -> usize {
        let turn = Message {
            role: Role::User,
            content: line.to_string(),
        };
        let rendered = self.0.info().template.render(&[turn]).unwrap();
        self.0
            .tokenizer()
            .encode(&rendered, true, true)
            .unwrap()
            .len()
    }
}

fn long_prompts_complete(file_name: &str) {
    let Some(model) = llmfile::test_models::path(file_name) else {
        return;
    };
    let tokens = Tokens::of(&model);
    let complete = |n: usize, context: &[&str]| {
        let text = exact_prompt(n, |t| tokens.plain(t));
        let file = TempFile::with(&format!("{file_name}-{n}.txt"), text.as_bytes());
        let mut args = vec!["-m", model.to_str().unwrap(), "-f", file.path()];
        args.extend_from_slice(&["-n", "4", "--temp", "0"]);
        args.extend_from_slice(context);
        let output = llmfile(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{n} tokens, {context:?}: {stderr}");
        assert!(
            stderr.contains(&format!("prompt {n} tokens")),
            "{n} tokens: {stderr}"
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let generated = stdout
            .strip_prefix(&text)
            .unwrap_or_else(|| panic!("{n} tokens: the prompt is echoed first"));
        assert!(
            !generated.trim().is_empty(),
            "{n} tokens: nothing generated: {stderr}"
        );
    };
    for n in BOUNDARY_PROMPTS {
        complete(n, &["-c", "1024"]);
    }
    // No -c: the default context of 8192 tokens.
    complete(LONG_PROMPT, &[]);
}

#[test]
fn long_prompts_complete_on_gemma3() {
    long_prompts_complete("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn long_prompts_complete_on_smollm2() {
    long_prompts_complete("smollm2-135m-instruct-q4_1.gguf");
}

/// Each long first turn is followed by a short second one, which the chat evaluates after the
/// cached first turn, then `/clear` for the next length; EOF ends the chat. The default
/// context. The many-batch prompt is left to `long_prompts_complete`: past 513 tokens the chat
/// meets no batch edge of its own, and a turn of 3000 tokens costs the slow model a minute in
/// the test profile.
fn long_chat_turns_are_answered(file_name: &str) {
    let Some(model) = llmfile::test_models::path(file_name) else {
        return;
    };
    let tokens = Tokens::of(&model);
    let mut input = String::new();
    for n in BOUNDARY_PROMPTS {
        input.push_str(&exact_prompt(n, |line| tokens.chat(line)));
        input.push_str("\nAnd then what happened?\n/clear\n");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmfile"))
        .args([
            "-m",
            model.to_str().unwrap(),
            "--chat",
            "-n",
            "4",
            "--temp",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread: the chat answers as it reads, and a full stdout pipe
    // would otherwise stop both.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("no longer fits"), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    // Before each long turn, short turn and /clear, and the last one met by EOF.
    let prompts: Vec<&str> = stdout.split("> ").skip(1).collect();
    assert_eq!(prompts.len(), 3 * BOUNDARY_PROMPTS.len() + 1, "{stdout:?}");
    for (n, turn) in BOUNDARY_PROMPTS.iter().zip(prompts.chunks(3)) {
        for reply in &turn[..2] {
            assert!(
                reply.ends_with('\n') && !reply.trim().is_empty(),
                "{n}-token first turn: reply {reply:?} in {stdout:?}"
            );
        }
        assert_eq!(turn[2], "", "/clear answers nothing");
    }
    assert_eq!(prompts[prompts.len() - 1], "\n", "EOF ends the chat");
}

#[test]
fn long_chat_turns_are_answered_on_gemma3() {
    long_chat_turns_are_answered("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn long_chat_turns_are_answered_on_smollm2() {
    long_chat_turns_are_answered("smollm2-135m-instruct-q4_1.gguf");
}

#[test]
fn grammar_and_schema_flags_constrain_the_completion() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let model = file.to_str().unwrap();
    let schema = r#"{"type": "object", "properties": {"n": {"type": "integer", "minimum": 10, "maximum": 99}}, "required": ["n"], "additionalProperties": false}"#;
    let grammar_file =
        std::env::temp_dir().join(format!("llmfile-cli-{}.gbnf", std::process::id()));
    std::fs::write(&grammar_file, "# digits\nroot ::= [0-9]{3}\n").unwrap();
    type Check = fn(&str) -> bool;
    let cases: [(&[&str], Check); 3] = [
        (&["--grammar", r#"root ::= "yes" | "no""#], |t| {
            t == "yes" || t == "no"
        }),
        (&["--grammar-file", grammar_file.to_str().unwrap()], |t| {
            t.len() == 3 && t.bytes().all(|b| b.is_ascii_digit())
        }),
        (&["-j", schema], |t| {
            let value: serde_json::Value = serde_json::from_str(t).unwrap();
            (10..=99).contains(&value["n"].as_i64().unwrap())
                && value.as_object().unwrap().len() == 1
        }),
    ];
    for seed in ["1", "2", "3"] {
        for (flags, valid) in &cases {
            let mut args = vec![
                "-m", model, "-p", "Q:", "-n", "100", "--temp", "1", "-s", seed,
            ];
            args.extend_from_slice(flags);
            let output = llmfile(&args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{flags:?}: {stderr}");
            let stdout = String::from_utf8(output.stdout).unwrap();
            let text = stdout.strip_prefix("Q:").unwrap().trim_end_matches('\n');
            assert!(valid(text), "{flags:?} seed {seed}: {text:?}");
        }
    }
    std::fs::remove_file(&grammar_file).unwrap();

    let refused: [(&[&str], &str); 4] = [
        (&["--grammar", "root ::= ("], "--grammar"),
        (&["-j", "{\"not\": {}}"], "\"not\""),
        (&["-j", "{nope"], "not valid JSON"),
        (
            &["--grammar", "root ::= \"a\"", "-j", "{}"],
            "cannot be used with",
        ),
    ];
    for (flags, expected) in refused {
        let mut args = vec!["-m", model, "-p", "Q:", "-n", "4"];
        args.extend_from_slice(flags);
        let output = llmfile(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{flags:?}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

/// At a full context, --context-shift keeps the first tokens, halves the rest and goes on;
/// without it the text ends with the context, as in llama.cpp.
#[test]
fn context_shift_generates_past_a_full_context() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let model = file.to_str().unwrap();
    let generated = |extra: &[&str]| {
        let mut args = vec![
            "-m",
            model,
            "-p",
            "Hello there",
            "-c",
            "32",
            "-n",
            "100",
            "--temp",
            "0",
        ];
        args.extend_from_slice(extra);
        let output = llmfile(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{extra:?}: {stderr}");
        let count = stderr
            .split("generated ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no count in {stderr}"));
        count
    };
    assert!(generated(&[]) < 32);
    assert_eq!(generated(&["--context-shift"]), 100);
    assert_eq!(generated(&["--context-shift", "--keep", "-1"]), 100);
    assert_eq!(generated(&["--context-shift", "--keep", "1000"]), 100);
}

/// Speculative decoding's flags (issue #19): guesses from n-grams or a draft model, the
/// timings line counting them, also through a context shift; refusals in one line.
#[test]
fn speculation_flags() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let model = file.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["-m", model, "-p", "Hello there", "-n", "60", "--temp", "0"];
        args.extend_from_slice(extra);
        let output = llmfile(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr)
    };
    for extra in [
        &[
            "--spec-type",
            "ngram-simple",
            "--spec-ngram-simple-size-n",
            "1",
        ][..],
        &["-md", model, "--spec-draft-n-max", "4"],
        &[
            "--model-draft",
            model,
            "--spec-type",
            "draft-simple",
            "--spec-draft-p-min",
            "0.01",
        ],
        &[
            "--spec-type",
            "ngram-simple",
            "--spec-ngram-simple-size-n",
            "1",
            "-c",
            "32",
            "--context-shift",
        ],
    ] {
        let (ok, stderr) = run(extra);
        assert!(ok, "{extra:?}: {stderr}");
        assert!(
            stderr.contains("generated 60 tokens"),
            "{extra:?}: {stderr}"
        );
        assert!(stderr.contains("tokens drafted"), "{extra:?}: {stderr}");
    }
    let (ok, stderr) = run(&["--spec-type", "none", "-md", model]);
    assert!(ok && !stderr.contains("drafted"), "{stderr}");
    for (extra, says) in [
        (
            &["--spec-type", "draft-simple"][..],
            "needs a draft model (-md FILE)",
        ),
        (
            &["--spec-type", "ngram-simple", "--spec-draft-p-min", "2"],
            "--spec-draft-p-min must be between 0 and 1",
        ),
        (
            &[
                "--spec-type",
                "ngram-simple",
                "--spec-ngram-simple-size-n",
                "0",
            ],
            "must be at least 1",
        ),
        (
            &["-md", "/nonexistent/draft.gguf"],
            "/nonexistent/draft.gguf",
        ),
    ] {
        let (ok, stderr) = run(extra);
        assert!(!ok, "{extra:?} succeeded");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{extra:?}: {stderr}");
    }
    let models = (
        llmfile::test_models::path("gemma-3-270m-q4_k_m.gguf"),
        llmfile::test_models::path("smollm2-135m-instruct-q4_1.gguf"),
    );
    if let (Some(gemma), Some(smollm)) = models {
        let output = llmfile(&[
            "-m",
            gemma.to_str().unwrap(),
            "-md",
            smollm.to_str().unwrap(),
            "-p",
            "Hello",
            "-n",
            "4",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains("vocabulary differs"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

/// `-l/--logit-bias`, `--presence-penalty` and `--frequency-penalty`: a banned token never
/// comes, the penalties change a greedy text that repeats itself, bad values are one line.
#[test]
fn logit_bias_and_penalty_flags() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let model = file.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["-m", model, "-p", "Hello there", "-n", "24", "--temp", "0"];
        args.extend_from_slice(extra);
        let output = llmfile(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
        )
    };
    let (ok, plain, stderr) = run(&[]);
    assert!(ok, "{stderr}");
    let ids_of = |text: &str| -> Vec<u32> {
        let output = llmfile(&["tokenize", "-m", model, "-p", text]);
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let prompt_len = ids_of("Hello there").len();
    let generated = ids_of(&plain)[prompt_len..].to_vec();
    let first = generated[0].to_string();
    let (ok, banned, stderr) = run(&["-l", &format!("{first}-inf")]);
    assert!(ok, "{stderr}");
    assert!(
        !ids_of(&banned)[prompt_len..].contains(&generated[0]),
        "{banned}"
    );
    for penalty in [["--presence-penalty", "5"], ["--frequency-penalty", "5"]] {
        let (ok, penalized, stderr) = run(&penalty);
        assert!(ok, "{stderr}");
        assert_ne!(penalized, plain, "{penalty:?} changed nothing");
    }
    for (extra, says) in [
        (&["-l", "99999999+1"][..], "outside the vocabulary"),
        (&["-l", "15043"], "TOKEN_ID(+/-)BIAS"),
        (&["-l", "15043+x"], "not a number"),
    ] {
        let (ok, _, stderr) = run(extra);
        assert!(!ok, "{extra:?} succeeded");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{extra:?}: {stderr}");
    }
}

/// Flags llama.cpp users type: accepted and meaning what they say, or one clear line.
#[test]
fn llama_cpp_flags_people_type() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let model = file.to_str().unwrap();
    let base = ["-m", model, "-p", "Hi", "-n", "2", "--temp", "0"];
    for extra in [
        &["-fa"][..],
        &["-fa", "off"],
        &["--flash-attn", "auto"],
        &["--no-warmup"],
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let output = llmfile(&args);
        assert!(
            output.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // --mlock either locks or says why not in one line (the limit is the machine's).
    let mut args = base.to_vec();
    args.push("--mlock");
    let output = llmfile(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || (stderr.lines().count() == 1 && stderr.contains("--mlock")),
        "{stderr}"
    );

    let chat = |flags: &[&str]| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmfile"))
            .args(["-m", model, "-n", "2", "--temp", "0", "--verbose-prompt"])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"Hello\n").unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let conversation = chat(&["-cnv", "-sys", "Be brief."]);
    assert!(
        conversation.contains("<start_of_turn>user\nBe brief.\n\nHello<end_of_turn>"),
        "-cnv chats, -sys is its system prompt: {conversation}"
    );
    assert_eq!(
        conversation,
        chat(&["--conversation", "--system-prompt", "Be brief."])
    );

    for (typed, nearest) in [
        ("--tmep", "--temp"),
        ("--ctx", "--ctx-size"),
        ("--grammer", "--grammar"),
    ] {
        let output = llmfile(&[typed, "1"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(typed) && stderr.contains(&format!("nearest known flag is {nearest} ")),
            "{stderr}"
        );
    }
}
