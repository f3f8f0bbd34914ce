//! Ollama's API: `/api/version`, `/api/tags`, `/api/show` and `/api/ps` describe the one model;
//! `/api/generate` and `/api/chat` generate, streamed as JSON lines (NDJSON) unless `stream` is
//! false. A request's Ollama fields are read into the llama.cpp fields the other endpoints
//! read (`options.num_predict` becomes `n_predict`, `format` a grammar), so every API shares
//! one set of checks and one sampler. Whatever model a request names, the loaded one answers,
//! as llama-server does.

use super::api::{self, Pending, Reply, Shared};
use super::embeddings;
use super::http::{ApiError, Client};
use super::infill;
use super::openai;
use super::request::{schema_grammar, Fields};
use super::scheduler::{Event, Summary};
use super::tools::{Answer, ToolPlan};
use crate::chat_format::{Message, Role};
use crate::chat_template::civil_from_days;
use crate::gguf::Value as GgufValue;
use crate::grammar::{json_schema, Grammar};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The paths of Ollama's API, whose errors are `{"error": "message"}`.
pub const PREFIX: &str = "/api/";

/// Options that tune how the model runs, never what it writes.
const NO_EFFECT: [&str; 14] = [
    "num_thread",
    "num_gpu",
    "main_gpu",
    "num_batch",
    "low_vram",
    "use_mmap",
    "use_mlock",
    "numa",
    "f16_kv",
    "vocab_only",
    "logits_all",
    "num_gqa",
    "draft_num_predict",
    "embedding_only",
];
/// Options whose names and meaning llama.cpp's fields share.
const SAME_NAME: [&str; 10] = [
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "stop",
];

#[derive(Serialize)]
struct Version {
    version: &'static str,
}

pub fn version<'r>(_: &'r Shared) -> Result<Reply<'r>, ApiError> {
    Reply::json(&Version {
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `/api/tags` and `/api/ps`: the one model.
#[derive(Serialize)]
struct Models<'a> {
    models: [Listing<'a>; 1],
}

/// The model as `/api/tags` lists it, and `/api/ps` with what is loaded.
#[derive(Serialize)]
struct Listing<'a> {
    name: &'a str,
    model: &'a str,
    size: u64,
    digest: &'a str,
    details: Details<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modified_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_vram: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_length: Option<usize>,
}

#[derive(Serialize)]
struct Details<'a> {
    parent_model: &'static str,
    format: &'static str,
    family: &'a str,
    families: [&'a str; 1],
    parameter_size: String,
    quantization_level: &'a str,
}

pub fn tags<'r>(shared: &'r Shared) -> Result<Reply<'r>, ApiError> {
    let model = Listing {
        modified_at: Some(timestamp(started(shared))),
        ..listing(shared)
    };
    Reply::json(&Models { models: [model] })
}

/// The model stays loaded for as long as the server runs.
pub fn ps<'r>(shared: &'r Shared) -> Result<Reply<'r>, ApiError> {
    let model = Listing {
        expires_at: Some(NEVER),
        size_vram: Some(0),
        context_length: Some(shared.config.n_ctx),
        ..listing(shared)
    };
    Reply::json(&Models { models: [model] })
}

/// `expires_at` of a model that is never unloaded.
const NEVER: &str = "9999-12-31T23:59:59Z";

