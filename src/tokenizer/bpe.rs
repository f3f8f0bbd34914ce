//! Byte-level BPE (`tokenizer.ggml.model = gpt2`), built on the `tokenizers` crate.
//!
//! llama.cpp's `llm_tokenizer_bpe` splits a fragment with the regexes its pre-tokenizer type
//! names (each regex splits the pieces the previous one left, keeping both matches and the gaps
//! between them), maps bytes to GPT-2's printable characters, then merges the adjacent pair of
//! lowest merge rank (ties: leftmost). The crate's `Split` pre-tokenizer with `Isolated`
//! behaviour, `ByteLevel` without its own regex, and `BPE` model do exactly these steps, so they
//! give the same ids; the regex strings below are llama.cpp's.

use tokenizers::models::bpe::{Vocab as HfVocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use super::TokenizerError;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How one `tokenizer.ggml.pre` value tokenizes, from llama.cpp's `llm_tokenizer_bpe` and the
/// flags `llama_vocab::impl::load` sets for it.
pub(super) struct PreTokenizer {
    pub names: &'static [&'static str],
    regexes: &'static [&'static str],
    /// A whole pre-tokenized word that is itself a token is taken as is, without merges.
    ignore_merges: bool,
    pub add_bos: bool,
}

/// Used when `tokenizer.ggml.pre` is absent or `default`.
pub(super) const DEFAULT_PRE_TOKENIZER: PreTokenizer = PreTokenizer {
    names: &["default"],
    regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    ignore_merges: false,
    add_bos: false,
};

/// The pre-tokenizer types whose regexes are plain; llama.cpp's others rely on its own
/// hand-written splitters or on special cases we have no model to test against.
pub(super) const PRE_TOKENIZERS: &[PreTokenizer] = &[
    DEFAULT_PRE_TOKENIZER,
    PreTokenizer {
        names: &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        regexes: &[LLAMA3],
        ignore_merges: true,
        add_bos: true,
    },
    PreTokenizer {
        names: &["dbrx", "smaug-bpe"],
        regexes: &[LLAMA3],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizer {
        names: &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        regexes: &[r"\p{N}", GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizer {
        names: &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        regexes: &[GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizer {
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
        ],
        regexes: &[QWEN2],
        ignore_merges: false,
        add_bos: false,
    },
];

/// The pre-tokenizer for a `tokenizer.ggml.pre` value. Like llama.cpp, a missing value means
/// `default` and an unknown one is an error.
pub(super) fn pre_tokenizer(name: Option<&str>) -> Result<&'static PreTokenizer, TokenizerError> {
    let name = name.unwrap_or("default");
    PRE_TOKENIZERS
        .iter()
        .find(|pre| pre.names.contains(&name))
        .ok_or_else(|| TokenizerError::UnknownPreTokenizer(name.to_string()))
}

pub(super) struct BpeEncoder {
    tokenizer: HfTokenizer,
}

impl BpeEncoder {
    pub fn new(
        pre: &PreTokenizer,
        tokens: &[String],
        merges: &[String],
    ) -> Result<Self, TokenizerError> {
        let vocab = (0u32..)
            .zip(tokens)
            .map(|(id, text)| (text.clone(), id))
            .collect::<HfVocab>();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(index, merge)| split_merge(merge).ok_or(index))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|index| TokenizerError::BadMerge {
                index,
                text: merges[index].clone(),
            })?;
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;

        let mut steps = Vec::with_capacity(pre.regexes.len() + 1);
        for regex in pre.regexes {
            let split = Split::new(
                SplitPattern::Regex((*regex).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));

        let mut tokenizer = HfTokenizer::new(model);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));
        Ok(BpeEncoder { tokenizer })
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        out.extend_from_slice(encoding.get_ids());
        Ok(())
    }
}

/// `"a b"` → `("a", "b")`, splitting at the first space after the first byte as llama.cpp does.
fn split_merge(merge: &str) -> Option<(String, String)> {
    let space = merge.bytes().skip(1).position(|b| b == b' ')? + 1;
    Some((merge[..space].to_string(), merge[space + 1..].to_string()))
}

/// GPT-2's map from bytes to printable characters, inverted: index = char as u32 (< 512),
/// value = the byte it stands for.
pub(super) fn byte_of_char_table() -> [Option<u8>; 512] {
    let mut table = [None; 512];
    let mut next_unprintable = 256;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let ch = if printable {
            u32::from(byte)
        } else {
            next_unprintable += 1;
            next_unprintable - 1
        };
        table[ch as usize] = Some(byte);
    }
    table
}

/// The bytes a byte-level token text stands for. A character outside GPT-2's map gives
/// llama.cpp's `[UNK_BYTE_0x..]` marker, so that the output matches its output.
pub(super) fn decode_byte_level(text: &str, byte_of_char: &[Option<u8>; 512]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    for ch in text.chars() {
        match byte_of_char.get(ch as usize).copied().flatten() {
            Some(byte) => bytes.push(byte),
            None => {
                bytes.extend_from_slice(b"[UNK_BYTE_0x");
                let mut utf8 = [0; 4];
                for b in ch.encode_utf8(&mut utf8).bytes() {
                    bytes.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(b']');
            }
        }
    }
    bytes
}
