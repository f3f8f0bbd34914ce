//! The server over real HTTP: each test starts `llmfile --server` on a free port and talks to
//! it with a small HTTP/1.1 client over a TCP socket. Every socket read has a timeout bounded by
//! the test's deadline and the server process is killed when the test ends, so a bug fails a
//! test instead of hanging CI.
//!
//! Most tests use the synthetic model in the repository (nonsense text, but deterministic);
//! those that need sensible answers use Gemma 3 270M and skip when it is not downloaded.

use llmfile::test_models::{exact_prompt, BOUNDARY_PROMPTS, LONG_PROMPT, NEAR_TIE};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// The longest any one test may run.
const TEST_DEADLINE: Duration = Duration::from_secs(300);

fn synthetic_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf")
}

fn downloaded_model(file_name: &str) -> Option<PathBuf> {
    llmfile::test_models::path(file_name)
}

struct Server {
    child: Child,
    port: u16,
    deadline: Instant,
    /// The server's stderr lines, which are also passed on to the test's stderr.
    stderr: Mutex<mpsc::Receiver<String>>,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        Server::start_on(model, 0, extra)
    }

    fn start_on(model: &Path, port: u16, extra: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_llmfile"));
        command
            .args(["-m", model.to_str().unwrap(), "--server", "--nobrowser"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(extra);
        Server::spawn(command)
    }

    /// Runs `command`, which must start a server on 127.0.0.1, and waits for its address.
    fn spawn(mut command: Command) -> Server {
        let deadline = Instant::now() + TEST_DEADLINE;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("llmfile starts");
        let stdout = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (errors, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let _ = errors.send(line);
            }
        });
        let (lines, received) = mpsc::channel();
        // Reads the address line, then keeps draining stdout so the server never blocks on it.
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
        Server {
            child,
            port,
            deadline,
            stderr: Mutex::new(stderr),
        }
    }

    /// The server's peak resident memory in KiB, where the system reports it.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connects");
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .expect("the test ran past its deadline");
        stream.set_read_timeout(Some(left)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut stream = self.connect();
        send_request(&mut stream, method, path, headers, body);
        read_reply(stream)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, &[], body.to_string().as_bytes())
    }

    /// A JSON reply that must be 200.
    fn post_ok(&self, path: &str, body: &Value) -> Value {
        let reply = self.post(path, body);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The `data:` payloads of an event stream, checking the framing on the way.
    fn events(&self) -> Vec<String> {
        let text = self.text();
        assert!(
            text.ends_with("\n\n"),
            "events end with a blank line: {text:?}"
        );
        text.trim_end_matches("\n\n")
            .split("\n\n")
            .map(|event| {
                event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                    .to_string()
            })
            .collect()
    }
}

/// Reads a whole reply (the request asked the server to close the connection after it).
fn read_reply(mut stream: TcpStream) -> Reply {
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("the reply arrives before the timeout");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&data[..size]);
        assert_eq!(&data[size..size + 2], b"\r\n", "chunk ends with CRLF");
        data = &data[size + 2..];
    }
}

fn greedy(prompt: &str, n_predict: i64) -> Value {
    json!({"prompt": prompt, "n_predict": n_predict, "temperature": 0})
}

#[test]
fn health_props_page_and_cors() {
    let server = Server::start(&synthetic_model(), &[]);
    let health = server.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.header("Access-Control-Allow-Origin"), Some("*"));

    let props = server.get("/props").json();
    assert_eq!(props["chat_format"], "gemma");
    assert_eq!(props["n_ctx"], 512, "the synthetic model's trained context");
    assert_eq!(
        props["templates"]["prompt"],
        "<start_of_turn>system\n{{prompt}}<end_of_turn>\n{{history}}\n<start_of_turn>{{char}}\n"
    );
    assert_eq!(
        props["templates"]["history"],
        "<start_of_turn>{{name}}\n{{message}}<end_of_turn>"
    );
    assert_eq!(
        (props["user_name"].as_str(), props["bot_name"].as_str()),
        (Some("user"), Some("model"))
    );
    let presets: Vec<&str> = props["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(presets, ["Gemma", "Alpaca", "ChatML", "Llama 3", "Plain"]);
    assert_eq!(
        props["default_generation_settings"]["temperature"]
            .as_f64()
            .map(|t| (t * 100.0).round()),
        Some(80.0)
    );

    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("<script src=\"/app.js\">"));
    for (asset, kind) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let reply = server.get(asset);
        assert_eq!(reply.status, 200, "{asset}");
        assert!(
            reply.header("Content-Type").unwrap().starts_with(kind),
            "{asset}"
        );
        assert!(!reply.body.is_empty());
    }

    let preflight = server.request(
        "OPTIONS",
        "/completion",
        &[("Origin", "http://example.com")],
        b"",
    );
    assert_eq!(preflight.status, 204);
    assert!(preflight
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Authorization"));

    let models = server.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(
        models["data"][0]["id"],
        "Gemma 2 synthetic (llmfile test fixture)"
    );
}

#[test]
fn completion_streams_the_same_text_as_a_whole_reply() {
    let server = Server::start(&synthetic_model(), &[]);
    let whole = server.post_ok("/completion", &greedy("Hello", 12));
    assert_eq!(whole["stop"], true);
    assert_eq!(whole["tokens_predicted"], 12);
    assert_eq!(whole["stopped_limit"], true);
    assert_eq!(whole["stopped_eos"], false);
    assert_eq!(whole["stopped_word"], false);
    let content = whole["content"].as_str().unwrap();
    assert!(!content.is_empty());

    let mut request = greedy("Hello", 12);
    request["stream"] = json!(true);
    let reply = server.post("/completion", &request);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("text/event-stream"));
    let events: Vec<Value> = reply
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (last, tokens) = events.split_last().unwrap();
    assert!(tokens
        .iter()
        .all(|e| e["stop"] == false && e["content"].is_string()));
    let streamed: String = tokens
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, content);
    assert_eq!(last["stop"], true);
    assert_eq!(last["tokens_predicted"], 12);
    assert_eq!(last["stopped_limit"], true);
    for key in [
        "prompt_n",
        "prompt_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_second",
    ] {
        assert!(last["timings"][key].is_number(), "timings.{key}: {last}");
    }
    assert_eq!(last["timings"]["predicted_n"], 12);
}

#[test]
fn generation_that_fills_the_context_stops_with_the_limit_flag() {
    let server = Server::start(&synthetic_model(), &["-c", "32"]);
    let mut request = greedy("Hello", -1);
    request["ignore_eos"] = json!(true);
    let reply = server.post_ok("/completion", &request);
    assert_eq!(reply["stopped_limit"], true, "{reply}");
    let evaluated = reply["tokens_evaluated"].as_u64().unwrap();
    let predicted = reply["tokens_predicted"].as_u64().unwrap();
    assert_eq!(evaluated + predicted, 32, "{reply}");
}

#[test]
fn a_stop_string_ends_the_text_and_is_never_sent() {
    let server = Server::start(&synthetic_model(), &[]);
    let full = server.post_ok("/completion", &greedy("Once upon a time", 24));
    let text = full["content"].as_str().unwrap().to_string();
    // A stop string from the middle of what the model will say, crossing token boundaries.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let (start, _) = chars[chars.len() / 2];
    let end = chars
        .get(chars.len() / 2 + 4)
        .map_or(text.len(), |&(i, _)| i);
    let stop = text[start..end].to_string();
    let expected = &text[..text.find(&stop).unwrap()];

    let mut request = greedy("Once upon a time", 24);
    request["stop"] = json!(["never appears \u{1F600}", stop]);
    request["stream"] = json!(true);
    let events: Vec<Value> = server
        .post("/completion", &request)
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (last, tokens) = events.split_last().unwrap();
    let streamed: String = tokens
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, expected, "stop {stop:?} in {text:?}");
    assert_eq!(last["stopped_word"], true);
    assert_eq!(last["stopping_word"], stop);
    assert_eq!(last["stopped_limit"], false);

    request["stream"] = json!(false);
    let whole = server.post_ok("/completion", &request);
    assert_eq!(whole["content"], expected);
}

