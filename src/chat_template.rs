//! The chat template in use: the model's own Jinja template (`tokenizer.chat_template`),
//! rendered with minijinja as Hugging Face's `apply_chat_template` renders it, or one of the
//! built-in formats by name (`--chat-template alpaca`), or a Jinja file.
//!
//! A template is input from a file we did not write. Rendering is bounded (minijinja's fuel
//! and recursion limits, and a cap on the output), and a template that cannot render a plain
//! conversation is replaced at load by the built-in format its markers name, with one warning.

use crate::chat_format::{role_name, ChatFormat, Message, Role};
use crate::tokenizer::Tokenizer;
use minijinja::{context, Environment, Error, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};

/// Instructions one render may run: far more than any real template needs for a long chat,
/// few enough that a looping template ends in well under a second.
const FUEL: u64 = 5_000_000;
const RECURSION_LIMIT: usize = 64;
/// A prompt larger than this is no chat prompt, whatever the template meant.
const MAX_OUTPUT: usize = 16 << 20;
/// The names `--chat-template` knows besides a file.
pub const BUILT_IN: [&str; 5] = ["gemma", "alpaca", "chatml", "llama3", "plain"];
/// What `raise_exception` puts before its message, to tell it from other template errors.
const RAISED: &str = "the chat template raised: ";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the conversation's system text and last message are {tokens} tokens, which leave no room for a reply of {reserve} in the context of {n_ctx} tokens")]
    TooLong {
        tokens: usize,
        reserve: usize,
        n_ctx: usize,
    },
    #[error("cannot tokenize the conversation: {0}")]
    Tokenize(String),
    /// The template refused the conversation (`raise_exception`): the client's to fix.
    #[error("{0}")]
    Raised(String),
    #[error("cannot read the chat template {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("--chat-template {0:?} is neither a built-in format ({list}) nor a file", list = BUILT_IN.join(", "))]
    Unknown(String),
    #[error("the chat template is not valid Jinja: {0}")]
    Invalid(String),
}

pub struct ChatTemplate {
    kind: Kind,
    /// The built-in format the template's markers name: its stop strings and the chat page's
    /// presets, and what a failing template falls back to.
    format: ChatFormat,
}

enum Kind {
    Jinja(Box<Jinja>),
    BuiltIn,
}

struct Jinja {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    /// The tokenizer adds BOS itself, so a template's leading BOS text would make two.
    strip_bos: bool,
    /// Whether the fallback has been announced, so a failing template warns once.
    warned: AtomicBool,
}

/// The special tokens a template may print.
pub struct TemplateTokens {
    pub bos: String,
    pub eos: String,
    pub tokenizer_adds_bos: bool,
}

impl ChatTemplate {
    /// The model's template: its Jinja source when it has one that renders, else the format of
    /// its architecture.
    pub fn for_model(
        architecture: &str,
        source: Option<&str>,
        tokens: &TemplateTokens,
    ) -> ChatTemplate {
        let format = ChatFormat::detect(architecture, source);
        let Some(source) = source else {
            return ChatTemplate::from_format(format);
        };
        match Jinja::new(source, tokens) {
            Ok(jinja) => ChatTemplate {
                kind: Kind::Jinja(Box::new(jinja)),
                format,
            },
            Err(error) => {
                eprintln!(
                    "llmfile: warning: the model's chat template cannot be used ({error}); using the {} format",
                    format.name()
                );
                ChatTemplate::from_format(format)
            }
        }
    }

    /// `--chat-template NAME|FILE`.
    pub fn named(
        name: &str,
        architecture: &str,
        tokens: &TemplateTokens,
    ) -> Result<ChatTemplate, TemplateError> {
        let format = match name {
            "gemma" => Some(ChatFormat::Gemma),
            "alpaca" => Some(ChatFormat::Alpaca),
            "chatml" => Some(ChatFormat::ChatMl {
                default_system: None,
            }),
            "llama3" => Some(ChatFormat::Llama3),
            "plain" => Some(ChatFormat::Plain),
            _ => None,
        };
        if let Some(format) = format {
            return Ok(ChatTemplate::from_format(format));
        }
        let path = std::path::Path::new(name);
        if !path.is_file() {
            return Err(TemplateError::Unknown(name.to_string()));
        }
        let source = std::fs::read_to_string(path).map_err(|error| TemplateError::Read {
            path: name.to_string(),
            error,
        })?;
        Ok(ChatTemplate::for_model(architecture, Some(&source), tokens))
    }

    /// A built-in format as the template.
    pub fn from_format(format: ChatFormat) -> ChatTemplate {
        ChatTemplate {
            kind: Kind::BuiltIn,
            format,
        }
    }

