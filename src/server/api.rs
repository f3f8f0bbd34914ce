//! Routing and llama.cpp's endpoints: /health, /props, /completion, /tokenize, /detokenize.

use super::embeddings::{self, Embed};
use super::http::{ApiError, Client, EventStream, Request, StreamFormat};
use super::request::Fields;
use super::scheduler::{Event, Job, Settings, Status, Summary, TokenProbs};
use super::{assets, infill, metrics, ollama, openai, ModelInfo, ServerConfig};
use crate::chat_format::Message;
use crate::chat_format::PageTemplates;
use crate::chat_template::{
    ChatTemplate, Fitted, TemplateError, TemplateTokens, BUILT_IN, DEFAULT_RESERVE,
};
use crate::sampling::SamplingParams;
use crate::session::keep_on_shift;
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use serde_json::{Number, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// The largest `n_probs` a request may ask for.
const MAX_N_PROBS: i64 = 100;
/// How often a reply waiting for the model looks whether its client is still there: a client
/// that leaves while queued or while its prompt is read frees its place within this time and
/// the step after it.
const CLIENT_CHECK: Duration = Duration::from_millis(50);

/// What every HTTP worker shares.
pub struct Shared<'a> {
    pub tokenizer: &'a Tokenizer,
    /// Computes embeddings: the model in the worker's thread ([`embeddings::Embedder`]).
    pub embedder: &'a Embed,
    pub info: &'a ModelInfo,
    pub config: &'a ServerConfig,
    pub jobs: Sender<Job>,
    pub status: &'a Status,
    pub queue_limit: usize,
    /// Seconds since the epoch when the server started: OpenAI's `created` of the model.
    pub started: u64,
}

/// Writes a reply's events as the tokens come; an error means the client has left.
pub type WriteEvents<'r> = Box<dyn FnOnce(&mut EventStream) -> std::io::Result<()> + 'r>;

/// What a handler answers.
pub enum Reply<'r> {
    /// One of the reply types below (or openai.rs'), as JSON.
    Json(Value),
    Asset(&'static str, &'static [u8]),
    /// A body that is not JSON, and its content type.
    Text(&'static str, String),
    /// A CORS preflight: the headers every reply carries are the whole answer.
    Preflight,
    /// Server-sent events, written as the tokens come.
    Stream(WriteEvents<'r>),
    /// JSON lines (NDJSON), written as the tokens come.
    Lines(WriteEvents<'r>),
}

impl Reply<'_> {
    pub fn json(body: &impl Serialize) -> Result<Self, ApiError> {
        serde_json::to_value(body)
            .map(Reply::Json)
            .map_err(|e| ApiError::new(500, format!("cannot write the reply: {e}")))
    }
}

pub fn handle(shared: &Shared, request: &mut Request) {
    match route(shared, request) {
        Ok(Reply::Json(body)) => request.respond_json(200, &body),
        Ok(Reply::Asset(content_type, bytes)) => request.respond(200, content_type, bytes),
        Ok(Reply::Text(content_type, body)) => request.respond(200, content_type, body.as_bytes()),
        Ok(Reply::Preflight) => request.respond(204, "text/plain", &[]),
        Ok(Reply::Stream(write_events)) => stream(request, StreamFormat::Events, write_events),
        Ok(Reply::Lines(write_events)) => stream(request, StreamFormat::Lines, write_events),
        Err(error) if request.path().starts_with(ollama::PREFIX) => {
            request.respond_json(error.status, &error.to_plain_json())
        }
        Err(error) => request.respond_error(&error),
    }
}

fn stream(request: &mut Request, format: StreamFormat, write_events: WriteEvents) {
    // An error here means the client left; returning drops the receiver, which tells the
    // scheduler to free the slot.
    let _ = request.start_stream(format).and_then(|mut stream| {
        write_events(&mut stream)?;
        stream.end()
    });
}

/// A GET endpoint: it reads nothing of the request.
type GetEndpoint = for<'r> fn(&'r Shared) -> Result<Reply<'r>, ApiError>;
/// A POST endpoint: it reads the request's JSON body and nothing else of the request.
pub type Endpoint = for<'r> fn(&'r Shared, &Fields, Client) -> Result<Reply<'r>, ApiError>;

