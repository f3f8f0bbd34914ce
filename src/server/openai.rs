//! OpenAI's shapes: /v1/models, /v1/chat/completions and /v1/completions, streamed as chunks
//! that end with `data: [DONE]`, as OpenAI's clients expect.

use super::api::{self, Pending, Reply, Shared};
use super::http::{ApiError, Client, EventStream};
use super::infill;
use super::request::{schema_grammar, Fields};
use super::scheduler::{Event, Summary, TokenProbs};
use super::tools::{self, Answer, ToolCall, ToolPlan};
use crate::chat_format::{Message, Role};
use crate::chat_template::{ChatTemplate, Fitted};
use crate::grammar::Grammar;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: [ModelCard<'a>; 1],
}

#[derive(Serialize)]
struct ModelCard<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    meta: ModelMeta<'a>,
}

#[derive(Serialize)]
struct ModelMeta<'a> {
    architecture: &'a str,
    n_ctx: usize,
    n_vocab: usize,
}

pub fn models<'r>(shared: &'r Shared) -> Result<Reply<'r>, ApiError> {
    Reply::json(&ModelList {
        object: "list",
        data: [ModelCard {
            id: &shared.info.name,
            object: "model",
            created: shared.started,
            owned_by: "llmfile",
            meta: ModelMeta {
                architecture: &shared.info.architecture,
                n_ctx: shared.config.n_ctx,
                n_vocab: shared.tokenizer.n_vocab(),
            },
        }],
    })
}

/// A chat's prompt, as `/v1/chat/completions` and `/apply-template` build it.
pub struct ChatPrompt {
    pub fitted: Fitted,
    pub plan: Option<ToolPlan>,
}

const LIMIT_KEYS: [&str; 3] = ["max_tokens", "max_completion_tokens", "n_predict"];

/// The request's messages through `template`, with the tools' instructions when it has tools,
/// its oldest turns dropped as the context needs.
pub fn chat_prompt(
    shared: &Shared,
    fields: &Fields,
    template: &ChatTemplate,
) -> Result<ChatPrompt, ApiError> {
    let mut messages = messages(fields)?;
    let plan = ToolPlan::from_request(
        fields.get("tools"),
        fields.get("tool_choice"),
        fields.bool("parallel_tool_calls")?,
    )?;
    if let Some(plan) = &plan {
        if fields.grammar()?.is_some() {
            return Err(ApiError::bad_request(
                "tools cannot be combined with grammar, json_schema or response_format: the tools' schema constrains the answer",
            ));
        }
        match messages.first_mut() {
            Some(first) if first.role == Role::System => {
                first.content = format!("{}\n\n{}", first.content, plan.instructions());
            }
            _ => messages.insert(
                0,
                Message {
                    role: Role::System,
                    content: plan.instructions(),
                },
            ),
        }
    }
    let fitted = match native_tool_messages(fields, plan.as_ref())? {
        Some((raw, roles)) if template.knows_tools() => {
            let reserve = shared.reserve(fields, &LIMIT_KEYS)?;
            let tools = plan.as_ref().and(fields.get("tools"));
            template
                .fit_with_tools(
                    shared.tokenizer,
                    &raw,
                    &roles,
                    tools,
                    shared.config.n_ctx,
                    reserve,
                )
                .map_err(api::template_error)?
        }
        _ => shared.fit_chat(template, fields, &messages, &LIMIT_KEYS)?,
    };
    Ok(ChatPrompt { fitted, plan })
}

pub fn chat_completions<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let ChatPrompt { fitted, plan } = chat_prompt(shared, fields, &shared.info.template)?;
    let limit_keys = LIMIT_KEYS;
    let mut generation = shared.generation(
        fields,
        fitted.tokens,
        &limit_keys,
        shared.info.template.stop_strings(),
    )?;
    if let Some(plan) = &plan {
        let grammar = schema_grammar("tools", &plan.schema())?;
        generation.settings.grammar = Some(
            Grammar::parse(&grammar).map_err(|e| ApiError::bad_request(format!("tools: {e}")))?,
        );
    }
    let dropped_turns = Some(fitted.dropped_turns);
    respond(
        shared,
        Shape::Chat,
        generation,
        fields,
        client,
        plan,
        dropped_turns,
    )
}