/// `verbose` is accepted, but the vocabulary's arrays stay empty: they are megabytes that no
/// client reads, and the server keeps no copy of them outside the tokenizer.
pub fn show<'r>(shared: &'r Shared, fields: &Fields, _: Client) -> Result<Reply<'r>, ApiError> {
    fields.bool("verbose")?;
    let info = shared.info;
    let mut model_info: Map<String, Value> = info
        .facts
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), gguf_json(value)))
        .collect();
    model_info
        .entry("general.parameter_count")
        .or_insert_with(|| json!(info.facts.parameters));
    let template = info.template.describe();
    let parameters = parameters(shared);
    let license = info
        .facts
        .metadata
        .iter()
        .find(|(key, _)| key == "general.license")
        .and_then(|(_, value)| value.as_str())
        .unwrap_or_default();
    let modelfile = format!(
        "# The model llmfile serves, in a Modelfile's words.\nFROM {}\nTEMPLATE \"\"\"{template}\"\"\"\n{}",
        info.name,
        parameters
            .lines()
            .map(|line| format!("PARAMETER {line}\n"))
            .collect::<String>()
    );
    Reply::json(&Show {
        license,
        modelfile,
        parameters,
        template,
        details: details(shared),
        model_info,
        capabilities: ["completion", "tools"],
        modified_at: timestamp(started(shared)),
    })
}

#[derive(Serialize)]
struct Show<'a> {
    license: &'a str,
    modelfile: String,
    parameters: String,
    template: String,
    details: Details<'a>,
    model_info: Map<String, Value>,
    capabilities: [&'static str; 2],
    modified_at: String,
}

/// The server's sampling defaults and the template's stop strings, one `name value` a line as
/// Ollama writes a model's parameters.
fn parameters(shared: &Shared) -> String {
    let s = &shared.config.sampling;
    let mut lines = vec![
        format!("num_ctx {}", shared.config.n_ctx),
        format!("temperature {}", s.temperature),
        format!("top_k {}", s.top_k),
        format!("top_p {}", s.top_p),
        format!("min_p {}", s.min_p),
        format!("repeat_penalty {}", s.repeat_penalty),
        format!("repeat_last_n {}", s.repeat_last_n),
    ];
    for stop in shared.info.template.stop_strings() {
        lines.push(format!("stop {}", json!(stop)));
    }
    lines.join("\n")
}

fn listing<'a>(shared: &'a Shared) -> Listing<'a> {
    let facts = &shared.info.facts;
    Listing {
        name: &facts.file_name,
        model: &facts.file_name,
        size: facts.size,
        digest: &facts.digest,
        details: details(shared),
        modified_at: None,
        expires_at: None,
        size_vram: None,
        context_length: None,
    }
}

fn details<'a>(shared: &'a Shared) -> Details<'a> {
    let architecture = &shared.info.architecture;
    Details {
        parent_model: "",
        format: "gguf",
        family: architecture,
        families: [architecture],
        parameter_size: parameter_size(shared.info.facts.parameters),
        quantization_level: &shared.info.facts.quantization,
    }
}

/// "7.6B", "268.10M", as Ollama writes a parameter count.
fn parameter_size(parameters: u64) -> String {
    let n = parameters as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.2}K", n / 1e3)
    } else {
        parameters.to_string()
    }
}

