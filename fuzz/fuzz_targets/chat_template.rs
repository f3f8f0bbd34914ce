//! Jinja chat templates (`chat_template::ChatTemplate`): any template text, any conversation.
//! Never a panic, and bounded in time and memory (minijinja's fuel and recursion limits, the
//! output cap): a template that cannot render is replaced by a built-in format, and a render
//! either succeeds or reports an error.
//!
//! The input is text split at NUL: the template, then one message per part, its first
//! character picking the role (by code point, mod 3).
#![no_main]

#[path = "shared/conversation.rs"]
mod conversation;

use libfuzzer_sys::fuzz_target;
use llmfile::chat_template::{ChatTemplate, TemplateTokens};

fuzz_target!(|text: &str| {
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let messages = conversation::messages(parts);
    let tokens = TemplateTokens {
        bos: "<bos>".into(),
        eos: "<eos>".into(),
        tokenizer_adds_bos: true,
    };
    let template = ChatTemplate::for_model("llama", Some(source), &tokens);
    let _ = template.render(&messages);
});
