//! Fill-in-the-middle: llama-server's `/infill`, and `suffix` on OpenAI's `/v1/completions`.
//!
//! The prompt is built as llama-server's `format_prompt_infill` builds it, so that a model
//! answers here what it answers there:
//!
//! ```text
//! [FIM_REP]myproject\n [FIM_SEP]name\n text ... [FIM_SEP]filename\n   (the extra files)
//! [BOS] [FIM_PRE] prefix prompt [FIM_SUF] suffix [FIM_MID]
//! ```
//!
//! Without FIM_REP and FIM_SEP the extra files are joined by a plain-text separator. The
//! prefix keeps its end and the suffix its start, within shares of the batch (-b), and the
//! extra files keep their end, within what the context leaves after a batch and twice the
//! server's -n.

use super::api::{self, Reply, Shared};
use super::http::{ApiError, Client};
use super::request::Fields;
use crate::tokenizer::FimTokens;
use serde_json::Value;

/// What llama-server puts between extra files when the model has no file separator token.
const CHUNK_SEPARATOR: &str = "\n\n--- snippet ---\n\n";
/// The repository name and current file name llama-server writes into the repo-level
/// pattern; it has no fields for them.
const REPOSITORY: &str = "myproject\n";
const CURRENT_FILE: &str = "filename\n";
/// A file of `input_extra` with no `filename`.
const DEFAULT_FILE_NAME: &str = "tmp";

/// The three tokens every FIM prompt needs.
#[derive(Debug, Clone, Copy)]
struct Required {
    pre: u32,
    suf: u32,
    mid: u32,
}

impl Required {
    /// The model's FIM tokens, or a 400 naming the ones it lacks.
    fn of(fim: &FimTokens) -> Result<Required, ApiError> {
        if let (Some(pre), Some(suf), Some(mid)) = (fim.pre, fim.suf, fim.mid) {
            return Ok(Required { pre, suf, mid });
        }
        let missing: Vec<&str> = [
            (fim.pre, "prefix"),
            (fim.suf, "suffix"),
            (fim.mid, "middle"),
        ]
        .into_iter()
        .filter(|(id, _)| id.is_none())
        .map(|(_, name)| name)
        .collect();
        Err(ApiError::bad_request(format!(
            "this model has no fill-in-the-middle tokens (it lacks the {} token): it cannot \
             fill in between a prefix and a suffix",
            missing.join(", ")
        )))
    }
}

/// The limits llama-server sizes the parts by.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// `-b`: the prefix, prompt and suffix are cut to fit one batch.
    n_batch: i64,
    n_ctx: i64,
    /// The server's `-n` (-1: unlimited), not the request's: it is what llama-server uses.
    n_predict: i64,
    /// `--spm-infill`: suffix before prefix.
    spm: bool,
    add_bos: Option<u32>,
}

/// A request's parts, tokenized.
struct Parts {
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    /// The extra files in the model's framing, before they are cut to fit.
    extra: Vec<u32>,
    /// The request's `prompt`, read after the prefix.
    prompt: Vec<u32>,
}

/// The FIM prompt from tokenized parts, cut as llama-server cuts them.
fn assemble(parts: Parts, fim: Required, budget: Budget) -> Vec<u32> {
    let Parts {
        mut prefix,
        mut suffix,
        extra,
        prompt,
    } = parts;
    let quarter = budget.n_batch / 4;
    let prefix_take = prefix.len().min(clamp(3 * quarter));
    let suffix_take = suffix.len().min(clamp(quarter - 2 - prompt.len() as i64));
    let extra_take = extra
        .len()
        .min(clamp(budget.n_ctx - budget.n_batch - 2 * budget.n_predict));
    prefix.drain(..prefix.len() - prefix_take);
    suffix.truncate(suffix_take);

    let mut prefix_part = Vec::with_capacity(prefix.len() + prompt.len() + 1);
    prefix_part.push(fim.pre);
    prefix_part.extend(prefix);
    prefix_part.extend(prompt);
    let mut suffix_part = Vec::with_capacity(suffix.len() + 1);
    suffix_part.push(fim.suf);
    suffix_part.extend(suffix);
    let (first, second) = match budget.spm {
        false => (prefix_part, suffix_part),
        true => (suffix_part, prefix_part),
    };

    let mut tokens = Vec::with_capacity(extra_take + first.len() + second.len() + 2);
    tokens.extend_from_slice(&extra[extra.len() - extra_take..]);
    tokens.extend(budget.add_bos);
    tokens.extend(first);
    tokens.extend(second);
    tokens.push(fim.mid);
    tokens
}