#[test]
fn prompts_as_token_ids_tokenize_and_detokenize() {
    let server = Server::start(&synthetic_model(), &["-np", "2"]);
    let tokens = server.post_ok("/tokenize", &json!({"content": "Hello world"}))["tokens"].clone();
    let ids: Vec<u64> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert!(!ids.is_empty());
    let with_bos = server.post_ok(
        "/tokenize",
        &json!({"content": "Hello world", "add_special": true}),
    )["tokens"]
        .clone();
    assert_eq!(with_bos.as_array().unwrap().len(), ids.len() + 1);
    let pieces = server.post_ok(
        "/tokenize",
        &json!({"content": "Hello world", "with_pieces": true}),
    );
    assert_eq!(pieces["tokens"][0]["id"], ids[0]);
    let text = server.post_ok("/detokenize", &json!({"tokens": ids}));
    assert_eq!(text["content"], "Hello world");

    let by_text = server.post_ok("/completion", &greedy("Hello world", 6));
    let by_ids = server.post_ok(
        "/completion",
        &json!({"prompt": with_bos, "n_predict": 6, "temperature": 0}),
    );
    assert_eq!(by_ids["content"], by_text["content"]);
    let mixed = json!({"prompt": ["Hello", ids[1]], "n_predict": 6, "temperature": 0});
    let _ = server.post_ok("/completion", &mixed);

    let on_slot_1 = server.post_ok(
        "/completion",
        &json!({"prompt": "Hi", "n_predict": 2, "id_slot": 1}),
    );
    assert_eq!(on_slot_1["id_slot"], 1);
    let with_probs = server.post_ok(
        "/completion",
        &json!({"prompt": "Hi", "n_predict": 2, "n_probs": 3}),
    );
    let probs = &with_probs["completion_probabilities"];
    assert_eq!(probs.as_array().unwrap().len(), 2);
    assert_eq!(probs[0]["probs"].as_array().unwrap().len(), 3);
}

#[test]
fn cache_prompt_evaluates_only_the_new_text() {
    let server = Server::start(&synthetic_model(), &[]);
    let first = server.post_ok(
        "/completion",
        &greedy("The first turn of a long conversation", 4),
    );
    assert_eq!(first["tokens_cached"], 0);
    let second = server.post_ok(
        "/completion",
        &greedy("The first turn of a long conversation, and the second", 4),
    );
    let evaluated = second["tokens_evaluated"].as_u64().unwrap();
    let cached = second["tokens_cached"].as_u64().unwrap();
    assert!(cached >= 7, "the shared prefix is reused: {second}");
    assert_eq!(
        second["timings"]["prompt_n"].as_u64().unwrap(),
        evaluated - cached
    );

    let mut uncached = greedy("The first turn of a long conversation, and the second", 4);
    uncached["cache_prompt"] = json!(false);
    let third = server.post_ok("/completion", &uncached);
    assert_eq!(third["tokens_cached"], 0);
    assert_eq!(
        third["content"], second["content"],
        "the cache changes no result"
    );
}

#[test]
fn openai_chat_and_text_completions() {
    let server = Server::start(&synthetic_model(), &[]);
    let request = json!({
        "model": "anything",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "temperature": 0,
    });
    let whole = server.post_ok("/v1/chat/completions", &request);
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    assert_eq!(whole["usage"]["completion_tokens"], 5);
    let prompt_tokens = whole["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        whole["usage"]["total_tokens"].as_u64().unwrap(),
        prompt_tokens + 5
    );
    // The prompt is Gemma's turns with the system text folded into the user turn, BOS first.
    let rendered = server.post_ok(
        "/tokenize",
        &json!({"content": "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n", "add_special": true}),
    );
    assert_eq!(
        rendered["tokens"].as_array().unwrap().len() as u64,
        prompt_tokens
    );

    let mut streamed_request = request.clone();
    streamed_request["stream"] = json!(true);
    let events = server
        .post("/v1/chat/completions", &streamed_request)
        .events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"]["completion_tokens"], 5);

    let text_completion = server.post_ok(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(text_completion["object"], "text_completion");
    assert_eq!(text_completion["choices"][0]["finish_reason"], "length");
    let llama = server.post_ok("/completion", &greedy("Hello", 3));
    assert_eq!(text_completion["choices"][0]["text"], llama["content"]);
    let mut streamed =
        json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0, "stream": true});
    let events = server.post("/v1/completions", &streamed).events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    streamed["n"] = json!(2);
    assert_eq!(server.post("/v1/completions", &streamed).status, 400);
}

/// The objects of an NDJSON reply, checking the framing on the way.
fn json_lines(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("Content-Type"), Some("application/x-ndjson"));
    let text = reply.text();
    assert!(text.ends_with('\n'), "lines end with a newline: {text:?}");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

/// A streamed Ollama reply's text, checking that only its last object is done.
fn ollama_text(lines: &[Value], field: &str) -> String {
    let (last, pieces) = lines.split_last().expect("at least the last object");
    assert_eq!(last["done"], true, "{last}");
    assert!(pieces.iter().all(|p| p["done"] == false), "{pieces:?}");
    lines
        .iter()
        .map(|line| line.pointer(field).and_then(Value::as_str).unwrap())
        .collect()
}

#[test]
fn ollama_lists_and_shows_the_model() {
    let server = Server::start(&synthetic_model(), &["-c", "256"]);
    let version = server.get("/api/version").json();
    assert!(version["version"].as_str().is_some_and(|v| !v.is_empty()));
    // Listed under the file's name, as a user calls it.
    let name = json!("gemma2-synthetic-q4_k_m");

    let tags = server.get("/api/tags").json();
    let [model] = tags["models"].as_array().unwrap().as_slice() else {
        panic!("one model: {tags}");
    };
    assert_eq!(model["name"], name);
    assert_eq!(model["model"], name);
    let size = std::fs::metadata(synthetic_model()).unwrap().len();
    assert_eq!(model["size"], size);
    let digest = model["digest"].as_str().unwrap();
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    assert!(model["modified_at"].as_str().unwrap().ends_with('Z'));
    let details = &model["details"];
    assert_eq!(details["format"], "gguf");
    assert_eq!(details["family"], "gemma2");
    assert_eq!(details["families"], json!(["gemma2"]));
    assert_eq!(details["quantization_level"], "Q4_K_M");
    assert!(details["parameter_size"].as_str().unwrap().ends_with('M'));

    let ps = server.get("/api/ps").json();
    assert_eq!(ps["models"][0]["name"], name);
    assert_eq!(ps["models"][0]["digest"], digest);
    assert_eq!(ps["models"][0]["context_length"], 256);

    let show = server.post_ok("/api/show", &json!({"model": "whatever:latest"}));
    assert_eq!(show["details"], *details);
    let info = &show["model_info"];
    assert_eq!(info["general.architecture"], "gemma2");
    assert_eq!(info["gemma2.context_length"], 512);
    assert!(info["gemma2.embedding_length"].as_u64().unwrap() > 0);
    assert!(info["general.parameter_count"].as_u64().unwrap() > 0);
    assert_eq!(info["tokenizer.ggml.tokens"], json!([]));
    assert!(!show["template"].as_str().unwrap().is_empty());
    assert!(show["parameters"]
        .as_str()
        .unwrap()
        .contains("temperature 0.8\n"));
    assert!(show["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("completion")));
}

/// Ollama's `/api/embed`: one unit-length vector per text, the same as `/v1/embeddings`
/// gives; a text longer than the context is cut unless `truncate` is false.
#[test]
fn ollama_embeds_texts() {
    let server = Server::start(&synthetic_model(), &["-c", "64"]);
    let texts = json!(["Hello", "The quick brown fox"]);
    let reply = server.post_ok("/api/embed", &json!({"model": "any", "input": texts}));
    let openai = server.post_ok("/v1/embeddings", &json!({"input": texts}));
    let vectors = reply["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for (index, vector) in vectors.iter().enumerate() {
        let values: Vec<f64> = vector
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let norm: f64 = values.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert_eq!(*vector, openai["data"][index]["embedding"]);
    }
    assert!(reply["prompt_eval_count"].as_u64().unwrap() > 2);
    let long = "word ".repeat(200);
    let cut = server.post_ok("/api/embed", &json!({"input": long}));
    assert_eq!(cut["embeddings"].as_array().unwrap().len(), 1);
    assert_eq!(cut["prompt_eval_count"], 64);
    for (body, says) in [
        (
            json!({"input": long, "truncate": false}),
            "does not fit the context",
        ),
        (json!({"input": ""}), "empty"),
        (json!({"input": [1, 2]}), "a string or a list of strings"),
        (json!({}), "input is required"),
    ] {
        let reply = server.post("/api/embed", &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert!(
            reply.json()["error"].as_str().unwrap().contains(says),
            "{}",
            reply.text()
        );
    }
}

#[test]
fn ollama_generate_and_chat_stream_json_lines() {
    let server = Server::start(&synthetic_model(), &["-c", "256"]);
    let generate =
        json!({"model": "any", "prompt": "Hello", "options": {"num_predict": 5, "temperature": 0}});
    let lines = json_lines(&server.post("/api/generate", &generate));
    let streamed = ollama_text(&lines, "/response");
    let last = lines.last().unwrap();
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 5);
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 1);
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[key].is_u64(), "{key}: {last}");
    }
    assert!(last["created_at"].as_str().unwrap().ends_with('Z'));
    let mut whole = generate.clone();
    whole["stream"] = json!(false);
    let whole = server.post_ok("/api/generate", &whole);
    assert_eq!(whole["done"], true);
    assert_eq!(whole["response"], streamed);
    // Without raw, the prompt is the chat template's user turn, as /v1/chat/completions's.
    let openai = server.post_ok(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(openai["choices"][0]["message"]["content"], streamed);
    assert_eq!(whole["prompt_eval_count"], openai["usage"]["prompt_tokens"]);

    // Options are the sampling of /completion under Ollama's names.
    let sampling = json!({"temperature": 1.3, "top_k": 0, "top_p": 0.9, "min_p": 0.02,
        "seed": 11, "repeat_penalty": 1.2, "repeat_last_n": 16});
    let mut options = sampling.clone();
    options["num_predict"] = json!(12);
    let raw = server.post_ok(
        "/api/generate",
        &json!({"prompt": "Once upon", "raw": true, "stream": false, "options": options}),
    );
    let mut llama = sampling.clone();
    llama["prompt"] = json!("Once upon");
    llama["n_predict"] = json!(12);
    let completion = server.post_ok("/completion", &llama);
    assert_eq!(raw["response"], completion["content"]);
    assert_eq!(raw["eval_count"], completion["tokens_predicted"]);
    let mut other_seed = options.clone();
    other_seed["seed"] = json!(12);
    let other = server.post_ok(
        "/api/generate",
        &json!({"prompt": "Once upon", "raw": true, "stream": false, "options": other_seed}),
    );
    assert_ne!(other["response"], raw["response"], "the seed is honoured");

    // num_predict -2 fills the context (this prompt meets no end of text before, with every
    // kernel variant here; "Hello world, this is" did, after the 512-bit Q4_K rows came).
    let filled = server.post_ok(
        "/api/generate",
        &json!({"prompt": "The quick brown fox", "raw": true, "stream": false,
            "options": {"num_predict": -2, "temperature": 0}}),
    );
    assert_eq!(filled["done_reason"], "length");
    assert_eq!(
        filled["prompt_eval_count"].as_u64().unwrap() + filled["eval_count"].as_u64().unwrap(),
        256
    );

    let chat = json!({"model": "any", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"}],
        "options": {"num_predict": 6, "temperature": 0}, "keep_alive": "5m"});
    let lines = json_lines(&server.post("/api/chat", &chat));
    let streamed = ollama_text(&lines, "/message/content");
    assert!(lines.iter().all(|l| l["message"]["role"] == "assistant"));
    assert_eq!(lines.last().unwrap()["eval_count"], 6);
    let mut whole = chat.clone();
    whole["stream"] = json!(false);
    let whole = server.post_ok("/api/chat", &whole);
    assert_eq!(whole["message"]["content"], streamed);
    let mut openai = chat.clone();
    openai["max_tokens"] = json!(6);
    openai["temperature"] = json!(0);
    let openai = server.post_ok("/v1/chat/completions", &openai);
    assert_eq!(openai["choices"][0]["message"]["content"], streamed);

    // A request with nothing to generate loads the model, as Ollama's clients expect.
    let loaded = server.post_ok("/api/generate", &json!({"model": "any"}));
    assert_eq!(
        (&loaded["done"], &loaded["done_reason"]),
        (&json!(true), &json!("load"))
    );
    let loaded = server.post_ok("/api/chat", &json!({"model": "any", "messages": []}));
    assert_eq!(loaded["done_reason"], "load");
}

