//! Fill-in-the-middle over real HTTP: `/infill` against llama-server's replies recorded on the
//! FIM test models (tests/fixtures/infill, made by scripts/make-infill-reference), `suffix` on
//! `/v1/completions`, and the 400s for models without FIM tokens and for malformed fields.
//!
//! The FIM models are copies of the test models with llama.cpp's FIM keys added
//! (scripts/make-fim-models, run by scripts/fetch-models); tests that need one skip when it has
//! not been made.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SMOLLM_FIM: &str = "smollm2-135m-fim-q4_1.gguf";
const GEMMA_FIM: &str = "gemma2-synthetic-fim-q4_k_m.gguf";

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmfile"))
            .args(["-m", model.to_str().unwrap(), "--server", "--nobrowser"])
            .args(["--host", "127.0.0.1", "--port", "0", "-np", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("llmfile starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        // Keeps draining stdout after the address line so that the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints its address within a minute");
        let port = line
            .rsplit_once("http://127.0.0.1:")
            .and_then(|(_, rest)| rest.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, port }
    }

    /// The status and body of a POST; the connection is closed after the reply.
    fn post(&self, path: &str, body: &Value) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let body = body.to_string();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("a whole reply in time");
        let raw = String::from_utf8(raw).expect("a UTF-8 reply");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a reply head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        (status, if chunked { dechunk(body) } else { body.into() })
    }

    fn post_ok(&self, path: &str, body: &Value) -> Value {
        let (status, text) = self.post(path, body);
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The request must fail with a 400 whose message contains `wanted`.
    fn bad_request(&self, path: &str, body: &Value, wanted: &str) {
        let (status, text) = self.post(path, body);
        assert_eq!(status, 400, "{path} {body}: {text}");
        let message = serde_json::from_str::<Value>(&text).unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains(wanted),
            "{body}: {message:?} lacks {wanted:?}"
        );
    }

    /// The `data:` payloads of a streamed reply, as JSON.
    fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let (status, text) = self.post(path, body);
        assert_eq!(status, 200, "{text}");
        text.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut data: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, rest) = data.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&rest[..size]);
        data = &rest[size + 2..];
    }
}