fn clamp(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// A file of `input_extra`.
struct ExtraFile {
    name: String,
    text: String,
}

/// `input_extra`: an array of `{"filename": string, "text": string}`, the name optional.
fn extra_files(fields: &Fields) -> Result<Vec<ExtraFile>, ApiError> {
    const SHAPE: &str = r#"an array of {"filename": string, "text": string} objects"#;
    let items = match fields.get("input_extra") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "input_extra must be {SHAPE}"
            )))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(chunk) = item else {
                return Err(ApiError::bad_request(format!(
                    "input_extra[{index}] must be an object with a \"text\" string: input_extra is {SHAPE}"
                )));
            };
            let text = match chunk.get("text") {
                Some(Value::String(text)) => text.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "input_extra[{index}].text must be a string"
                    )))
                }
            };
            let name = match chunk.get("filename") {
                None | Some(Value::Null) => DEFAULT_FILE_NAME.to_string(),
                Some(Value::String(name)) => name.clone(),
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "input_extra[{index}].filename must be a string"
                    )))
                }
            };
            Ok(ExtraFile { name, text })
        })
        .collect()
}

/// The extra files as the model reads them: after its repository token when it has one, each
/// file behind its separator token and name, or behind a plain-text separator.
fn frame_extra(
    shared: &Shared,
    fim: &FimTokens,
    files: &[ExtraFile],
) -> Result<Vec<u32>, ApiError> {
    let plain = |text: &str| shared.encode(text, false, false);
    let mut tokens = Vec::new();
    if let Some(rep) = fim.rep {
        tokens.push(rep);
        tokens.extend(plain(REPOSITORY)?);
    }
    for file in files {
        match fim.sep {
            Some(sep) => {
                tokens.push(sep);
                tokens.extend(plain(&format!("{}\n", file.name))?);
            }
            None => tokens.extend(plain(CHUNK_SEPARATOR)?),
        }
        tokens.extend(plain(&file.text)?);
    }
    if let Some(sep) = fim.sep {
        tokens.push(sep);
        tokens.extend(plain(CURRENT_FILE)?);
    }
    Ok(tokens)
}

/// `input_prefix` or `input_suffix`: a string, or an array of strings and token ids, read
/// without specials as llama-server reads them.
fn text_or_tokens(shared: &Shared, fields: &Fields, key: &str) -> Result<Vec<u32>, ApiError> {
    let n_vocab = shared.tokenizer.n_vocab();
    let wrong = || {
        ApiError::bad_request(format!(
            "{key} must be a string or an array of strings and token ids"
        ))
    };
    match fields.get(key) {
        None => Err(ApiError::bad_request(format!("{key} is required"))),
        Some(Value::String(text)) => shared.encode(text, false, false),
        Some(Value::Array(items)) => {
            let mut tokens = Vec::new();
            for item in items {
                match item {
                    Value::String(text) => tokens.extend(shared.encode(text, false, false)?),
                    Value::Number(n) => tokens.push(
                        n.as_u64()
                            .filter(|&id| id < n_vocab as u64)
                            .ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "{key}: token {n} is not an id of this model's vocabulary of {n_vocab}"
                                ))
                            })? as u32,
                    ),
                    _ => return Err(wrong()),
                }
            }
            Ok(tokens)
        }
        Some(_) => Err(wrong()),
    }
}

/// The FIM prompt around the tokenized sides, with the request's `input_extra`; `prompt` is
/// read right after the prefix, so the middle starts with it.
fn fim_prompt(
    shared: &Shared,
    fields: &Fields,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    prompt: Vec<u32>,
) -> Result<Vec<u32>, ApiError> {
    let fim = shared.tokenizer.fim();
    let required = Required::of(&fim)?;
    let extra = frame_extra(shared, &fim, &extra_files(fields)?)?;
    let config = shared.config;
    let budget = Budget {
        n_batch: config.batch_size as i64,
        n_ctx: config.n_ctx as i64,
        n_predict: config.n_predict,
        spm: config.spm_infill,
        add_bos: shared
            .tokenizer
            .bos()
            .filter(|_| shared.tokenizer.add_bos()),
    };
    let parts = Parts {
        prefix,
        suffix,
        extra,
        prompt,
    };
    Ok(assemble(parts, required, budget))
}