#[test]
fn ollama_format_holds_the_reply_to_json() {
    let server = Server::start(&synthetic_model(), &["-c", "512"]);
    let schema = json!({"type": "object", "properties": {"unit": {"enum": ["c", "f"]}},
        "required": ["unit"], "additionalProperties": false});
    for seed in 1..=3 {
        let options = json!({"num_predict": 200, "temperature": 1.0, "top_k": 0, "seed": seed});
        let any = server.post_ok(
            "/api/generate",
            &json!({"prompt": "Answer:", "raw": true, "stream": false, "format": "json", "options": options}),
        );
        let text = any["response"].as_str().unwrap();
        assert!(text.starts_with('{'), "{any}");
        // Random weights sample every string's characters near uniformly, so a string may run
        // past num_predict: then the reply is an object cut short, which serde_json reads up
        // to the end of the text before it runs out.
        match serde_json::from_str::<Value>(text) {
            Ok(object) => {
                assert!(object.is_object(), "{object}");
                assert_eq!(any["done_reason"], "stop", "{any}");
            }
            Err(e) => {
                assert!(e.is_eof(), "{e}: {text}");
                assert_eq!(any["done_reason"], "length", "{any}");
            }
        }
        let held = server.post_ok(
            "/api/chat",
            &json!({"messages": [{"role": "user", "content": "Unit?"}], "stream": false,
                "format": schema, "options": options}),
        );
        assert_eq!(held["done_reason"], "stop", "{held}");
        let text = held["message"]["content"].as_str().unwrap();
        let object: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(object["unit"] == "c" || object["unit"] == "f", "{object}");
    }
    let tools = json!([{"type": "function", "function": {"name": "set_unit", "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["c", "f"]}},
        "required": ["unit"], "additionalProperties": false}}}]);
    let reply = server.post_ok(
        "/api/chat",
        &json!({"messages": [{"role": "user", "content": "Use Celsius."}], "tools": tools,
            "stream": false, "options": {"num_predict": 100, "temperature": 1.0, "seed": 3}}),
    );
    let message = &reply["message"];
    match message["tool_calls"].as_array() {
        Some(calls) => {
            assert_eq!(calls[0]["function"]["name"], "set_unit", "{reply}");
            let unit = &calls[0]["function"]["arguments"]["unit"];
            assert!(unit == "c" || unit == "f", "{reply}");
        }
        None => assert!(message["content"].is_string(), "{reply}"),
    }
    let lines = json_lines(&server.post(
        "/api/chat",
        &json!({"messages": [{"role": "user", "content": "Use Celsius."},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "set_unit", "arguments": {"unit": "c"}}}]},
                {"role": "tool", "tool_name": "set_unit", "content": "done"}],
            "tools": tools, "options": {"num_predict": 100, "temperature": 1.0, "seed": 3}}),
    ));
    assert_eq!(lines.last().unwrap()["done"], true);
}

#[test]
fn ollama_refuses_what_it_cannot_honour_with_400s_in_its_shape() {
    let server = Server::start(&synthetic_model(), &["-c", "256"]);
    let prompt = |extra: Value| {
        let mut body = json!({"model": "any", "prompt": "Hi", "stream": false});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let refused = [
        (
            "/api/generate",
            prompt(json!({"images": ["aGk="]})),
            "images",
        ),
        (
            "/api/generate",
            prompt(json!({"template": "{{ .Prompt }}"})),
            "template",
        ),
        (
            "/api/generate",
            prompt(json!({"suffix": "end"})),
            "no fill-in-the-middle tokens",
        ),
        (
            "/api/generate",
            prompt(json!({"context": [1, 2]})),
            "context",
        ),
        ("/api/generate", prompt(json!({"think": true})), "think"),
        ("/api/generate", prompt(json!({"format": 3})), "format"),
        ("/api/generate", prompt(json!({"options": [1]})), "options"),
        (
            "/api/generate",
            prompt(json!({"options": {"mirostat": 2}})),
            "options.mirostat",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"tfs_z": 0.5}})),
            "options.tfs_z",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"typical_p": 0.7}})),
            "options.typical_p",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"presence_penalty": 500}})),
            "presence_penalty must be between",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"frequency_penalty": "high"}})),
            "frequency_penalty must be a number",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"penalize_newline": false}})),
            "options.penalize_newline",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"num_ctx": 4096}})),
            "options.num_ctx",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"num_predict": -3}})),
            "num_predict",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"temperature": "hot"}})),
            "temperature",
        ),
        (
            "/api/generate",
            prompt(json!({"options": {"warp_speed": 9}})),
            "options.warp_speed",
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "Hi", "images": ["aGk="]}]}),
            "messages[0].images",
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "wizard", "content": "Hi"}]}),
            "role",
        ),
        ("/api/chat", json!({"messages": "Hi"}), "messages"),
    ];
    for (path, body, named) in refused {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        let error = reply.json()["error"].clone();
        let message = error
            .as_str()
            .unwrap_or_else(|| panic!("a plain message: {error}"));
        assert!(message.contains(named), "{body}: {message}");
    }
    // Nothing is pulled: the one model is the server's.
    let missing = server.post("/api/pull", &json!({"model": "llama3"}));
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("/api/pull"));
    let wrong_method = server.get("/api/chat");
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.json()["error"]
        .as_str()
        .unwrap()
        .contains("only POST"));

    // What does not change the text is accepted.
    let accepted = prompt(json!({"keep_alive": 0, "think": false, "format": "",
        "options": {"num_thread": 2, "num_gpu": 0, "use_mmap": true, "num_batch": 8,
            "num_ctx": 128, "mirostat": 0, "typical_p": 1.0, "tfs_z": 1, "presence_penalty": 0,
            "penalize_newline": true, "num_keep": 4, "num_predict": 2, "stop": ["\n"]}}));
    let reply = server.post_ok("/api/generate", &accepted);
    assert_eq!(reply["done"], true);
    assert_eq!(server.get("/api/version").status, 200);
}