fn gguf_json(value: &GgufValue) -> Value {
    match value {
        GgufValue::String(text) => json!(text),
        GgufValue::Bool(b) => json!(b),
        GgufValue::F32(x) => json!(x.to_string().parse::<f64>().unwrap_or(f64::from(*x))),
        GgufValue::F64(x) => json!(x),
        GgufValue::U64(n) => json!(n),
        GgufValue::Array(items) => Value::Array(items.iter().map(gguf_json).collect()),
        other => json!(other.as_i64()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Generate,
    Chat,
}

/// `/api/generate`: `prompt` through the chat template (with `system`), or as it is with
/// `raw`.
pub fn generate<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let started = Instant::now();
    if fields.str("template")?.is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad_request(
            "template is not supported: prompts go through the model's chat template (or the server's --chat-template); send raw: true with a prompt formatted as you need it",
        ));
    }
    if fields.get("context").is_some_and(|c| c != &json!([])) {
        return Err(ApiError::bad_request(
            "context is not supported: send the conversation again, or use /api/chat",
        ));
    }
    refuse_images("images", fields.get("images"))?;
    let request = Translated::read(shared, fields)?;
    let prompt = fields.str("prompt")?.unwrap_or_default();
    if prompt.is_empty() {
        return loaded(shared, Kind::Generate);
    }
    let template = &shared.info.template;
    let suffix = fields.str("suffix")?.filter(|s| !s.is_empty());
    let (tokens, stops) = if let Some(suffix) = suffix {
        // As Ollama: with a suffix the reply is what goes between the prompt and it, in the
        // model's fill-in-the-middle format (a 400 for a model without those tokens).
        let tokens = infill::completion_prompt(shared, &request.fields, prompt, suffix)?;
        (tokens, Vec::new())
    } else if fields.bool("raw")?.unwrap_or(false) {
        (shared.encode(prompt, true, true)?, Vec::new())
    } else {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = fields.str("system")?.filter(|s| !s.is_empty()) {
            messages.push(Message {
                role: Role::System,
                content: system.to_string(),
            });
        }
        messages.push(Message {
            role: Role::User,
            content: prompt.to_string(),
        });
        let fitted = shared.fit_chat(template, &request.fields, &messages, &["n_predict"])?;
        (fitted.tokens, template.stop_strings())
    };
    let generation = request.generation(shared, tokens, stops)?;
    respond(shared, Kind::Generate, generation, None, client, started)
}

/// `/api/chat`: `messages` through the chat template, with `tools` as on
/// `/v1/chat/completions`.
pub fn chat<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let started = Instant::now();
    let mut request = Translated::read(shared, fields)?;
    let messages = match fields.get("messages") {
        None => return loaded(shared, Kind::Chat),
        Some(Value::Array(items)) if items.is_empty() => {
            return loaded(shared, Kind::Chat);
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::bad_request("messages must be an array")),
    };
    let messages = messages
        .iter()
        .enumerate()
        .map(|(index, message)| chat_message(index, message))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    request.set("messages", Value::Array(messages));
    if let Some(tools) = fields.get("tools") {
        request.set("tools", tools.clone());
    }
    let template = &shared.info.template;
    let openai::ChatPrompt { fitted, plan } =
        openai::chat_prompt(shared, &request.fields, template)?;
    let mut generation = request.generation(shared, fitted.tokens, template.stop_strings())?;
    if let Some(plan) = &plan {
        let grammar = schema_grammar("tools", &plan.schema())?;
        generation.settings.grammar = Some(
            Grammar::parse(&grammar).map_err(|e| ApiError::bad_request(format!("tools: {e}")))?,
        );
    }
    respond(shared, Kind::Chat, generation, plan, client, started)
}

/// A message of Ollama's, in the shape `/v1/chat/completions` reads: `tool_name` becomes the
/// tool result's `name`.
fn chat_message(index: usize, message: &Value) -> Result<Value, ApiError> {
    let Value::Object(fields) = message else {
        return Err(ApiError::bad_request(format!(
            "messages[{index}] must be an object"
        )));
    };
    refuse_images(&format!("messages[{index}].images"), fields.get("images"))?;
    let mut message = fields.clone();
    message.remove("images");
    message.remove("thinking");
    if let Some(name) = message.remove("tool_name") {
        message.insert("name".into(), name);
    }
    Ok(Value::Object(message))
}

fn refuse_images(key: &str, images: Option<&Value>) -> Result<(), ApiError> {
    match images {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key}: this server's models read text only, not images"
        ))),
    }
}

/// Ollama's answer to a request with nothing to generate, which clients send to load a model:
/// this one is always loaded.
fn loaded<'r>(shared: &Shared, kind: Kind) -> Result<Reply<'r>, ApiError> {
    let lines = Lines {
        kind,
        model: shared.info.facts.file_name.clone(),
        started: Instant::now(),
    };
    Reply::json(&Line {
        done_reason: Some("load"),
        ..lines.piece("", true)
    })
}

