//! llmfile: a CPU LLM engine whose weights can ride inside its own executable.

pub mod bundle;