#[test]
fn bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving() {
    let server = Server::start(&synthetic_model(), &[]);
    let long_prompt = "word ".repeat(1000);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/completion",
            b"{\"prompt\": ".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/completion",
            b"[1, 2]".to_vec(),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "temperature": "hot"}"#.to_vec(),
            400,
            "temperature must be a number",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "stream": "yes"}"#.to_vec(),
            400,
            "stream must be true or false",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "stop": [1]}"#.to_vec(),
            400,
            "stop must be",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": {"a": 1}}"#.to_vec(),
            400,
            "prompt must be",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": [999999999]}"#.to_vec(),
            400,
            "vocabulary",
        ),
        (
            "POST",
            "/completion",
            br#"{"n_predict": 3}"#.to_vec(),
            400,
            "prompt is required",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "n_predict": -2}"#.to_vec(),
            400,
            "n_predict must be between -1",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "n_predict": 1e30}"#.to_vec(),
            400,
            "n_predict must be an integer",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "n_predict": 99999999999}"#.to_vec(),
            400,
            "n_predict must be between",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "top_p": 2}"#.to_vec(),
            400,
            "top_p must be between 0 and 1",
        ),
        (
            "POST",
            "/completion",
            br#"{"prompt": "x", "id_slot": 5}"#.to_vec(),
            400,
            "id_slot must be between -1 and 0",
        ),
        (
            "POST",
            "/completion",
            json!({"prompt": long_prompt}).to_string().into_bytes(),
            400,
            "does not fit the context of 512",
        ),
        (
            "POST",
            "/v1/chat/completions",
            br#"{"max_tokens": 2}"#.to_vec(),
            400,
            "messages is required",
        ),
        (
            "POST",
            "/v1/chat/completions",
            br#"{"messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(),
            400,
            "is not system, user, assistant or tool",
        ),
        (
            "POST",
            "/v1/chat/completions",
            br#"{"messages": [{"role": "user", "content": 5}]}"#.to_vec(),
            400,
            "content must be",
        ),
        (
            "POST",
            "/tokenize",
            br#"{"content": 5}"#.to_vec(),
            400,
            "content must be a string",
        ),
        (
            "POST",
            "/detokenize",
            br#"{"tokens": [-1]}"#.to_vec(),
            400,
            "tokens must be an array of token ids",
        ),
        ("GET", "/nowhere", Vec::new(), 404, "no endpoint /nowhere"),
        (
            "GET",
            "/completion",
            Vec::new(),
            405,
            "does not take a GET request",
        ),
        (
            "DELETE",
            "/health",
            Vec::new(),
            405,
            "does not take a DELETE request",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let reply = server.request(method, path, &[], &body);
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {shown}: {}",
            reply.text()
        );
        let error = &reply.json()["error"];
        assert_eq!(error["code"], status);
        assert!(error["type"].is_string());
        let text = error["message"].as_str().unwrap();
        assert!(
            text.contains(message),
            "{method} {path} {shown}: {text:?} lacks {message:?}"
        );
    }

    // A body over the limit is refused from its declared length, before it is sent.
    let mut stream = server.connect();
    stream
        .write_all(b"POST /completion HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000000\r\n\r\n")
        .unwrap();
    let reply = read_reply(stream);
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than the limit"));

    assert_eq!(server.get("/health").json()["status"], "ok");
    let _ = server.post_ok("/completion", &greedy("still here", 2));
}

/// Every API endpoint as the server lists it, with a request it accepts.
const API_REQUESTS: [(&str, &str, &str); 11] = [
    ("GET", "/props", ""),
    ("GET", "/metrics", ""),
    ("POST", "/completion", r#"{"prompt": "Hi", "n_predict": 2}"#),
    (
        "POST",
        "/completions",
        r#"{"prompt": "Hi", "n_predict": 2}"#,
    ),
    ("POST", "/tokenize", r#"{"content": "Hi"}"#),
    ("POST", "/detokenize", r#"{"tokens": [1]}"#),
    ("GET", "/models", ""),
    ("GET", "/v1/models", ""),
    (
        "POST",
        "/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}"#,
    ),
    (
        "POST",
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}"#,
    ),
    (
        "POST",
        "/v1/completions",
        r#"{"prompt": "Hi", "max_tokens": 2}"#,
    ),
];

/// As llama.cpp: the key guards the API; `/health`, the page and CORS preflights stay public,
/// since a browser sends no Authorization header with them.
#[test]
fn api_key_guards_every_api_endpoint_but_not_the_page() {
    let server = Server::start(&synthetic_model(), &["--api-key", "sesame", "--metrics"]);
    for path in ["/health", "/", "/index.html", "/app.js", "/style.css"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
    assert_eq!(
        server.request("OPTIONS", "/completion", &[], b"").status,
        204
    );
    let wrong_keys: [&[(&str, &str)]; 5] = [
        &[],
        &[("Authorization", "Bearer open")],
        &[("Authorization", "Bearer sesamf")],
        &[("Authorization", "Bearer sesame2")],
        &[("Authorization", "sesame")],
    ];
    for (method, path, body) in API_REQUESTS {
        for headers in wrong_keys {
            let refused = server.request(method, path, headers, body.as_bytes());
            assert_eq!(refused.status, 401, "{method} {path} {headers:?}");
            assert_eq!(refused.json()["error"]["type"], "authentication_error");
        }
        let allowed = server.request(
            method,
            path,
            &[("Authorization", "Bearer sesame")],
            body.as_bytes(),
        );
        assert_eq!(allowed.status, 200, "{method} {path}: {}", allowed.text());
    }
    let refused = server.get("/props");
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    // Without the key, an unknown path is refused like a known one: nothing tells which exist.
    assert_eq!(server.get("/nowhere").status, 401);
    let keyed = [("Authorization", "Bearer sesame")];
    assert_eq!(server.request("GET", "/nowhere", &keyed, b"").status, 404);
}

/// Every route the server has, and a path it does not: each wrong method is a 405 that names
/// the method and the one the path takes, each unknown path a 404.
#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = Server::start(&synthetic_model(), &["--metrics", "--slots"]);
    let cases = [
        ("GET", "/v1/embeddings", 405, "only POST"),
        ("POST", "/v1/audio/speech", 404, ""),
        ("GET", "/metricsx", 404, ""),
        ("POST", "/metrics", 405, "only GET"),
        ("PUT", "/slots", 405, "only GET"),
        ("DELETE", "/props", 405, "only GET"),
        ("POST", "/health", 405, "only GET"),
        ("POST", "/v1/models", 405, "only GET"),
        ("GET", "/tokenize", 405, "only POST"),
        ("GET", "/apply-template", 405, "only POST"),
        ("PATCH", "/v1/chat/completions", 405, "only POST"),
        ("GET", "/v1/completions", 405, "only POST"),
        ("POST", "/index.html", 405, "only GET"),
    ];
    for (method, path, status, allowed) in cases {
        let reply = server.request(method, path, &[], b"{}");
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
        let error = &reply.json()["error"];
        assert_eq!(error["code"], status);
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(path), "{method} {path}: {message}");
        if status == 405 {
            assert!(message.contains(method), "{method} {path}: {message}");
            assert!(message.contains(allowed), "{method} {path}: {message}");
        }
    }
    assert_eq!(server.get("/health").json()["status"], "ok");
}

/// Prometheus's text exposition format as a scraper reads it: every sample is `name value` or
/// `name{labels} value`, under a HELP and a TYPE line of its own name. The samples by name.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut described = std::collections::BTreeMap::<String, (bool, bool)>::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        let comment = |prefix: &str| line.strip_prefix(prefix).map(|rest| rest.split(' '));
        if let Some(mut help) = comment("# HELP ") {
            let name = help.next().unwrap().to_string();
            assert!(help.next().is_some_and(|word| !word.is_empty()), "{line}");
            described.entry(name).or_default().0 = true;
        } else if let Some(mut kind) = comment("# TYPE ") {
            let name = kind.next().unwrap().to_string();
            let kind = kind.next();
            assert!(matches!(kind, Some("counter" | "gauge")), "{line}");
            described.entry(name).or_default().1 = true;
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    assert!(labels.ends_with('}'), "{line}");
                    name
                }
                None => series,
            };
            let valid = name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            });
            assert!(valid && !name.is_empty(), "{line}");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(value.is_finite(), "{line}");
            samples.insert(name.to_string(), value);
        }
    }
    for name in samples.keys() {
        assert_eq!(described.get(name), Some(&(true, true)), "{name}: {text}");
    }
    samples
}