/// An Ollama request read into llama.cpp's field names.
struct Translated {
    fields: Fields,
    /// `num_predict: -2`: generate until the context is full.
    fill_context: bool,
}

impl Translated {
    fn read(shared: &Shared, request: &Fields) -> Result<Translated, ApiError> {
        let mut fields = Map::new();
        let mut fill_context = false;
        let options = match request.get("options") {
            None => Map::new(),
            Some(Value::Object(options)) => options.clone(),
            Some(_) => return Err(ApiError::bad_request("options must be an object")),
        };
        let known = Fields::from_map(options.clone());
        for (key, value) in options.into_iter().filter(|(_, v)| !v.is_null()) {
            let key = key.as_str();
            let unsupported = |what: &str| {
                Err(ApiError::bad_request(format!(
                    "options.{key} is not supported: {what}"
                )))
            };
            match key {
                _ if SAME_NAME.contains(&key) => {
                    fields.insert(key.to_string(), value);
                }
                _ if NO_EFFECT.contains(&key) => {}
                "num_predict" => match known.i64_in(key, -2..=i64::from(i32::MAX))? {
                    Some(-2) => fill_context = true,
                    _ => {
                        fields.insert("n_predict".into(), value);
                    }
                },
                "num_keep" => {
                    fields.insert("n_keep".into(), value);
                }
                "num_ctx" => {
                    let n_ctx = shared.config.n_ctx;
                    let asked = known.i64_in(key, 1..=i64::MAX)?.unwrap_or_default();
                    if asked > n_ctx as i64 {
                        return Err(ApiError::bad_request(format!(
                            "options.num_ctx is {asked}, more than the {n_ctx} tokens of this server's context; start it with -c {asked} to have them"
                        )));
                    }
                }
                "mirostat" if known.i64(key)? != Some(0) => {
                    return unsupported("this server samples without Mirostat");
                }
                "mirostat" | "mirostat_tau" | "mirostat_eta" => {}
                "tfs_z" | "typical_p" if known.f32(key)? != Some(1.0) => {
                    return unsupported("this server's sampler has no such step; leave it at 1");
                }
                "tfs_z" | "typical_p" => {}
                "penalize_newline" if known.bool(key)? == Some(false) => {
                    return unsupported("repeat_penalty applies to newlines as to any token");
                }
                "penalize_newline" => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "options.{key} is not an option this server knows"
                    )))
                }
            }
        }
        match request.get("format") {
            None => {}
            Some(Value::String(format)) if format.is_empty() => {}
            Some(Value::String(format)) if format == "json" => {
                fields.insert("grammar".into(), json!(json_schema::JSON_OBJECT_GRAMMAR));
            }
            Some(schema @ Value::Object(_)) => {
                fields.insert("json_schema".into(), schema.clone());
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "format must be \"json\" or a JSON schema object",
                ))
            }
        }
        if let Some(think) = request.get("think") {
            if think != &json!(false) {
                return Err(ApiError::bad_request(
                    "think is not supported: this server does not separate a model's thinking from its answer",
                ));
            }
        }
        let stream = request.bool("stream")?.unwrap_or(true);
        fields.insert("stream".into(), json!(stream));
        Ok(Translated {
            fields: Fields::from_map(fields),
            fill_context,
        })
    }

    fn set(&mut self, key: &str, value: Value) {
        self.fields.insert(key, value);
    }

    fn generation(
        mut self,
        shared: &Shared,
        prompt: Vec<u32>,
        stops: Vec<String>,
    ) -> Result<api::Prepared, ApiError> {
        if self.fill_context {
            let room = shared.config.n_ctx.saturating_sub(prompt.len());
            self.set("n_predict", json!(room));
        }
        shared.generation(&self.fields, prompt, &["n_predict"], stops)
    }
}

