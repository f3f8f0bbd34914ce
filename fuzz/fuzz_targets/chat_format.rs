//! Chat formats (`chat_format::ChatFormat`): detection from an arbitrary architecture and Jinja
//! template, and rendering of arbitrary conversations. Never a panic; the rendered prompt holds
//! every message's text; the chat page's templates keep their placeholders and a template's
//! own system text holds none.
//!
//! The input is text split at NUL: the architecture, the template (empty: none), then one
//! message per part, its first character picking the role (by code point, mod 3).
#![no_main]

#[path = "shared/conversation.rs"]
mod conversation;

use libfuzzer_sys::fuzz_target;
use llmfile::chat_format::ChatFormat;

fuzz_target!(|text: &str| {
    let mut parts = text.split('\0');
    let architecture = parts.next().unwrap_or_default();
    let template = parts.next().filter(|t| !t.is_empty());
    let messages = conversation::messages(parts);

    let format = ChatFormat::detect(architecture, template);
    assert_eq!(format, ChatFormat::detect(architecture, template));
    let prompt = format.render(&messages);
    for message in &messages {
        // Some formats trim a message's surrounding whitespace, as their templates do.
        assert!(
            prompt.contains(message.content.trim()),
            "{format:?} dropped {message:?} from {prompt:?}"
        );
    }
    let stops = format.stop_strings();
    assert!(stops.iter().all(|stop| !stop.is_empty()));

    let page = format.page_templates();
    assert!(page.prompt.contains("{{history}}") && page.history.contains("{{message}}"));
    if let ChatFormat::ChatMl {
        default_system: Some(system),
    } = &format
    {
        assert!(!system.is_empty() && !system.contains("{{") && !system.contains("{%"));
        assert_eq!(&page.system, system);
    }
    let presets = format.presets();
    assert_eq!(presets[0], page);
    for (i, preset) in presets.iter().enumerate() {
        assert!(presets[..i].iter().all(|p| p.name != preset.name));
    }
});