fn fixture(model_id: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/infill")
        .join(format!("{model_id}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fim_model(file_name: &str) -> Option<PathBuf> {
    llmfile::test_models::path(file_name)
}

fn server_args(run: &Value) -> Vec<&str> {
    run["server_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect()
}

/// How far llama.cpp's own code paths differ on a model (tests/fixtures/<id>/spread.json): two
/// tokens whose logits are closer than this may come out either way in any engine.
fn spread(model_id: &str) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model_id)
        .join("spread.json");
    let spread: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    spread["max"].as_f64().unwrap()
}

/// Every recorded case: the same prompt (its length and its text with the special tokens
/// shown), then the same generated ids up to any step where llama-server's two best were a
/// near-tie (after which the texts are no longer comparable), else the same text and reason
/// to stop. The first case of each run is streamed too, and must give what it gave whole.
fn matches_llama_server(model_id: &str) {
    let fixture = fixture(model_id);
    let Some(model) = fim_model(fixture["model"].as_str().unwrap()) else {
        return;
    };
    let near_tie = spread(fixture["spread_of"].as_str().unwrap());
    let (mut compared, mut total, mut whole, mut cases) = (0, 0, 0, 0);
    for run in fixture["runs"].as_array().unwrap() {
        let server = Server::start(&model, &server_args(run));
        for (index, case) in run["cases"].as_array().unwrap().iter().enumerate() {
            let name = format!("{model_id} {}", case["name"]);
            let mut request = case["request"].clone();
            request["return_tokens"] = json!(true);
            let reply = server.post_ok("/infill", &request);
            assert_eq!(reply["prompt"], case["prompt"], "{name}: prompt");
            assert_eq!(
                reply["tokens_evaluated"], case["tokens_evaluated"],
                "{name}: prompt tokens"
            );
            let (got, want) = (ids(&reply["tokens"]), ids(&case["tokens"]));
            total += want.len();
            let agreed = got.iter().zip(&want).take_while(|(g, w)| g == w).count();
            compared += agreed;
            cases += 1;
            if agreed < want.len() {
                // Null where llama-server reported no probabilities: no near-tie can be shown.
                let top2 = &case["top2"][agreed];
                let gap =
                    top2[1].as_f64().unwrap_or(f64::INFINITY) - top2[3].as_f64().unwrap_or(0.0);
                assert!(
                    gap < near_tie && got.get(agreed).map(|&id| u64::from(id)) == top2[2].as_u64(),
                    "{name}: step {agreed} gave {:?}, llama-server {} (its top two {top2}, a                      gap of {gap:.4}, no near-tie)",
                    got.get(agreed),
                    want[agreed]
                );
                eprintln!("{name}: forked at step {agreed} on a near-tie (gap {gap:.4})");
            } else {
                whole += 1;
                assert_eq!(got.len(), want.len(), "{name}: ids");
                assert_eq!(reply["content"], case["content"], "{name}");
                assert_eq!(reply["stop_type"], case["stop_type"], "{name}");
            }
            if index > 0 {
                continue;
            }
            request["stream"] = json!(true);
            let events = server.stream("/infill", &request);
            let (last, pieces) = events.split_last().expect("events");
            let text: String = pieces
                .iter()
                .map(|e| e["content"].as_str().unwrap())
                .collect();
            let streamed: Vec<u32> = pieces.iter().flat_map(|e| ids(&e["tokens"])).collect();
            assert_eq!(text, reply["content"].as_str().unwrap(), "{name} streamed");
            assert_eq!(streamed, got, "{name} streamed ids");
            assert_eq!(last["stop"], true);
            assert_eq!(last["tokens_evaluated"], case["tokens_evaluated"]);
        }
    }
    eprintln!(
        "{model_id}: {compared} of {total} generated ids equal llama-server's before any \
         near-tie; {whole} of {cases} cases agree throughout"
    );
    // Near-ties excuse a fork, but agreement must stay the rule: most of the ids (the long
    // generations) or most of the cases (the short ones, which end after a few tokens).
    assert!(
        2 * compared >= total || 2 * whole >= cases,
        "{model_id}: only {compared} of {total} ids and {whole} of {cases} cases agree"
    );
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn infill_matches_llama_server_on_smollm2_with_repository_tokens() {
    matches_llama_server("smollm2-135m-fim-q4_1");
}

#[test]
fn infill_matches_llama_server_on_gemma_without_repository_tokens() {
    matches_llama_server("gemma2-synthetic-fim-q4_k_m");
}

#[test]
fn openai_suffix_is_the_infill_of_the_same_prefix_and_suffix() {
    let fixture = fixture("smollm2-135m-fim-q4_1");
    let Some(model) = fim_model(SMOLLM_FIM) else {
        return;
    };
    let run = &fixture["runs"][0];
    let server = Server::start(&model, &server_args(run));
    for name in ["prefix-suffix", "extra-files"] {
        let case = run["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|case| case["name"] == name)
            .unwrap();
        let request = &case["request"];
        let mut body = json!({
            "model": "any",
            "prompt": request["input_prefix"],
            "suffix": request["input_suffix"],
            "max_tokens": request["n_predict"],
            "temperature": 0,
        });
        if let Some(extra) = request.get("input_extra") {
            body["input_extra"] = extra.clone();
        }
        let reply = server.post_ok("/v1/completions", &body);
        assert_eq!(
            reply["usage"]["prompt_tokens"], case["tokens_evaluated"],
            "{name}"
        );
        let mut infill = request.clone();
        infill["cache_prompt"] = json!(false);
        let infilled = server.post_ok("/infill", &infill);
        assert_eq!(reply["choices"][0]["text"], infilled["content"], "{name}");
    }
}

#[test]
fn a_model_without_fim_tokens_is_a_400_and_the_server_goes_on() {
    // The synthetic Gemma 2 in the repository: Gemma's vocabulary has no FIM tokens.
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf");
    let server = Server::start(&model, &[]);
    let infill = json!({"input_prefix": "a", "input_suffix": "b", "n_predict": 2});
    let lacking = "no fill-in-the-middle tokens (it lacks the prefix, suffix, middle token)";
    server.bad_request("/infill", &infill, lacking);
    let openai = json!({"prompt": "a", "suffix": "b", "max_tokens": 2});
    server.bad_request("/v1/completions", &openai, lacking);
    let reply = server.post_ok("/completion", &json!({"prompt": "a", "n_predict": 2}));
    assert_eq!(reply["tokens_predicted"], 2);
}

#[test]
fn malformed_infill_fields_are_400s_that_name_the_field() {
    let Some(model) = fim_model(GEMMA_FIM) else {
        return;
    };
    let server = Server::start(&model, &["-c", "512"]);
    let good = json!({"input_prefix": "a", "input_suffix": "b", "n_predict": 2});
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let cases = [
        (
            with("input_extra", json!("text")),
            "input_extra must be an array of",
        ),
        (
            with("input_extra", json!({"text": "x"})),
            "input_extra must be an array of",
        ),
        (
            with("input_extra", json!(["x"])),
            "input_extra[0] must be an object",
        ),
        (
            with("input_extra", json!([{"text": "x"}, {"filename": "f"}])),
            "input_extra[1].text must be a string",
        ),
        (
            with("input_extra", json!([{"text": "x", "filename": 3}])),
            "input_extra[0].filename must be a string",
        ),
        (json!({"input_suffix": "b"}), "input_prefix is required"),
        (json!({"input_prefix": "a"}), "input_suffix is required"),
        (
            with("input_prefix", json!({"text": "a"})),
            "input_prefix must be a string or",
        ),
        (
            with("input_suffix", json!([true])),
            "input_suffix must be a string or",
        ),
        (
            with("input_suffix", json!([1_000_000])),
            "input_suffix: token 1000000",
        ),
        (with("prompt", json!(5)), "prompt must be a string"),
        (
            with("n_predict", json!("x")),
            "n_predict must be an integer",
        ),
    ];
    for (body, wanted) in &cases {
        server.bad_request("/infill", body, wanted);
        assert_eq!(server.post_ok("/infill", &good)["tokens_predicted"], 2);
    }
    let openai = json!({"prompt": "a", "suffix": 5, "max_tokens": 2});
    server.bad_request("/v1/completions", &openai, "suffix must be a string");
    // Token ids may stand in for text, as in llama-server.
    let ids = with("input_prefix", json!(["a", 300, "b"]));
    assert_eq!(server.post_ok("/infill", &ids)["tokens_predicted"], 2);
}
