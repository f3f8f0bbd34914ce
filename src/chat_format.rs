//! Chat formats: how a conversation becomes one prompt for a given model.
//!
//! A GGUF may carry its chat template as Jinja source. Rather than run Jinja, the known formats
//! are recognised by their markers (`<start_of_turn>`, `<|im_start|>`, ...) and rendered here;
//! a model without a template gets its architecture's format. The same knowledge gives the chat
//! page its prompt and history templates, so nobody has to type them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<start_of_turn>user ... <end_of_turn>`; no system role: Gemma's own template puts the
    /// system text at the start of the first user turn.
    Gemma,
    /// `<|im_start|>role ... <|im_end|>`, with the system text the model's template adds when
    /// the conversation has none (SmolLM2 names itself there).
    ChatMl {
        default_system: Option<String>,
    },
    Llama3,
    Alpaca,
    /// `User: ...` / `Assistant: ...` lines, for models whose format is unknown.
    Plain,
}

/// The chat page's view of a format (llamafile's fields): `prompt` is the template of the
/// whole prompt, `history` the template of one turn, `user` and `char` the speakers' names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageTemplates {
    pub name: &'static str,
    /// The built-in format's name, which `/apply-template` takes as `chat_template`: the page
    /// renders a preset's conversation there, so it is the same text the API makes.
    pub chat_template: &'static str,
    pub prompt: String,
    pub history: String,
    pub user: String,
    pub char: String,
    pub system: String,
}

const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";
const ALPACA_SYSTEM: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

impl ChatFormat {
    /// The format of a model, from its GGUF chat template when it has a known one, else from its
    /// architecture.
    pub fn detect(architecture: &str, template: Option<&str>) -> ChatFormat {
        if let Some(template) = template {
            if template.contains("<|im_start|>") {
                return ChatFormat::ChatMl {
                    default_system: chatml_default_system(template),
                };
            }
            if template.contains("<start_of_turn>") {
                return ChatFormat::Gemma;
            }
            if template.contains("<|start_header_id|>") {
                return ChatFormat::Llama3;
            }
            if template.contains("### Instruction") {
                return ChatFormat::Alpaca;
            }
        }
        if architecture.starts_with("gemma") {
            ChatFormat::Gemma
        } else {
            ChatFormat::Plain
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ChatFormat::Gemma => "gemma",
            ChatFormat::ChatMl { .. } => "chatml",
            ChatFormat::Llama3 => "llama3",
            ChatFormat::Alpaca => "alpaca",
            ChatFormat::Plain => "plain",
        }
    }