/// What a route runs; the variant is the HTTP method it answers.
#[derive(Clone, Copy)]
enum Handler {
    Get(GetEndpoint),
    Post(Endpoint),
}

impl Handler {
    fn method(self) -> &'static str {
        match self {
            Handler::Get(_) => "GET",
            Handler::Post(_) => "POST",
        }
    }
}

/// Whether `--api-key` guards a route.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// As in llama.cpp, so that a load balancer or a browser (which sends no Authorization
    /// header with a page's requests) can reach it without the key.
    Public,
    Keyed,
}

/// An endpoint: the paths it answers on, its handler (and so its method), and its access.
struct Route(&'static [&'static str], Handler, Access);

use Access::{Keyed, Public};
use Handler::{Get, Post};

/// Every endpoint of the API. The page's files are served beside them, public, by
/// [`assets::find`].
const ROUTES: [Route; 21] = [
    Route(&["/health"], Get(health), Public),
    Route(&["/props"], Get(props), Keyed),
    Route(&["/slots"], Get(slots), Keyed),
    Route(&["/metrics"], Get(export_metrics), Keyed),
    Route(&["/models", "/v1/models"], Get(openai::models), Keyed),
    Route(&["/completion", "/completions"], Post(completion), Keyed),
    Route(&["/infill"], Post(infill::infill), Keyed),
    Route(&["/tokenize"], Post(tokenize), Keyed),
    Route(&["/detokenize"], Post(detokenize), Keyed),
    Route(&["/apply-template"], Post(apply_template), Keyed),
    Route(
        &["/v1/chat/completions", "/chat/completions"],
        Post(openai::chat_completions),
        Keyed,
    ),
    Route(&["/v1/completions"], Post(openai::completions), Keyed),
    Route(&["/api/version"], Get(ollama::version), Keyed),
    Route(&["/api/tags"], Get(ollama::tags), Keyed),
    Route(&["/api/ps"], Get(ollama::ps), Keyed),
    Route(&["/api/show"], Post(ollama::show), Keyed),
    Route(&["/api/generate"], Post(ollama::generate), Keyed),
    Route(&["/api/chat"], Post(ollama::chat), Keyed),
    Route(&["/api/embed"], Post(ollama::embed), Keyed),
    Route(
        &["/v1/embeddings"],
        Post(embeddings::openai_embeddings),
        Keyed,
    ),
    Route(
        &["/embedding", "/embeddings"],
        Post(embeddings::llama_embedding),
        Keyed,
    ),
];

fn route<'r>(shared: &'r Shared, request: &mut Request) -> Result<Reply<'r>, ApiError> {
    let path = request.path().to_string();
    let method = request.method().to_string();
    if method == "OPTIONS" {
        return Ok(Reply::Preflight);
    }
    let at_path = || {
        ROUTES
            .iter()
            .filter(|Route(paths, ..)| paths.contains(&path.as_str()))
    };
    if let Some(Route(_, handler, access)) = at_path().find(|route| route.1.method() == method) {
        if *access == Keyed {
            authorize(shared, request)?;
        }
        return match *handler {
            Get(endpoint) => endpoint(shared),
            Post(endpoint) => endpoint(shared, &read_fields(request)?, request.client()),
        };
    }
    let asset = assets::find(&path);
    if let (Some((content_type, bytes)), "GET") = (asset, method.as_str()) {
        return Ok(Reply::Asset(content_type, bytes));
    }
    // Past the public routes, so that without the key nothing tells which paths exist.
    authorize(shared, request)?;
    let mut allowed: Vec<&str> = at_path().map(|route| route.1.method()).collect();
    if asset.is_some() {
        allowed.push("GET");
    }
    if allowed.is_empty() {
        return Err(ApiError::new(404, format!("there is no endpoint {path}")));
    }
    Err(ApiError::new(
        405,
        format!(
            "{path} does not take a {method} request, only {}",
            allowed.join(" or ")
        ),
    ))
}

/// The POST endpoint at `path`, for whoever serves a request body without the HTTP around it.
pub fn post_endpoint(path: &str) -> Option<Endpoint> {
    ROUTES
        .iter()
        .find_map(|Route(paths, handler, _)| match handler {
            Post(endpoint) if paths.contains(&path) => Some(*endpoint),
            _ => None,
        })
}