fn respond<'r>(
    shared: &'r Shared,
    kind: Kind,
    generation: api::Prepared,
    plan: Option<ToolPlan>,
    client: Client,
    started: Instant,
) -> Result<Reply<'r>, ApiError> {
    let stream = generation.stream;
    let events = shared.submit(generation.prompt, generation.settings, client)?;
    let lines = Lines {
        kind,
        model: shared.info.facts.file_name.clone(),
        started,
    };
    if let Some(plan) = plan {
        let done = move || -> Result<Value, ApiError> {
            let done = api::collect(events)?;
            Ok(lines.with_tools(&plan, &done))
        };
        if !stream {
            return Ok(Reply::Json(done()?));
        }
        return Ok(Reply::Lines(Box::new(move |out| {
            let last = done().unwrap_or_else(|error| error.to_plain_json());
            out.send(&last.to_string())
        })));
    }
    if !stream {
        let done = api::collect(events)?;
        return Reply::json(&lines.last(&done.content, &done.summary));
    }
    Ok(Reply::Lines(Box::new(move |out| {
        lines.stream(events, |line| out.send(&line.to_string()))
    })))
}

/// The objects of one reply.
struct Lines {
    kind: Kind,
    model: String,
    started: Instant,
}

/// One object of a reply: a piece of the text, or the last with the counts.
#[derive(Serialize)]
struct Line<'a> {
    model: &'a str,
    created_at: String,
    /// `/api/generate`'s text.
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<String>,
    /// `/api/chat`'s text or tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<LineMessage>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    counts: Option<Counts>,
}

#[derive(Serialize)]
struct LineMessage {
    role: &'static str,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<CallOut>>,
}

/// The last object's counts; durations in nanoseconds, as Ollama's.
#[derive(Serialize)]
struct Counts {
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
    prompt_eval_duration: u64,
    eval_count: usize,
    eval_duration: u64,
}

/// A tool call in Ollama's shape: the arguments as an object, not as JSON text.
#[derive(Serialize)]
struct CallOut {
    function: FunctionOut,
}

#[derive(Serialize)]
struct FunctionOut {
    name: String,
    arguments: Value,
}

impl Lines {
    fn piece(&self, text: &str, done: bool) -> Line<'_> {
        let (response, message) = match self.kind {
            Kind::Generate => (Some(text.to_string()), None),
            Kind::Chat => (
                None,
                Some(LineMessage {
                    role: "assistant",
                    content: text.to_string(),
                    tool_calls: None,
                }),
            ),
        };
        Line {
            model: &self.model,
            created_at: timestamp(SystemTime::now()),
            response,
            message,
            done,
            done_reason: None,
            counts: None,
        }
    }

    /// The object that ends a reply: `text` (all of it when not streamed) and the counts.
    fn last(&self, text: &str, summary: &Summary) -> Line<'_> {
        let nanos = |ms: f64| (ms * 1e6).round() as u64;
        Line {
            done_reason: Some(done_reason(summary)),
            counts: Some(Counts {
                total_duration: self.started.elapsed().as_nanos() as u64,
                load_duration: 0,
                prompt_eval_count: summary.tokens_evaluated,
                prompt_eval_duration: nanos(summary.prompt_ms),
                eval_count: summary.tokens_predicted,
                eval_duration: nanos(summary.predicted_ms),
            }),
            ..self.piece(text, true)
        }
    }

    fn stream(
        &self,
        events: Pending,
        mut send: impl FnMut(Value) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for event in events {
            match event {
                Event::Token { text, .. } if text.is_empty() => {}
                Event::Token { text, .. } => send(value(&self.piece(&text, false)))?,
                Event::Done(summary) => return send(value(&self.last("", &summary))),
                Event::Failed(message) => {
                    return send(ApiError::new(500, message).to_plain_json());
                }
            }
        }
        send(api::model_stopped().to_plain_json())
    }

    /// A chat answer under tools, whole: its calls with their arguments as objects, or its
    /// words.
    fn with_tools(&self, plan: &ToolPlan, done: &api::Collected) -> Value {
        let line = match plan.parse(&done.content) {
            Some(Answer::Calls(calls)) => {
                let calls = calls
                    .iter()
                    .map(|call| CallOut {
                        function: FunctionOut {
                            name: call.name.clone(),
                            arguments: serde_json::from_str(&call.arguments)
                                .unwrap_or_else(|_| Value::Object(Map::new())),
                        },
                    })
                    .collect();
                let mut line = self.last("", &done.summary);
                if let Some(message) = &mut line.message {
                    message.tool_calls = Some(calls);
                }
                line
            }
            Some(Answer::Text(text)) => self.last(&text, &done.summary),
            None => self.last(&done.content, &done.summary),
        };
        value(&line)
    }
}

