//! Many sequences in one forward pass (issue #14): `Session::eval_batch` against each
//! sequence evaluated alone, and the server's continuous batching over real HTTP: concurrent
//! greedy requests answer as they do alone, clients that leave free their place, the prompt
//! cache works under batching, and `/slots` reports the slots.
//!
//! Batched and lone evaluation may run different kernels (a pass of many rows goes through
//! the prompt tiles, a few rows through the by-row tiles, one through the row kernels), which
//! add the same products in another order. A rounding difference that moves a value across an
//! f16 rounding boundary (the KV cache, GELU's table, the attention weights) jumps by a whole
//! f16 step and grows through the layers, so such logits differ by up to about 0.5 (measured:
//! 0.29 on the synthetic Gemma 2, 0.47 on Gemma 3 270M with AVX-512; llama.cpp's batch sizes
//! do the same to its own logits), and up to 1.27 on Gemma 3 270M with AVX2, where its Q8_0
//! attn_v rows in the prompt tiles and in the by-row tiles agree within 1.5e-7 of their size.
//! Where both sides run the same kernels the logits must be identical; where they do not, the
//! greedy choice must agree unless the top two logits are within `NEAR_TIE`.

use llmfile::engine::Engine;
use llmfile::sampling::argmax;
use llmfile::session::{Part, Session};
use llmfile::test_models::NEAR_TIE;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A logit row further than this from the lone one is wrong, not rounded: a wrong position or
/// another sequence's cache moves logits by several units.
const LOOSE: f32 = 2.0;

fn synthetic_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf")
}

fn open(path: &Path) -> Arc<Engine> {
    let bytes = std::fs::read(path).expect("model readable");
    Engine::from_bytes(bytes, kernels::Kernels::detect()).expect("model loads")
}

fn text_tokens(engine: &Engine, len: usize, salt: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perplexity.txt"),
    )
    .unwrap();
    let tokens = engine.tokenizer().encode(&text, true, false).unwrap();
    tokens[salt..salt + len].to_vec()
}

fn top_two(logits: &[f32]) -> (f32, f32) {
    let mut sorted = logits.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    (sorted[0], sorted[1])
}

/// `exact`: both sides ran the same kernels.
fn assert_close(got: &[f32], want: &[f32], exact: bool, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: logit count");
    if exact {
        assert!(got == want, "{what}: the same kernels gave other logits");
        return;
    }
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= LOOSE, "{what}: logits differ by {diff}");
    let (first, second) = top_two(want);
    if first - second > NEAR_TIE {
        assert_eq!(argmax(got), argmax(want), "{what}: greedy choice");
    }
}

/// Sequences at different positions, some past the synthetic Gemma 2's sliding window of 32,
/// one generating a token, one reading a prompt chunk, one taking a few tokens with every
/// logit: one pass gives each what it gets alone, and each cache grows by its tokens only.
fn check_mixed_batch(engine: &Arc<Engine>, prefixes: [usize; 3], chunk: [usize; 3], exact: bool) {
    let n_vocab = engine.model().hparams.n_vocab;
    let total = prefixes
        .iter()
        .zip(&chunk)
        .map(|(p, c)| p + c)
        .max()
        .unwrap();
    let mut batched: Vec<Session> = Vec::new();
    let mut alone: Vec<Session> = Vec::new();
    let mut inputs = Vec::new();
    for (i, (&prefix, &take)) in prefixes.iter().zip(&chunk).enumerate() {
        let tokens = text_tokens(engine, prefix + take, 7 * i);
        let mut session = engine.session(total + 1).unwrap();
        session.eval(&tokens[..prefix]).unwrap();
        let mut copy = engine.session(total + 1).unwrap();
        copy.copy_from(&session);
        batched.push(session);
        alone.push(copy);
        inputs.push(tokens[prefix..].to_vec());
    }
    let firsts = [0, chunk[1] - 1, 0];
    let mut parts: Vec<Part> = batched
        .iter_mut()
        .zip(&inputs)
        .zip(firsts)
        .map(|((session, tokens), logits_from)| Part {
            session,
            tokens,
            logits_from,
        })
        .collect();
    let logits = Session::eval_batch(&mut parts).unwrap();
    let mut rows = logits.chunks_exact(n_vocab);
    for (i, ((session, tokens), first)) in alone.iter_mut().zip(&inputs).zip(firsts).enumerate() {
        let want = session.eval_from(tokens, first).unwrap();
        for (j, want) in want.chunks_exact(n_vocab).enumerate() {
            let got = rows.next().expect("as many rows as asked for");
            assert_close(got, want, exact, &format!("sequence {i}, logit row {j}"));
        }
    }
    assert!(rows.next().is_none(), "no rows beyond those asked for");
    let per_token = batched[0].cache_bytes() / batched[0].tokens().len();
    for (session, (&prefix, &take)) in batched.iter().zip(prefixes.iter().zip(&chunk)) {
        assert_eq!(session.tokens().len(), prefix + take);
        assert_eq!(session.cache_bytes(), (prefix + take) * per_token);
    }
}

