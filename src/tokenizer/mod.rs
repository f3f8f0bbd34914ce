//! Text to token ids and back, giving the ids llama.cpp gives for the same GGUF vocabulary.
//!
//! Encoding follows `llama_vocab::impl::tokenize`: the text is first cut around special tokens
//! (`tokenizer_st_partition`), then each plain fragment goes through the vocabulary's algorithm:
//! SentencePiece-style score merges for `llama` vocabularies (`spm.rs`) or byte-level BPE for
//! `gpt2` ones (`bpe.rs`). Decoding follows `token_to_piece`.

mod bpe;
mod decoder;
mod spm;
mod trie;
mod vocab;

#[cfg(test)]
mod parity_tests;
#[cfg(test)]
mod tests;

use std::ops::Range;

pub use decoder::Decoder;
pub use trie::PieceTrie;

use crate::gguf::{Gguf, GgufError, Value};
use bpe::BpeEncoder;
use vocab::{attr, ModelKind, Role, Vocab, VocabSpec, ROLE_KEYS};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unknown tokenizer model '{0}' (llmfile reads 'llama' SentencePiece and 'gpt2' byte-level BPE vocabularies)")]
    UnknownModel(String),
    #[error("pre-tokenizer type '{0}' (tokenizer.ggml.pre) is not one llmfile supports; supported: {supported}", supported = supported_pre_tokenizers())]
    UnknownPreTokenizer(String),
    #[error("the vocabulary in tokenizer.ggml.tokens is empty")]
    EmptyVocabulary,
    #[error("the vocabulary has {0} tokens, more than 32-bit ids can number")]
    TooManyTokens(usize),
    #[error("{key} has {len} entries but the vocabulary has {n_tokens} tokens")]
    ArrayTooShort {
        key: &'static str,
        len: usize,
        n_tokens: usize,
    },
    #[error("entry {index} of {key} should be {expected}")]
    BadEntry {
        key: &'static str,
        index: usize,
        expected: &'static str,
    },
    #[error("tokens {first} and {second} have the same text {text:?}; the vocabulary is corrupt")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("the vocabulary asks for a {0} token to be added but names none")]
    MissingSpecialToken(&'static str),
    #[error("a gpt2 vocabulary needs tokenizer.ggml.merges, which the file lacks")]
    MissingMerges,
    #[error(
        "merge {index} of tokenizer.ggml.merges ({text:?}) is not two tokens separated by a space"
    )]
    BadMerge { index: usize, text: String },
    #[error("cannot build the BPE tokenizer: {0}")]
    Bpe(String),
    #[error("cannot tokenize the text: {0}")]
    Encode(String),
}