/// A reply object as JSON: plain fields and maps with string keys, which always serialize.
fn value(line: &Line) -> Value {
    serde_json::to_value(line).expect("a reply object serializes")
}

fn done_reason(summary: &Summary) -> &'static str {
    if summary.stopped_limit {
        "length"
    } else {
        "stop"
    }
}

fn started(shared: &Shared) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(shared.started)
}

/// RFC 3339 in UTC with nanoseconds, as Ollama writes its times.
fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_nanos()
    )
}

#[derive(Serialize)]
struct Embedded<'a> {
    model: &'a str,
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
}

/// Ollama's `POST /api/embed`: `input` a text or a list of texts, each one unit-length vector;
/// `truncate` (default true) cuts a text longer than the context to fit, as Ollama does,
/// where false refuses it.
pub fn embed<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let started = Instant::now();
    let texts: Vec<&str> = match fields.get("input") {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str())
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad_request("input must be a string or a list of strings"))?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "input must be a string or a list of strings",
            ))
        }
        None => return Err(ApiError::bad_request("input is required")),
    };
    if texts.iter().any(|text| text.is_empty()) {
        return Err(ApiError::bad_request(
            "input holds an empty text: there is nothing to embed",
        ));
    }
    if texts.len() > embeddings::MAX_INPUTS {
        return Err(ApiError::bad_request(format!(
            "input holds {} texts; at most {} are embedded per request",
            texts.len(),
            embeddings::MAX_INPUTS
        )));
    }
    let n_embd = shared.info.n_embd;
    if let Some(dimensions) = fields.i64("dimensions")? {
        if dimensions != n_embd as i64 {
            return Err(ApiError::bad_request(format!(
                "dimensions {dimensions} cannot be had: this model's embeddings have {n_embd}"
            )));
        }
    }
    let truncate = fields.bool("truncate")?.unwrap_or(true);
    let n_ctx = shared.config.n_ctx;
    let mut inputs = texts
        .iter()
        .map(|text| shared.encode(text, true, true))
        .collect::<Result<Vec<_>, _>>()?;
    if truncate {
        inputs.iter_mut().for_each(|input| input.truncate(n_ctx));
    }
    let vectors = shared.embed(&inputs, embeddings::EUCLIDEAN, &client)?;
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    Reply::json(&Embedded {
        model: fields.str("model")?.unwrap_or(&shared.info.facts.file_name),
        embeddings: vectors,
        total_duration: started.elapsed().as_nanos() as u64,
        load_duration: 0,
        prompt_eval_count: tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc_3339_in_utc() {
        let at = |seconds: u64, nanos: u32| {
            timestamp(
                UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos.into()),
            )
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(at(1_786_107_723, 0), "2026-08-07T13:02:03.000000000Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000000000Z");
    }

    #[test]
    fn parameter_counts_read_as_ollama_writes_them() {
        assert_eq!(parameter_size(7_615_616_512), "7.6B");
        assert_eq!(parameter_size(268_098_176), "268.10M");
        assert_eq!(parameter_size(4_096), "4.10K");
        assert_eq!(parameter_size(12), "12");
    }
}
