//! Reading request fields. Every field is checked for its type and range by name, so a bad
//! request gets a 400 that says which field is wrong and why.

use super::http::ApiError;
use crate::grammar::{json_schema, Grammar};
use crate::sampling::SamplingParams;
use crate::speculative;
use crate::tokenizer::Tokenizer;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The top-level object of a JSON request body.
#[derive(Debug)]
pub struct Fields(Map<String, Value>);

impl Fields {
    pub fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(Fields(map)),
            _ => Err(ApiError::bad_request("the body must be a JSON object")),
        }
    }

    /// Fields built by the server itself, as when another API's request is read into these
    /// names.
    pub fn from_map(map: Map<String, Value>) -> Fields {
        Fields(map)
    }

    pub fn insert(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_string(), value);
    }

    /// The field's value; `null` counts as absent, as OpenAI clients send it for unset fields.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn f32(&self, key: &str) -> Result<Option<f32>, ApiError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| wrong_type(key, "a number", v))
            })
            .transpose()
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.as_i64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|x| x.fract() == 0.0 && x.abs() < 1e15)
                            .map(|x| x as i64)
                    })
                    .ok_or_else(|| wrong_type(key, "an integer", v))
            })
            .transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| wrong_type(key, "true or false", v))
            })
            .transpose()
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>, ApiError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| wrong_type(key, "a string", v)))
            .transpose()
    }

    /// A string or an array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| wrong_type(key, "a string or an array of strings", item))
                })
                .collect(),
            Some(other) => Err(wrong_type(key, "a string or an array of strings", other)),
        }
    }

    /// An integer within `range`, naming the range when it is not.
    pub fn i64_in(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.i64(key)? {
            Some(n) if !range.contains(&n) => Err(ApiError::bad_request(format!(
                "{key} must be between {} and {}, not {n}",
                range.start(),
                range.end()
            ))),
            other => Ok(other),
        }
    }

    pub fn f32_in(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<f32>,
    ) -> Result<Option<f32>, ApiError> {
        match self.f32(key)? {
            Some(x) if !range.contains(&x) => Err(ApiError::bad_request(format!(
                "{key} must be between {} and {}, not {x}",
                range.start(),
                range.end()
            ))),
            other => Ok(other),
        }
    }

    /// The sampling fields shared by every generation endpoint, over the server's defaults.
    /// `n_ctx` bounds `repeat_last_n` (-1 means the whole context, as in llama.cpp).
    pub fn sampling(
        &self,
        defaults: &SamplingParams,
        n_ctx: usize,
    ) -> Result<SamplingParams, ApiError> {
        let mut params = defaults.clone();
        if let Some(t) = self.f32_in("temperature", 0.0..=100.0)? {
            params.temperature = t;
        }
        if let Some(k) = self.i64_in("top_k", -1..=i64::from(u32::MAX))? {
            params.top_k = k.max(0) as usize;
        }
        if let Some(p) = self.f32_in("top_p", 0.0..=1.0)? {
            params.top_p = p;
        }
        if let Some(p) = self.f32_in("min_p", 0.0..=1.0)? {
            params.min_p = p;
        }
        if let Some(p) = self.f32_in("repeat_penalty", 0.0..=100.0)? {
            params.repeat_penalty = p;
        }
        if let Some(n) = self.i64_in("repeat_last_n", -1..=i64::from(u32::MAX))? {
            params.repeat_last_n = usize::try_from(n).map_or(n_ctx, |n| n.min(n_ctx));
        }
        if let Some(p) = self.f32_in("frequency_penalty", -100.0..=100.0)? {
            params.frequency_penalty = p;
        }
        if let Some(p) = self.f32_in("presence_penalty", -100.0..=100.0)? {
            params.presence_penalty = p;
        }
        if let Some(seed) = self.i64_in("seed", -1..=i64::from(u32::MAX))? {
            params.seed = u64::try_from(seed).unwrap_or_else(|_| random_seed());
        }
        Ok(params)
    }
}