pub fn completions<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let prompt = match fields.get("prompt") {
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::String(text)) => text.clone(),
        Some(_) => return Err(ApiError::bad_request("prompt must be a string")),
        None => return Err(ApiError::bad_request("prompt is required")),
    };
    // With a suffix the completion is what goes between the prompt and it, asked for in the
    // model's fill-in-the-middle format.
    let prompt = match fields.str("suffix")? {
        Some(suffix) => infill::completion_prompt(shared, fields, &prompt, suffix)?,
        None => {
            let parse_special = fields.bool("parse_special")?.unwrap_or(false);
            shared.encode(&prompt, true, parse_special)?
        }
    };
    let generation = shared.generation(fields, prompt, &["max_tokens", "n_predict"], Vec::new())?;
    respond(shared, Shape::Text, generation, fields, client, None, None)
}

#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Text,
}

fn respond<'r>(
    shared: &'r Shared,
    shape: Shape,
    generation: api::Prepared,
    fields: &Fields,
    client: Client,
    plan: Option<ToolPlan>,
    dropped_turns: Option<usize>,
) -> Result<Reply<'r>, ApiError> {
    if let Some(n) = fields.i64("n")? {
        if n != 1 {
            return Err(ApiError::bad_request(format!(
                "n must be 1: this server makes one choice per request, not {n}"
            )));
        }
    }
    let mut generation = generation;
    let logprobs = Logprobs::asked(fields, shape)?;
    if plan.is_some() && logprobs.is_some() {
        return Err(ApiError::bad_request(
            "logprobs are not given for tool calls; ask for one or the other",
        ));
    }
    generation.settings.n_probs = logprobs.map_or(0, |top| top.max(1));
    let include_usage = match fields.get("stream_options") {
        None => false,
        Some(Value::Object(options)) => Fields::from_map(options.clone())
            .bool("include_usage")
            .map_err(|e| ApiError::bad_request(format!("stream_options.{}", e.message)))?
            .unwrap_or(false),
        Some(_) => return Err(ApiError::bad_request("stream_options must be an object")),
    };
    let stream = generation.stream;
    let events = shared.submit(generation.prompt, generation.settings, client)?;
    let response = Response {
        shape,
        id: new_id(shape),
        created: now(),
        model: shared.info.name.clone(),
        dropped_turns,
        logprobs,
        include_usage,
    };
    if let Some(plan) = plan {
        return response.with_tools(plan, events, stream);
    }
    if !stream {
        let done = api::collect(events)?;
        return Reply::json(&response.whole(&done.content, &done.probs, &done.summary));
    }
    Ok(Reply::Stream(Box::new(move |out| {
        response.stream(events, out)?;
        out.send("[DONE]")
    })))
}

/// The messages of a chat request. Content may be a string or OpenAI's list of parts, of which
/// the text parts are read.
pub fn messages(fields: &Fields) -> Result<Vec<Message>, ApiError> {
    let items = match fields.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(ApiError::bad_request("messages is empty")),
        Some(_) => return Err(ApiError::bad_request("messages must be an array")),
        None => return Err(ApiError::bad_request("messages is required")),
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let content = message_content(index, item)?;
            if let Some(message) = tools::message_with_tools(index, item, content.clone())? {
                return Ok(message);
            }
            let role_name = item.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("messages[{index}].role must be a string"))
            })?;
            let role = Role::parse(role_name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "messages[{index}].role '{role_name}' is not system, user, assistant or tool"
                ))
            })?;
            Ok(Message { role, content })
        })
        .collect()
}

