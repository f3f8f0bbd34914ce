//! llmfile: a CPU LLM engine whose weights can ride inside its own executable.

pub mod batched_bench;
pub mod bench;
pub mod bundle;
pub mod chat_format;
pub mod chat_template;
pub mod cli;
pub mod embedding;
pub mod engine;
pub mod generation;
pub mod gguf;
pub mod grammar;
pub mod model;
pub mod perplexity;
pub mod sampling;
pub mod server;
pub mod session;
pub mod speculative;
pub mod tokenizer;

/// Where tests find the downloaded models; public so the integration tests share it.
#[doc(hidden)]
pub mod test_models;
