//! The embedding endpoints over real HTTP: `POST /v1/embeddings` (OpenAI's shape) and
//! llama-server's `POST /embedding` and `/embeddings`, on the synthetic model in the
//! repository. Each test starts `llmfile --server` on a free port and kills it when it ends;
//! every read has a timeout, so a bug fails the test instead of hanging CI.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The synthetic model's width: every embedding has this many values.
const N_EMBD: usize = 256;

fn synthetic_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf")
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmfile"))
            .args(["-m", synthetic_model().to_str().unwrap()])
            .args([
                "--server",
                "--nobrowser",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("llmfile starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the address line");
        let port = line
            .rsplit_once("http://127.0.0.1:")
            .and_then(|(_, rest)| rest.trim().trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Keeps draining stdout so the server never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Server { child, port }
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .expect("the reply arrives in time");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a reply head");
        let head = String::from_utf8_lossy(&raw[..split]);
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body = serde_json::from_slice(&raw[split + 4..])
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw[split + 4..])));
        (status, body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, body.to_string().as_bytes())
    }

    fn post_ok(&self, path: &str, body: &Value) -> Value {
        let (status, reply) = self.post(path, body);
        assert_eq!(status, 200, "{path} {body}: {reply}");
        reply
    }

    /// A 400 whose message contains `needle`.
    fn refused(&self, path: &str, body: &Value, needle: &str) {
        let (status, reply) = self.post(path, body);
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert!(
            message.contains(needle),
            "{path}: {message:?} lacks {needle:?}"
        );
    }

    fn tokens(&self, text: &str) -> Vec<u64> {
        let reply = self.post_ok(
            "/tokenize",
            &json!({"content": text, "add_special": true, "parse_special": true}),
        );
        let tokens = reply["tokens"].as_array().unwrap();
        tokens.iter().map(|t| t.as_u64().unwrap()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn floats(value: &Value) -> Vec<f32> {
    let values = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"));
    values.iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn norm(vector: &[f32]) -> f64 {
    vector
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    dot / (norm(a) * norm(b))
}

/// The `embedding`s of an OpenAI reply, checking the shape around them.
fn openai_vectors(reply: &Value) -> Vec<Vec<f32>> {
    assert_eq!(reply["object"], "list", "{reply}");
    let data = reply["data"].as_array().unwrap();
    data.iter()
        .enumerate()
        .map(|(index, entry)| {
            assert_eq!(entry["object"], "embedding");
            assert_eq!(entry["index"], index);
            let vector = floats(&entry["embedding"]);
            assert_eq!(vector.len(), N_EMBD);
            vector
        })
        .collect()
}

#[test]
fn openai_embeddings_in_every_input_shape() {
    let server = Server::start(&[]);
    let texts = ["Hello", "The lighthouse turns once every twelve seconds."];
    let tokens: Vec<Vec<u64>> = texts.iter().map(|t| server.tokens(t)).collect();
    let counts: Vec<usize> = tokens.iter().map(Vec::len).collect();

    let one = server.post_ok(
        "/v1/embeddings",
        &json!({"input": texts[1], "model": "anything"}),
    );
    let [single] = &openai_vectors(&one)[..] else {
        panic!("one vector: {one}");
    };
    assert!((norm(single) - 1.0).abs() < 1e-5, "unit length by default");
    assert_eq!(one["model"], "anything");
    assert_eq!(one["usage"]["prompt_tokens"], counts[1]);
    assert_eq!(one["usage"]["total_tokens"], counts[1]);

    let both = server.post_ok("/v1/embeddings", &json!({"input": texts}));
    let batched = openai_vectors(&both);
    assert_eq!(batched.len(), 2);
    assert_eq!(both["usage"]["prompt_tokens"], counts[0] + counts[1]);
    assert!(cosine(&batched[1], single) > 0.99999, "batched as alone");

    let ids = server.post_ok("/v1/embeddings", &json!({"input": tokens[1]}));
    assert_eq!(openai_vectors(&ids).len(), 1);
    assert!(cosine(&openai_vectors(&ids)[0], single) > 0.99999);
    let lists = server.post_ok("/v1/embeddings", &json!({"input": tokens}));
    let from_ids = openai_vectors(&lists);
    assert_eq!(from_ids.len(), 2);
    for (a, b) in from_ids.iter().zip(&batched) {
        assert!(cosine(a, b) > 0.99999);
    }

    let encoded = server.post_ok(
        "/v1/embeddings",
        &json!({"input": texts[1], "encoding_format": "base64", "dimensions": N_EMBD}),
    );
    let text = encoded["data"][0]["embedding"]
        .as_str()
        .expect("a base64 string");
    let bytes = base64::decode(text).unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(&decoded, single, "little-endian f32s, the floats' own bits");
    assert_eq!(encoded["usage"]["prompt_tokens"], counts[1]);

    let raw = server.post_ok(
        "/v1/embeddings",
        &json!({"input": texts[1], "embd_normalize": -1}),
    );
    let raw = &openai_vectors(&raw)[0];
    assert!(
        (norm(raw) - 1.0).abs() > 1e-3,
        "embd_normalize -1 leaves the length"
    );
    assert!(cosine(raw, single) > 0.99999);
}

#[test]
fn llama_cpp_embedding_endpoints_in_llama_servers_shape() {
    let server = Server::start(&["--embeddings"]);
    let text = "The lighthouse turns once every twelve seconds.";
    let openai = server.post_ok("/v1/embeddings", &json!({"input": text}));
    let want = &openai_vectors(&openai)[0];
    for (path, body) in [
        ("/embedding", json!({"content": text})),
        ("/embeddings", json!({"input": [text, "Hi"]})),
    ] {
        let reply = server.post_ok(path, &body);
        let results = reply.as_array().unwrap_or_else(|| panic!("{reply}"));
        assert_eq!(results[0]["index"], 0);
        let vectors = results[0]["embedding"].as_array().unwrap();
        assert_eq!(vectors.len(), 1, "pooled: one vector in the list");
        assert!(cosine(&floats(&vectors[0]), want) > 0.99999);
    }

    // Pooling none: every token's vector, as llama-server's, and nothing OpenAI can take.
    let server = Server::start(&["--embedding", "--pooling", "none"]);
    let count = server.tokens(text).len();
    let reply = server.post_ok("/embedding", &json!({"content": text}));
    let vectors = reply[0]["embedding"].as_array().unwrap();
    assert_eq!(vectors.len(), count);
    assert!(vectors.iter().all(|v| floats(v).len() == N_EMBD));
    server.refused("/v1/embeddings", &json!({"input": text}), "--pooling");
}

#[test]
fn bad_embedding_requests_get_a_400_and_the_server_goes_on() {
    let server = Server::start(&["-c", "64"]);
    let (_, models) = server.request("GET", "/v1/models", b"");
    let n_vocab = models["data"][0]["meta"]["n_vocab"].as_u64().unwrap();
    let many: Vec<String> = (0..10_000).map(|i| format!("text {i}")).collect();
    let long = "word ".repeat(200);
    let cases = [
        (json!({"input": ""}), "empty string"),
        (json!({"input": []}), "empty"),
        (json!({"input": ["a", ""]}), "empty string"),
        (json!({"input": [[]]}), "empty"),
        (json!({"input": many}), "at most 2048"),
        (json!({"input": [n_vocab]}), "vocabulary"),
        (json!({"input": [[1, n_vocab + 1]]}), "vocabulary"),
        (json!({"input": [1u64 << 40]}), "vocabulary"),
        (json!({"input": [-1]}), "input must be"),
        (json!({"input": [1, "a"]}), "input must be"),
        (json!({"input": {"text": "a"}}), "input must be"),
        (json!({"input": long}), "context of 64"),
        (json!({"model": "x"}), "input is required"),
        (
            json!({"input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (json!({"input": "a", "dimensions": 8}), "dimensions"),
    ];
    for (body, needle) in &cases {
        server.refused("/v1/embeddings", body, needle);
    }
    server.refused("/embedding", &json!({"content": []}), "empty");
    server.refused("/embedding", &json!({"prompt": "a"}), "content");
    let (status, _) = server.request("POST", "/v1/embeddings", b"{not json");
    assert_eq!(status, 400);

    let (status, health) = server.request("GET", "/health", b"");
    assert_eq!(status, 200, "{health}");
    let reply = server.post_ok("/v1/embeddings", &json!({"input": "still serving"}));
    assert_eq!(openai_vectors(&reply).len(), 1);
}