#[test]
fn metrics_count_what_the_completions_report_and_only_with_the_flag() {
    let without = Server::start(&synthetic_model(), &[]);
    let refused = without.get("/metrics");
    assert_eq!(refused.status, 501, "{}", refused.text());
    let message = &refused.json()["error"]["message"];
    assert!(message.as_str().unwrap().contains("--metrics"), "{message}");

    let server = Server::start(&synthetic_model(), &["--metrics", "-np", "2"]);
    let before = server.get("/metrics");
    assert_eq!(before.status, 200, "{}", before.text());
    assert_eq!(
        parse_metrics(&before.text())["llamacpp:prompt_tokens_total"],
        0.0
    );
    let complete = |prompt: &str, n_predict: i64| {
        let mut body = greedy(prompt, n_predict);
        body["ignore_eos"] = json!(true);
        server.post_ok("/completion", &body)
    };
    let first = complete("Counting tokens", 5);
    // Its prompt starts with the first, whose slot's cache holds that part: only the rest is
    // evaluated, and only that is counted.
    let second = complete("Counting tokens again", 3);
    assert!(second["tokens_cached"].as_u64().unwrap() > 0, "{second}");
    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    let metrics = parse_metrics(&reply.text());
    let total = |field: &str| {
        [&first, &second]
            .iter()
            .map(|reply| reply["timings"][field].as_f64().unwrap())
            .sum::<f64>()
    };
    assert_eq!(metrics["llamacpp:prompt_tokens_total"], total("prompt_n"));
    assert_eq!(
        metrics["llamacpp:tokens_predicted_total"],
        total("predicted_n")
    );
    assert_eq!(total("predicted_n"), 8.0);
    for name in [
        "prompt_seconds_total",
        "tokens_predicted_seconds_total",
        "prompt_tokens_seconds",
        "predicted_tokens_seconds",
        "kv_cache_usage_ratio",
        "kv_cache_tokens",
    ] {
        assert!(metrics[&format!("llamacpp:{name}")] > 0.0, "{name}");
    }
    assert!(metrics["llamacpp:n_decode_total"] >= 8.0);
    assert_eq!(metrics["llamacpp:n_busy_slots_per_decode"], 1.0);
    assert_eq!(metrics["llamacpp:requests_processing"], 0.0);
    assert_eq!(metrics["llamacpp:requests_deferred"], 0.0);
    assert!(metrics["llamacpp:kv_cache_usage_ratio"] < 1.0);
}

/// Opens a streaming completion and leaves it unread.
fn open_stream(server: &Server, prompt: &str) -> TcpStream {
    let mut stream = server.connect();
    let body =
        json!({"prompt": prompt, "n_predict": -1, "ignore_eos": true, "stream": true}).to_string();
    send_request(&mut stream, "POST", "/completion", &[], body.as_bytes());
    stream
}

fn wait_for_health(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    loop {
        let health = server.get("/health").json();
        if done(&health) {
            return health;
        }
        assert!(
            Instant::now() < server.deadline,
            "waiting for {what}: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_answers_503_and_clients_that_leave_free_their_slots() {
    // A context far beyond the synthetic model's 512 keeps its one slot busy for a while.
    let server = Server::start(&synthetic_model(), &["-np", "1", "-c", "32768"]);
    let mut streams = vec![open_stream(&server, "first")];
    wait_for_health(&server, "the first request to run", |h| {
        h["slots_processing"] == 1
    });
    for i in 0..4 {
        streams.push(open_stream(&server, &format!("waiting {i}")));
    }
    let health = wait_for_health(&server, "four requests to queue", |h| {
        h["requests_queued"] == 4
    });
    assert_eq!(
        health["slots_idle"], 0,
        "/health answers while the model runs"
    );
    let refused = server.post("/completion", &greedy("one too many", 2));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("busy"));

    drop(streams);
    wait_for_health(&server, "the slot to be freed", |h| {
        h["slots_processing"] == 0 && h["requests_queued"] == 0
    });
    let _ = server.post_ok("/completion", &greedy("served again", 2));
}

#[test]
fn a_taken_port_moves_the_server_to_the_next_one() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    if port > u16::MAX - 20 {
        eprintln!("skipping: the free port {port} is too close to the top of the range");
        return;
    }
    let server = Server::start_on(&synthetic_model(), port, &[]);
    assert!(
        server.port > port && server.port <= port + 10,
        "{} after {port}",
        server.port
    );
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn sampling_flags_become_the_request_defaults() {
    let server = Server::start(
        &synthetic_model(),
        &["--temp", "0", "--top-k", "5", "-n", "3", "--seed", "42"],
    );
    let settings = &server.get("/props").json()["default_generation_settings"];
    assert_eq!(settings["temperature"], 0.0);
    assert_eq!(settings["top_k"], 5);
    assert_eq!(settings["n_predict"], 3);
    assert_eq!(settings["seed"], 42);
    let reply = server.post_ok("/completion", &json!({"prompt": "Hello"}));
    assert_eq!(reply["tokens_predicted"], 3);
    assert_eq!(reply["generation_settings"]["top_k"], 5);
    assert_eq!(
        reply["content"],
        server.post_ok("/completion", &greedy("Hello", 3))["content"]
    );
}

#[test]
fn terminal_chat_answers_turns_and_obeys_commands() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmfile"))
        .args([
            "-m",
            synthetic_model().to_str().unwrap(),
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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello\n/clear\nHello\n/exit\nnever read\n")
        .unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let output = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the chat ends within two minutes")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let turns: Vec<&str> = stdout.split("> ").collect();
    // Prompts: before each of "Hello", "/clear", "Hello", "/exit".
    assert_eq!(turns.len(), 5, "{stdout:?}");
    assert_eq!(
        turns[1], turns[3],
        "after /clear the same question gets the same answer"
    );
    assert!(turns[1].len() > 1, "a reply: {stdout:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("/clear"));
}

/// Gemma 3 270M is a base model: its chat answers are not sensible (llama.cpp gives the same
/// text), so this checks the format, not the wisdom: the turns' markers are single special
/// tokens going in and never appear in what comes out.
#[test]
fn gemma3_chat_reply_is_clean_text() {
    let Some(model) = downloaded_model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let server = Server::start(&model, &[]);
    let props = server.get("/props").json();
    assert_eq!(props["chat_format"], "gemma");
    let question = "What is the capital of France?";
    let reply = server.post_ok(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 24,
        }),
    );
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty(), "{reply}");
    let rendered = format!("<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n");
    let tokens = server.post_ok(
        "/tokenize",
        &json!({"content": rendered, "add_special": true}),
    );
    assert_eq!(
        reply["usage"]["prompt_tokens"],
        tokens["tokens"].as_array().unwrap().len()
    );
    assert_eq!(tokens["tokens"][1], 105, "<start_of_turn> is one token");

    // The chat page's request: its own template, special tokens parsed, streamed.
    let page_prompt =
        format!("<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n{rendered}");
    let events = server
        .post(
            "/completion",
            &json!({"prompt": page_prompt, "parse_special": true, "temperature": 0, "n_predict": 48, "stream": true}),
        )
        .events();
    let text: String = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(!text.trim().is_empty());
    for marker in ["<end_of_turn>", "<start_of_turn>", "<eos>", "<bos>"] {
        assert!(
            !content.contains(marker) && !text.contains(marker),
            "{content:?} {text:?}"
        );
    }
    let plain = server.post_ok("/completion", &greedy("The capital of France is", 12));
    assert!(
        plain["content"].as_str().unwrap().contains("capital"),
        "{plain}"
    );
}

#[test]
fn smollm2_chat_uses_its_chatml_template() {
    let Some(model) = downloaded_model("smollm2-135m-instruct-q4_1.gguf") else {
        return;
    };
    let server = Server::start(&model, &[]);
    let props = server.get("/props").json();
    assert_eq!(props["chat_format"], "chatml");
    assert_eq!(
        props["templates"]["history"],
        "<|im_start|>{{name}}\n{{message}}<|im_end|>"
    );
    assert!(props["templates"]["system"]
        .as_str()
        .unwrap()
        .contains("SmolLM"));
    let reply = server.post_ok(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Say hello."}], "temperature": 0, "max_tokens": 40}),
    );
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty());
    assert!(
        !content.contains("<|im_end|>") && !content.contains("<|im_start|>"),
        "{content:?}"
    );
}

