//! The token table both algorithms share: texts, scores, attributes and special ids, with the
//! defaults and attribute fix-ups llama.cpp applies when it loads a vocabulary
//! (`llama_vocab::impl::load` in src/llama-vocab.cpp), since those decide which tokens are split
//! out of the text as specials, which ones print, and which ones end generation.

use super::TokenizerError;

/// Token attributes as llama.cpp derives them from `tokenizer.ggml.token_type`.
pub(super) mod attr {
    pub const NORMAL: u8 = 1;
    pub const UNKNOWN: u8 = 2;
    pub const CONTROL: u8 = 4;
    pub const USER_DEFINED: u8 = 8;
    pub const BYTE: u8 = 16;
    /// Tokens split out of the text before the algorithm runs.
    pub const SPECIAL: u8 = UNKNOWN | CONTROL | USER_DEFINED;
}

/// `tokenizer.ggml.token_type` values, from llama.cpp's `llama_token_type`.
fn attr_of_token_type(token_type: i32) -> u8 {
    match token_type {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        6 => attr::BYTE,
        // Unused (5) and undefined tokens print nothing and are never special.
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModelKind {
    /// `llama`: SentencePiece-style, score-driven merges (Gemma, Llama 2).
    Spm,
    /// `gpt2`: byte-level BPE with ranked merges (SmolLM2, Llama 3).
    Bpe,
}

impl ModelKind {
    pub fn from_name(name: &str) -> Result<Self, TokenizerError> {
        match name {
            "llama" => Ok(ModelKind::Spm),
            "gpt2" => Ok(ModelKind::Bpe),
            other => Err(TokenizerError::UnknownModel(other.to_string())),
        }
    }
}

/// What a token id can be declared as, by a metadata key or by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Bos,
    Eos,
    Eot,
    Eom,
    Unk,
    Pad,
    FimPre,
    FimSuf,
    FimMid,
    FimPad,
    FimRep,
    FimSep,
}

const N_ROLES: usize = 12;

/// Metadata keys naming special ids, in llama.cpp's reading order: the deprecated FIM keys come
/// last and win over the current ones.
pub(super) const ROLE_KEYS: [(&str, Role); 15] = [
    ("tokenizer.ggml.bos_token_id", Role::Bos),
    ("tokenizer.ggml.eos_token_id", Role::Eos),
    ("tokenizer.ggml.eot_token_id", Role::Eot),
    ("tokenizer.ggml.eom_token_id", Role::Eom),
    ("tokenizer.ggml.unknown_token_id", Role::Unk),
    ("tokenizer.ggml.padding_token_id", Role::Pad),
    ("tokenizer.ggml.fim_pre_token_id", Role::FimPre),
    ("tokenizer.ggml.fim_suf_token_id", Role::FimSuf),
    ("tokenizer.ggml.fim_mid_token_id", Role::FimMid),
    ("tokenizer.ggml.fim_pad_token_id", Role::FimPad),
    ("tokenizer.ggml.fim_rep_token_id", Role::FimRep),
    ("tokenizer.ggml.fim_sep_token_id", Role::FimSep),
    ("tokenizer.ggml.prefix_token_id", Role::FimPre),
    ("tokenizer.ggml.suffix_token_id", Role::FimSuf),
    ("tokenizer.ggml.middle_token_id", Role::FimMid),
];

/// Texts llama.cpp recognizes a role by when no key names it. Each found token also becomes a
/// control token. Where several candidates exist llama.cpp takes whichever its hash map yields
/// first; we take the lowest id. (EOT and EOM are not listed: every EOT/EOM text is also an
/// end-of-generation text below, which has the same effect.)
const ROLE_TEXTS: [(Role, &[&str]); 6] = [
    (
        Role::FimPre,
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        Role::FimSuf,
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        Role::FimMid,
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        Role::FimPad,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        Role::FimRep,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (Role::FimSep, &["<|file_sep|>"]),
];

/// Texts of tokens that end generation (llama.cpp's `special_eog_ids` list); each also becomes a
/// control token. llama.cpp's further per-family overrides (gpt-oss's and Solar's `<|end|>`,
/// Gemma 4's and PLaMo's `</s>`, Phi-3's whitespace stripping around specials) are left out:
/// they concern vocabularies or architectures llmfile does not load.
const END_OF_GENERATION_TEXTS: [&str; 22] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// A vocabulary as the file describes it, before any default or fix-up is applied.
#[derive(Debug, Clone, Default)]
pub(super) struct VocabSpec {
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<String>>,
    /// Special ids from metadata keys, in `ROLE_KEYS` order.
    pub role_ids: Vec<(Role, u32)>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

/// The resolved token table.
pub(super) struct Vocab {
    pub kind: ModelKind,
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u8>,
    /// Every id, ordered by its text, for binary search: a hash map of the texts held a
    /// second copy of every string (25 MB more resident memory for Gemma's 262,144 tokens).
    ids_by_text: Vec<u32>,
    roles: [Option<u32>; N_ROLES],
    pub end_of_generation: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

impl Vocab {
    /// Builds the table from `spec`; `default_add_bos` is the algorithm's own default, which the
    /// file's `add_bos_token` overrides.
    pub fn new(
        spec: VocabSpec,
        kind: ModelKind,
        default_add_bos: bool,
    ) -> Result<Self, TokenizerError> {
        let n_tokens = spec.tokens.len();
        if n_tokens == 0 {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if u32::try_from(n_tokens).is_err() {
            return Err(TokenizerError::TooManyTokens(n_tokens));
        }
        let scores = match spec.scores {
            Some(mut scores) => {
                check_len("tokenizer.ggml.scores", scores.len(), n_tokens)?;
                scores.truncate(n_tokens);
                scores
            }
            None => vec![0.0; n_tokens],
        };
        let mut attrs = match spec.token_types {
            Some(types) => {
                check_len("tokenizer.ggml.token_type", types.len(), n_tokens)?;
                types[..n_tokens]
                    .iter()
                    .map(|&t| attr_of_token_type(t))
                    .collect()
            }
            None => vec![attr::NORMAL; n_tokens],
        };

        let texts: Vec<String> = (0u32..)
            .zip(spec.tokens)
            .map(|(id, text)| {
                // llama.cpp's name for an empty token; an empty special text would match
                // everywhere.
                if text.is_empty() {
                    format!("[EMPTY_{id}]")
                } else {
                    text
                }
            })
            .collect();
        let mut ids_by_text: Vec<u32> = (0..n_tokens as u32).collect();
        ids_by_text
            .sort_unstable_by(|&a, &b| texts[a as usize].cmp(&texts[b as usize]).then(a.cmp(&b)));
        if let Some(pair) = ids_by_text
            .windows(2)
            .find(|pair| texts[pair[0] as usize] == texts[pair[1] as usize])
        {
            return Err(TokenizerError::DuplicateToken {
                text: texts[pair[1] as usize].clone(),
                first: pair[0],
                second: pair[1],
            });
        }
        let id_of = |text: &str| lookup(&texts, &ids_by_text, text);

        let mut roles = [None; N_ROLES];
        let (bos, eos, unk) = match kind {
            ModelKind::Spm => (Some(1), Some(2), Some(0)),
            ModelKind::Bpe => (Some(11), Some(11), None),
        };
        roles[Role::Bos as usize] = bos;
        roles[Role::Eos as usize] = eos;
        roles[Role::Unk as usize] = unk;
        for role in &mut roles {
            *role = role.filter(|&id| (id as usize) < n_tokens);
        }
        // Like llama.cpp, an out-of-range id in the file leaves the default in place.
        for &(role, id) in &spec.role_ids {
            if (id as usize) < n_tokens {
                roles[role as usize] = Some(id);
            }
        }

        for (role, candidates) in ROLE_TEXTS {
            if roles[role as usize].is_some() {
                continue;
            }
            let found = candidates.iter().filter_map(|text| id_of(text)).min();
            if let Some(id) = found {
                roles[role as usize] = Some(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }

        let mut end_of_generation: Vec<u32> = [Role::FimPad, Role::FimRep, Role::FimSep]
            .iter()
            .filter_map(|&role| roles[role as usize])
            .collect();
        for text in END_OF_GENERATION_TEXTS {
            if let Some(id) = id_of(text) {
                end_of_generation.push(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        end_of_generation.extend(
            [Role::Eos, Role::Eot, Role::Eom]
                .iter()
                .filter_map(|&role| roles[role as usize]),
        );
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        let (default_add_space_prefix, default_add_bos) = match kind {
            ModelKind::Spm => (true, true),
            ModelKind::Bpe => (false, default_add_bos),
        };
        let add_bos = spec.add_bos.unwrap_or(default_add_bos);
        let add_eos = spec.add_eos.unwrap_or(false);
        if add_bos && roles[Role::Bos as usize].is_none() {
            return Err(TokenizerError::MissingSpecialToken("BOS"));
        }
        if add_eos && roles[Role::Eos as usize].is_none() {
            return Err(TokenizerError::MissingSpecialToken("EOS"));
        }

        Ok(Vocab {
            kind,
            texts,
            scores,
            attrs,
            ids_by_text,
            roles,
            end_of_generation,
            add_bos,
            add_eos,
            add_space_prefix: spec.add_space_prefix.unwrap_or(default_add_space_prefix),
        })
    }

    pub fn role(&self, role: Role) -> Option<u32> {
        self.roles[role as usize]
    }

    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        lookup(&self.texts, &self.ids_by_text, text)
    }

    pub fn attr(&self, id: u32) -> u8 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }
}

/// The id whose text is `text`, searching `ids_by_text` (ids ordered by text).
fn lookup(texts: &[String], ids_by_text: &[u32], text: &str) -> Option<u32> {
    ids_by_text
        .binary_search_by(|&id| texts[id as usize].as_str().cmp(text))
        .ok()
        .map(|at| ids_by_text[at])
}

fn check_len(key: &'static str, len: usize, n_tokens: usize) -> Result<(), TokenizerError> {
    // llama.cpp accepts longer arrays and reads the first n_tokens entries.
    if len < n_tokens {
        return Err(TokenizerError::ArrayTooShort { key, len, n_tokens });
    }
    Ok(())
}

/// The byte a `<0xXX>` token stands for.
pub(super) fn byte_of_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