#[test]
fn one_pass_over_sequences_at_different_positions_matches_each_alone() {
    let engine = open(&synthetic_path());
    check_mixed_batch(&engine, [40, 5, 70], [1, 20, 3], false);
    // Generating sequences only: up to 8 rows go through the by-row tiles, which for the
    // K-quants of this model add in the 256-bit row kernels' order, so one token alone and
    // three together give the same logits, unless `Kernels::detect` took a 512-bit row kernel
    // on this CPU (other lanes, so other roundings).
    let same_kernels = engine.model().kernels().wide_rows().is_empty();
    check_mixed_batch(&engine, [33, 2, 64], [1, 1, 1], same_kernels);
}

#[test]
fn generating_sequences_over_grouped_weights_match_each_alone() {
    // The 256-bit row kernels beside the grouped ones, so that the matrices this model does
    // not group add in one order for one token and for a few (see above).
    let detected = kernels::Kernels::detect();
    let kernels = kernels::Kernels::for_isa(detected.isa()).expect("the detected ISA runs");
    let bytes = std::fs::read(synthetic_path()).expect("model readable");
    let engine = Engine::from_bytes_grouped(bytes, kernels).expect("model loads");
    if engine.model().grouped_types().is_empty() {
        eprintln!("skipping: these kernels group none of this model");
        return;
    }
    // Three tokens go through the grouped stripes together, each getting what it gets alone
    // (the kernels' tests check the sums bit for bit on random rows).
    check_mixed_batch(&engine, [33, 2, 64], [1, 1, 1], true);
    check_mixed_batch(&engine, [40, 5, 70], [1, 20, 3], false);
}

#[test]
fn gemma3_sequences_past_its_sliding_window_batch_as_alone() {
    let Some(path) = llmfile::test_models::path("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let engine = open(&path);
    // Gemma 3 270M slides a window of 512 on five layers of six.
    check_mixed_batch(&engine, [530, 12, 600], [1, 9, 2], false);
}

#[test]
fn a_batch_that_does_not_fit_evaluates_nothing() {
    let engine = open(&synthetic_path());
    let mut small = engine.session(4).unwrap();
    let mut large = engine.session(64).unwrap();
    let mut parts = vec![
        Part {
            session: &mut large,
            tokens: &[2, 10, 11],
            logits_from: 2,
        },
        Part {
            session: &mut small,
            tokens: &[2, 10, 11, 12, 13],
            logits_from: 4,
        },
    ];
    assert!(Session::eval_batch(&mut parts).is_err());
    assert!(large.tokens().is_empty() && small.tokens().is_empty());
}

// ---- the server ----------------------------------------------------------------------------

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmfile"))
            .args(["-m", model.to_str().unwrap(), "--server", "--nobrowser"])
            // One thread each: the tests run side by side on CI's two cores.
            .args(["--host", "127.0.0.1", "--port", "0", "-t", "1"])
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
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Server { child, port }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        stream
    }

    /// Sends a request and leaves the connection open, for a client that will leave.
    fn send(&self, method: &str, path: &str, body: &Value) -> TcpStream {
        let mut stream = self.connect();
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        stream
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let mut stream = self.send(method, path, body);
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.call("POST", path, &body);
        assert_eq!(status, 200, "{reply}");
        reply
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, &Value::Null)
    }

    /// Polls until `done` holds for a GET of `path`, for at most five minutes.
    fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, reply) = self.get(path);
            if done(&reply) {
                return reply;
            }
            assert!(Instant::now() < deadline, "{path} never became {reply}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn greedy(prompt: &str, n_predict: usize) -> Value {
    json!({"prompt": prompt, "n_predict": n_predict, "temperature": 0, "n_probs": 2,
           "ignore_eos": true, "cache_prompt": false})
}

/// The tokens' texts of a reply and, per token, the gap between its top two logits (the log
/// of the ratio of their probabilities).
fn tokens_and_gaps(reply: &Value) -> Vec<(String, f32)> {
    reply["completion_probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| {
            let probs = token["probs"].as_array().unwrap();
            let p = |i: usize| probs[i]["prob"].as_f64().unwrap();
            let gap = (p(0) / p(1)).ln() as f32;
            (token["content"].as_str().unwrap().to_string(), gap)
        })
        .collect()
}