fn read_fields(request: &mut Request) -> Result<Fields, ApiError> {
    Fields::parse(&request.read_body()?)
}

/// With `--api-key`, every endpoint but the page and `/health` wants `Authorization: Bearer KEY`.
fn authorize(shared: &Shared, request: &Request) -> Result<(), ApiError> {
    let Some(key) = &shared.config.api_key else {
        return Ok(());
    };
    let given = request
        .header("Authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(401, "invalid API key")),
        None => Err(ApiError::new(
            401,
            "this server wants an API key: send the header Authorization: Bearer KEY",
        )),
    }
}

/// Compares `given` with `key` in a time that depends on neither's content nor on where they
/// differ, so timing reveals nothing of the key but its length.
fn constant_time_eq(given: &[u8], key: &[u8]) -> bool {
    let mut difference = u8::from(given.len() != key.len());
    for (i, &byte) in given.iter().enumerate() {
        let expected = key.get(i).copied().unwrap_or(!byte);
        difference |= byte ^ expected;
    }
    // Keeps the optimizer from turning the loop into one that stops at the first difference.
    std::hint::black_box(difference) == 0
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    slots_idle: usize,
    slots_processing: usize,
    requests_queued: usize,
}

fn health<'r>(shared: &'r Shared) -> Result<Reply<'r>, ApiError> {
    if shared.status.stopped.load(Ordering::SeqCst) {
        return Err(model_stopped());
    }
    let busy = shared.status.busy.load(Ordering::SeqCst);
    Reply::json(&Health {
        status: "ok",
        slots_idle: shared.config.slots.saturating_sub(busy),
        slots_processing: busy,
        requests_queued: shared.status.queued.load(Ordering::SeqCst),
    })
}

/// llama-server's `GET /slots`, when `--slots` allows it.
fn slots<'r>(shared: &'r Shared) -> Result<Reply<'r>, ApiError> {
    if !shared.config.slots_endpoint {
        return Err(ApiError::new(
            501,
            "this server does not show its slots; start it with --slots",
        ));
    }
    let views = shared
        .status
        .slots
        .lock()
        .map_err(|_| model_stopped())?
        .clone();
    Reply::json(&views)
}

/// llama-server's `GET /metrics`, when `--metrics` allows it.
fn export_metrics<'r>(shared: &'r Shared) -> Result<Reply<'r>, ApiError> {
    if !shared.config.metrics_endpoint {
        return Err(ApiError::new(
            501,
            "this server does not export metrics; start it with --metrics",
        ));
    }
    let status = shared.status;
    let slots = status.slots.lock().map_err(|_| model_stopped())?.clone();
    let now = metrics::Now {
        slots: &slots,
        processing: status.busy.load(Ordering::SeqCst),
        deferred: status.queued.load(Ordering::SeqCst),
    };
    let text = metrics::render(&status.metrics.scrape(), &now);
    Ok(Reply::Text(metrics::CONTENT_TYPE, text))
}

/// Also what a client is told when its generation ends without a result: the scheduler is gone.
pub fn model_stopped() -> ApiError {
    ApiError::new(
        500,
        "the model's thread has stopped after an error (see the server's log); restart the server",
    )
}

#[derive(Serialize)]
struct Props<'a> {
    model: &'a str,
    architecture: &'a str,
    chat_format: &'static str,
    chat_template: String,
    n_ctx: usize,
    total_slots: usize,
    default_generation_settings: GenerationSettings<'a>,
    user_name: String,
    bot_name: String,
    templates: PageTemplates,
    presets: Vec<PageTemplates>,
}

fn props<'r>(shared: &'r Shared) -> Result<Reply<'r>, ApiError> {
    let (info, config) = (shared.info, shared.config);
    let format = info.template.format();
    let page = format.page_templates();
    Reply::json(&Props {
        model: &info.name,
        architecture: &info.architecture,
        chat_format: format.name(),
        chat_template: info.template.describe(),
        n_ctx: config.n_ctx,
        total_slots: config.slots,
        default_generation_settings: GenerationSettings {
            sampling: (&config.sampling).into(),
            n_ctx: config.n_ctx,
            n_predict: config.n_predict.into(),
            request: None,
            model: &info.name,
        },
        user_name: page.user.clone(),
        bot_name: page.char.clone(),
        templates: page,
        presets: format.presets(),
    })
}

