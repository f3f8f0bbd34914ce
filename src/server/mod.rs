//! The HTTP server: the embedded chat page, llama.cpp's completion API, OpenAI's and Ollama's.
//!
//! One scheduler thread owns the slots (a `Session` each, so a KV cache each) and runs the
//! model; each connection has a thread that parses its requests, tokenizes, and hands the
//! scheduler a job with a channel of its own on which the tokens come back. A connection whose
//! client has left drops its receiver, and the scheduler frees the slot when its next token
//! finds nobody listening. Connections never wait for the model, so `/health` answers while
//! generation runs.

mod api;
mod assets;
#[doc(hidden)]
pub mod dry_run;
mod embeddings;
mod http;
mod infill;
mod metrics;
mod ollama;
mod openai;
mod request;
mod scheduler;
mod tools;
#[doc(hidden)]
pub mod wire;

use crate::engine::ModelInfo;
pub use crate::grammar::Grammar;

use crate::embedding::Pooling;
use crate::engine::Engine;
use crate::sampling::SamplingParams;
use crate::session::SessionError;
use crate::speculative::Speculator;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

/// How many more ports are tried when the requested one is taken.
const PORT_ATTEMPTS: u16 = 10;
/// Requests that may wait for a slot, per slot; beyond that the server answers 503.
const QUEUE_PER_SLOT: usize = 4;
/// Connections served at once, a thread each; more are answered 503. Each holds a file
/// descriptor, and this stays well below the common limit of 256 (macOS) or 1024 (Linux), so
/// the model file and the listening socket always have theirs. Silent or slow clients cannot
/// hold one long: see [`http::LIMITS`].
const MAX_CONNECTIONS: usize = 128;
/// How long accepting pauses when it fails, as it does while the process is out of file
/// descriptors: the connections open now will close within the limits of [`http::LIMITS`].
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {host}:{first_port} or the {more} ports after it: {source}")]
    Bind {
        host: String,
        first_port: u16,
        more: u16,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Start(String),
    #[error("cannot make the slots' KV caches: {0}")]
    Slots(#[from] SessionError),
    #[error("-np must be at least 1")]
    NoSlots,
    #[error("-b and -ub must be at least 1")]
    NoBatch,
}

/// What requests get when they do not say otherwise: the command line's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub slots: usize,
    /// Context size of each slot.
    pub n_ctx: usize,
    pub sampling: SamplingParams,
    /// A full context makes room (`--context-shift`) instead of ending the generation.
    pub context_shift: bool,
    /// The grammar of requests that name none (`--grammar`, `--json-schema`).
    pub grammar: Option<Arc<Grammar>>,
    /// -1: until the end of text or a full context.
    pub n_predict: i64,
    pub api_key: Option<String>,
    pub open_browser: bool,
    /// Tokens one step may evaluate (`-b`), and one forward pass (`-ub`): the scheduler runs
    /// one pass per step, so the smaller of the two bounds how long a prompt chunk holds the
    /// generating slots back.
    pub batch_size: usize,
    pub ubatch_size: usize,
    /// Whether `GET /slots` answers (`--slots`).
    pub slots_endpoint: bool,
    /// What requests speculate with unless they say otherwise, and the draft model.
    pub speculator: Option<Speculator>,
    /// Whether `GET /metrics` answers (`--metrics`).
    pub metrics_endpoint: bool,
    /// Fill-in-the-middle prompts put the suffix before the prefix (`--spm-infill`), as some
    /// models were trained.
    pub spm_infill: bool,
    /// How embeddings pool their tokens (`--pooling`); None: the model's pooling, else mean.
    pub pooling: Option<Pooling>,
}

impl ServerConfig {
    fn draft_engine(&self) -> Option<&Arc<Engine>> {
        self.speculator.as_ref()?.draft.as_ref()
    }
}