/// The two replies agree token for token up to the first near-tie (top two logits within
/// `tie`), where they may part.
fn assert_same_until_tie(together: &Value, alone: &Value, prompt: &str, tie: f32) {
    let (together, alone) = (tokens_and_gaps(together), tokens_and_gaps(alone));
    for (i, (a, b)) in together.iter().zip(&alone).enumerate() {
        if a.0 != b.0 {
            assert!(
                b.1 < tie,
                "{prompt:?}: token {i} is {:?} in the batch but {:?} alone, whose top two logits are {} apart",
                a.0,
                b.0,
                b.1
            );
            eprintln!(
                "{prompt:?}: parts at token {i} ({:?} / {:?}), a near-tie of {:.3}",
                a.0, b.0, b.1
            );
            return;
        }
    }
    assert_eq!(together.len(), alone.len());
}

#[test]
fn concurrent_greedy_requests_answer_as_they_do_alone() {
    let Some(model) = llmfile::test_models::path("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let server = Server::start(&model, &["-np", "4", "-c", "512"]);
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village,",
        "The three primary colours are",
        "To make a cup of tea, first",
        "In 1969, the first people to walk on the Moon",
        "The quick brown fox",
        "Water boils at",
    ];
    let alone: Vec<Value> = prompts
        .iter()
        .map(|prompt| server.post("/completion", greedy(prompt, 24)))
        .collect();
    let together: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|prompt| {
                let server = &server;
                scope.spawn(move || server.post("/completion", greedy(prompt, 24)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((together, alone), prompt) in together.iter().zip(&alone).zip(prompts) {
        assert_same_until_tie(together, alone, prompt, NEAR_TIE);
    }
    let slots: Vec<u64> = together
        .iter()
        .map(|r| r["id_slot"].as_u64().unwrap())
        .collect();
    assert!(
        slots.iter().any(|&s| s != slots[0]),
        "the requests ran on several slots: {slots:?}"
    );
}

#[test]
fn a_prompt_chunk_and_generating_slots_share_passes() {
    let model = synthetic_path();
    let server = Server::start(&model, &["-np", "2", "-ub", "16", "--slots"]);
    let long_prompt = "one two three four five six seven eight nine ten ".repeat(12);
    let generate_alone = server.post("/completion", greedy("Hello there", 48));
    let read_alone = server.post("/completion", greedy(&long_prompt, 4));
    let (generated, read) = std::thread::scope(|scope| {
        let generating = scope.spawn(|| server.post("/completion", greedy("Hello there", 48)));
        // The long prompt arrives while the first request generates, and is read in chunks
        // of 16 tokens between its tokens.
        server.wait_for("/slots", |slots| {
            slots
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["n_decoded"].as_u64() > Some(2)))
        });
        let reading = scope.spawn(|| server.post("/completion", greedy(&long_prompt, 4)));
        (generating.join().unwrap(), reading.join().unwrap())
    });
    assert_ne!(generated["id_slot"], read["id_slot"]);
    assert_same_until_tie(&generated, &generate_alone, "Hello there", NEAR_TIE);
    assert_same_until_tie(&read, &read_alone, "the long prompt", NEAR_TIE);
}

#[test]
fn a_client_that_leaves_while_queued_or_reading_its_prompt_frees_its_place() {
    let Some(model) = llmfile::test_models::path("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let server = Server::start(&model, &["-np", "1", "-c", "4096", "-ub", "64", "--slots"]);
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(300);

    // Leaves during its prompt: the slot stops reading it at the next step.
    let leaving = server.send(
        "POST",
        "/completion",
        &json!({"prompt": long_prompt, "n_predict": 8}),
    );
    server.wait_for("/slots", |slots| {
        slots[0]["n_prompt_tokens_processed"].as_u64() > Some(0)
    });
    drop(leaving);
    let slots = server.wait_for("/slots", |slots| slots[0]["is_processing"] == false);
    let read = slots[0]["n_prompt_tokens_processed"].as_u64().unwrap();
    let total = slots[0]["n_prompt_tokens"].as_u64().unwrap();
    assert!(total > 2000, "{total} prompt tokens");
    assert!(
        read < total,
        "the abandoned prompt was read whole ({read} of {total})"
    );

    // Leaves while queued behind a busy slot: it never runs.
    let busy = server.send(
        "POST",
        "/completion",
        &json!({"prompt": "Count to a hundred:", "n_predict": 64, "ignore_eos": true}),
    );
    server.wait_for("/slots", |slots| slots[0]["is_processing"] == true);
    let queued = server.send(
        "POST",
        "/completion",
        &json!({"prompt": "Hi", "n_predict": 4}),
    );
    server.wait_for("/health", |health| health["requests_queued"] == 1);
    drop(queued);
    server.wait_for("/health", |health| health["requests_queued"] == 0);
    let mut reply = String::new();
    let mut busy = busy;
    busy.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("\"tokens_predicted\":64"), "{reply}");
    let after = server.post("/completion", json!({"prompt": "Hi", "n_predict": 4}));
    assert_eq!(after["tokens_predicted"], 4);
}

#[test]
fn the_prompt_cache_serves_a_slot_while_another_generates() {
    let model = synthetic_path();
    let server = Server::start(&model, &["-np", "2"]);
    let first = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu";
    let reply = server.post("/completion", json!({"prompt": first, "n_predict": 2}));
    let cached_slot = reply["id_slot"].clone();
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            server.post(
                "/completion",
                json!({"prompt": "something else entirely", "n_predict": 64, "ignore_eos": true,
                       "id_slot": 1 - cached_slot.as_u64().unwrap()}),
            )
        });
        let longer = format!("{first} nu xi omicron");
        let reply = server.post("/completion", json!({"prompt": longer, "n_predict": 2}));
        assert_eq!(reply["id_slot"], cached_slot);
        let evaluated = reply["tokens_evaluated"].as_u64().unwrap();
        let cached = reply["tokens_cached"].as_u64().unwrap();
        assert!(
            cached >= 10 && cached < evaluated,
            "{cached} of {evaluated} cached"
        );
        other.join().unwrap();
    });
}

