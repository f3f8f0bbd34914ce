//! Embeddings: OpenAI's `POST /v1/embeddings` and llama.cpp's `POST /embedding(s)`.
//!
//! They are always served: `--embedding(s)` is accepted for llama-server's command lines, but
//! clients (Ollama's among them) ask for embeddings without any flag, and serving them costs
//! generation nothing while no one asks.
//!
//! Where the computation runs: in the HTTP worker's own thread, on fresh KV caches, one
//! request at a time behind a mutex ([`Embedder`]). The scheduler's slots are never touched,
//! so an embedding needs none of the scheduler's machinery (slot choice, prefix reuse,
//! sampling, per-token events), and the scheduler's loop stays about generation. The cost is
//! that an embedding pass and a generation step run side by side on the thread pool instead
//! of sharing one read of the weights; the mutex keeps that to one pass of at most `-ub`
//! tokens at a time, which also bounds the memory embeddings take, however many clients ask.

use super::api::{Reply, Shared};
use super::http::{ApiError, Client};
use super::request::Fields;
use crate::embedding::{self, EmbeddingError, Pooling, Vectors};
use crate::engine::Engine;
use crate::session::SessionError;
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// The most inputs one request may hold: OpenAI's limit.
pub const MAX_INPUTS: usize = 2048;
/// How llama.cpp normalises pooled embeddings by default: unit Euclidean length.
pub const EUCLIDEAN: i32 = 2;

/// Computes the pooled (not normalised) embeddings of checked inputs, stopping between passes
/// when the client has left.
pub type Embed =
    dyn Fn(&[Vec<u32>], Pooling, &Client) -> Result<Vec<Vectors>, EmbeddingError> + Sync;

/// The model behind `/v1/embeddings`, one request at a time (see the module's comment).
pub struct Embedder {
    engine: Arc<Engine>,
    pass_tokens: usize,
    one_at_a_time: Mutex<()>,
}

impl Embedder {
    pub fn new(engine: &Arc<Engine>, pass_tokens: usize) -> Embedder {
        Embedder {
            engine: Arc::clone(engine),
            pass_tokens,
            one_at_a_time: Mutex::new(()),
        }
    }

    pub fn embed(
        &self,
        inputs: &[Vec<u32>],
        pooling: Pooling,
        client: &Client,
    ) -> Result<Vec<Vectors>, EmbeddingError> {
        // A request that panicked mid-pass left nothing shared behind: its caches were its own.
        let _turn = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        embedding::embed(&self.engine, inputs, pooling, self.pass_tokens, &|| {
            client.gone()
        })
    }
}

