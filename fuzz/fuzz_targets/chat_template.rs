//! Jinja chat templates (`chat_template::ChatTemplate`): any template text, any conversation.
//! Never a panic, and bounded in time and memory (minijinja's fuel and recursion limits, the
//! output cap): a template that cannot render is replaced by a built-in format, and a render
//! either succeeds or reports an error.
//!
//! The input is text split at NUL: the template, then one message per part, its first
//! character picking the role (by code point, mod 3).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::chat_format::{Message, Role};
use llmfile::chat_template::{ChatTemplate, TemplateTokens};

fuzz_target!(|text: &str| {
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let messages: Vec<Message> = parts
        .map(|part| {
            let mut chars = part.chars();
            let role = match chars.next().map_or(0, u32::from) % 3 {
                0 => Role::System,
                1 => Role::User,
                _ => Role::Assistant,
            };
            Message {
                role,
                content: chars.as_str().to_string(),
            }
        })
        .collect();
    let tokens = TemplateTokens {
        bos: "<bos>".into(),
        eos: "<eos>".into(),
        tokenizer_adds_bos: true,
    };
    let template = ChatTemplate::for_model("llama", Some(source), &tokens);
    let _ = template.render(&messages);
});