#[test]
fn slots_are_shown_only_when_asked_for() {
    let model = synthetic_path();
    let hidden = Server::start(&model, &[]);
    assert_eq!(hidden.get("/slots").0, 501);
    let shown = Server::start(&model, &["-np", "3", "-c", "256", "--slots"]);
    let (status, slots) = shown.get("/slots");
    assert_eq!(status, 200);
    let slots = slots.as_array().unwrap();
    assert_eq!(slots.len(), 3);
    for (i, slot) in slots.iter().enumerate() {
        assert_eq!(slot["id"], i);
        assert_eq!(slot["n_ctx"], 256);
        assert_eq!(slot["is_processing"], false);
    }
    shown.post(
        "/completion",
        json!({"prompt": "Hi", "n_predict": 3, "id_slot": 2}),
    );
    let (_, slots) = shown.get("/slots");
    assert_eq!(slots[2]["n_decoded"], 3);
    assert!(slots[2]["n_past"].as_u64().unwrap() >= 3);
}

/// Speculation in the server (issue #19): a slot guessing from n-grams shares its passes with
/// a plain one, reports its guesses in llama-server's `draft_n` and `draft_n_accepted`, and
/// answers as the plain one does until their top two logits are within twice `NEAR_TIE` (a
/// pass over guesses runs other kernels: tests/speculative.rs says why twice).
#[test]
fn a_speculating_slot_answers_as_a_plain_one() {
    let Some(model) = llmfile::test_models::path("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let prompt = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speculative/rename.txt"),
    )
    .unwrap();
    let server = Server::start(
        &model,
        &["-np", "2", "-c", "1024", "--spec-type", "ngram-simple"],
    );
    let mut plain_request = greedy(&prompt, 150);
    plain_request["speculative.type"] = json!("none");
    let (guessing, plain) = std::thread::scope(|scope| {
        let guessing = scope.spawn(|| server.post("/completion", greedy(&prompt, 150)));
        let plain = scope.spawn(|| server.post("/completion", plain_request));
        (guessing.join().unwrap(), plain.join().unwrap())
    });
    let drafted = guessing["timings"]["draft_n"].as_u64().expect("draft_n");
    let accepted = guessing["timings"]["draft_n_accepted"].as_u64().unwrap();
    assert!(
        accepted > 0 && accepted <= drafted,
        "{}",
        guessing["timings"]
    );
    assert!(
        plain["timings"].get("draft_n").is_none(),
        "{}",
        plain["timings"]
    );
    assert_eq!(guessing["tokens_predicted"], 150);
    assert_same_until_tie(&guessing, &plain, "rename", 2.0 * NEAR_TIE);

    for (field, value, says) in [
        ("speculative.type", json!("draft-simple"), "draft model"),
        (
            "speculative.type",
            json!("eagle3"),
            "must be none, ngram-simple or draft-simple",
        ),
        (
            "speculative.n_max",
            json!(-1),
            "speculative.n_max must be between",
        ),
        (
            "speculative.p_min",
            json!(1.5),
            "speculative.p_min must be between",
        ),
        (
            "speculative.ngram_size_n",
            json!(0),
            "speculative.ngram_size_n must be between",
        ),
    ] {
        let mut request = greedy("Hello", 4);
        request[field] = value;
        let (status, reply) = server.call("POST", "/completion", &request);
        assert_eq!(status, 400, "{field}: {reply}");
        assert!(reply.to_string().contains(says), "{field}: {reply}");
    }
    let reply = server.post("/completion", greedy("Hello", 4));
    assert_eq!(reply["tokens_predicted"], 4, "the server goes on serving");
}