/// Settings as llama-server reports them: `/props`' defaults, and with what a request chose,
/// each completion's `generation_settings`.
#[derive(Serialize)]
struct GenerationSettings<'a> {
    #[serde(flatten)]
    sampling: Sampling,
    n_ctx: usize,
    /// The server's `-n` (-1: none), or a request's limit as the context capped it.
    n_predict: Number,
    #[serde(flatten)]
    request: Option<RequestSettings<'a>>,
    model: &'a str,
}

#[derive(Serialize)]
struct RequestSettings<'a> {
    stop: &'a [String],
    n_probs: usize,
    cache_prompt: bool,
    ignore_eos: bool,
}

/// Sampling settings, with the f32s written as the decimals they were given as (0.95, not
/// 0.949999988079071).
#[derive(Serialize)]
struct Sampling {
    temperature: f64,
    top_k: usize,
    top_p: f64,
    min_p: f64,
    repeat_penalty: f64,
    repeat_last_n: usize,
    seed: u64,
}

impl From<&SamplingParams> for Sampling {
    fn from(s: &SamplingParams) -> Sampling {
        let decimal = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
        Sampling {
            temperature: decimal(s.temperature),
            top_k: s.top_k,
            top_p: decimal(s.top_p),
            min_p: decimal(s.min_p),
            repeat_penalty: decimal(s.repeat_penalty),
            repeat_last_n: s.repeat_last_n,
            seed: s.seed,
        }
    }
}

/// A generation request after its fields are read: what the scheduler needs, plus `stream`.
pub struct Prepared {
    pub prompt: Vec<u32>,
    pub settings: Settings,
    pub stream: bool,
}