impl Shared<'_> {
    /// The pooling of this server: `--pooling`, else the model's, else mean.
    pub fn pooling(&self) -> Pooling {
        self.config
            .pooling
            .unwrap_or(Pooling::default_for(self.info.pooling))
    }

    /// One pooled vector per input of token ids, normalised as llama.cpp's `embd_normalize`
    /// says (-1 none, [`EUCLIDEAN`] unit length), after checking the inputs: what
    /// `/v1/embeddings` answers with, and Ollama's `/api/embed` can.
    pub fn embed(
        &self,
        inputs: &[Vec<u32>],
        norm: i32,
        client: &Client,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let vectors = self.vectors(inputs, self.pooled()?, norm, client)?;
        Ok(vectors.into_iter().flatten().collect())
    }

    /// The server's pooling, refused when it is none: one vector per input is wanted.
    fn pooled(&self) -> Result<Pooling, ApiError> {
        match self.pooling() {
            Pooling::None => Err(ApiError::bad_request(
                "this server pools no embeddings (--pooling none), so it has no vector per input: start it with --pooling mean, cls or last, or ask /embedding for each token's vector",
            )),
            pooling => Ok(pooling),
        }
    }

    /// Checks `inputs` against the limits and the vocabulary, then embeds them. `norm` is
    /// llama.cpp's `embd_normalize`; like llama-server, per-token vectors (pooling none) are
    /// left as they are.
    fn vectors(
        &self,
        inputs: &[Vec<u32>],
        pooling: Pooling,
        norm: i32,
        client: &Client,
    ) -> Result<Vec<Vectors>, ApiError> {
        if inputs.is_empty() {
            return Err(ApiError::bad_request(
                "input is empty: give at least one text",
            ));
        }
        if inputs.len() > MAX_INPUTS {
            return Err(ApiError::bad_request(format!(
                "input holds {} items; at most {MAX_INPUTS} are embedded per request",
                inputs.len()
            )));
        }
        let n_vocab = self.tokenizer.n_vocab();
        let n_ctx = self.config.n_ctx;
        for (index, input) in inputs.iter().enumerate() {
            if input.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "input {index} is empty: an embedding needs at least one token"
                )));
            }
            if let Some(id) = input.iter().find(|&&id| id as usize >= n_vocab) {
                return Err(ApiError::bad_request(format!(
                    "input {index}: token {id} is not an id of this model's vocabulary of {n_vocab}"
                )));
            }
            if input.len() > n_ctx {
                return Err(ApiError::bad_request(format!(
                    "input {index} is {} tokens, which does not fit the context of {n_ctx} tokens",
                    input.len()
                )));
            }
        }
        // Unpooled, every token's vector is in the reply: bounded as one context's worth.
        let total: usize = inputs.iter().map(Vec::len).sum();
        if pooling == Pooling::None && total > n_ctx {
            return Err(ApiError::bad_request(format!(
                "with --pooling none every token's vector is returned, at most {n_ctx} tokens in all per request; these inputs are {total}"
            )));
        }
        let mut vectors =
            (self.embedder)(inputs, pooling, client).map_err(|error| match error {
                EmbeddingError::Session(SessionError::Model(model)) => {
                    ApiError::new(503, format!("cannot embed now: {model}"))
                }
                // Nobody reads this reply: the client has left.
                EmbeddingError::Stopped => ApiError::new(499, "the client left"),
                other => ApiError::bad_request(other.to_string()),
            })?;
        if pooling != Pooling::None {
            vectors
                .iter_mut()
                .flatten()
                .for_each(|vector| embedding::normalize(vector, norm));
        }
        Ok(vectors)
    }

    /// The request's `embd_normalize` (llama.cpp's field), else unit Euclidean length.
    fn norm(fields: &Fields) -> Result<i32, ApiError> {
        Ok(fields
            .i64_in("embd_normalize", -1..=i64::from(i32::MAX))?
            .map_or(EUCLIDEAN, |n| n as i32))
    }

    /// `input` (or `content`) as token lists: a text, a list of token ids, or a list whose
    /// items are texts or lists of token ids. Texts get BOS (and EOS where the vocabulary
    /// adds one), and special tokens written in them are parsed, as llama-server's are.
    fn embedding_inputs(&self, value: &Value) -> Result<Vec<Vec<u32>>, ApiError> {
        let wrong = || {
            ApiError::bad_request(
                "input must be a string, a list of strings, a list of token ids or a list of lists of token ids",
            )
        };
        let n_vocab = self.tokenizer.n_vocab();
        let ids = |items: &[Value]| -> Result<Vec<u32>, ApiError> {
            items
                .iter()
                .map(|item| match item.as_u64() {
                    Some(id) if id < n_vocab as u64 => Ok(id as u32),
                    Some(id) => Err(ApiError::bad_request(format!(
                        "token {id} is not an id of this model's vocabulary of {n_vocab}"
                    ))),
                    None => Err(wrong()),
                })
                .collect()
        };
        let one = |item: &Value| match item {
            // It would be BOS alone: an embedding of nothing.
            Value::String(text) if text.is_empty() => Err(ApiError::bad_request(
                "input holds an empty string: there is nothing to embed",
            )),
            Value::String(text) => self.encode(text, true, true),
            Value::Array(items) => ids(items),
            _ => Err(wrong()),
        };
        match value {
            Value::String(_) => Ok(vec![one(value)?]),
            Value::Array(items) if items.iter().any(Value::is_number) => Ok(vec![ids(items)?]),
            Value::Array(items) => {
                if items.len() > MAX_INPUTS {
                    return Err(ApiError::bad_request(format!(
                        "input holds {} items; at most {MAX_INPUTS} are embedded per request",
                        items.len()
                    )));
                }
                items.iter().map(one).collect()
            }
            _ => Err(wrong()),
        }
    }
}

/// OpenAI's `POST /v1/embeddings`: `input`, `encoding_format` (float or base64), `dimensions`
/// (only the model's own), `model` (answered with the model it names, as llama-server).
pub fn openai_embeddings<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let input = fields
        .get("input")
        .ok_or_else(|| ApiError::bad_request("input is required"))?;
    let base64 = match fields.str("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format must be float or base64, not {other:?}"
            )))
        }
    };
    let n_embd = shared.info.n_embd;
    if let Some(dimensions) = fields.i64("dimensions")? {
        if dimensions != n_embd as i64 {
            return Err(ApiError::bad_request(format!(
                "dimensions {dimensions} cannot be had: this model's embeddings have {n_embd}"
            )));
        }
    }
    let inputs = shared.embedding_inputs(input)?;
    let vectors = shared.embed(&inputs, Shared::norm(fields)?, &client)?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                Encoded::Base64(base64::encode(bytes))
            } else {
                Encoded::Floats(vector)
            },
        })
        .collect();
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    Reply::json(&OpenAiEmbeddings {
        object: "list",
        data,
        model: fields.str("model")?.unwrap_or(&shared.info.name),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

#[derive(Serialize)]
struct OpenAiEmbeddings<'a> {
    object: &'static str,
    data: Vec<OpenAiEmbedding>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct OpenAiEmbedding {
    object: &'static str,
    index: usize,
    embedding: Encoded,
}

/// `encoding_format`: the floats, or their little-endian bytes in base64.
#[derive(Serialize)]
#[serde(untagged)]
enum Encoded {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// One input's vector in llama-server's shape, or each of its tokens' with pooling none.
#[derive(Serialize)]
struct LlamaEmbedding {
    index: usize,
    embedding: Vectors,
}

/// llama-server's `POST /embedding` and `/embeddings`: `content` (or `input`), and a list of
/// `{index, embedding}` whose `embedding` holds one vector, or every token's with pooling none.
pub fn llama_embedding<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    let input = fields
        .get("content")
        .or_else(|| fields.get("input"))
        .ok_or_else(|| ApiError::bad_request("content (or input) is required"))?;
    let inputs = shared.embedding_inputs(input)?;
    let vectors = shared.vectors(&inputs, shared.pooling(), Shared::norm(fields)?, &client)?;
    let results: Vec<LlamaEmbedding> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| LlamaEmbedding { index, embedding })
        .collect();
    Reply::json(&results)
}