/// OpenAI's messages as they came, and each one's place in the turns.
type NativeMessages = (Vec<Value>, Vec<Role>);

/// The request's messages as a template that knows tools wants them, with each one's place in
/// the turns; None when the conversation has no tools and no tool messages, which every
/// template renders alike. Each message's text is read as for any chat, the arguments of
/// earlier calls become objects (OpenAI sends them as JSON text; templates write them out
/// with `tojson`), and the tools' instructions join the system text.
fn native_tool_messages(
    fields: &Fields,
    plan: Option<&ToolPlan>,
) -> Result<Option<NativeMessages>, ApiError> {
    let Some(Value::Array(items)) = fields.get("messages") else {
        return Ok(None);
    };
    let has_tool_messages = items.iter().any(|m| {
        m.get("role").and_then(Value::as_str) == Some("tool")
            || m.get("tool_calls").is_some_and(|c| !c.is_null())
    });
    if plan.is_none() && !has_tool_messages {
        return Ok(None);
    }
    let mut raw = Vec::with_capacity(items.len() + 1);
    let mut roles = Vec::with_capacity(items.len() + 1);
    for (index, item) in items.iter().enumerate() {
        let mut message = item.clone();
        let role = match item.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            // A tool's result is the assistant's side of the exchange, not a new turn.
            Some("assistant" | "tool") => Role::Assistant,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "messages[{index}].role is not system, user, assistant or tool"
                )))
            }
        };
        if role == Role::System {
            message["role"] = json!("system");
        }
        message["content"] = json!(message_content(index, item)?);
        if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
            for call in calls {
                if let Some(Value::String(text)) = call.pointer("/function/arguments").cloned() {
                    if let Ok(arguments) = serde_json::from_str::<Value>(&text) {
                        call["function"]["arguments"] = arguments;
                    }
                }
            }
        }
        raw.push(message);
        roles.push(role);
    }
    if let Some(plan) = plan {
        match raw.first_mut() {
            Some(first) if roles[0] == Role::System => {
                let text = first["content"].as_str().unwrap_or_default().to_string();
                first["content"] = json!(format!("{text}\n\n{}", plan.instructions()));
            }
            _ => {
                raw.insert(0, json!({"role": "system", "content": plan.instructions()}));
                roles.insert(0, Role::System);
            }
        }
    }
    Ok(Some((raw, roles)))
}

/// A message's text: a string or OpenAI's list of parts, of which the text parts are read.
fn message_content(index: usize, item: &Value) -> Result<String, ApiError> {
    match item.get("content") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(ApiError::bad_request(format!(
            "messages[{index}].content must be a string or an array of parts"
        ))),
    }
}

struct Response {
    shape: Shape,
    id: String,
    created: u64,
    model: String,
    /// Chat only: how many of the oldest turns were left out to fit the context (our field).
    dropped_turns: Option<usize>,
    /// How many alternatives to give beside each token's log-probability; None: no logprobs.
    logprobs: Option<usize>,
    /// `stream_options.include_usage`: a stream ends with a chunk of the usage alone.
    include_usage: bool,
}

/// A whole reply, or one chunk of a streamed one.
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_turns: Option<usize>,
    /// A whole reply's, and a stream's last chunk's.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<api::Timings>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Choice<'a> {
    /// A whole chat reply.
    Message {
        index: usize,
        message: ChatMessage<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        logprobs: Option<ChatLogprobs>,
        finish_reason: &'static str,
    },
    /// A streamed piece of a chat reply.
    Delta {
        index: usize,
        delta: Delta<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<&'static str>,
    },
    /// A text completion, whole or streamed.
    Text {
        index: usize,
        text: &'a str,
        /// Null unless the request asked for them.
        logprobs: Option<TextLogprobs>,
        finish_reason: Option<&'static str>,
    },
}