impl Shared<'_> {
    /// The text prompt as tokens, BOS first when the model wants one.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode(text, add_special, parse_special)
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize the prompt: {e}")))
    }

    /// Reads the generation fields common to every endpoint. `n_predict_keys` are the names the
    /// endpoint gives the token limit; `format_stops` are added to the request's stop strings.
    pub fn generation(
        &self,
        fields: &Fields,
        prompt: Vec<u32>,
        n_predict_keys: &[&str],
        format_stops: Vec<String>,
    ) -> Result<Prepared, ApiError> {
        fields.refuse_unhonoured()?;
        let n_ctx = self.config.n_ctx;
        if prompt.is_empty() {
            return Err(ApiError::bad_request(
                "the prompt is empty and the model adds no BOS token to start from",
            ));
        }
        if prompt.len() >= n_ctx {
            return Err(ApiError::bad_request(format!(
                "the prompt is {} tokens, which does not fit the context of {n_ctx} tokens",
                prompt.len()
            )));
        }
        let mut n_predict = self.config.n_predict;
        for key in n_predict_keys {
            if let Some(n) = fields.i64_in(key, -1..=i64::from(i32::MAX))? {
                n_predict = n;
            }
        }
        let room = n_ctx - prompt.len();
        let keep_on_shift = match self.config.context_shift {
            false => None,
            true => {
                let keep = fields
                    .i64_in("n_keep", -1..=i64::from(i32::MAX))?
                    .unwrap_or(0);
                Some(keep_on_shift(keep, &prompt, self.tokenizer.add_bos()))
            }
        };
        // With --context-shift a full context makes room instead of ending the text, so only
        // the token limit ends it (-1: the model's end of text, as llama-server's).
        let n_predict = match (keep_on_shift.is_some(), usize::try_from(n_predict)) {
            (true, Ok(n)) => n,
            (true, Err(_)) => usize::MAX,
            (false, limit) => limit.map_or(room, |n| n.min(room)),
        };
        let slot_id = match fields.i64_in("id_slot", -1..=self.last_slot())? {
            Some(id) => Some(id),
            None => fields.i64_in("slot_id", -1..=self.last_slot())?,
        };
        let mut stop = fields.strings("stop")?;
        stop.extend(format_stops);
        let settings = Settings {
            sampling: SamplingParams {
                logit_bias: [
                    self.config.sampling.logit_bias.clone(),
                    fields.logit_bias(self.tokenizer)?,
                ]
                .concat(),
                ..fields.sampling(&self.config.sampling, n_ctx)?
            },
            n_predict,
            stop,
            n_probs: fields.i64_in("n_probs", 0..=MAX_N_PROBS)?.unwrap_or(0) as usize,
            cache_prompt: fields.bool("cache_prompt")?.unwrap_or(true),
            slot_id: slot_id.and_then(|id| usize::try_from(id).ok()),
            ignore_eos: fields.bool("ignore_eos")?.unwrap_or(false),
            grammar: match fields.grammar()? {
                Some(grammar) => Some(grammar),
                None => self.config.grammar.clone(),
            },
            keep_on_shift,
            speculation: fields.speculation(
                self.config.speculator.as_ref().map(|s| &s.params),
                self.config
                    .speculator
                    .as_ref()
                    .is_some_and(|s| s.draft.is_some()),
            )?,
        };
        Ok(Prepared {
            prompt,
            settings,
            stream: fields.bool("stream")?.unwrap_or(false),
        })
    }

    /// The chat's prompt through the model's template, its oldest turns dropped as needed to
    /// leave the reply room: the request's token limit (under any of `limit_keys`), the
    /// server's `-n`, or a default reserve.
    pub fn fit_chat(
        &self,
        template: &ChatTemplate,
        fields: &Fields,
        messages: &[Message],
        limit_keys: &[&str],
    ) -> Result<Fitted, ApiError> {
        let reserve = self.reserve(fields, limit_keys)?;
        template
            .fit(self.tokenizer, messages, self.config.n_ctx, reserve)
            .map_err(template_error)
    }

    /// The room a chat's reply keeps: the request's token limit (under any of `limit_keys`),
    /// the server's `-n`, or a default reserve.
    pub fn reserve(&self, fields: &Fields, limit_keys: &[&str]) -> Result<usize, ApiError> {
        let mut reserve = usize::try_from(self.config.n_predict).unwrap_or(DEFAULT_RESERVE);
        for key in limit_keys {
            if let Some(n) = fields.i64_in(key, -1..=i64::from(i32::MAX))? {
                reserve = usize::try_from(n).unwrap_or(DEFAULT_RESERVE);
            }
        }
        Ok(reserve)
    }

    fn last_slot(&self) -> i64 {
        self.config.slots as i64 - 1
    }

    /// Queues the job, or answers 503 when the queue is full. The job is cancelled when the
    /// returned [`Pending`] is dropped or finds `client` gone.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        settings: Settings,
        client: Client,
    ) -> Result<Pending, ApiError> {
        let queued = self.status.queued.fetch_add(1, Ordering::SeqCst);
        if queued >= self.queue_limit {
            self.status.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                503,
                format!(
                    "the server is busy: {queued} requests are already waiting for a slot; try again later"
                ),
            ));
        }
        let (events, receiver) = mpsc::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let job = Job {
            prompt,
            settings,
            events,
            cancelled: Arc::clone(&cancelled),
        };
        if self.jobs.send(job).is_err() {
            return Err(model_stopped());
        }
        Ok(Pending {
            events: receiver,
            cancelled,
            client,
        })
    }
}

/// A queued job's events as they come. Ends early, cancelling the job, when the client goes.
pub struct Pending {
    events: Receiver<Event>,
    cancelled: Arc<AtomicBool>,
    client: Client,
}