fn supported_pre_tokenizers() -> String {
    bpe::PRE_TOKENIZERS
        .iter()
        .flat_map(|pre| pre.names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A vocabulary loaded from a GGUF file, ready to encode and decode.
pub struct Tokenizer {
    vocab: Vocab,
    algorithm: Algorithm,
    specials: SpecialTokens,
    /// Every token's printed bytes (llama.cpp's `cache_token_to_piece`), concatenated;
    /// token `i` is `pieces[piece_ends[i - 1]..piece_ends[i]]`.
    pieces: Vec<u8>,
    piece_ends: Vec<usize>,
    /// Built the first time a grammar asks, as most runs never constrain their output.
    trie: std::sync::OnceLock<PieceTrie>,
}

// The server's threads share one tokenizer.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Tokenizer>();
};

enum Algorithm {
    Spm {
        /// The byte fallback: the token of each byte, for characters that are no token.
        byte_tokens: Box<[Option<u32>; 256]>,
    },
    Bpe(Box<BpeEncoder>),
}

/// A piece of the input after special tokens are cut out.
enum Fragment {
    Text(Range<usize>),
    Special(u32),
}

impl Tokenizer {
    /// Reads the `tokenizer.ggml.*` metadata of a GGUF file.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, TokenizerError> {
        let model = gguf.get_str("tokenizer.ggml.model")?.to_string();
        let mut role_ids = Vec::new();
        for (key, role) in ROLE_KEYS {
            if let Some(id) = gguf.get_u32_opt(key)? {
                role_ids.push((role, id));
            }
        }
        let spec = VocabSpec {
            pre: gguf.get_str_opt("tokenizer.ggml.pre")?.map(str::to_string),
            tokens: array_of(gguf, "tokenizer.ggml.tokens", "a string", |v| {
                v.as_str().map(str::to_string)
            })?
            .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.tokens".to_string()))?,
            scores: array_of(gguf, "tokenizer.ggml.scores", "a number", Value::as_f32)?,
            token_types: array_of(gguf, "tokenizer.ggml.token_type", "a token type", |v| {
                v.as_i64().and_then(|t| i32::try_from(t).ok())
            })?,
            // SentencePiece vocabularies have no merges; only BPE reads them.
            merges: match ModelKind::from_name(&model)? {
                ModelKind::Bpe => array_of(gguf, "tokenizer.ggml.merges", "a string", |v| {
                    v.as_str().map(str::to_string)
                })?,
                ModelKind::Spm => None,
            },
            model,
            role_ids,
            add_bos: gguf.get_bool_opt("tokenizer.ggml.add_bos_token")?,
            add_eos: gguf.get_bool_opt("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: gguf.get_bool_opt("tokenizer.ggml.add_space_prefix")?,
        };
        Self::from_spec(spec)
    }

    fn from_spec(mut spec: VocabSpec) -> Result<Self, TokenizerError> {
        let kind = ModelKind::from_name(&spec.model)?;
        let pre = match kind {
            ModelKind::Bpe => Some(bpe::pre_tokenizer(spec.pre.as_deref())?),
            // llama.cpp ignores `tokenizer.ggml.pre` for SentencePiece vocabularies.
            ModelKind::Spm => None,
        };
        let merges = spec.merges.take();
        let vocab = Vocab::new(spec, kind, pre.is_some_and(|pre| pre.add_bos))?;
        let algorithm = match pre {
            Some(pre) => {
                let merges = merges.ok_or(TokenizerError::MissingMerges)?;
                Algorithm::Bpe(Box::new(BpeEncoder::new(pre, &vocab.texts, &merges)?))
            }
            None => Algorithm::Spm {
                byte_tokens: Box::new(spm_byte_tokens(&vocab)),
            },
        };
        let (pieces, piece_ends) = build_pieces(&vocab);
        let specials = SpecialTokens::new(&vocab);
        Ok(Tokenizer {
            vocab,
            algorithm,
            specials,
            pieces,
            piece_ends,
            trie: std::sync::OnceLock::new(),
        })
    }

    /// The ids of `text`. `add_special` adds BOS/EOS as the vocabulary asks; `parse_special`
    /// lets control tokens written in the text (`<start_of_turn>`) become their ids, while
    /// user-defined tokens are always recognized.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.vocab.add_bos {
            ids.extend(self.bos());
        }
        let fragments = self.partition(text, parse_special);
        match &self.algorithm {
            Algorithm::Spm { byte_tokens } => {
                // llama.cpp prefixes a space to the text at the start and after each special
                // token, when the vocabulary asks for it.
                let mut after_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(range) => {
                            let mut escaped = String::with_capacity(range.len() + 3);
                            if self.vocab.add_space_prefix && after_special {
                                escaped.push('▁');
                            }
                            for ch in text[range].chars() {
                                escaped.push(if ch == ' ' { '▁' } else { ch });
                            }
                            spm::encode(&self.vocab, byte_tokens, &escaped, &mut ids);
                            after_special = false;
                        }
                        Fragment::Special(id) => {
                            ids.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Algorithm::Bpe(encoder) => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(range) => encoder.encode(&text[range], &mut ids)?,
                        Fragment::Special(id) => ids.push(id),
                    }
                }
            }
        }
        if add_special && self.vocab.add_eos {
            ids.extend(self.eos());
        }
        Ok(ids)
    }

    /// Cuts `text` around special tokens as llama.cpp's `tokenizer_st_partition` does: for each
    /// special token, longest text first, every occurrence in the remaining plain fragments
    /// becomes that token. (Not leftmost-longest: with specials `bcd` and `ab`, `abcd` gives
    /// `a`, `bcd`.)
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(0..text.len()));
        for id in self.specials.occurring_in(&self.vocab, text, parse_special) {
            let needle = self.vocab.texts[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(range) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut start = range.start;
                for (offset, _) in text[range.clone()].match_indices(needle) {
                    let at = range.start + offset;
                    if at > start {
                        next.push(Fragment::Text(start..at));
                    }
                    next.push(Fragment::Special(id));
                    start = at + needle.len();
                }
                if start < range.end {
                    next.push(Fragment::Text(start..range.end));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The bytes token `id` prints. Control and unknown tokens print nothing unless `special`;
    /// user-defined tokens always print their text; byte tokens give their byte, which may be
    /// part of a UTF-8 character (see [`Decoder`]). Ids outside the vocabulary print nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> &[u8] {
        let index = id as usize;
        if index >= self.piece_ends.len()
            || (!special && self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0)
        {
            return &[];
        }
        let start = index.checked_sub(1).map_or(0, |i| self.piece_ends[i]);
        &self.pieces[start..self.piece_ends[index]]
    }

    /// The text of `ids`, as llama.cpp's generation loop prints it piece by piece; only an
    /// invalid or unfinished UTF-8 sequence in the whole output becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_to_piece(id, special));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A streaming decoder over this vocabulary.
    pub fn decoder(&self, special: bool) -> Decoder<'_> {
        Decoder::new(self, special)
    }

    pub fn bos(&self) -> Option<u32> {
        self.vocab.role(Role::Bos)
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.role(Role::Eos)
    }

    pub fn pad(&self) -> Option<u32> {
        self.vocab.role(Role::Pad)
    }

    /// The fill-in-the-middle tokens, as llama.cpp finds them: from the `fim_*` keys (or the
    /// deprecated `prefix`/`suffix`/`middle` ones), else by their usual texts.
    pub fn fim(&self) -> FimTokens {
        let role = |role| self.vocab.role(role);
        FimTokens {
            pre: role(Role::FimPre),
            suf: role(Role::FimSuf),
            mid: role(Role::FimMid),
            rep: role(Role::FimRep),
            sep: role(Role::FimSep),
        }
    }

    /// Whether `encode` with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether generating `id` ends the answer: EOS, end-of-turn tokens such as Gemma's
    /// `<end_of_turn>` and ChatML's `<|im_end|>`, and the others llama.cpp lists.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.vocab.end_of_generation.binary_search(&id).is_ok()
    }

    /// The printing tokens as a prefix tree of their pieces.
    pub fn piece_trie(&self) -> &PieceTrie {
        self.trie.get_or_init(|| PieceTrie::new(self))
    }

    /// Every token [`Tokenizer::is_end_of_generation`] holds for, in id order.
    pub fn end_of_generation_tokens(&self) -> &[u32] {
        &self.vocab.end_of_generation
    }

    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// The token's text as stored in the vocabulary (`▁` for spaces, GPT-2 byte characters).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }
}