/// llama-server's `POST /infill`: `input_prefix`, `input_suffix`, `input_extra` and `prompt`,
/// and every field of `/completion`, answered as `/completion` answers.
pub fn infill<'r>(
    shared: &'r Shared,
    fields: &Fields,
    client: Client,
) -> Result<Reply<'r>, ApiError> {
    // Before the fields, so that a model that cannot infill says so whatever was sent.
    Required::of(&shared.tokenizer.fim())?;
    let prefix = text_or_tokens(shared, fields, "input_prefix")?;
    let suffix = text_or_tokens(shared, fields, "input_suffix")?;
    // Unlike the two sides, the prompt is read with its special tokens, as llama-server does.
    let prompt = match fields.str("prompt")? {
        Some(text) => shared.encode(text, false, true)?,
        None => Vec::new(),
    };
    let tokens = fim_prompt(shared, fields, prefix, suffix, prompt)?;
    api::complete(shared, fields, tokens, client)
}

/// OpenAI's `/v1/completions` with `suffix`: the prompt is the prefix and the completion the
/// middle, built as `/infill` builds it (`input_extra` honoured too).
pub fn completion_prompt(
    shared: &Shared,
    fields: &Fields,
    prompt: &str,
    suffix: &str,
) -> Result<Vec<u32>, ApiError> {
    Required::of(&shared.tokenizer.fim())?;
    let prefix = shared.encode(prompt, false, false)?;
    let suffix = shared.encode(suffix, false, false)?;
    fim_prompt(shared, fields, prefix, suffix, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIM: Required = Required {
        pre: 1000,
        suf: 1001,
        mid: 1002,
    };

    fn budget(n_batch: i64, n_ctx: i64, n_predict: i64) -> Budget {
        Budget {
            n_batch,
            n_ctx,
            n_predict,
            spm: false,
            add_bos: None,
        }
    }

    fn parts(prefix: usize, suffix: usize, extra: usize, prompt: usize) -> Parts {
        let run = |start: u32, n: usize| (start..start + n as u32).collect();
        Parts {
            prefix: run(0, prefix),
            suffix: run(100, suffix),
            extra: run(200, extra),
            prompt: run(300, prompt),
        }
    }

    #[test]
    fn everything_fits_in_a_large_batch() {
        let tokens = assemble(parts(2, 2, 2, 1), FIM, budget(2048, 4096, -1));
        assert_eq!(
            tokens,
            [200, 201, 1000, 0, 1, 300, 1001, 100, 101, 1002],
            "extra, then [PRE] prefix prompt, [SUF] suffix, [MID]"
        );
    }

    #[test]
    fn bos_follows_the_extra_context_and_spm_puts_the_suffix_first() {
        let with_bos = Budget {
            spm: true,
            add_bos: Some(7),
            ..budget(2048, 4096, -1)
        };
        let tokens = assemble(parts(1, 1, 1, 1), FIM, with_bos);
        assert_eq!(tokens, [200, 7, 1001, 100, 1000, 0, 300, 1002]);
    }

    #[test]
    fn parts_are_cut_as_llama_server_cuts_them() {
        // -b 16: the prefix keeps its last 12 tokens (3/4 of the batch); the suffix its first
        // 4 - 2 - 1 (the prompt) = 1; -c 40 and -n 5 leave 40 - 16 - 10 = 14 of the extra
        // tokens, the last ones.
        let tokens = assemble(parts(20, 10, 30, 1), FIM, budget(16, 40, 5));
        let mut want: Vec<u32> = (216..230).collect();
        want.push(1000);
        want.extend(8..20);
        want.extend([300, 1001, 100, 1002]);
        assert_eq!(tokens, want);
        // A prompt longer than a quarter batch leaves no suffix, and a context no larger than
        // the batch (with -n 0) no extra context.
        let tokens = assemble(parts(2, 10, 30, 5), FIM, budget(16, 16, 0));
        assert_eq!(tokens, [1000, 0, 1, 300, 301, 302, 303, 304, 1001, 1002]);
    }

    #[test]
    fn a_model_without_fim_tokens_is_told_which_it_lacks() {
        let fim = FimTokens {
            pre: Some(1),
            suf: None,
            mid: None,
            rep: Some(4),
            sep: None,
        };
        let error = Required::of(&fim).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(
            error.message.contains("no fill-in-the-middle tokens")
                && error.message.contains("suffix, middle"),
            "{}",
            error.message
        );
    }
}
