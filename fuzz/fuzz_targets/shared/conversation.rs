//! A conversation from fuzz input: one message per part, its first character picking the role
//! (by code point, mod 3), the rest its text.

use llmfile::chat_format::{Message, Role};

pub fn messages<'a>(parts: impl Iterator<Item = &'a str>) -> Vec<Message> {
    parts
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
        .collect()
}