/// Fields of OpenAI's and llama.cpp's generation requests that would change the output and
/// that this server does not honour, each with the value that changes nothing (which is
/// accepted). Anything else here is refused by name rather than silently ignored.
const UNHONOURED: &[(&str, Neutral)] = &[
    ("echo", Neutral::False),
    ("best_of", Neutral::One),
    ("functions", Neutral::Absent),
    ("function_call", Neutral::Absent),
    ("audio", Neutral::Absent),
    ("prediction", Neutral::Absent),
    ("mirostat", Neutral::Zero),
    ("typical_p", Neutral::One),
    ("tfs_z", Neutral::One),
    ("top_n_sigma", Neutral::NotPositive),
    ("xtc_probability", Neutral::Zero),
    ("dry_multiplier", Neutral::Zero),
    ("dynatemp_range", Neutral::Zero),
    ("post_sampling_probs", Neutral::False),
    ("samplers", Neutral::Absent),
    ("lora", Neutral::Absent),
];

#[derive(Clone, Copy)]
enum Neutral {
    Absent,
    False,
    Zero,
    One,
    NotPositive,
}

impl Neutral {
    fn holds(self, value: &Value) -> bool {
        match self {
            Neutral::Absent => false,
            Neutral::False => value == &Value::Bool(false),
            Neutral::Zero => value.as_f64() == Some(0.0),
            Neutral::One => value.as_f64() == Some(1.0),
            Neutral::NotPositive => value.as_f64().is_some_and(|x| x <= 0.0),
        }
    }
}

impl Fields {
    /// Refuses a request that asks for something this server does not do (see `UNHONOURED`).
    pub fn refuse_unhonoured(&self) -> Result<(), ApiError> {
        for (key, neutral) in UNHONOURED {
            if let Some(value) = self.get(key) {
                if !neutral.holds(value) {
                    return Err(ApiError::bad_request(format!(
                        "{key} is not supported by this server (got {value}); leave it out"
                    )));
                }
            }
        }
        Ok(())
    }

    /// `logit_bias` in OpenAI's shape (`{"15043": -100}`) or llama.cpp's (`[[15043, 1.5],
    /// [15043, false], ["Hello", -1]]`): a bias, or false to ban; a text key or first item
    /// biases each of its tokens, as llama-server does.
    pub fn logit_bias(&self, tokenizer: &Tokenizer) -> Result<Vec<(u32, f32)>, ApiError> {
        const KEY: &str = "logit_bias";
        let pairs: Vec<(Value, &Value)> = match self.get(KEY) {
            None => return Ok(Vec::new()),
            // OpenAI's keys are token ids written as strings.
            Some(Value::Object(map)) => map
                .iter()
                .map(|(key, bias)| match key.parse::<u64>() {
                    Ok(id) => (Value::from(id), bias),
                    Err(_) => (Value::from(key.as_str()), bias),
                })
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item.as_array().map(Vec::as_slice) {
                    Some([token, bias]) => Ok((token.clone(), bias)),
                    _ => Err(wrong_type(KEY, "an array of [token, bias] pairs", item)),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(wrong_type(KEY, "an object or an array of pairs", other)),
        };
        let n_vocab = tokenizer.n_vocab();
        let mut biases = Vec::new();
        for (token, bias) in pairs {
            let bias = match bias {
                Value::Bool(false) => f32::NEG_INFINITY,
                value => value
                    .as_f64()
                    .map(|b| b as f32)
                    .filter(|b| b.is_finite())
                    .ok_or_else(|| wrong_type(KEY, "a number or false as each bias", value))?,
            };
            let ids = match &token {
                Value::Number(number) => vec![number
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| wrong_type(KEY, "token ids", &token))?],
                Value::String(text) => tokenizer
                    .encode(text, false, false)
                    .map_err(|e| ApiError::bad_request(format!("{KEY}: {e}")))?,
                other => return Err(wrong_type(KEY, "token ids or texts", other)),
            };
            if let Some(id) = ids.iter().find(|&&id| id as usize >= n_vocab) {
                return Err(ApiError::bad_request(format!(
                    "{KEY}: token id {id} is outside the vocabulary of {n_vocab}"
                )));
            }
            biases.extend(ids.into_iter().map(|id| (id, bias)));
        }
        Ok(biases)
    }