#[test]
fn a_packed_bundle_run_without_arguments_serves_the_page() {
    let dir = std::env::temp_dir().join(format!("llmfile-server-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("synthetic.llmfile");
    // The bundle's .args stand in for a user's machine: a free port, no browser in CI.
    let packed = Command::new(env!("CARGO_BIN_EXE_llmfile"))
        .args(["pack", "--quiet", "-m", synthetic_model().to_str().unwrap()])
        .args(["-o", bundle.to_str().unwrap()])
        .args(["--args", "--host 127.0.0.1 --port 0 --nobrowser"])
        .output()
        .unwrap();
    assert!(
        packed.status.success(),
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let mut command = Command::new(&bundle);
    command.current_dir(&dir);
    let server = Server::spawn(command);
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("llmfile"));
    assert_eq!(server.get("/props").json()["chat_format"], "gemma");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Streams a greedy completion on a connection of its own and returns its text, checking that
/// the stream ends as it should.
/// A streamed greedy reply's tokens, each with the gap between its top two logits.
fn streamed_tokens(
    server: &Server,
    prompt: &str,
    n_predict: i64,
) -> Result<Vec<(String, f64)>, String> {
    let mut request = greedy(prompt, n_predict);
    request["stream"] = json!(true);
    request["ignore_eos"] = json!(true);
    request["n_probs"] = json!(2);
    let reply = server.post("/completion", &request);
    if reply.status != 200 {
        return Err(format!(
            "{prompt:?}: status {}: {}",
            reply.status,
            reply.text()
        ));
    }
    let events: Vec<Value> = reply
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let (last, tokens) = events.split_last().ok_or("no events")?;
    if last["stop"] != true || last["tokens_predicted"] != n_predict {
        return Err(format!("{prompt:?}: the stream ended with {last}"));
    }
    Ok(tokens
        .iter()
        .flat_map(|e| {
            e["completion_probabilities"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|token| {
            let p = |i: usize| token["probs"][i]["prob"].as_f64().unwrap_or(0.0);
            let gap = (p(0) / p(1)).ln();
            (
                token["content"].as_str().unwrap_or_default().to_string(),
                gap,
            )
        })
        .collect())
}

/// Whether a reply served among others is the one served alone: token for token, or parting
/// only where the lone reply's top two logits nearly tie. Requests batched together go through
/// other kernels than a request alone, whose rounding may swap such a pair (tests/batching.rs
/// says by how much); text from another client's slot would part anywhere.
fn same_until_near_tie(together: &[(String, f64)], alone: &[(String, f64)]) -> bool {
    match together.iter().zip(alone).position(|(a, b)| a.0 != b.0) {
        Some(i) => alone[i].1 < f64::from(NEAR_TIE),
        None => together.len() == alone.len(),
    }
}

/// Issue #7's load check: many streaming clients on a few slots each get the text their prompt
/// gets alone (up to a near-tie: see `same_until_near_tie`), `/health` stays quick, and memory
/// stays flat.
#[test]
fn sixteen_streaming_clients_on_four_slots_get_their_own_text() {
    const CLIENTS: usize = 16;
    const REQUESTS_EACH: usize = 3;
    const N_PREDICT: i64 = 32;
    const HEALTH_BOUND: Duration = Duration::from_secs(2);
    const LOAD_DEADLINE: Duration = Duration::from_secs(120);
    let server = Server::start(&synthetic_model(), &["-np", "4"]);
    // Prompts that share their start, so that slots are chosen by cached prefix too.
    let prompts: Vec<String> = (0..CLIENTS)
        .map(|c| format!("Client number {c} tells a story about {}", c * 7 % 5))
        .collect();
    let alone: Vec<Vec<(String, f64)>> = prompts
        .iter()
        .map(|p| streamed_tokens(&server, p, N_PREDICT).unwrap())
        .collect();
    let rss_before = server.peak_rss_kib();

    let done = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let (outcomes, health) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            let mut most_busy = 0;
            let mut failures = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let asked = Instant::now();
                let mut stream = server.connect();
                stream.set_read_timeout(Some(HEALTH_BOUND)).unwrap();
                send_request(&mut stream, "GET", "/health", &[], b"");
                let mut raw = Vec::new();
                match stream.read_to_end(&mut raw) {
                    Ok(_) if raw.starts_with(b"HTTP/1.1 200 ") => {
                        let body = String::from_utf8_lossy(&raw);
                        if let Some(busy) = body
                            .split("\"slots_processing\":")
                            .nth(1)
                            .and_then(|rest| rest.split([',', '}']).next())
                            .and_then(|n| n.trim().parse::<u64>().ok())
                        {
                            most_busy = most_busy.max(busy);
                        }
                    }
                    outcome => failures.push(format!("/health: {outcome:?}")),
                }
                slowest = slowest.max(asked.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            (slowest, most_busy, failures)
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (server, prompt, expected) = (&server, &prompts[c], &alone[c]);
                scope.spawn(move || {
                    (0..REQUESTS_EACH)
                        .map(|_| match streamed_tokens(server, prompt, N_PREDICT) {
                            Ok(tokens) if same_until_near_tie(&tokens, expected) => Ok(()),
                            Ok(tokens) => Err(format!(
                                "client {c} got {tokens:?} where alone it gets {expected:?}"
                            )),
                            Err(error) => Err(error),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let outcomes: Vec<Result<(), String>> = clients
            .into_iter()
            .flat_map(|client| {
                client
                    .join()
                    .unwrap_or_else(|_| vec![Err("a client panicked".to_string())])
            })
            .collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (outcomes, poller.join().unwrap())
    });
    let wall = started.elapsed();
    let rss_after = server.peak_rss_kib();
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let (slowest_health, most_busy, health_failures) = health;
    eprintln!(
        "load: {} streamed requests of {N_PREDICT} tokens, {CLIENTS} clients at once on 4 slots: \
         {:.1} s wall, {} failures, {} /health failures, slowest /health {:.0} ms, \
         at most {most_busy} slots busy, peak RSS {} KiB before and {} KiB after",
        outcomes.len(),
        wall.as_secs_f64(),
        failures.len(),
        health_failures.len(),
        slowest_health.as_secs_f64() * 1e3,
        rss_before.map_or("?".into(), |k| k.to_string()),
        rss_after.map_or("?".into(), |k| k.to_string()),
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(health_failures.is_empty(), "{health_failures:#?}");
    assert!(slowest_health < HEALTH_BOUND);
    assert_eq!(most_busy, 4, "the slots ran in parallel");
    assert!(wall < LOAD_DEADLINE, "{wall:?}");
    // The slots' KV caches are allocated whole at start, so load adds only connection threads
    // (a few pages of stack each), request buffers and logits: far below 64 MiB for 16 clients.
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        assert!(after <= before + 64 * 1024, "{before} KiB -> {after} KiB");
    }
}

#[test]
fn clients_that_leave_mid_stream_free_every_slot() {
    const SLOTS: usize = 4;
    // A context far beyond the synthetic model's 512 keeps the slots busy for a while.
    let server = Server::start(&synthetic_model(), &["-np", "4", "-c", "32768"]);
    let mut streams: Vec<TcpStream> = (0..SLOTS)
        .map(|i| open_stream(&server, &format!("leaving early {i}")))
        .collect();
    for stream in &mut streams {
        let mut first = [0; 64];
        let n = stream.read(&mut first).unwrap();
        assert!(
            first[..n].starts_with(b"HTTP/1.1 200 "),
            "the stream started"
        );
    }
    wait_for_health(&server, "every slot to run", |h| {
        h["slots_processing"] == SLOTS
    });
    let left = Instant::now();
    drop(streams);
    wait_for_health(&server, "the slots to be freed", |h| {
        h["slots_processing"] == 0 && h["requests_queued"] == 0
    });
    let freed = left.elapsed();
    let served = Instant::now();
    let replies: Vec<Value> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..SLOTS)
            .map(|slot| {
                let server = &server;
                scope.spawn(move || {
                    let mut request = greedy("served after they left", 4);
                    request["id_slot"] = json!(slot);
                    server.post_ok("/completion", &request)
                })
            })
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let served = served.elapsed();
    eprintln!(
        "{SLOTS} clients left mid-stream: slots free after {:.0} ms, then {SLOTS} requests, \
         one per slot, served in {:.0} ms",
        freed.as_secs_f64() * 1e3,
        served.as_secs_f64() * 1e3
    );
    for (slot, reply) in replies.iter().enumerate() {
        assert_eq!(reply["id_slot"], slot);
        assert_eq!(reply["tokens_predicted"], 4);
    }
    assert!(freed < Duration::from_secs(10), "{freed:?}");
    assert!(served < Duration::from_secs(30), "{served:?}");
}

/// Before the server had its own connections, nine clients that declared a body and never
/// sent it stopped it for good at -np 1.
#[test]
fn silent_slow_and_bodiless_connections_do_not_starve_the_server() {
    const EACH: usize = 20;
    let server = Server::start(&synthetic_model(), &[]);
    let silent: Vec<TcpStream> = (0..EACH).map(|_| server.connect()).collect();
    let bodiless: Vec<TcpStream> = (0..EACH)
        .map(|_| {
            let mut stream = server.connect();
            stream
                .write_all(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{\"prompt\"")
                .unwrap();
            stream
        })
        .collect();
    let mut slow: Vec<TcpStream> = (0..EACH).map(|_| server.connect()).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle();
            for &byte in head {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                for stream in &mut slow {
                    let _ = stream.write_all(&[byte]);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let asked = Instant::now();
        assert_eq!(server.get("/health").status, 200);
        let health_took = asked.elapsed();
        let asked = Instant::now();
        let reply = server.post_ok("/completion", &greedy("still served", 4));
        let completion_took = asked.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!(
            "with {EACH} silent, {EACH} slow-header and {EACH} body-less connections open: \
             /health in {:.0} ms, a completion in {:.0} ms",
            health_took.as_secs_f64() * 1e3,
            completion_took.as_secs_f64() * 1e3
        );
        assert!(health_took < Duration::from_secs(2), "{health_took:?}");
        assert_eq!(reply["tokens_predicted"], 4);
    });
    drop((silent, bodiless));
}

#[test]
fn connections_beyond_the_limit_get_503_until_others_close() {
    const MAX_CONNECTIONS: usize = 128;
    let server = Server::start(&synthetic_model(), &[]);
    let held: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| server.connect()).collect();
    // The refusal comes without reading a request, so this client sends none: a request left
    // unread would make the server's close a reset that can swallow the reply.
    let refused = loop {
        let mut raw = Vec::new();
        server.connect().read_to_end(&mut raw).unwrap();
        if !raw.is_empty() {
            break String::from_utf8(raw).unwrap();
        }
        assert!(Instant::now() < server.deadline, "no 503 came");
    };
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("128 connections open"), "{refused}");
    drop(held);
    // Asked without the helpers, whose requests a refusal could reset before they read it.
    loop {
        let mut stream = server.connect();
        send_request(&mut stream, "GET", "/health", &[], b"");
        let mut raw = Vec::new();
        if stream.read_to_end(&mut raw).is_ok() && raw.starts_with(b"HTTP/1.1 200 ") {
            break;
        }
        assert!(
            Instant::now() < server.deadline,
            "the server never recovered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// On Linux all of 127.0.0.0/8 reaches this machine, but a socket bound to 127.0.0.1 answers
/// only there, which tells a loopback server from one open to every address.
#[cfg(target_os = "linux")]
#[test]
fn the_server_listens_on_loopback_unless_told_otherwise() {
    let command = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_llmfile"));
        command
            .args(["-m", synthetic_model().to_str().unwrap()])
            .args(["--server", "--nobrowser", "--port", "0"])
            .args(extra);
        command
    };
    let warned = |server: &Server| {
        // The warning comes before the address line, which the server has printed by now.
        std::thread::sleep(Duration::from_millis(200));
        server
            .stderr
            .lock()
            .unwrap()
            .try_iter()
            .filter(|line| line.contains("warning"))
            .collect::<Vec<_>>()
    };
    let default = Server::spawn(command(&[]));
    assert_eq!(default.get("/health").status, 200);
    assert!(TcpStream::connect(("127.0.0.2", default.port)).is_err());
    assert_eq!(warned(&default), Vec::<String>::new());

    let everywhere = Server::spawn(command(&["--host", "0.0.0.0"]));
    assert!(TcpStream::connect(("127.0.0.2", everywhere.port)).is_ok());
    let warning = warned(&everywhere);
    assert_eq!(warning.len(), 1, "{warning:?}");
    assert!(
        warning[0].contains("0.0.0.0") && warning[0].contains("--api-key"),
        "{warning:?}"
    );

    let keyed = Server::spawn(command(&["--host", "0.0.0.0", "--api-key", "k"]));
    assert_eq!(keyed.get("/health").status, 200);
    assert_eq!(warned(&keyed), Vec::<String>::new());
}

#[test]
fn only_the_embedded_page_is_served() {
    let server = Server::start(&synthetic_model(), &[]);
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2e%2e/",
        "/..%2fCargo.toml",
        "/web/../src/main.rs",
        "/web/index.html",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/index.html/../../Cargo.toml",
        "/app.js/..",
        "/style.css%00.html",
        "/Cargo.toml",
        "/src/main.rs",
        "/.git/config",
        "http://127.0.0.1/../Cargo.toml",
    ] {
        let reply = server.get(path);
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        assert!(!reply.text().contains("[package]"), "{path}");
    }
}

#[test]
fn huge_and_deeply_nested_bodies_are_refused_and_the_server_goes_on() {
    let server = Server::start(&synthetic_model(), &[]);
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    for body in [nested.clone(), format!(r#"{{"prompt": {nested}}}"#)] {
        let reply = server.request("POST", "/completion", &[], body.as_bytes());
        assert_eq!(reply.status, 400, "{}", reply.text());
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("recursion limit"), "{message}");
    }

    // Sent in chunks, the body's size is known only as it comes: the chunk that would pass
    // 4 MiB is refused from its size line.
    let mut stream = server.connect();
    let head = "POST /completion HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .write_all(format!("{:X}\r\n", 4 << 20).as_bytes())
        .unwrap();
    stream.write_all(&vec![b' '; 4 << 20]).unwrap();
    stream.write_all(b"\r\n1\r\n").unwrap();
    let reply = read_reply(stream);
    assert_eq!(reply.status, 413, "{}", reply.text());

    assert_eq!(server.get("/health").status, 200);
    let _ = server.post_ok("/completion", &greedy("still here", 2));
}

/// Every long request is evaluated from an empty cache (`cache_prompt: false`), so each one
/// meets the batch boundaries at its own length, and each is followed by `/health`; a short
/// request at the end shows the model's thread still works. The default context (8192) holds
/// them all. The many-batch prompt goes to `/completion` only: the chat endpoint differs from
/// it in rendering the prompt, not in evaluating it.
fn long_prompts_are_served(file_name: &str) {
    let Some(model) = downloaded_model(file_name) else {
        return;
    };
    let server = Server::start(&model, &[]);
    let count = |content: &str| {
        let tokens = server.post_ok(
            "/tokenize",
            &json!({"content": content, "add_special": true}),
        );
        tokens["tokens"].as_array().unwrap().len()
    };
    for n in BOUNDARY_PROMPTS.into_iter().chain([LONG_PROMPT]) {
        let mut request = greedy(&exact_prompt(n, count), 4);
        request["cache_prompt"] = json!(false);
        let reply = server.post_ok("/completion", &request);
        assert_eq!(reply["tokens_evaluated"], n, "{reply}");
        assert_eq!(reply["timings"]["prompt_n"], n, "{reply}");
        assert!(reply["tokens_predicted"].as_u64().unwrap() >= 1, "{reply}");
        assert!(reply["content"].is_string(), "{reply}");
        assert_eq!(
            server.get("/health").json()["status"],
            "ok",
            "after {n} tokens"
        );
    }

    // The chat template's own tokens, learnt from a short chat, so that the rendered prompts
    // land exactly on the lengths without this test knowing the format.
    let chat = |content: &str| {
        json!({
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 4,
            "temperature": 0,
            "cache_prompt": false,
        })
    };
    let short = server.post_ok("/v1/chat/completions", &chat("Hello"));
    let hello = server.post_ok("/tokenize", &json!({"content": "Hello"}))["tokens"]
        .as_array()
        .unwrap()
        .len();
    let template = short["usage"]["prompt_tokens"].as_u64().unwrap() as usize - hello;
    let content_tokens = |content: &str| {
        let tokens = server.post_ok("/tokenize", &json!({"content": content}));
        template + tokens["tokens"].as_array().unwrap().len()
    };
    for n in BOUNDARY_PROMPTS {
        let reply = server.post_ok(
            "/v1/chat/completions",
            &chat(&exact_prompt(n, content_tokens)),
        );
        assert_eq!(reply["usage"]["prompt_tokens"], n, "{reply}");
        assert!(
            reply["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
            "{reply}"
        );
        assert!(
            reply["choices"][0]["message"]["content"].is_string(),
            "{reply}"
        );
        assert_eq!(
            server.get("/health").json()["status"],
            "ok",
            "after {n} tokens"
        );
    }
    let short = server.post_ok("/completion", &greedy("The capital of France is", 4));
    assert_eq!(short["tokens_predicted"], 4, "{short}");
}

#[test]
fn long_prompts_are_served_on_gemma3() {
    long_prompts_are_served("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn long_prompts_are_served_on_smollm2() {
    long_prompts_are_served("smollm2-135m-instruct-q4_1.gguf");
}

/// Samples at temperature 1 from the synthetic model (random weights, so anything the grammar
/// leaves open is taken sooner or later) and checks each whole reply against the grammar's
/// language, written here as a plain check.
#[test]
fn grammars_and_schemas_hold_every_sample() {
    let server = Server::start(&synthetic_model(), &["-c", "512"]);
    let sample = |field: &str, value: Value, seed: u64| {
        let reply = server.post_ok(
            "/completion",
            &json!({"prompt": "Answer:", "n_predict": 200, "temperature": 1.0, "top_k": 0,
                    "seed": seed, field: value}),
        );
        assert_eq!(reply["stop_type"], "eos", "{reply}");
        reply["content"].as_str().unwrap().to_string()
    };
    for seed in 1..=8 {
        let answer = sample("grammar", json!(r#"root ::= "yes" | "no""#), seed);
        assert!(answer == "yes" || answer == "no", "{answer:?}");
        let list = sample(
            "grammar",
            json!("root ::= \"[\" num (\", \" num){0,3} \"]\"\nnum ::= [0-9]{1,3}"),
            seed,
        );
        let inner = list
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .unwrap();
        assert!(
            inner
                .split(", ")
                .all(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit())),
            "{list:?}"
        );
        let object = sample(
            "json_schema",
            json!({"type": "object", "properties": {
                "unit": {"enum": ["c", "f"]}, "count": {"type": "integer", "minimum": 1, "maximum": 9},
                "ok": {"type": "boolean"}},
                "required": ["unit", "count", "ok"], "additionalProperties": false}),
            seed,
        );
        let object: Value =
            serde_json::from_str(&object).unwrap_or_else(|e| panic!("{e}: {object}"));
        assert!(object["unit"] == "c" || object["unit"] == "f", "{object}");
        assert!(
            (1..=9).contains(&object["count"].as_i64().unwrap()),
            "{object}"
        );
        assert!(
            object["ok"].is_boolean() && object.as_object().unwrap().len() == 3,
            "{object}"
        );
    }
    let refused = [
        (
            json!({"grammar": "root ::= ("}),
            "grammar: grammar syntax error",
        ),
        (json!({"grammar": "root ::= item"}), "never defined"),
        (
            json!({"grammar": "root ::= root \"a\" | \"a\""}),
            "left-recursive",
        ),
        (json!({"grammar": "root ::= \"a\"{1000000}"}), "too large"),
        (json!({"json_schema": {"not": {"type": "string"}}}), "not"),
        (
            json!({"grammar": "root ::= \"a\"", "json_schema": {}}),
            "only one of",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
        ),
    ];
    for (fields, message) in refused {
        let mut body = json!({"prompt": "x", "n_predict": 4});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let reply = server.post("/completion", &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        let error = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains(message), "{body}: {error}");
    }
    assert_eq!(server.get("/health").status, 200);
}

/// A call under `tool_choice: required`, whole and streamed, and text under `none`.
#[test]
fn tools_answer_with_calls_in_openais_shape() {
    let server = Server::start(&synthetic_model(), &["-c", "1024"]);
    let tools = json!([{"type": "function", "function": {"name": "set_unit", "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["c", "f"]}},
        "required": ["unit"], "additionalProperties": false}}}]);
    let request = json!({"messages": [{"role": "user", "content": "Use Celsius."}],
        "tools": tools, "tool_choice": "required", "max_tokens": 100, "temperature": 1.0, "seed": 3});
    let whole = server.post_ok("/v1/chat/completions", &request);
    let choice = &whole["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{whole}");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "set_unit");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        arguments["unit"] == "c" || arguments["unit"] == "f",
        "{arguments}"
    );

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let events = server.post("/v1/chat/completions", &streamed).events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut name = String::new();
    let mut streamed_arguments = String::new();
    for chunk in &chunks {
        for call in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0);
            name += call["function"]["name"].as_str().unwrap_or_default();
            streamed_arguments += call["function"]["arguments"].as_str().unwrap_or_default();
        }
    }
    assert_eq!(name, "set_unit");
    assert_eq!(
        streamed_arguments,
        call["function"]["arguments"].as_str().unwrap(),
        "same seed"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let mut none = request.clone();
    none["tool_choice"] = json!("none");
    none["max_tokens"] = json!(4);
    let text = server.post_ok("/v1/chat/completions", &none);
    assert!(text["choices"][0]["message"]["tool_calls"].is_null());
    assert!(text["choices"][0]["message"]["content"].is_string());

    let follow_up = json!({"messages": [
        {"role": "user", "content": "Use Celsius."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call["id"], "type": "function",
            "function": {"name": "set_unit", "arguments": "{\"unit\": \"c\"}"}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "done"}],
        "tools": tools, "max_tokens": 4});
    server.post_ok("/v1/chat/completions", &follow_up);
    let unknown = json!({"messages": [{"role": "user", "content": "x"}], "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "nope"}}});
    assert_eq!(server.post("/v1/chat/completions", &unknown).status, 400);
}

/// A chat three times the context still gets its reply: the oldest whole turns are left out,
/// the reply keeps its room, and the response says how many turns went.
#[test]
fn a_chat_longer_than_the_context_drops_its_oldest_turns() {
    let server = Server::start(&synthetic_model(), &["-c", "256"]);
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    for turn in 0..24 {
        messages.push(json!({"role": "user", "content": format!("question {turn}: {}", "tell me more ".repeat(4))}));
        messages.push(json!({"role": "assistant", "content": format!("answer {turn}: {}", "here is more ".repeat(4))}));
    }
    messages.push(json!({"role": "user", "content": "last question"}));
    let applied = server.post_ok(
        "/apply-template",
        &json!({"messages": messages, "n_predict": 32}),
    );
    let dropped = applied["dropped_turns"].as_u64().unwrap();
    let prompt = applied["prompt"].as_str().unwrap();
    assert!(dropped > 0 && dropped < 24, "{applied}");
    assert!(
        prompt.contains("Be brief.") && prompt.contains("last question"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("question 0:"),
        "the oldest turn goes first"
    );
    assert!(prompt.contains("question 23:"), "the newest turns stay");
    let tokens = server.post_ok(
        "/tokenize",
        &json!({"content": prompt, "add_special": true}),
    );
    let prompt_tokens = tokens["tokens"].as_array().unwrap().len();
    assert!(
        prompt_tokens + 32 <= 256,
        "{prompt_tokens} tokens leave the reply its room"
    );

    let reply = server.post_ok(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 32, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(reply["dropped_turns"], dropped);
    assert_eq!(reply["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(reply["usage"]["completion_tokens"], 32, "{reply}");

    // The page's presets render through a built-in format by name; files stay the CLI's.
    let alpaca = server.post_ok(
        "/apply-template",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "chat_template": "alpaca"}),
    );
    assert!(
        alpaca["prompt"]
            .as_str()
            .unwrap()
            .contains("### Instruction:\nHi"),
        "{alpaca}"
    );
    let file = server.post(
        "/apply-template",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "chat_template": "/etc/hostname"}),
    );
    assert_eq!(file.status, 400, "{}", file.text());
    let props = server.get("/props").json();
    assert!(props["presets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["chat_template"].is_string()));

    let only_the_last = json!({"messages": [{"role": "user", "content": "word ".repeat(400)}]});
    let too_long = server.post("/v1/chat/completions", &only_the_last);
    assert_eq!(too_long.status, 400);
    assert!(
        too_long.text().contains("leave no room"),
        "{}",
        too_long.text()
    );
}

/// `--context-shift`: a generation that fills its slot's context goes on to its limit, next
/// to one that does not, in the same steps; without the flag it ends with the context.
#[test]
fn context_shift_lets_generation_run_past_a_full_context() {
    let shifting = Server::start(
        &synthetic_model(),
        &["-c", "48", "-np", "2", "--context-shift"],
    );
    let body = |n_keep: i64| {
        json!({"prompt": "Hello there", "n_predict": 120, "temperature": 0,
        "ignore_eos": true, "n_keep": n_keep})
    };
    let replies: Vec<Value> = std::thread::scope(|scope| {
        let server = &shifting;
        let handles: Vec<_> = [0, -1]
            .map(|keep| scope.spawn(move || server.post_ok("/completion", &body(keep))))
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for reply in &replies {
        assert_eq!(reply["tokens_predicted"], 120, "{reply}");
        assert_eq!(reply["stop_type"], "limit");
    }
    assert_eq!(shifting.get("/health").status, 200);
    let stopping = Server::start(&synthetic_model(), &["-c", "48"]);
    let reply = stopping.post_ok("/completion", &body(0));
    assert!(reply["tokens_predicted"].as_u64().unwrap() < 48, "{reply}");
}

/// A template that knows tools renders them, and earlier calls and results, itself: the
/// model sees its own tool format, with the generic answer's instructions in the system text.
#[test]
fn a_template_that_knows_tools_renders_them_itself() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tool-template.jinja");
    let server = Server::start(
        &synthetic_model(),
        &["-c", "2048", "--chat-template", template.to_str().unwrap()],
    );
    let tools = json!([{"type": "function", "function": {"name": "get_time", "description": "The time.",
        "parameters": {"type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}},
        "required": ["zone"], "additionalProperties": false}}}]);
    let body = json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_time", "arguments": "{\"zone\": \"utc\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
        {"role": "user", "content": "And in Paris?"}],
        "tools": tools, "tool_choice": "required", "max_tokens": 400, "temperature": 1.0, "seed": 3});
    let applied = server.post_ok("/apply-template", &body);
    let prompt = applied["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\nBe brief.\n\nYou can call these tools:"),
        "{prompt}"
    );
    assert!(
        prompt.contains("# Tools\n\n<tools>\n{\"function\": {\"description\": \"The time.\""),
        "{prompt}"
    );
    assert!(prompt.contains("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"utc\"}}\n</tool_call>"), "{prompt}");
    assert!(
        prompt.contains("<tool_response>\n12:00\n</tool_response>"),
        "{prompt}"
    );
    assert!(
        prompt.ends_with("<|im_start|>user\nAnd in Paris?<|im_end|>\n<|im_start|>assistant\n"),
        "{prompt}"
    );

    let reply = server.post_ok("/v1/chat/completions", &body);
    let tokens = server.post_ok(
        "/tokenize",
        &json!({"content": prompt, "add_special": true}),
    );
    assert_eq!(
        reply["usage"]["prompt_tokens"],
        tokens["tokens"].as_array().unwrap().len()
    );
    assert_eq!(
        reply["choices"][0]["finish_reason"], "tool_calls",
        "{reply}"
    );
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_time");
}