impl Iterator for Pending {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            match self.events.recv_timeout(CLIENT_CHECK) {
                Ok(event) => return Some(event),
                Err(RecvTimeoutError::Timeout) if !self.client.gone() => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

pub fn template_error(error: TemplateError) -> ApiError {
    match error {
        TemplateError::Raised(message) => ApiError::bad_request(format!(
            "the model's chat template refuses this conversation: {message}"
        )),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// A finished generation, gathered for a reply that is not streamed.
pub struct Collected {
    pub content: String,
    pub probs: Vec<TokenProbs>,
    /// The generated ids, in order.
    pub tokens: Vec<u32>,
    pub summary: Summary,
}

pub fn collect(events: Pending) -> Result<Collected, ApiError> {
    let mut content = String::new();
    let mut probs = Vec::new();
    let mut tokens = Vec::new();
    for event in events {
        match event {
            Event::Token { text, probs: p, id } => {
                content.push_str(&text);
                probs.extend(p);
                tokens.extend(id);
            }
            Event::Done(summary) => {
                return Ok(Collected {
                    content,
                    probs,
                    tokens,
                    summary,
                })
            }
            Event::Failed(message) => return Err(ApiError::new(500, message)),
        }
    }
    Err(model_stopped())
}

/// llama.cpp's `timings` object.
#[derive(Serialize)]
pub struct Timings {
    prompt_n: usize,
    prompt_ms: f64,
    prompt_per_token_ms: f64,
    prompt_per_second: f64,
    predicted_n: usize,
    predicted_ms: f64,
    predicted_per_token_ms: f64,
    predicted_per_second: f64,
    /// llama-server's names, present only when the request speculated.
    #[serde(skip_serializing_if = "Option::is_none")]
    draft_n: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    draft_n_accepted: Option<usize>,
}

pub fn timings(summary: &Summary) -> Timings {
    let prompt_n = summary.tokens_evaluated - summary.tokens_cached;
    let per_second = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    let per_token = |n: usize, ms: f64| if n > 0 { ms / n as f64 } else { 0.0 };
    Timings {
        prompt_n,
        prompt_ms: summary.prompt_ms,
        prompt_per_token_ms: per_token(prompt_n, summary.prompt_ms),
        prompt_per_second: per_second(prompt_n, summary.prompt_ms),
        predicted_n: summary.tokens_predicted,
        predicted_ms: summary.predicted_ms,
        predicted_per_token_ms: per_token(summary.tokens_predicted, summary.predicted_ms),
        predicted_per_second: per_second(summary.tokens_predicted, summary.predicted_ms),
        draft_n: summary.speculation.map(|stats| stats.drafted),
        draft_n_accepted: summary.speculation.map(|stats| stats.accepted),
    }
}

/// The prompt of `/completion`: a string, token ids, or a mix of both.
fn completion_prompt(shared: &Shared, fields: &Fields) -> Result<Vec<u32>, ApiError> {
    let parse_special = fields.bool("parse_special")?.unwrap_or(false);
    let n_vocab = shared.tokenizer.n_vocab();
    let wrong =
        || ApiError::bad_request("prompt must be a string or an array of strings and token ids");
    match fields.get("prompt") {
        None => Err(ApiError::bad_request("prompt is required")),
        Some(Value::String(text)) => shared.encode(text, true, parse_special),
        Some(Value::Array(parts)) => {
            let mut tokens = Vec::new();
            for (index, part) in parts.iter().enumerate() {
                match part {
                    Value::String(text) => {
                        tokens.extend(shared.encode(text, index == 0, parse_special)?)
                    }
                    Value::Number(n) => {
                        let id = n
                            .as_u64()
                            .filter(|&id| id < n_vocab as u64)
                            .ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "prompt token {n} is not an id of this model's vocabulary of {n_vocab}"
                                ))
                            })?;
                        tokens.push(id as u32);
                    }
                    _ => return Err(wrong()),
                }
            }
            Ok(tokens)
        }
        Some(_) => Err(wrong()),
    }
}

/// `/completion`'s reply, and the last event of its stream (with no content).
#[derive(Serialize)]
struct Completion<'a> {
    content: String,
    /// The generated ids, when the request set `return_tokens`.
    tokens: Vec<u32>,
    /// The prompt's tokens as text, special tokens shown (llama-server's `prompt`).
    prompt: &'a str,
    stop: bool,
    model: &'a str,
    id_slot: usize,
    slot_id: usize,
    tokens_predicted: usize,
    tokens_evaluated: usize,
    tokens_cached: usize,
    stop_type: &'static str,
    stopped_eos: bool,
    stopped_word: bool,
    stopped_limit: bool,
    stopping_word: &'a str,
    truncated: bool,
    generation_settings: GenerationSettings<'a>,
    timings: Timings,
    /// Only when the request asked for `n_probs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_probabilities: Option<Vec<TokenProbs>>,
}

/// One streamed piece of `/completion`.
#[derive(Serialize)]
struct Partial {
    content: String,
    tokens: Vec<u32>,
    stop: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_probabilities: Option<[TokenProbs; 1]>,
}