    /// The prompt for `messages`, ending where the assistant's reply begins, without the BOS
    /// token the tokenizer adds. A template that refuses a system message gets the system text
    /// at the start of the first user turn, as llama.cpp does; any other refusal is returned.
    pub fn render(&self, messages: &[Message]) -> Result<String, TemplateError> {
        let Kind::Jinja(jinja) = &self.kind else {
            return Ok(self.format.render(messages));
        };
        let rendered = match jinja.render(messages) {
            Err(TemplateError::Raised(_)) if messages.iter().any(|m| m.role == Role::System) => {
                jinja.render(&fold_system(messages))
            }
            other => other,
        };
        match rendered {
            Err(TemplateError::Invalid(error)) => {
                if !jinja.warned.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "llmfile: warning: the chat template failed ({error}); using the {} format",
                        self.format.name()
                    );
                }
                Ok(self.format.render(messages))
            }
            other => other,
        }
    }

    /// The format the chat page's presets and the stop strings come from.
    pub fn format(&self) -> &ChatFormat {
        &self.format
    }

    /// The Jinja source in use, or the built-in format's name.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Jinja(jinja) => jinja.source.clone(),
            Kind::BuiltIn => self.format.name().to_string(),
        }
    }

    pub fn stop_strings(&self) -> Vec<String> {
        self.format.stop_strings()
    }
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Jinja(_) => write!(f, "Jinja template ({})", self.format.name()),
            Kind::BuiltIn => write!(f, "built-in {}", self.format.name()),
        }
    }
}

impl Jinja {
    /// Compiles `source` and renders a plain exchange with it, so a template that cannot even
    /// do that is caught at load.
    fn new(source: &str, tokens: &TemplateTokens) -> Result<Jinja, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{RAISED}{message}"),
                ))
            },
        );
        env.add_function("strftime_now", |format: String| -> String {
            // Templates ask for today's date for their system text; a fixed format of the
            // current UTC date serves the common "%d %b %Y" and "%Y-%m-%d".
            let days = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / 86_400) as i64;
            let (year, month, day) = civil_from_days(days);
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            format
                .replace("%Y", &year.to_string())
                .replace("%m", &format!("{month:02}"))
                .replace("%d", &format!("{day:02}"))
                .replace("%b", MONTHS[(month - 1) as usize])
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        let jinja = Jinja {
            env,
            source: source.to_string(),
            bos_token: tokens.bos.clone(),
            eos_token: tokens.eos.clone(),
            strip_bos: tokens.tokenizer_adds_bos && !tokens.bos.is_empty(),
            warned: AtomicBool::new(false),
        };
        let exchange = [
            Message {
                role: Role::User,
                content: "Hello".into(),
            },
            Message {
                role: Role::Assistant,
                content: "Hi.".into(),
            },
            Message {
                role: Role::User,
                content: "How are you?".into(),
            },
        ];
        match jinja.render(&exchange) {
            Ok(prompt) if prompt.to_lowercase().contains("how are you?") => Ok(jinja),
            Ok(_) => Err(TemplateError::Invalid(
                "it drops the messages it is given".into(),
            )),
            Err(error) => Err(error),
        }
    }

    fn render(&self, messages: &[Message]) -> Result<String, TemplateError> {
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| context! { role => role_name(m.role), content => m.content.as_str() })
            .collect();
        self.render_values(minijinja::Value::from(messages), None)
    }

    fn render_values(
        &self,
        messages: minijinja::Value,
        tools: Option<minijinja::Value>,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        let rendered = template
            .render(context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => true,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|error| {
                let detail = error.detail().unwrap_or_default();
                match detail.strip_prefix(RAISED) {
                    Some(message) => TemplateError::Raised(message.to_string()),
                    None => TemplateError::Invalid(format!("{error:#}")),
                }
            })?;
        if rendered.len() > MAX_OUTPUT {
            return Err(TemplateError::Invalid(format!(
                "it wrote more than {} MiB",
                MAX_OUTPUT >> 20
            )));
        }
        Ok(match rendered.strip_prefix(&self.bos_token) {
            Some(rest) if self.strip_bos => rest.to_string(),
            _ => rendered,
        })
    }
}

/// A conversation rendered to fit its context.
#[derive(Debug)]
pub struct Fitted {
    pub text: String,
    pub tokens: Vec<u32>,
    /// How many of the oldest whole turns (a user message and what answered it) were left
    /// out so the prompt leaves room for the reply.
    pub dropped_turns: usize,
}

/// The reply's room when the request names no token limit: llamafile keeps a reserve too.
pub const DEFAULT_RESERVE: usize = 256;

impl ChatTemplate {
    /// The prompt for `messages`, as tokens, leaving `reserve` tokens of `n_ctx` for the reply
    /// (at most half the context, so a small context still chats): the oldest whole turns
    /// after the system messages are dropped until it fits, the last message always kept.
    pub fn fit(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        n_ctx: usize,
        reserve: usize,
    ) -> Result<Fitted, TemplateError> {
        let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
        fit_turns(tokenizer, &roles, n_ctx, reserve, |kept| {
            self.render(&pick(messages, kept))
        })
    }