/// A chat's `logprobs`: each token's, with the likeliest alternatives.
#[derive(Serialize)]
struct ChatLogprobs {
    content: Vec<TokenLogprob>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct TokenLogprob {
    token: String,
    logprob: f32,
    bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<Vec<TokenLogprob>>,
}

/// A text completion's `logprobs`, in the legacy completions shape.
#[derive(Serialize)]
struct TextLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top_logprobs: Vec<serde_json::Map<String, Value>>,
    text_offset: Vec<usize>,
}

/// Reading `logprobs` / `top_logprobs` (chat) or `logprobs: N` (completions); llama.cpp's
/// `n_probs` asks for the same on both.
struct Logprobs;

impl Logprobs {
    /// How many alternatives per token the request wants, None for no log-probabilities.
    fn asked(fields: &Fields, shape: Shape) -> Result<Option<usize>, ApiError> {
        const MOST: i64 = 20;
        let n_probs = fields.i64_in("n_probs", 0..=MOST)?;
        let asked = match shape {
            Shape::Chat => {
                let top = fields.i64_in("top_logprobs", 0..=MOST)?;
                match (fields.bool("logprobs")?, top) {
                    (Some(true), top) => Some(top.unwrap_or(0)),
                    (_, Some(_)) => {
                        return Err(ApiError::bad_request("top_logprobs needs logprobs: true"))
                    }
                    _ => None,
                }
            }
            Shape::Text => fields.i64_in("logprobs", 0..=MOST)?,
        };
        Ok(asked.or(n_probs.filter(|&n| n > 0)).map(|n| n as usize))
    }

    fn chat(probs: &[TokenProbs], top: usize) -> ChatLogprobs {
        let entry = |token: &[u8], logprob: f32| TokenLogprob {
            token: String::from_utf8_lossy(token).into_owned(),
            logprob,
            bytes: token.to_vec(),
            top_logprobs: None,
        };
        ChatLogprobs {
            content: probs
                .iter()
                .map(|p| TokenLogprob {
                    top_logprobs: Some(
                        p.probs[..top.min(p.probs.len())]
                            .iter()
                            .map(|c| entry(&c.bytes, c.logprob))
                            .collect(),
                    ),
                    ..entry(&p.bytes, p.logprob)
                })
                .collect(),
            refusal: None,
        }
    }

    /// `offset`: where the first token's text starts in the whole completion.
    fn text(probs: &[TokenProbs], top: usize, offset: usize) -> TextLogprobs {
        let mut at = offset;
        let mut text_offset = Vec::with_capacity(probs.len());
        for p in probs {
            text_offset.push(at);
            at += p.content.len();
        }
        TextLogprobs {
            tokens: probs.iter().map(|p| p.content.clone()).collect(),
            token_logprobs: probs.iter().map(|p| p.logprob).collect(),
            top_logprobs: probs
                .iter()
                .map(|p| {
                    p.probs[..top.min(p.probs.len())]
                        .iter()
                        .map(|c| (c.tok_str.clone(), Value::from(c.logprob)))
                        .collect()
                })
                .collect(),
            text_offset,
        }
    }
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    /// Null when the answer is tool calls.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<CallOut<'a>>>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// Absent, or null beside the first of a stream's tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[CallOut<'a>; 1]>,
}