impl<'a> Completion<'a> {
    fn new(
        shared: &'a Shared,
        settings: &'a Settings,
        content: String,
        probs: Vec<TokenProbs>,
        summary: &'a Summary,
    ) -> Completion<'a> {
        Completion {
            content,
            tokens: Vec::new(),
            prompt: "",
            stop: true,
            model: &shared.info.name,
            id_slot: summary.slot_id,
            slot_id: summary.slot_id,
            tokens_predicted: summary.tokens_predicted,
            tokens_evaluated: summary.tokens_evaluated,
            tokens_cached: summary.tokens_cached,
            stop_type: summary.stop_type(),
            stopped_eos: summary.stopped_eos,
            stopped_word: summary.stopped_word,
            stopped_limit: summary.stopped_limit,
            stopping_word: &summary.stopping_word,
            truncated: false,
            generation_settings: GenerationSettings {
                sampling: (&settings.sampling).into(),
                n_ctx: shared.config.n_ctx,
                n_predict: settings.n_predict.into(),
                request: Some(RequestSettings {
                    stop: &settings.stop,
                    n_probs: settings.n_probs,
                    cache_prompt: settings.cache_prompt,
                    ignore_eos: settings.ignore_eos,
                }),
                model: &shared.info.name,
            },
            timings: timings(summary),
            completion_probabilities: (settings.n_probs > 0).then_some(probs),
        }
    }

    fn with_tokens(self, tokens: Vec<u32>, prompt: &'a str) -> Completion<'a> {
        Completion {
            tokens,
            prompt,
            ..self
        }
    }
}

fn completion<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let prompt = completion_prompt(shared, fields)?;
    complete(shared, fields, prompt, client)
}

/// Generates from `prompt` under the request's fields and answers as `/completion` does
/// (which `/infill` does too), whole or streamed.
pub fn complete<'r>(
    shared: &'r Shared,
    fields: &Fields,
    prompt: Vec<u32>,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let return_tokens = fields.bool("return_tokens")?.unwrap_or(false);
    let generation = shared.generation(fields, prompt, &["n_predict", "max_tokens"], Vec::new())?;
    let settings = generation.settings.clone();
    // llama-server's `prompt`: the tokens as the model reads them, specials shown, so that a
    // client can see what a built prompt (an infill's) became.
    let rendered = shared.tokenizer.decode(&generation.prompt, true);
    let events = shared.submit(generation.prompt, generation.settings, client)?;
    let kept = |tokens: Vec<u32>| if return_tokens { tokens } else { Vec::new() };
    if !generation.stream {
        let done = collect(events)?;
        let body = Completion::new(shared, &settings, done.content, done.probs, &done.summary)
            .with_tokens(kept(done.tokens), &rendered);
        return Reply::json(&body);
    }
    Ok(Reply::Stream(Box::new(move |stream| {
        for event in events {
            match event {
                Event::Token { text, probs, id } => {
                    let id = id.filter(|_| return_tokens);
                    if text.is_empty() && probs.is_none() && id.is_none() {
                        continue;
                    }
                    stream.send_json(&Partial {
                        content: text,
                        tokens: Vec::from_iter(id),
                        stop: false,
                        completion_probabilities: probs.map(|probs| [probs]),
                    })?;
                }
                Event::Done(summary) => {
                    let last =
                        Completion::new(shared, &settings, String::new(), Vec::new(), &summary)
                            .with_tokens(Vec::new(), &rendered);
                    return stream.send_json(&last);
                }
                Event::Failed(message) => {
                    return stream.send(&ApiError::new(500, message).to_json().to_string());
                }
            }
        }
        stream.send(&model_stopped().to_json().to_string())
    })))
}

