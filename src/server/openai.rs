//! OpenAI's shapes: /v1/models, /v1/chat/completions and /v1/completions, streamed as chunks
//! that end with `data: [DONE]`, as OpenAI's clients expect.

use super::api::{self, Pending, Reply, Shared};
use super::http::{ApiError, Client};
use super::request::Fields;
use super::scheduler::{Event, Summary};
use crate::chat_format::{Message, Role};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn models(shared: &Shared) -> Value {
    json!({
        "object": "list",
        "data": [{
            "id": shared.info.name,
            "object": "model",
            "created": shared.started,
            "owned_by": "llmfile",
            "meta": {
                "architecture": shared.info.architecture,
                "n_ctx": shared.config.n_ctx,
                "n_vocab": shared.tokenizer.n_vocab(),
            },
        }],
    })
}

pub fn chat_completions<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let messages = messages(fields)?;
    let format = &shared.info.format;
    let text = format.render(&messages);
    // The rendered turns' markers are special tokens; llama.cpp's chat endpoint parses them too.
    let prompt = shared.encode(&text, true, true)?;
    let generation = shared.generation(
        fields,
        prompt,
        &["max_tokens", "max_completion_tokens", "n_predict"],
        format.stop_strings(),
    )?;
    let shape = Shape::Chat;
    respond(shared, shape, generation, fields, client)
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
    let parse_special = fields.bool("parse_special")?.unwrap_or(false);
    let prompt = shared.encode(&prompt, true, parse_special)?;
    let generation = shared.generation(fields, prompt, &["max_tokens", "n_predict"], Vec::new())?;
    respond(shared, Shape::Text, generation, fields, client)
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
) -> Result<Reply<'r>, ApiError> {
    if let Some(n) = fields.i64("n")? {
        if n != 1 {
            return Err(ApiError::bad_request(format!(
                "n must be 1: this server makes one choice per request, not {n}"
            )));
        }
    }
    let stream = generation.stream;
    let events = shared.submit(generation.prompt, generation.settings, client)?;
    let response = Response {
        shape,
        id: new_id(shape),
        created: now(),
        model: shared.info.name.clone(),
    };
    if !stream {
        let done = api::collect(events)?;
        return Ok(Reply::Json(response.whole(&done.content, &done.summary)));
    }
    Ok(Reply::Stream(Box::new(move |out| {
        response.stream(events, |chunk| out.send(&chunk.to_string()))?;
        out.send("[DONE]")
    })))
}

/// The messages of a chat request. Content may be a string or OpenAI's list of parts, of which
/// the text parts are read.
fn messages(fields: &Fields) -> Result<Vec<Message>, ApiError> {
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
            let role_name = item.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("messages[{index}].role must be a string"))
            })?;
            let role = Role::parse(role_name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "messages[{index}].role '{role_name}' is not system, user or assistant"
                ))
            })?;
            let content = match item.get("content") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                None | Some(Value::Null) => String::new(),
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "messages[{index}].content must be a string or an array of parts"
                    )))
                }
            };
            Ok(Message { role, content })
        })
        .collect()
}

struct Response {
    shape: Shape,
    id: String,
    created: u64,
    model: String,
}

impl Response {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.shape, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choice: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn whole(&self, content: &str, summary: &Summary) -> Value {
        let choice = match self.shape {
            Shape::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason(summary),
            }),
            Shape::Text => json!({
                "index": 0,
                "text": content,
                "logprobs": null,
                "finish_reason": finish_reason(summary),
            }),
        };
        let mut body = self.envelope(false, choice);
        body["usage"] = usage(summary);
        body["timings"] = api::timings(summary);
        body
    }

    fn delta(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        match self.shape {
            Shape::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if let Some(text) = text {
                    delta["content"] = json!(text);
                }
                json!({"index": 0, "delta": delta, "finish_reason": finish})
            }
            Shape::Text => json!({
                "index": 0,
                "text": text.unwrap_or_default(),
                "logprobs": null,
                "finish_reason": finish,
            }),
        }
    }

    fn stream(
        &self,
        events: Pending,
        mut send: impl FnMut(Value) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut first = true;
        for event in events {
            match event {
                Event::Token { text, .. } => {
                    if text.is_empty() {
                        continue;
                    }
                    send(self.envelope(true, self.delta(Some(&text), first, None)))?;
                    first = false;
                }
                Event::Done(summary) => {
                    let last = self.delta(None, first, Some(finish_reason(&summary)));
                    let mut chunk = self.envelope(true, last);
                    chunk["usage"] = usage(&summary);
                    chunk["timings"] = api::timings(&summary);
                    return send(chunk);
                }
                Event::Failed(message) => {
                    return send(ApiError::new(500, message).to_json());
                }
            }
        }
        send(api::model_stopped().to_json())
    }
}

fn finish_reason(summary: &Summary) -> &'static str {
    if summary.stopped_limit {
        "length"
    } else {
        "stop"
    }
}

fn usage(summary: &Summary) -> Value {
    json!({
        "prompt_tokens": summary.tokens_evaluated,
        "completion_tokens": summary.tokens_predicted,
        "total_tokens": summary.tokens_evaluated + summary.tokens_predicted,
    })
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