    /// As [`ChatTemplate::fit`], for a template that knows tools: OpenAI's messages as they came
    /// (`tool_calls`, `role: "tool"`) and the `tools` go to the template itself, as Hugging Face
    /// passes them. `roles` gives each message's place in the turns (a tool's result belongs to
    /// the assistant's side).
    pub fn fit_with_tools(
        &self,
        tokenizer: &Tokenizer,
        messages: &[serde_json::Value],
        roles: &[Role],
        tools: Option<&serde_json::Value>,
        n_ctx: usize,
        reserve: usize,
    ) -> Result<Fitted, TemplateError> {
        let Kind::Jinja(jinja) = &self.kind else {
            return Err(TemplateError::Invalid(
                "a built-in format takes no tools".into(),
            ));
        };
        fit_turns(tokenizer, roles, n_ctx, reserve, |kept| {
            let messages: Vec<minijinja::Value> =
                pick(messages, kept).iter().map(jinja_value).collect();
            let tools = tools.map(jinja_value);
            jinja.render_values(minijinja::Value::from(messages), tools)
        })
    }

    /// Whether the template renders `tools` and tool calls itself (its source names them).
    pub fn knows_tools(&self) -> bool {
        matches!(&self.kind, Kind::Jinja(jinja) if jinja.source.contains("tools") && jinja.source.contains("tool_calls"))
    }
}

/// The items at `kept`, in order.
fn pick<T: Clone>(items: &[T], kept: &[usize]) -> Vec<T> {
    kept.iter().map(|&i| items[i].clone()).collect()
}

/// The fewest oldest whole turns (after the leading system messages) to leave out of a
/// conversation with these `roles` so that `render` of the rest, tokenized, leaves `reserve`
/// of `n_ctx`. `render` gets the indices of the messages kept.
fn fit_turns(
    tokenizer: &Tokenizer,
    roles: &[Role],
    n_ctx: usize,
    reserve: usize,
    render: impl Fn(&[usize]) -> Result<String, TemplateError>,
) -> Result<Fitted, TemplateError> {
    let reserve = reserve.min(n_ctx / 2);
    let room = n_ctx - reserve;
    // Where each turn starts: a user message after the leading system messages.
    let first_turn = roles.iter().position(|&r| r != Role::System);
    let starts: Vec<usize> = (0..roles.len())
        .filter(|&i| roles[i] == Role::User && first_turn.is_some_and(|first| i > first))
        .collect();
    let attempt = |dropped: usize| -> Result<(String, Vec<u32>), TemplateError> {
        let kept: Vec<usize> = match (dropped, first_turn) {
            (0, _) | (_, None) => (0..roles.len()).collect(),
            (n, Some(first)) => {
                let resume = starts.get(n - 1).copied().unwrap_or(roles.len() - 1);
                (0..first).chain(resume..roles.len()).collect()
            }
        };
        let text = render(&kept)?;
        let tokens = tokenizer
            .encode(&text, true, true)
            .map_err(|e| TemplateError::Tokenize(e.to_string()))?;
        Ok((text, tokens))
    };
    let (text, tokens) = attempt(0)?;
    if tokens.len() < room {
        return Ok(Fitted {
            text,
            tokens,
            dropped_turns: 0,
        });
    }
    // Dropping more never makes the prompt longer, so the fewest that fit is found by
    // halving: a long chat is rendered a handful of times, not once per turn.
    let most = starts.len();
    let (last_text, last_tokens) = attempt(most)?;
    if last_tokens.len() >= room {
        return Err(TemplateError::TooLong {
            tokens: last_tokens.len(),
            reserve,
            n_ctx,
        });
    }
    let (mut low, mut high) = (0, most);
    let mut best = (last_text, last_tokens);
    while high - low > 1 {
        let middle = (low + high) / 2;
        let fitted = attempt(middle)?;
        if fitted.1.len() < room {
            high = middle;
            best = fitted;
        } else {
            low = middle;
        }
    }
    Ok(Fitted {
        text: best.0,
        tokens: best.1,
        dropped_turns: high,
    })
}

/// JSON as a template value.
fn jinja_value(value: &serde_json::Value) -> minijinja::Value {
    use serde_json::Value as Json;
    match value {
        Json::Null => minijinja::Value::from(()),
        Json::Bool(b) => minijinja::Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => minijinja::Value::from(i),
            (None, Some(f)) => minijinja::Value::from(f),
            (None, None) => minijinja::Value::from(n.to_string()),
        },
        Json::String(text) => minijinja::Value::from(text.as_str()),
        Json::Array(items) => {
            minijinja::Value::from(items.iter().map(jinja_value).collect::<Vec<_>>())
        }
        Json::Object(map) => minijinja::Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), jinja_value(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

/// The conversation with its system messages moved into the first user turn.
fn fold_system(messages: &[Message]) -> Vec<Message> {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut folded: Vec<Message> = messages
        .iter()
        .filter(|m| m.role != Role::System)
        .cloned()
        .collect();
    let system = system.join("\n\n");
    match folded.iter_mut().find(|m| m.role == Role::User) {
        Some(first) => first.content = format!("{system}\n\n{}", first.content),
        None => folded.insert(
            0,
            Message {
                role: Role::User,
                content: system,
            },
        ),
    }
    folded
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
