//! A request body through the endpoint that would serve it, with no model behind: a stand-in
//! answers each queued job with one token (and each embedding with ones), so everything the
//! server does with a request's untrusted bytes runs, replies and streams included. For the
//! `http_request` fuzz target.

use super::api::{self, Reply, Shared};
use super::http::{Client, EventStream, StreamFormat};
use super::request::Fields;
use super::scheduler::{Event, Job, Status, Summary};
use super::{ModelInfo, ServerConfig};
use crate::embedding::Pooling;
use crate::tokenizer::Tokenizer;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};

pub use super::http::ApiError;
pub use super::scheduler::Settings;

/// What a request led to.
#[derive(Debug)]
pub struct DryRun {
    /// The JSON reply; `None` for a streamed one, whose events were written and discarded.
    pub reply: Result<Option<Value>, ApiError>,
    /// The jobs the endpoint queued for the model, in order.
    pub jobs: Vec<QueuedJob>,
}

#[derive(Debug)]
pub struct QueuedJob {
    pub prompt: Vec<u32>,
    pub settings: Settings,
}

/// Serves a POST of `body` to `path` as the server would after authorization; `None` when no
/// POST endpoint has that path.
pub fn dry_run(
    tokenizer: &Tokenizer,
    info: &ModelInfo,
    config: &ServerConfig,
    path: &str,
    body: &[u8],
) -> Option<DryRun> {
    let endpoint = api::post_endpoint(path)?;
    let (jobs, queue) = mpsc::channel();
    let status = Status::default();
    let n_embd = info.n_embd;
    let embed = move |inputs: &[Vec<u32>], pooling: Pooling, _: &Client| {
        Ok(inputs
            .iter()
            .map(|input| pooling.pool(&vec![1.0; input.len() * n_embd], n_embd))
            .collect())
    };
    let shared = Shared {
        tokenizer,
        embedder: &embed,
        info,
        config,
        jobs,
        status: &status,
        queue_limit: 1,
        started: 0,
    };
    Some(std::thread::scope(|scope| {
        let status = &status;
        let model = scope.spawn(move || stand_in_model(queue, status));
        let reply = Fields::parse(body)
            .and_then(|fields| endpoint(&shared, &fields, Client::detached()))
            .map(finish);
        // The last sender gone, the stand-in's queue ends.
        drop(shared);
        let jobs = model
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        DryRun { reply, jobs }
    }))
}

fn stand_in_model(queue: Receiver<Job>, status: &Status) -> Vec<QueuedJob> {
    queue
        .into_iter()
        .map(|job| {
            status.queued.fetch_sub(1, Ordering::SeqCst);
            let summary = Summary {
                tokens_evaluated: job.prompt.len(),
                tokens_predicted: 1,
                stopped_limit: true,
                ..Summary::default()
            };
            let token = Event::Token {
                text: "x".into(),
                probs: None,
                id: None,
            };
            // A worker that has already answered has dropped its receiver; nothing to free here.
            let _ = job.events.send(token);
            let _ = job.events.send(Event::Done(summary));
            QueuedJob {
                prompt: job.prompt,
                settings: job.settings,
            }
        })
        .collect()
}

fn finish(reply: Reply) -> Option<Value> {
    match reply {
        Reply::Json(value) => Some(value),
        Reply::Stream(write_events) => {
            let mut stream = EventStream::to_writer(std::io::sink(), true);
            write_events(&mut stream).expect("a sink takes every event");
            stream.end().expect("a sink takes the end");
            None
        }
        Reply::Lines(write_events) => {
            let mut stream =
                EventStream::to_writer(std::io::sink(), true).in_format(StreamFormat::Lines);
            write_events(&mut stream).expect("a sink takes every event");
            stream.end().expect("a sink takes the end");
            None
        }
        Reply::Asset(..) | Reply::Text(..) | Reply::Preflight => {
            unreachable!("POST endpoints answer with JSON or a stream")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_format::ChatFormat;
    use crate::chat_template::ChatTemplate;
    use crate::sampling::SamplingParams;
    use crate::test_models::synthetic_engine;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "synthetic".into(),
            architecture: "gemma2".into(),
            n_embd: 64,
            pooling: None,
            template: std::sync::Arc::new(ChatTemplate::from_format(ChatFormat::Gemma)),
            facts: Default::default(),
        }
    }

    fn config() -> ServerConfig {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            slots: 2,
            n_ctx: 64,
            sampling: SamplingParams::default(),
            grammar: None,
            context_shift: false,
            n_predict: -1,
            api_key: None,
            open_browser: false,
            batch_size: 2048,
            ubatch_size: 512,
            slots_endpoint: false,
            speculator: None,
            metrics_endpoint: false,
            spm_infill: false,
            pooling: None,
        }
    }

    fn run(path: &str, body: &str) -> Option<DryRun> {
        dry_run(
            synthetic_engine().tokenizer(),
            &info(),
            &config(),
            path,
            body.as_bytes(),
        )
    }

    #[test]
    fn a_completion_queues_one_job_capped_to_the_context() {
        let done = run(
            "/completion",
            r#"{"prompt": "Hi", "n_predict": 1000, "top_k": 5}"#,
        )
        .expect("/completion is a POST endpoint");
        let reply = done.reply.unwrap().expect("not streamed");
        assert_eq!(reply["content"], "x");
        let [job] = &done.jobs[..] else {
            panic!("one job, not {:?}", done.jobs);
        };
        assert_eq!(job.settings.sampling.top_k, 5);
        assert_eq!(job.settings.n_predict, 64 - job.prompt.len());
    }

    #[test]
    fn a_streamed_chat_is_written_and_bad_fields_queue_nothing() {
        let chat = r#"{"messages": [{"role": "user", "content": "Hi"}], "stream": true}"#;
        let done = run("/v1/chat/completions", chat).unwrap();
        assert!(done.reply.unwrap().is_none());
        assert_eq!(done.jobs.len(), 1);

        let done = run("/completion", r#"{"prompt": "Hi", "temperature": -1}"#).unwrap();
        assert_eq!(done.reply.unwrap_err().status, 400);
        assert!(done.jobs.is_empty());
    }

    #[test]
    fn an_ollama_chat_streams_lines_with_its_options_as_the_sampling() {
        let chat = r#"{"model": "any", "messages": [{"role": "user", "content": "Hi"}],
            "options": {"top_k": 3, "num_predict": 4, "stop": ["."], "num_thread": 8}}"#;
        let done = run("/api/chat", chat).unwrap();
        assert!(done.reply.unwrap().is_none(), "streamed unless told not to");
        let [job] = &done.jobs[..] else {
            panic!("one job, not {:?}", done.jobs);
        };
        assert_eq!(job.settings.sampling.top_k, 3);
        assert_eq!(job.settings.n_predict, 4);
        assert!(job.settings.stop.contains(&".".to_string()));

        let done = run(
            "/api/generate",
            r#"{"prompt": "Hi", "options": {"typical_p": 0.5}}"#,
        );
        let done = done.unwrap();
        assert!(done.reply.unwrap_err().message.contains("typical_p"));
        assert!(done.jobs.is_empty());
    }

    #[test]
    fn only_post_endpoints_run() {
        assert!(run("/props", "{}").is_none());
        let tokenized = run("/tokenize", r#"{"content": "Hi"}"#).unwrap();
        assert!(tokenized.reply.unwrap().unwrap()["tokens"].is_array());
        assert!(tokenized.jobs.is_empty());
    }
}