/// A tool call in OpenAI's shape. Streamed, each call carries its index and comes in two
/// chunks: its id and name, then its arguments alone.
#[derive(Serialize)]
struct CallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl<'a> CallOut<'a> {
    fn whole(call: &'a ToolCall) -> CallOut<'a> {
        CallOut {
            index: None,
            id: Some(&call.id),
            kind: Some("function"),
            function: FunctionOut {
                name: Some(&call.name),
                arguments: &call.arguments,
            },
        }
    }

    fn opening(call: &'a ToolCall, index: usize) -> CallOut<'a> {
        CallOut {
            index: Some(index),
            function: FunctionOut {
                name: Some(&call.name),
                arguments: "",
            },
            ..CallOut::whole(call)
        }
    }

    fn arguments(call: &'a ToolCall, index: usize) -> CallOut<'a> {
        CallOut {
            index: Some(index),
            id: None,
            kind: None,
            function: FunctionOut {
                name: None,
                arguments: &call.arguments,
            },
        }
    }
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

impl Response {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.shape, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
        }
    }

    fn envelope<'a>(&'a self, chunk: bool, choice: Choice<'a>) -> Envelope<'a> {
        Envelope {
            id: &self.id,
            object: self.object(chunk),
            created: self.created,
            model: &self.model,
            choices: vec![choice],
            dropped_turns: self.dropped_turns,
            usage: None,
            timings: None,
        }
    }

    /// A whole reply, or a stream's last chunk: the choice with the usage and timings.
    fn last<'a>(&'a self, chunk: bool, choice: Choice<'a>, summary: &Summary) -> Envelope<'a> {
        Envelope {
            usage: Some(usage(summary)),
            timings: Some(api::timings(summary)),
            ..self.envelope(chunk, choice)
        }
    }

    fn whole<'a>(
        &'a self,
        content: &'a str,
        probs: &[TokenProbs],
        summary: &Summary,
    ) -> Envelope<'a> {
        let finish_reason = finish_reason(summary);
        let choice = match self.shape {
            Shape::Chat => Choice::Message {
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content: Some(content),
                    tool_calls: None,
                },
                logprobs: self.logprobs.map(|top| Logprobs::chat(probs, top)),
                finish_reason,
            },
            Shape::Text => Choice::Text {
                index: 0,
                text: content,
                logprobs: self.logprobs.map(|top| Logprobs::text(probs, top, 0)),
                finish_reason: Some(finish_reason),
            },
        };
        self.last(false, choice, summary)
    }

    /// A streamed piece: `probs` are those of the tokens whose text it carries (held-back
    /// text, such as a possible stop string, comes later with its tokens' probabilities),
    /// `offset` where its text starts in the whole completion.
    fn delta<'a>(
        &self,
        text: Option<&'a str>,
        probs: &[TokenProbs],
        offset: usize,
        first: bool,
        finish_reason: Option<&'static str>,
    ) -> Choice<'a> {
        match self.shape {
            Shape::Chat => Choice::Delta {
                index: 0,
                delta: Delta {
                    role: first.then_some("assistant"),
                    content: text.map(Some),
                    tool_calls: None,
                },
                logprobs: self
                    .logprobs
                    .filter(|_| !probs.is_empty())
                    .map(|top| Logprobs::chat(probs, top)),
                finish_reason,
            },
            Shape::Text => Choice::Text {
                index: 0,
                text: text.unwrap_or_default(),
                logprobs: self.logprobs.map(|top| Logprobs::text(probs, top, offset)),
                finish_reason,
            },
        }
    }

    fn stream(&self, events: Pending, out: &mut EventStream) -> std::io::Result<()> {
        let mut first = true;
        let mut held: Vec<TokenProbs> = Vec::new();
        let mut offset = 0;
        for event in events {
            match event {
                Event::Token { text, probs, .. } => {
                    held.extend(probs);
                    if text.is_empty() {
                        continue;
                    }
                    let piece = self.delta(Some(&text), &held, offset, first, None);
                    out.send_json(&self.envelope(true, piece))?;
                    offset += text.len();
                    held.clear();
                    first = false;
                }
                Event::Done(summary) => {
                    let finish = Some(finish_reason(&summary));
                    let last = self.delta(None, &held, offset, first, finish);
                    if !self.include_usage {
                        return out.send_json(&self.last(true, last, &summary));
                    }
                    out.send_json(&self.envelope(true, last))?;
                    return out.send_json(&self.usage_chunk(&summary));
                }
                Event::Failed(message) => {
                    return out.send(&ApiError::new(500, message).to_json().to_string());
                }
            }
        }
        out.send(&api::model_stopped().to_json().to_string())
    }

    /// `stream_options.include_usage`'s last chunk: no choice, the usage and timings.
    fn usage_chunk(&self, summary: &Summary) -> Envelope<'_> {
        Envelope {
            choices: Vec::new(),
            usage: Some(usage(summary)),
            timings: Some(api::timings(summary)),
            ..self.envelope(true, self.delta(None, &[], 0, false, None))
        }
    }

    /// A chunk of a chat reply under tools.
    fn tool_chunk<'a>(&'a self, delta: Delta<'a>) -> Envelope<'a> {
        let choice = Choice::Delta {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: None,
        };
        self.envelope(true, choice)
    }
}

