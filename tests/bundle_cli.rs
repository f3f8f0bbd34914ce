//! The bundle as a user meets it: pack the real binary with a real model, delete the model,
//! run the bundle from another directory, and compare its greedy text with the engine run on
//! the original GGUF. Skips (with a note) when the test model is not downloaded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ENGINE: &str = env!("CARGO_BIN_EXE_llmfile");
const MODEL_NAME: &str = "gemma-3-270m-q4_k_m.gguf";
const PROMPT: &str = "The capital of France is";
/// Greedy, short, quiet, and a small context so the KV cache stays far below the model size.
const GENERATION: [&str; 7] = ["-n", "16", "--temp", "0", "-c", "256", "--log-disable"];

fn model_path() -> Option<PathBuf> {
    llmfile::test_models::path(MODEL_NAME)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("llmfile-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(program: &Path, args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: Output) -> String {
    String::from_utf8(out.stdout).unwrap()
}

/// A copy of the model that the test may delete, and the packed bundle made from it.
struct Bundle {
    dir: TempDir,
    model_copy: PathBuf,
    bundle: PathBuf,
}

fn pack(tag: &str, model: &Path, args: &str) -> Bundle {
    let dir = TempDir::new(tag);
    let model_copy = dir.0.join(MODEL_NAME);
    std::fs::copy(model, &model_copy).unwrap();
    let bundle = dir.0.join("gemma.llmfile");
    run(
        Path::new(ENGINE),
        &[
            "pack",
            "-m",
            model_copy.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap(),
            "--args",
            args,
            "--quiet",
        ],
        &dir.0,
    );
    Bundle {
        dir,
        model_copy,
        bundle,
    }
}

fn reference_text(model: &Path, elsewhere: &Path) -> String {
    let mut args = vec!["-m", model.to_str().unwrap(), "-p", PROMPT];
    args.extend(GENERATION);
    stdout(run(Path::new(ENGINE), &args, elsewhere))
}

#[test]

fn bundle_runs_without_the_original_gguf_and_matches_it() {
    let Some(model) = model_path() else { return };
    let elsewhere = TempDir::new("cwd");
    let expected = reference_text(&model, &elsewhere.0);
    assert!(
        expected.len() > PROMPT.len(),
        "the reference generated nothing"
    );

    let packed = pack("plain", &model, &GENERATION.join(" "));
    std::fs::remove_file(&packed.model_copy).unwrap();

    // No -m: the one embedded model; the user's -p joins the .args defaults.
    assert_eq!(
        stdout(run(&packed.bundle, &["-p", PROMPT], &elsewhere.0)),
        expected
    );
    // -m naming the entry finds it inside the executable.
    assert_eq!(
        stdout(run(
            &packed.bundle,
            &["-m", MODEL_NAME, "-p", PROMPT],
            &elsewhere.0
        )),
        expected
    );
    // Another program reads the bundle as a model file: the plain engine with -m BUNDLE.
    let mut args = vec!["-m", packed.bundle.to_str().unwrap(), "-p", PROMPT];
    args.extend(GENERATION);
    assert_eq!(
        stdout(run(Path::new(ENGINE), &args, &elsewhere.0)),
        expected
    );
}

#[test]

fn mode_flags_inside_args_take_effect() {
    // llamafile issue #783: the mode was chosen before .args was read.
    let Some(model) = model_path() else { return };
    let elsewhere = TempDir::new("mode-cwd");
    let expected = reference_text(&model, &elsewhere.0);
    let args = format!("-p '{PROMPT}' {}", GENERATION.join(" "));
    let packed = pack("mode", &model, &args);
    assert_eq!(stdout(run(&packed.bundle, &[], &elsewhere.0)), expected);
}

#[test]

fn user_flags_override_args_defaults() {
    // .args holds defaults: the user's later -n must win, as in llama.cpp, not be refused.
    let Some(model) = model_path() else { return };
    let elsewhere = TempDir::new("override-cwd");
    let expected = reference_text(&model, &elsewhere.0);
    let packed = pack("override", &model, "-n 2 --temp 0 -c 256 --log-disable");
    assert_eq!(
        stdout(run(
            &packed.bundle,
            &["-p", PROMPT, "-n", "16"],
            &elsewhere.0
        )),
        expected
    );
}

#[test]

fn info_describes_the_bundle() {
    let Some(model) = model_path() else { return };
    let packed = pack("info", &model, "--temp 0 ...");
    let report = stdout(run(
        Path::new(ENGINE),
        &["info", packed.bundle.to_str().unwrap()],
        &packed.dir.0,
    ));
    assert!(report.contains(MODEL_NAME), "{report}");
    assert!(report.contains("architecture: gemma3"), "{report}");
    assert!(report.contains(".args:\n  --temp 0 ..."), "{report}");
}

#[cfg(target_os = "linux")]
#[test]

fn weights_are_mapped_not_copied() {
    let Some(model) = model_path() else { return };
    let model_size = std::fs::metadata(&model).unwrap().len();
    let packed = pack("rss", &model, "-n 64 --temp 0 -c 256 --log-disable");
    let mut child = Command::new(&packed.bundle)
        .args(["-p", PROMPT])
        .current_dir(&packed.dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Anonymous memory (RssAnon) is what a copy of the weights would land in; the mapped file
    // shows up in RssFile instead. Sample it for the whole run and keep the peak.
    let status = format!("/proc/{}/status", child.id());
    let mut peak_anon_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            let anon = text
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak_anon_kib = peak_anon_kib.max(anon.unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(peak_anon_kib > 0, "never saw the process's memory");
    assert!(
        peak_anon_kib * 1024 < model_size,
        "private memory peaked at {peak_anon_kib} KiB for a {model_size}-byte model"
    );
}

/// Sends one request to a server on 127.0.0.1 and returns the JSON of its body.
fn post_json(port: u16, path: &str, body: &serde_json::Value) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, json) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {reply}");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[test]
fn a_bundles_chat_template_reaches_the_api_and_the_terminal_chat() {
    use std::io::{BufRead, BufReader, Write};
    let Some(model) = model_path() else { return };
    let packed = pack("alpaca", &model, "--chat-template alpaca -c 512");
    let elsewhere = TempDir::new("alpaca-cwd");

    let mut chat = Command::new(&packed.bundle)
        .args(["--chat", "--verbose-prompt", "-n", "4", "--temp", "0"])
        .current_dir(&elsewhere.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"Say hi.\n/exit\n")
        .unwrap();
    let output = chat.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("### Instruction:\nSay hi.\n\n### Response:\n"),
        "{stderr}"
    );

    let mut server = Command::new(&packed.bundle)
        .args(["--server", "--nobrowser", "--port", "0"])
        .current_dir(&elsewhere.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .rsplit_once("http://127.0.0.1:")
        .and_then(|(_, rest)| rest.trim().trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let messages = serde_json::json!([{"role": "user", "content": "Say hi."}]);
    let applied = post_json(
        port,
        "/apply-template",
        &serde_json::json!({"messages": messages}),
    );
    let prompt = applied["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("### Instruction:\nSay hi.\n\n### Response:\n"),
        "{prompt}"
    );
    let reply = post_json(
        port,
        "/v1/chat/completions",
        &serde_json::json!({"messages": messages, "max_tokens": 2, "temperature": 0}),
    );
    let tokens = post_json(
        port,
        "/tokenize",
        &serde_json::json!({"content": prompt, "add_special": true}),
    );
    assert_eq!(
        reply["usage"]["prompt_tokens"],
        tokens["tokens"].as_array().unwrap().len(),
        "the chat endpoint's prompt is the applied template's"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `pack -md` embeds a draft model beside the model (issue #19): the bundle speculates with
/// it by itself, from another directory, with both original files gone.
#[test]
fn a_packed_draft_model_speculates_from_inside_the_bundle() {
    let Some(model) = model_path() else { return };
    let dir = TempDir::new("draft");
    let model_copy = dir.0.join(MODEL_NAME);
    let draft_copy = dir.0.join("draft.gguf");
    std::fs::copy(&model, &model_copy).unwrap();
    std::fs::copy(&model, &draft_copy).unwrap();
    let bundle = dir.0.join("speculating.llmfile");
    let args = format!("-p '{PROMPT}' -n 16 --temp 0 -c 256 --spec-draft-n-max 4");
    run(
        Path::new(ENGINE),
        &[
            "pack",
            "-m",
            model_copy.to_str().unwrap(),
            "-md",
            draft_copy.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap(),
            "--args",
            &args,
            "--quiet",
        ],
        &dir.0,
    );
    std::fs::remove_file(&model_copy).unwrap();
    std::fs::remove_file(&draft_copy).unwrap();
    let info = stdout(run(
        Path::new(ENGINE),
        &["info", bundle.to_str().unwrap()],
        &dir.0,
    ));
    assert!(
        info.contains(MODEL_NAME) && info.contains("draft.gguf"),
        "{info}"
    );
    let elsewhere = TempDir::new("draft-cwd");
    let out = run(&bundle, &[], &elsewhere.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout(out.clone()).starts_with(PROMPT), "{stderr}");
    let drafted = stderr
        .split("speculation: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no speculation line in {stderr}"));
    assert!(drafted > 0, "{stderr}");

    let same_name = failure_line(&[
        "pack",
        "-m",
        model.to_str().unwrap(),
        "-md",
        model.to_str().unwrap(),
        "-o",
        dir.0.join("twice.llmfile").to_str().unwrap(),
    ]);
    assert!(same_name.contains("both named"), "{same_name}");
}

/// A command that must fail, and its one line of error.
fn failure_line(args: &[&str]) -> String {
    let out = Command::new(ENGINE).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}