/// llama-server's `/apply-template`: the chat's prompt as `/v1/chat/completions` would build
/// it from the same fields (tools included), and how many of its oldest turns had to be left
/// out to leave the reply its room.
fn apply_template<'r>(
    shared: &'r Shared,
    fields: &Fields,
    _: Client,
) -> Result<Reply<'r>, ApiError> {
    // The page's presets name a built-in format; files stay the command line's to name.
    let named = match fields.str("chat_template")? {
        None => None,
        Some(name) if BUILT_IN.contains(&name) => {
            let tokens = TemplateTokens {
                bos: String::new(),
                eos: String::new(),
                tokenizer_adds_bos: shared.tokenizer.add_bos(),
            };
            Some(
                ChatTemplate::named(name, &shared.info.architecture, &tokens)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            )
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "chat_template must be one of {}, not {other:?}",
                BUILT_IN.join(", ")
            )))
        }
    };
    let template = named.as_ref().unwrap_or(&shared.info.template);
    let fitted = openai::chat_prompt(shared, fields, template)?.fitted;
    Reply::json(&Applied {
        prompt: fitted.text,
        dropped_turns: fitted.dropped_turns,
    })
}

#[derive(Serialize)]
struct Applied {
    prompt: String,
    dropped_turns: usize,
}

/// `/tokenize`'s reply: ids, or with `with_pieces` a [`Piece`] each.
#[derive(Serialize)]
struct Tokens<T> {
    tokens: Vec<T>,
}

#[derive(Serialize)]
struct Piece {
    id: u32,
    piece: String,
}

#[derive(Serialize)]
struct Detokenized {
    content: String,
}

fn tokenize<'r>(shared: &'r Shared, fields: &Fields, _: Client) -> Result<Reply<'r>, ApiError> {
    let content = fields
        .str("content")?
        .ok_or_else(|| ApiError::bad_request("content is required"))?;
    let add_special = fields.bool("add_special")?.unwrap_or(false);
    let parse_special = fields.bool("parse_special")?.unwrap_or(true);
    let tokens = shared.encode(content, add_special, parse_special)?;
    if fields.bool("with_pieces")?.unwrap_or(false) {
        let tokens = tokens
            .iter()
            .map(|&id| Piece {
                id,
                piece: String::from_utf8_lossy(shared.tokenizer.token_to_piece(id, true))
                    .into_owned(),
            })
            .collect();
        return Reply::json(&Tokens { tokens });
    }
    Reply::json(&Tokens { tokens })
}

fn detokenize<'r>(shared: &'r Shared, fields: &Fields, _: Client) -> Result<Reply<'r>, ApiError> {
    let n_vocab = shared.tokenizer.n_vocab();
    let wrong = || {
        ApiError::bad_request(format!(
            "tokens must be an array of token ids below {n_vocab}"
        ))
    };
    let tokens = match fields.get("tokens") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_u64()
                    .filter(|&id| id < n_vocab as u64)
                    .map(|id| id as u32)
                    .ok_or_else(wrong)
            })
            .collect::<Result<Vec<u32>, ApiError>>()?,
        Some(_) => return Err(wrong()),
    };
    Reply::json(&Detokenized {
        content: shared.tokenizer.decode(&tokens, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_matches() {
        let key = b"sesame-0123456789";
        assert!(constant_time_eq(key, key));
        for given in [
            &b""[..],
            b"sesame",
            b"sesame-0123456788",
            b"tesame-0123456789",
            b"sesame-01234567890",
            b"sesame-0123456789\0",
        ] {
            assert!(!constant_time_eq(given, key), "{given:?}");
        }
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn each_path_and_method_has_one_route() {
        let mut seen = std::collections::HashSet::new();
        for Route(paths, handler, _) in &ROUTES {
            for path in *paths {
                assert!(seen.insert((*path, handler.method())), "{path} twice");
                assert!(assets::find(path).is_none(), "{path} is also a page file");
            }
        }
        assert!(post_endpoint("/chat/completions").is_some());
        assert!(post_endpoint("/props").is_none());
        assert!(post_endpoint("/nowhere").is_none());
    }

    #[test]
    fn a_generation_whose_scheduler_is_gone_ends_with_a_500() {
        let (events, receiver) = mpsc::channel::<Event>();
        events
            .send(Event::Token {
                text: "half".into(),
                probs: None,
                id: Some(7),
            })
            .unwrap();
        drop(events);
        let pending = Pending {
            events: receiver,
            cancelled: Arc::new(AtomicBool::new(false)),
            client: Client::detached(),
        };
        let error = collect(pending).err().expect("no result without Done");
        assert_eq!(error.status, 500);
        assert!(
            error.message.contains("restart the server"),
            "{}",
            error.message
        );
    }
}