/// The special tokens of a fill-in-the-middle prompt. Prefix, suffix and middle are what any
/// such prompt needs; the repository and file separator tokens, where a model has them, frame
/// the other files given as context (Qwen2.5-Coder's repo-level pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FimTokens {
    pub pre: Option<u32>,
    pub suf: Option<u32>,
    pub mid: Option<u32>,
    pub rep: Option<u32>,
    pub sep: Option<u32>,
}

/// Reads an optional array key, converting each entry or naming the first that does not fit.
fn array_of<T>(
    gguf: &Gguf,
    key: &'static str,
    expected: &'static str,
    convert: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Vec<T>>, TokenizerError> {
    let Some(values) = gguf.get_array_opt(key)? else {
        return Ok(None);
    };
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            convert(value).ok_or(TokenizerError::BadEntry {
                key,
                index,
                expected,
            })
        })
        .collect::<Result<Vec<T>, _>>()
        .map(Some)
}

/// The byte fallback of a SentencePiece vocabulary: `<0xXX>`, else the byte as a one-character
/// token, as llama.cpp's `byte_to_token` looks it up. Where neither exists llama.cpp throws; we
/// use the unknown token, or drop the byte if there is none.
fn spm_byte_tokens(vocab: &Vocab) -> [Option<u32>; 256] {
    let mut tokens = [None; 256];
    for (byte, token) in (0..=255u8).zip(tokens.iter_mut()) {
        let as_char = if byte.is_ascii() {
            vocab.id(&char::from(byte).to_string())
        } else {
            None
        };
        *token = vocab
            .id(&format!("<0x{byte:02X}>"))
            .or(as_char)
            .or(vocab.role(Role::Unk));
    }
    tokens
}