impl Response {
    /// A chat reply under tools: the answer is known only once its JSON is whole, so a stream
    /// sends it at the end, in OpenAI's chunks (the call with its name, then its arguments).
    fn with_tools<'r>(
        self,
        plan: ToolPlan,
        events: Pending,
        stream: bool,
    ) -> Result<Reply<'r>, ApiError> {
        let answer = move |done: &api::Collected| match plan.parse(&done.content) {
            Some(answer) => answer,
            None => Answer::Text(done.content.clone()),
        };
        if !stream {
            let done = api::collect(events)?;
            let answer = answer(&done);
            let (content, tool_calls, finish_reason) = match &answer {
                Answer::Calls(calls) => (
                    None,
                    Some(calls.iter().map(CallOut::whole).collect()),
                    "tool_calls",
                ),
                Answer::Text(text) => (Some(text.as_str()), None, finish_reason(&done.summary)),
            };
            let choice = Choice::Message {
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content,
                    tool_calls,
                },
                logprobs: None,
                finish_reason,
            };
            return Reply::json(&self.last(false, choice, &done.summary));
        }
        Ok(Reply::Stream(Box::new(move |out| {
            let done = match api::collect(events) {
                Ok(done) => done,
                Err(error) => return out.send(&error.to_json().to_string()),
            };
            let answer = answer(&done);
            let finish = match &answer {
                Answer::Calls(calls) => {
                    for (index, call) in calls.iter().enumerate() {
                        let first = index == 0;
                        let opening = Delta {
                            role: first.then_some("assistant"),
                            content: first.then_some(None),
                            tool_calls: Some([CallOut::opening(call, index)]),
                        };
                        out.send_json(&self.tool_chunk(opening))?;
                        let arguments = Delta {
                            tool_calls: Some([CallOut::arguments(call, index)]),
                            ..Delta::default()
                        };
                        out.send_json(&self.tool_chunk(arguments))?;
                    }
                    "tool_calls"
                }
                Answer::Text(text) => {
                    let whole = Delta {
                        role: Some("assistant"),
                        content: Some(Some(text)),
                        tool_calls: None,
                    };
                    out.send_json(&self.tool_chunk(whole))?;
                    finish_reason(&done.summary)
                }
            };
            let last = Choice::Delta {
                index: 0,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(finish),
            };
            out.send_json(&self.last(true, last, &done.summary))?;
            out.send("[DONE]")
        })))
    }
}

fn finish_reason(summary: &Summary) -> &'static str {
    if summary.stopped_limit {
        "length"
    } else {
        "stop"
    }
}

fn usage(summary: &Summary) -> Usage {
    Usage {
        prompt_tokens: summary.tokens_evaluated,
        completion_tokens: summary.tokens_predicted,
        total_tokens: summary.tokens_evaluated + summary.tokens_predicted,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Ids unique within this server's life, which is all clients use them for.
fn new_id(shape: Shape) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = match shape {
        Shape::Chat => "chatcmpl",
        Shape::Text => "cmpl",
    };
    format!(
        "{prefix}-{}-{}",
        now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