    /// The constraint on the output: llama.cpp's `grammar` (GBNF) or `json_schema`, or
    /// OpenAI's `response_format`. Asking for more than one is an error, as no one output
    /// could be meant.
    pub fn grammar(&self) -> Result<Option<Arc<Grammar>>, ApiError> {
        let mut asked: Vec<(&str, String)> = Vec::new();
        if let Some(text) = self.str("grammar")?.filter(|t| !t.trim().is_empty()) {
            asked.push(("grammar", text.to_string()));
        }
        if let Some(schema) = self.get("json_schema") {
            asked.push(("json_schema", schema_grammar("json_schema", schema)?));
        }
        if let Some(format) = self.get("response_format") {
            if let Some(text) = response_format_grammar(format)? {
                asked.push(("response_format", text));
            }
        }
        match asked.as_slice() {
            [] => Ok(None),
            [(key, text)] => Grammar::parse(text)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("{key}: {e}"))),
            _ => Err(ApiError::bad_request(format!(
                "pass only one of {}: each constrains the whole output",
                asked
                    .iter()
                    .map(|(key, _)| *key)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

impl Fields {
    /// The request's speculation, llama-server's flat `speculative.*` fields over the server's
    /// own (`default`, None when it speculates by default on nothing). `has_draft`: a draft
    /// model is loaded.
    pub fn speculation(
        &self,
        default: Option<&speculative::Params>,
        has_draft: bool,
    ) -> Result<Option<speculative::Params>, ApiError> {
        let kind =
            match self.str("speculative.type")? {
                None => default.map(|params| params.kind),
                Some("none") => None,
                Some("ngram-simple") => Some(speculative::Kind::NGramSimple),
                Some("draft-simple") if has_draft => Some(speculative::Kind::DraftModel),
                Some("draft-simple") => return Err(ApiError::bad_request(
                    "speculative.type draft-simple needs a server started with a draft model (-md)",
                )),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                    "speculative.type must be none, ngram-simple or draft-simple, not {other:?}"
                )))
                }
            };
        let Some(kind) = kind else {
            return Ok(None);
        };
        let mut params = match default {
            Some(default) => speculative::Params {
                kind,
                ..default.clone()
            },
            None => speculative::Params::new(kind),
        };
        const MOST: i64 = 1024;
        let count = |key: &str, least: i64, value: &mut usize| -> Result<(), ApiError> {
            if let Some(n) = self.i64_in(key, least..=MOST)? {
                *value = n as usize;
            }
            Ok(())
        };
        count("speculative.n_max", 0, &mut params.n_max)?;
        count("speculative.n_min", 0, &mut params.n_min)?;
        count("speculative.ngram_size_n", 1, &mut params.size_n)?;
        count("speculative.ngram_size_m", 1, &mut params.size_m)?;
        count("speculative.ngram_min_hits", 1, &mut params.min_hits)?;
        if let Some(p) = self.f32_in("speculative.p_min", 0.0..=1.0)? {
            params.p_min = p;
        }
        Ok(Some(params))
    }
}

/// OpenAI's `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
/// "json_schema": {"schema": ...}}`; llama-server's `{"type": "json_object", "schema": ...}`
/// too.
fn response_format_grammar(format: &Value) -> Result<Option<String>, ApiError> {
    let kind = format.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("response_format.type must be text, json_object or json_schema")
    })?;
    let schema = match kind {
        "text" => return Ok(None),
        "json_object" => format.get("schema"),
        "json_schema" => format
            .get("json_schema")
            .and_then(|j| j.get("schema"))
            .or_else(|| format.get("schema")),
        other => {
            return Err(ApiError::bad_request(format!(
                "response_format.type must be text, json_object or json_schema, not {other:?}"
            )))
        }
    };
    match schema.filter(|s| !s.is_null()) {
        Some(schema) => schema_grammar("response_format", schema).map(Some),
        None => Ok(Some(json_schema::JSON_OBJECT_GRAMMAR.to_string())),
    }
}

pub fn schema_grammar(key: &str, schema: &Value) -> Result<String, ApiError> {
    json_schema::schema_to_gbnf(schema).map_err(|e| ApiError::bad_request(format!("{key}: {e}")))
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::bad_request(format!("{key} must be {expected}, not {got}"))
}