    /// The prompt for `messages`, ending where the assistant's reply begins. The BOS token is
    /// not included: the tokenizer adds it.
    pub fn render(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        match self {
            ChatFormat::Gemma => {
                let mut pending_system = String::new();
                for message in messages {
                    let role = match message.role {
                        Role::System => {
                            pending_system.push_str(&message.content);
                            pending_system.push_str("\n\n");
                            continue;
                        }
                        Role::User => "user",
                        Role::Assistant => "model",
                    };
                    out.push_str("<start_of_turn>");
                    out.push_str(role);
                    out.push('\n');
                    if message.role == Role::User {
                        out.push_str(&std::mem::take(&mut pending_system));
                    }
                    out.push_str(message.content.trim());
                    out.push_str("<end_of_turn>\n");
                }
                if !pending_system.is_empty() {
                    out.push_str("<start_of_turn>user\n");
                    out.push_str(pending_system.trim_end());
                    out.push_str("<end_of_turn>\n");
                }
                out.push_str("<start_of_turn>model\n");
            }
            ChatFormat::ChatMl { default_system } => {
                let starts_with_system = messages.first().map(|m| m.role) == Some(Role::System);
                if let (false, Some(system)) = (starts_with_system, default_system) {
                    chatml_turn(&mut out, "system", system);
                }
                for message in messages {
                    chatml_turn(&mut out, role_name(message.role), &message.content);
                }
                out.push_str("<|im_start|>assistant\n");
            }
            ChatFormat::Llama3 => {
                for message in messages {
                    out.push_str("<|start_header_id|>");
                    out.push_str(role_name(message.role));
                    out.push_str("<|end_header_id|>\n\n");
                    out.push_str(message.content.trim());
                    out.push_str("<|eot_id|>");
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            ChatFormat::Alpaca => {
                // Alpaca has one system text, before the turns: every system message goes there.
                let systems: Vec<&str> = messages
                    .iter()
                    .filter(|m| m.role == Role::System)
                    .map(|m| m.content.as_str())
                    .collect();
                if systems.is_empty() {
                    out.push_str(ALPACA_SYSTEM);
                } else {
                    out.push_str(&systems.join("\n\n"));
                }
                out.push_str("\n\n");
                for message in messages {
                    let heading = match message.role {
                        Role::System => continue,
                        Role::User => "### Instruction:\n",
                        Role::Assistant => "### Response:\n",
                    };
                    out.push_str(heading);
                    out.push_str(&message.content);
                    out.push_str("\n\n");
                }
                out.push_str("### Response:\n");
            }
            ChatFormat::Plain => {
                for message in messages {
                    match message.role {
                        Role::System => out.push_str(&message.content),
                        Role::User => {
                            out.push_str("User: ");
                            out.push_str(&message.content);
                        }
                        Role::Assistant => {
                            out.push_str("Assistant: ");
                            out.push_str(&message.content);
                        }
                    }
                    out.push('\n');
                }
                out.push_str("Assistant:");
            }
        }
        out
    }

    /// Text that ends the assistant's turn for formats whose turns do not end with a token the
    /// tokenizer already treats as the end of generation.
    pub fn stop_strings(&self) -> Vec<String> {
        match self {
            ChatFormat::Gemma | ChatFormat::ChatMl { .. } | ChatFormat::Llama3 => Vec::new(),
            ChatFormat::Alpaca => vec!["### Instruction:".into()],
            ChatFormat::Plain => vec!["\nUser:".into()],
        }
    }

    /// The chat page's templates for this format.
    pub fn page_templates(&self) -> PageTemplates {
        match self {
            ChatFormat::Gemma => PageTemplates {
                name: "Gemma",
                chat_template: "gemma",
                prompt: "<start_of_turn>system\n{{prompt}}<end_of_turn>\n{{history}}\n<start_of_turn>{{char}}\n".into(),
                history: "<start_of_turn>{{name}}\n{{message}}<end_of_turn>".into(),
                user: "user".into(),
                char: "model".into(),
                system: DEFAULT_SYSTEM.into(),
            },
            ChatFormat::ChatMl { default_system } => PageTemplates {
                name: "ChatML",
                chat_template: "chatml",
                prompt: "<|im_start|>system\n{{prompt}}<|im_end|>\n{{history}}\n<|im_start|>{{char}}\n".into(),
                history: "<|im_start|>{{name}}\n{{message}}<|im_end|>".into(),
                user: "user".into(),
                char: "assistant".into(),
                system: default_system.clone().unwrap_or_else(|| DEFAULT_SYSTEM.into()),
            },
            ChatFormat::Llama3 => PageTemplates {
                name: "Llama 3",
                chat_template: "llama3",
                prompt: "<|start_header_id|>system<|end_header_id|>\n\n{{prompt}}<|eot_id|>{{history}}<|start_header_id|>{{char}}<|end_header_id|>\n\n".into(),
                history: "<|start_header_id|>{{name}}<|end_header_id|>\n\n{{message}}<|eot_id|>".into(),
                user: "user".into(),
                char: "assistant".into(),
                system: DEFAULT_SYSTEM.into(),
            },
            ChatFormat::Alpaca => PageTemplates {
                name: "Alpaca",
                chat_template: "alpaca",
                prompt: "{{prompt}}\n\n{{history}}\n### Response:\n".into(),
                history: "### {{name}}:\n{{message}}\n".into(),
                user: "Instruction".into(),
                char: "Response".into(),
                system: ALPACA_SYSTEM.into(),
            },
            ChatFormat::Plain => PageTemplates {
                name: "Plain",
                chat_template: "plain",
                prompt: "{{prompt}}\n\n{{history}}\n{{char}}:".into(),
                history: "{{name}}: {{message}}".into(),
                user: "User".into(),
                char: "Assistant".into(),
                system: "This is a conversation between User and Assistant, a friendly chatbot."
                    .into(),
            },
        }
    }

    /// Every format's page templates, this one's first: the page's one-click presets.
    pub fn presets(&self) -> Vec<PageTemplates> {
        let mut presets = vec![self.page_templates()];
        for format in [
            ChatFormat::Gemma,
            ChatFormat::Alpaca,
            ChatFormat::ChatMl {
                default_system: None,
            },
            ChatFormat::Llama3,
            ChatFormat::Plain,
        ] {
            let templates = format.page_templates();
            if templates.name != presets[0].name {
                presets.push(templates);
            }
        }
        presets
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn chatml_turn(out: &mut String, role: &str, content: &str) {
    out.push_str("<|im_start|>");
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str("<|im_end|>\n");
}

/// The system text a ChatML template inserts when the conversation has none, written in the
/// template as a literal `<|im_start|>system` line (its newline either a real one or `\n`
/// inside a Jinja string).
fn chatml_default_system(template: &str) -> Option<String> {
    let after = &template[template.find("<|im_start|>system")? + "<|im_start|>system".len()..];
    let text = after
        .strip_prefix('\n')
        .or_else(|| after.strip_prefix("\\n"))?;
    let text = &text[..text.find("<|im_end|>")?];
    // A template that writes the system message's content here has no fixed text of its own.
    if text.is_empty() || text.contains("{{") || text.contains("{%") || text.contains('\'') {
        return None;
    }
    Some(text.replace("\\n", "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    fn message(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn detects_formats_by_marker_and_architecture() {
        assert_eq!(ChatFormat::detect("gemma3", None), ChatFormat::Gemma);
        assert_eq!(ChatFormat::detect("llama", None), ChatFormat::Plain);
        assert_eq!(
            ChatFormat::detect("llama", Some(SMOLLM2_TEMPLATE)),
            ChatFormat::ChatMl {
                default_system: Some(
                    "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()
                )
            }
        );
        assert_eq!(
            ChatFormat::detect("llama", Some(&SMOLLM2_TEMPLATE.replace("\\n", "\n"))),
            ChatFormat::detect("llama", Some(SMOLLM2_TEMPLATE)),
            "a template's newlines may be real ones or escapes"
        );
        assert_eq!(
            ChatFormat::detect(
                "llama",
                Some("{{ '<|im_start|>system\\n' + message['content'] + '<|im_end|>' }}")
            ),
            ChatFormat::ChatMl {
                default_system: None
            }
        );
        assert_eq!(
            ChatFormat::detect("llama", Some("{{ '<|start_header_id|>' + role }}")),
            ChatFormat::Llama3
        );
        assert_eq!(
            ChatFormat::detect("gemma2", Some("{{ '### Instruction:' }}")),
            ChatFormat::Alpaca
        );
        assert_eq!(
            ChatFormat::detect("gemma2", Some("{{ unknown }}")),
            ChatFormat::Gemma
        );
    }

    #[test]
    fn gemma_folds_the_system_message_into_the_first_user_turn() {
        let prompt = ChatFormat::Gemma.render(&[
            message(Role::System, "Be brief."),
            message(Role::User, "Hi"),
            message(Role::Assistant, "Hello!"),
            message(Role::User, "Bye"),
        ]);
        assert_eq!(
            prompt,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n\
             <start_of_turn>model\n"
        );
    }

    #[test]
    fn chatml_adds_the_templates_system_text_only_when_none_is_given() {
        let format = ChatFormat::detect("llama", Some(SMOLLM2_TEMPLATE));
        assert_eq!(
            format.render(&[message(Role::User, "Hi")]),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            format.render(&[message(Role::System, "Be brief."), message(Role::User, "Hi")]),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn alpaca_and_plain_formats_carry_stop_strings() {
        let alpaca = ChatFormat::Alpaca.render(&[message(Role::User, "Add 1 and 2.")]);
        assert_eq!(
            alpaca,
            format!("{ALPACA_SYSTEM}\n\n### Instruction:\nAdd 1 and 2.\n\n### Response:\n")
        );
        assert_eq!(ChatFormat::Alpaca.stop_strings(), ["### Instruction:"]);
        assert_eq!(
            ChatFormat::Plain.render(&[message(Role::User, "Hi")]),
            "User: Hi\nAssistant:"
        );
        assert!(ChatFormat::Gemma.stop_strings().is_empty());
    }

    #[test]
    fn alpaca_keeps_every_system_message() {
        let prompt = ChatFormat::Alpaca.render(&[
            message(Role::System, "Be brief."),
            message(Role::User, "Hi"),
            message(Role::System, "Answer in French."),
        ]);
        assert_eq!(
            prompt,
            "Be brief.\n\nAnswer in French.\n\n### Instruction:\nHi\n\n### Response:\n"
        );
    }

    #[test]
    fn page_templates_for_gemma_are_the_seeds() {
        let page = ChatFormat::Gemma.page_templates();
        assert_eq!(
            page.prompt,
            "<start_of_turn>system\n{{prompt}}<end_of_turn>\n{{history}}\n<start_of_turn>{{char}}\n"
        );
        assert_eq!(
            page.history,
            "<start_of_turn>{{name}}\n{{message}}<end_of_turn>"
        );
        assert_eq!((page.user.as_str(), page.char.as_str()), ("user", "model"));
    }

    #[test]
    fn presets_start_with_the_models_format_and_list_each_once() {
        let names: Vec<_> = ChatFormat::Llama3
            .presets()
            .iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["Llama 3", "Gemma", "Alpaca", "ChatML", "Plain"]);
    }
}
