//! OpenAI's tool calls on `/v1/chat/completions`, in a generic form any model can follow (as
//! llama.cpp's "generic" tool format): the tools are described in the system turn and the
//! answer is JSON, held to a schema by the grammar: `{"tool_calls": [{"name": ..., "arguments":
//! {...}}]}` to call, or `{"response": "..."}` to answer in words. A template that knows tools
//! renders the tools, earlier calls and their results itself; for any other, they are written
//! back into the conversation in the same JSON.

use super::http::ApiError;
use crate::chat_format::{Message, Role};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a request's `tools`, `tool_choice` and `parallel_tool_calls` ask for.
pub struct ToolPlan {
    functions: Vec<Value>,
    /// `required` or a named function: the answer must be calls.
    calls_only: bool,
    parallel: bool,
}

/// A call the model made, as OpenAI reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// What the model answered under a plan.
pub enum Answer {
    Calls(Vec<ToolCall>),
    Text(String),
}

impl ToolPlan {
    /// None when the request has no tools or `tool_choice` is `none`.
    pub fn from_request(
        tools: Option<&Value>,
        tool_choice: Option<&Value>,
        parallel: Option<bool>,
    ) -> Result<Option<ToolPlan>, ApiError> {
        let tools = match tools {
            None => return Ok(None),
            Some(Value::Array(tools)) => tools,
            Some(_) => return Err(ApiError::bad_request("tools must be an array")),
        };
        let mut functions = Vec::with_capacity(tools.len());
        for (index, tool) in tools.iter().enumerate() {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::bad_request(format!(
                    "tools[{index}].type must be \"function\", the only kind of tool there is"
                )));
            }
            let function = tool
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("tools[{index}].function must be an object"))
                })?;
            match function.get("name").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "tools[{index}].function.name must be a non-empty string"
                    )))
                }
            }
            functions.push(function.clone());
        }
        let name_of = |f: &Value| f["name"].as_str().unwrap_or_default().to_string();
        let calls_only = match tool_choice {
            None => false,
            Some(Value::String(choice)) => match choice.as_str() {
                "auto" => false,
                "none" => return Ok(None),
                "required" => true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "tool_choice must be auto, none, required or a function, not {other:?}"
                    )))
                }
            },
            Some(choice) => {
                let name = choice
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "tool_choice must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                        )
                    })?;
                functions.retain(|f| name_of(f) == name);
                if functions.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "tool_choice names the function {name:?}, which is not among the tools"
                    )));
                }
                true
            }
        };
        if functions.is_empty() {
            return if calls_only {
                Err(ApiError::bad_request(
                    "tool_choice is required but tools is empty",
                ))
            } else {
                Ok(None)
            };
        }
        Ok(Some(ToolPlan {
            functions,
            calls_only,
            parallel: parallel.unwrap_or(true),
        }))
    }

    /// The JSON schema every answer meets.
    pub fn schema(&self) -> Value {
        let calls: Vec<Value> = self
            .functions
            .iter()
            .map(|f| {
                let parameters = match f.get("parameters") {
                    Some(p) if p.is_object() => p.clone(),
                    _ => json!({"type": "object", "properties": {}}),
                };
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f["name"]}, "arguments": parameters},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut list = json!({"type": "array", "items": {"anyOf": calls}, "minItems": 1});
        if !self.parallel {
            list["maxItems"] = json!(1);
        }
        let calling = json!({
            "type": "object",
            "properties": {"tool_calls": list},
            "required": ["tool_calls"],
            "additionalProperties": false,
        });
        if self.calls_only {
            return calling;
        }
        json!({"anyOf": [calling, {
            "type": "object",
            "properties": {"response": {"type": "string"}},
            "required": ["response"],
            "additionalProperties": false,
        }]})
    }

    /// The instructions that go into the system turn.
    pub fn instructions(&self) -> String {
        let tools: Vec<Value> = self
            .functions
            .iter()
            .map(|f| {
                json!({
                    "name": f["name"],
                    "description": f.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": f.get("parameters").cloned().unwrap_or(json!({})),
                })
            })
            .collect();
        let how = if self.calls_only {
            "Answer with JSON that calls tools: {\"tool_calls\": [{\"name\": ..., \"arguments\": {...}}]}."
        } else {
            "Answer with JSON: {\"tool_calls\": [{\"name\": ..., \"arguments\": {...}}]} to call tools, or {\"response\": \"...\"} to answer the user directly."
        };
        format!(
            "You can call these tools:\n{}\n{how}",
            serde_json::to_string_pretty(&tools).unwrap_or_default()
        )
    }

    /// The answer in the text the grammar allowed; None when the text is cut short (the
    /// token limit came first) and so is no answer.
    pub fn parse(&self, text: &str) -> Option<Answer> {
        let answer: Value = serde_json::from_str(text).ok()?;
        if let Some(response) = answer.get("response").and_then(Value::as_str) {
            return Some(Answer::Text(response.to_string()));
        }
        let calls = answer.get("tool_calls")?.as_array()?;
        calls
            .iter()
            .map(|call| {
                Some(ToolCall {
                    id: new_call_id(),
                    name: call.get("name")?.as_str()?.to_string(),
                    arguments: call.get("arguments")?.to_string(),
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(Answer::Calls)
    }
}

/// An assistant message that called tools, or a tool's result, as the conversation shows it to
/// the model: the same JSON it answers in.
pub fn message_with_tools(
    index: usize,
    item: &Value,
    content: String,
) -> Result<Option<Message>, ApiError> {
    let role = item.get("role").and_then(Value::as_str);
    if role == Some("tool") {
        let mut response = json!({"content": content});
        for key in ["tool_call_id", "name"] {
            if let Some(value) = item.get(key).filter(|v| v.is_string()) {
                response[key] = value.clone();
            }
        }
        return Ok(Some(Message {
            role: Role::User,
            content: json!({"tool_response": response}).to_string(),
        }));
    }
    let Some(calls) = item.get("tool_calls").filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let wrong = || {
        ApiError::bad_request(format!(
            "messages[{index}].tool_calls must be a list of {{\"function\": {{\"name\": ..., \"arguments\": ...}}}}"
        ))
    };
    let calls = calls.as_array().ok_or_else(wrong)?;
    let mut written = Vec::with_capacity(calls.len());
    for call in calls {
        let function = call.get("function").ok_or_else(wrong)?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(wrong)?;
        // OpenAI sends the arguments as JSON text; the model wrote them as an object.
        let arguments = match function.get("arguments") {
            Some(Value::String(text)) => {
                serde_json::from_str(text).unwrap_or(Value::String(text.clone()))
            }
            Some(other) => other.clone(),
            None => json!({}),
        };
        written.push(json!({"name": name, "arguments": arguments}));
    }
    Ok(Some(Message {
        role: Role::Assistant,
        content: json!({"tool_calls": written}).to_string(),
    }))
}

fn new_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    format!("call_{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(choice: Value, parallel: Option<bool>) -> Result<Option<ToolPlan>, ApiError> {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time"}},
        ]);
        let choice = (!choice.is_null()).then_some(choice);
        ToolPlan::from_request(Some(&tools), choice.as_ref(), parallel)
    }

    #[test]
    fn tool_choice_shapes_the_answer() {
        let auto = plan(Value::Null, None).unwrap().unwrap();
        assert!(auto.schema()["anyOf"].is_array(), "auto: calls or words");
        let required = plan(json!("required"), Some(false)).unwrap().unwrap();
        assert_eq!(required.schema()["properties"]["tool_calls"]["maxItems"], 1);
        assert_eq!(
            required.schema()["properties"]["tool_calls"]["items"]["anyOf"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let named = plan(
            json!({"type": "function", "function": {"name": "get_time"}}),
            None,
        )
        .unwrap()
        .unwrap();
        let items = &named.schema()["properties"]["tool_calls"]["items"]["anyOf"];
        assert_eq!(items.as_array().unwrap().len(), 1);
        assert_eq!(items[0]["properties"]["name"]["const"], "get_time");
        assert!(plan(json!("none"), None).unwrap().is_none());
        for bad in [
            json!("sometimes"),
            json!({"type": "function", "function": {"name": "nope"}}),
            json!(3),
        ] {
            assert_eq!(plan(bad, None).err().map(|e| e.status), Some(400));
        }
        let not_function = json!([{"type": "retrieval"}]);
        assert!(ToolPlan::from_request(Some(&not_function), None, None).is_err());
    }

    #[test]
    fn answers_become_calls_or_text() {
        let auto = plan(Value::Null, None).unwrap().unwrap();
        let Some(Answer::Calls(calls)) = auto
            .parse(r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}"#)
        else {
            panic!("a call");
        };
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert!(calls[0].id.starts_with("call_"));
        assert!(matches!(auto.parse(r#"{"response": "Hi"}"#), Some(Answer::Text(t)) if t == "Hi"));
        assert!(auto.parse(r#"{"tool_calls": [{"name": "get_wea"#).is_none());
    }

    #[test]
    fn earlier_calls_and_results_are_written_back() {
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]});
        let message = message_with_tools(1, &call, String::new())
            .unwrap()
            .unwrap();
        assert_eq!(message.role, Role::Assistant);
        assert_eq!(
            message.content,
            r#"{"tool_calls":[{"name":"get_time","arguments":{}}]}"#
        );
        let result = json!({"role": "tool", "tool_call_id": "call_1", "content": "noon"});
        let message = message_with_tools(2, &result, "noon".into())
            .unwrap()
            .unwrap();
        assert_eq!(message.role, Role::User);
        assert_eq!(
            message.content,
            r#"{"tool_response":{"content":"noon","tool_call_id":"call_1"}}"#
        );
        let plain = json!({"role": "user", "content": "hi"});
        assert!(message_with_tools(0, &plain, "hi".into())
            .unwrap()
            .is_none());
    }
}