/// `seed: -1` asks for a different draw each time, as in llama.cpp.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields {
        Fields::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn rejects_bodies_that_are_not_objects() {
        assert!(Fields::parse(b"{")
            .unwrap_err()
            .message
            .contains("not valid JSON"));
        assert!(Fields::parse(b"[1]")
            .unwrap_err()
            .message
            .contains("JSON object"));
    }

    #[test]
    fn names_the_field_with_the_wrong_type() {
        let f = fields(r#"{"temperature": "hot", "stop": [1], "n": 2.5, "stream": 1}"#);
        assert_eq!(
            f.f32("temperature").unwrap_err().message,
            "temperature must be a number, not a string"
        );
        assert_eq!(
            f.strings("stop").unwrap_err().message,
            "stop must be a string or an array of strings, not a number"
        );
        assert!(f.i64("n").unwrap_err().message.contains("an integer"));
        assert!(f
            .bool("stream")
            .unwrap_err()
            .message
            .contains("true or false"));
    }

    #[test]
    fn null_is_absent_and_ranges_are_checked() {
        let f = fields(r#"{"top_p": null, "top_k": -5, "min_p": 0.1}"#);
        assert_eq!(f.f32("top_p").unwrap(), None);
        assert!(f
            .i64_in("top_k", -1..=10)
            .unwrap_err()
            .message
            .contains("between -1 and 10"));
        assert_eq!(f.f32_in("min_p", 0.0..=1.0).unwrap(), Some(0.1));
    }

    #[test]
    fn sampling_fields_override_the_defaults() {
        let defaults = SamplingParams::default();
        let f = fields(r#"{"temperature": 0, "top_k": 0, "repeat_last_n": -1, "seed": 7}"#);
        let params = f.sampling(&defaults, 512).unwrap();
        assert_eq!(params.temperature, 0.0);
        assert_eq!(params.top_k, 0);
        assert_eq!(params.repeat_last_n, 512);
        assert_eq!(params.seed, 7);
        assert_eq!(params.top_p, defaults.top_p);
        let random = fields(r#"{"seed": -1}"#).sampling(&defaults, 512).unwrap();
        assert_ne!(random.seed, defaults.seed);
    }

    #[test]
    fn logit_bias_in_openais_and_llama_cpps_shapes() {
        let engine = crate::test_models::synthetic_engine();
        let tokenizer = engine.tokenizer();
        let hello = tokenizer.encode("Hello", false, false).unwrap();
        let bias = |json: &str| fields(json).logit_bias(tokenizer);
        assert_eq!(
            bias(r#"{"logit_bias": {"5": -100, "7": 2.5}}"#).unwrap(),
            [(5, -100.0), (7, 2.5)]
        );
        assert_eq!(
            bias(r#"{"logit_bias": [[5, false], [7, 1]]}"#).unwrap(),
            [(5, f32::NEG_INFINITY), (7, 1.0)]
        );
        let by_text = bias(r#"{"logit_bias": [["Hello", -1]]}"#).unwrap();
        assert_eq!(
            by_text,
            hello.iter().map(|&id| (id, -1.0)).collect::<Vec<_>>()
        );
        assert_eq!(bias(r#"{"logit_bias": {"Hello": -1}}"#).unwrap(), by_text);
        assert!(bias("{}").unwrap().is_empty());
        for (json, says) in [
            (
                r#"{"logit_bias": {"999999999": 1}}"#,
                "outside the vocabulary",
            ),
            (r#"{"logit_bias": [[5]]}"#, "[token, bias] pairs"),
            (r#"{"logit_bias": [[5, "x"]]}"#, "a number or false"),
            (r#"{"logit_bias": [[-5, 1]]}"#, "token ids"),
            (r#"{"logit_bias": 3}"#, "an object or an array"),
        ] {
            let error = bias(json).unwrap_err();
            assert_eq!(error.status, 400);
            assert!(error.message.contains(says), "{json}: {}", error.message);
        }
    }

    #[test]
    fn fields_that_would_change_the_output_unhonoured_are_refused_by_name() {
        assert!(fields(
            r#"{"echo": false, "best_of": 1, "typical_p": 1.0, "mirostat": 0, "user": "u"}"#
        )
        .refuse_unhonoured()
        .is_ok());
        for json in [
            r#"{"echo": true}"#,
            r#"{"best_of": 3}"#,
            r#"{"mirostat": 2}"#,
            r#"{"typical_p": 0.5}"#,
            r#"{"functions": []}"#,
            r#"{"dry_multiplier": 0.8}"#,
        ] {
            let error = fields(json).refuse_unhonoured().unwrap_err();
            let key = json.split('"').nth(1).unwrap();
            assert!(error.message.starts_with(key), "{json}: {}", error.message);
        }
    }
}
