//! llmfile: a CPU LLM engine whose weights can ride inside its own executable.

pub mod bench;
pub mod bundle;
pub mod chat_format;
pub mod cli;
pub mod gguf;
pub mod model;
pub mod perplexity;
pub mod sampling;
pub mod server;
pub mod session;
pub mod tokenizer;

#[cfg(test)]
pub(crate) mod test_models;
