//! Request bodies through the server's POST endpoints (`server::dry_run::dry_run`): JSON
//! parsing, the fields' types and ranges, prompts as text or token ids, chat messages rendered
//! in each chat format and tokenized, the job handed to the model, and the reply written, with
//! a stand-in for the model. Never a panic; a refused body queues nothing and gets a 400; an
//! accepted one queues a job whose settings are within the documented bounds.
//!
//! The first input byte picks the endpoint, the chat format and the server's settings; the
//! rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::chat_format::ChatFormat;
use kernels::Kernels;
use llmfile::engine::Engine;
use llmfile::sampling::SamplingParams;
use llmfile::server::dry_run::{dry_run, QueuedJob};
use llmfile::chat_template::ChatTemplate;
use llmfile::engine::ModelInfo;
use llmfile::server::ServerConfig;
use llmfile::tokenizer::Tokenizer;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

const SYNTHETIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf"
);

const PATHS: [&str; 8] = [
    "/completion",
    "/completions",
    "/v1/completions",
    "/v1/chat/completions",
    "/chat/completions",
    "/tokenize",
    "/detokenize",
    "/props",
];

fn tokenizer() -> &'static Tokenizer {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let bytes =
                std::fs::read(SYNTHETIC).expect("the synthetic model is in the repository");
            Engine::from_bytes(bytes, Kernels::detect()).expect("the synthetic model loads")
        })
        .tokenizer()
}

fn format(index: u8) -> ChatFormat {
    match index % 6 {
        0 => ChatFormat::Gemma,
        1 => ChatFormat::ChatMl {
            default_system: None,
        },
        2 => ChatFormat::ChatMl {
            default_system: Some("You are a test.".into()),
        },
        3 => ChatFormat::Llama3,
        4 => ChatFormat::Alpaca,
        _ => ChatFormat::Plain,
    }
}

fn config(index: u8) -> ServerConfig {
    // A context of 8 makes "the prompt does not fit" reachable; 4096 makes it rare.
    let (n_ctx, slots, n_predict) = match index % 4 {
        0 => (8, 1, -1),
        1 => (64, 2, -1),
        2 => (64, 1, 16),
        _ => (4096, 3, -1),
    };
    ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        slots,
        n_ctx,
        sampling: SamplingParams::default(),
        grammar: None,
        context_shift: index % 2 == 1,
        n_predict,
        api_key: None,
        open_browser: false,
        batch_size: 2048,
        ubatch_size: 512,
        slots_endpoint: false,
        metrics_endpoint: false,
        pooling: None,
        speculator: None,
        spm_infill: false,
    }
}

fn check_job(job: &QueuedJob, config: &ServerConfig, n_vocab: usize) {
    let prompt = job.prompt.len();
    assert!(
        prompt > 0 && prompt < config.n_ctx,
        "prompt of {prompt} tokens"
    );
    assert!(job.prompt.iter().all(|&id| (id as usize) < n_vocab));
    let s = &job.settings;
    // With --context-shift a full context makes room, so only the limit bounds the reply.
    match s.keep_on_shift {
        None => assert!(prompt + s.n_predict <= config.n_ctx),
        Some(keep) => assert!(config.context_shift && keep <= prompt),
    }
    let p = &s.sampling;
    assert!((0.0..=100.0).contains(&p.temperature), "{p:?}");
    assert!(
        (0.0..=1.0).contains(&p.top_p) && (0.0..=1.0).contains(&p.min_p),
        "{p:?}"
    );
    assert!((0.0..=100.0).contains(&p.repeat_penalty), "{p:?}");
    assert!(p.top_k <= u32::MAX as usize);
    let default_last_n = config.sampling.repeat_last_n;
    assert!(p.repeat_last_n <= config.n_ctx.max(default_last_n), "{p:?}");
    assert!(s.n_probs <= 100);
    assert!(s.slot_id.is_none_or(|id| id < config.slots));
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(selector & 7)];
    let config = config(selector >> 6);
    let info = ModelInfo {
        name: "synthetic".into(),
        architecture: "gemma2".into(),
        n_embd: 64,
        pooling: None,
        template: std::sync::Arc::new(ChatTemplate::from_format(format((selector >> 3) & 7))),
        facts: Default::default(),
    };
    let tokenizer = tokenizer();
    let Some(done) = dry_run(tokenizer, &info, &config, path, body) else {
        assert_eq!(path, "/props", "every other path is a POST endpoint");
        return;
    };
    let generates = !matches!(path, "/tokenize" | "/detokenize");
    match &done.reply {
        Err(error) => {
            assert_eq!(error.status, 400, "{error:?}");
            assert!(!error.message.is_empty());
            assert!(
                done.jobs.is_empty(),
                "a refused request queued {:?}",
                done.jobs
            );
        }
        Ok(reply) => {
            assert_eq!(done.jobs.len(), usize::from(generates));
            for job in &done.jobs {
                check_job(job, &config, tokenizer.n_vocab());
                if path.ends_with("chat/completions") {
                    assert!(job.settings.stop.ends_with(&info.template.stop_strings()));
                }
            }
            match (path, reply) {
                ("/tokenize", Some(reply)) => {
                    let tokens = reply["tokens"].as_array().expect("tokens");
                    assert!(tokens.iter().all(|t| t.is_u64() || t["id"].is_u64()));
                }
                ("/detokenize", Some(reply)) => assert!(reply["content"].is_string()),
                ("/completion" | "/completions", Some(reply)) => {
                    assert_eq!(reply["content"], Value::from("x"))
                }
                (_, Some(reply)) => assert!(reply["choices"].is_array()),
                (_, None) => assert!(generates, "{path} streamed"),
            }
        }
    }
});
