//! Encoding and decoding with real vocabularies: Gemma 3's SentencePiece and SmolLM2's GPT-2
//! BPE from the model cache when present, and always the synthetic Gemma 2 in the repository.
//!
//! The first input byte picks the vocabulary and the flags; the rest is the text, taken as
//! UTF-8 where it is valid and through lossy conversion otherwise (both must work), and also
//! read as token ids for decoding, which must accept any id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::gguf::Gguf;
use llmfile::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SYNTHETIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf"
);
const CACHED: [&str; 2] = [
    "gemma-3-270m-q4_k_m.gguf",
    "smollm2-135m-instruct-q4_1.gguf",
];

fn load(path: &Path) -> Tokenizer {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gguf = Gguf::parse(&bytes).expect("a test model parses");
    Tokenizer::from_gguf(&gguf).expect("a test model's vocabulary loads")
}

fn tokenizers() -> &'static [Tokenizer] {
    static TOKENIZERS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let mut loaded = vec![load(Path::new(SYNTHETIC))];
        let cache = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/llmfile/models"))
            .unwrap_or_default();
        for name in CACHED {
            let path = cache.join(name);
            if path.is_file() {
                loaded.push(load(&path));
            } else {
                eprintln!(
                    "tokenizer target: {} absent, fuzzing without it",
                    path.display()
                );
            }
        }
        loaded
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let all = tokenizers();
    let tokenizer = &all[usize::from(selector >> 2) % all.len()];
    let add_special = selector & 1 != 0;
    let parse_special = selector & 2 != 0;

    let text = String::from_utf8_lossy(rest);
    let ids = tokenizer
        .encode(&text, add_special, parse_special)
        .expect("every text encodes");
    let n_vocab = tokenizer.n_vocab();
    // Text may give no ids at all: SmolLM2 has no token for some control bytes and drops
    // them, as llama.cpp does.
    assert!(ids.iter().all(|&id| (id as usize) < n_vocab));

    let streamed: String = {
        let mut decoder = tokenizer.decoder(parse_special);
        let mut out: String = ids.iter().map(|&id| decoder.push(id)).collect();
        out.push_str(&decoder.finish());
        out
    };
    assert_eq!(streamed, tokenizer.decode(&ids, parse_special));

    let arbitrary_ids: Vec<u32> = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()) % (n_vocab as u32 + 16))
        .collect();
    let mut decoder = tokenizer.decoder(add_special);
    for &id in &arbitrary_ids {
        decoder.push(id);
        tokenizer.token_to_piece(id, add_special);
    }
    decoder.finish();
    tokenizer.decode(&arbitrary_ids, add_special);
});