/// What each token prints when specials are shown.
fn build_pieces(vocab: &Vocab) -> (Vec<u8>, Vec<usize>) {
    let byte_of_char = bpe::byte_of_char_table();
    let mut pieces = Vec::with_capacity(vocab.texts.iter().map(String::len).sum());
    let mut ends = Vec::with_capacity(vocab.n_tokens());
    for (text, &token_attr) in vocab.texts.iter().zip(&vocab.attrs) {
        if token_attr & attr::SPECIAL != 0 {
            pieces.extend_from_slice(text.as_bytes());
        } else if token_attr & attr::NORMAL != 0 {
            match vocab.kind {
                ModelKind::Spm => {
                    for ch in text.chars() {
                        let ch = if ch == '▁' { ' ' } else { ch };
                        pieces.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
                ModelKind::Bpe => {
                    pieces.extend_from_slice(&bpe::decode_byte_level(text, &byte_of_char))
                }
            }
        } else if token_attr & attr::BYTE != 0 {
            pieces.extend(vocab::byte_of_byte_token(text));
        }
        ends.push(pieces.len());
    }
    (pieces, ends)
}

/// The special tokens, and a byte trie over their texts to find quickly which of them occur
/// in a text: Gemma has over 6000, and searching the text for each would cost far more than the
/// encoding itself.
struct SpecialTokens {
    nodes: Vec<TrieNode>,
}

#[derive(Default)]
struct TrieNode {
    /// (byte, child node index), sorted by byte.
    children: Vec<(u8, u32)>,
    token: Option<u32>,
}

impl SpecialTokens {
    fn new(vocab: &Vocab) -> Self {
        let mut nodes = vec![TrieNode::default()];
        for (id, &token_attr) in (0u32..).zip(&vocab.attrs) {
            if token_attr & attr::SPECIAL == 0 {
                continue;
            }
            let mut node = 0;
            for &byte in vocab.texts[id as usize].as_bytes() {
                node = match nodes[node]
                    .children
                    .binary_search_by_key(&byte, |&(b, _)| b)
                {
                    Ok(i) => nodes[node].children[i].1 as usize,
                    Err(i) => {
                        let child = nodes.len();
                        nodes.push(TrieNode::default());
                        nodes[node].children.insert(i, (byte, child as u32));
                        child
                    }
                };
            }
            nodes[node].token = Some(id);
        }
        SpecialTokens { nodes }
    }

    /// The special tokens that occur in `text`, in the order `partition` applies them:
    /// llama.cpp's `cache_special_tokens` order, longest text first, and among equal lengths
    /// (which llama.cpp's unstable sort leaves unspecified) lowest id first. Control and unknown
    /// tokens count only with `parse_special`.
    fn occurring_in(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<u32> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        for start in 0..bytes.len() {
            let mut node = 0;
            for &byte in &bytes[start..] {
                let children = &self.nodes[node].children;
                match children.binary_search_by_key(&byte, |&(b, _)| b) {
                    Ok(i) => node = children[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(id) = self.nodes[node].token {
                    let parse_only = vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0;
                    if parse_special || !parse_only {
                        found.push(id);
                    }
                }
            }
        }
        found.sort_unstable_by_key(|&id| (std::cmp::Reverse(vocab.texts[id as usize].len()), id));
        found.dedup();
        found
    }
}