/// Serves until the process ends. Prints the address it listens on to stdout, and opens it in
/// a browser when asked to and a display is there.
pub fn serve(engine: &Arc<Engine>, config: &ServerConfig) -> Result<(), ServerError> {
    if config.slots == 0 {
        return Err(ServerError::NoSlots);
    }
    if config.batch_size == 0 || config.ubatch_size == 0 {
        return Err(ServerError::NoBatch);
    }
    let sessions = (0..config.slots)
        .map(|_| engine.session(config.n_ctx))
        .collect::<Result<Vec<_>, _>>()?;
    // The draft model keeps a cache per slot, so a slot's next request reuses its prefix.
    let drafts = match config.draft_engine() {
        Some(draft) => (0..config.slots)
            .map(|_| draft.session(config.n_ctx))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let info = engine.info();
    let listener = bind(&config.host, config.port)?;
    let address = listener
        .local_addr()
        .map_err(|e| ServerError::Start(e.to_string()))?;

    if !address.ip().is_loopback() && config.api_key.is_none() {
        eprintln!(
            "llmfile: warning: listening on {} without --api-key: anyone who can reach this machine can use the model",
            address.ip()
        );
    }
    let url = page_url(address);
    println!("llmfile: serving {} at {url}", info.name);
    if config.open_browser {
        open_browser(&url);
    }

    let (jobs, job_receiver) = mpsc::channel();
    let status = scheduler::Status::new(&sessions);
    let queue_limit = QUEUE_PER_SLOT * config.slots;
    let embedder = embeddings::Embedder::new(engine, config.ubatch_size);
    let embed = move |inputs: &[Vec<u32>], pooling, client: &http::Client| {
        embedder.embed(inputs, pooling, client)
    };
    let shared = api::Shared {
        tokenizer: engine.tokenizer(),
        embedder: &embed,
        info,
        config,
        jobs,
        status: &status,
        queue_limit,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let connections = AtomicUsize::new(0);
    let step_tokens = config.batch_size.min(config.ubatch_size);
    std::thread::scope(|scope| {
        scope
            .spawn(|| scheduler::run(engine, sessions, drafts, step_tokens, job_receiver, &status));
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) => {
                    std::thread::sleep(ACCEPT_RETRY);
                    continue;
                }
            };
            let Some(counted) = Counted::take(&connections) else {
                let busy = http::ApiError::new(
                    503,
                    format!("the server has {MAX_CONNECTIONS} connections open; try again later"),
                );
                http::refuse(&stream, &busy);
                continue;
            };
            let shared = &shared;
            // Without a thread the stream and the count are dropped, closing the connection.
            let _ = std::thread::Builder::new().spawn_scoped(scope, move || {
                let _counted = counted;
                http::serve_connection(stream, &http::LIMITS, &|request| {
                    api::handle(shared, request)
                });
            });
        }
    })
}

/// One of the [`MAX_CONNECTIONS`], given back when dropped, however its connection ends.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn take(open: &'a AtomicUsize) -> Option<Counted<'a>> {
        let before = open.fetch_add(1, Ordering::SeqCst);
        let counted = Counted(open);
        (before < MAX_CONNECTIONS).then_some(counted)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The requested port, or the next free one.
fn bind(host: &str, port: u16) -> Result<TcpListener, ServerError> {
    let more = if port == 0 { 0 } else { PORT_ATTEMPTS };
    let mut last_error = None;
    for candidate in (0..=more).filter_map(|i| port.checked_add(i)) {
        match TcpListener::bind((host, candidate)) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(ServerError::Bind {
        host: host.to_string(),
        first_port: port,
        more,
        source: last_error.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()),
    })
}

/// The address a browser on this machine can open: an unspecified listening address
/// (0.0.0.0, ::) is reached through loopback.
fn page_url(address: SocketAddr) -> String {
    let host = match address {
        SocketAddr::V4(a) if a.ip().is_unspecified() => "127.0.0.1".to_string(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => "[::1]".to_string(),
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!("http://{host}:{}/", address.port())
}

fn open_browser(url: &str) {
    let command = if cfg!(target_os = "macos") {
        Some(("open", vec![url]))
    } else if cfg!(windows) {
        Some(("cmd", vec!["/C", "start", "", url]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some(("xdg-open", vec![url]))
    } else {
        None
    };
    let Some((program, args)) = command else {
        return;
    };
    let spawned = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped on a thread of its own so that it does not linger as a zombie.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(error) => {
            eprintln!("llmfile: could not open a browser ({program}: {error}); open {url} yourself")
        }
    }
}
