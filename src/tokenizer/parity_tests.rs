//! Parity with llama.cpp on the downloaded models. The expected ids come from llama.cpp's own
//! tokenizer (`llama-tokenize`, or `llama_tokenize` for the fixtures) on the same GGUF files.
//! Each test skips with a note when its model is not on this machine.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::Tokenizer;
use crate::gguf::Gguf;

const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
const SMOLLM2_FILE: &str = "smollm2-135m-instruct-q4_1.gguf";

fn load(file_name: &str) -> Option<Tokenizer> {
    let path = crate::test_models::path(file_name)?;
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gguf = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn gemma3() -> Option<&'static Tokenizer> {
    static TOKENIZER: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOKENIZER.get_or_init(|| load(GEMMA3_FILE)).as_ref()
}

fn smollm2() -> Option<&'static Tokenizer> {
    static TOKENIZER: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOKENIZER.get_or_init(|| load(SMOLLM2_FILE)).as_ref()
}

/// (text, parse specials, ids) from `llama-tokenize -m MODEL --stdin --no-escape --ids`
/// (`--no-parse-special` where the flag is false), BOS included as the model asks.
type CliCase = (&'static str, bool, &'static [u32]);

const GEMMA3_CLI_CASES: &[CliCase] = &[
    (
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        true,
        &[
            2, 105, 2364, 107, 3689, 563, 236743, 236778, 236862, 236778, 236881, 106, 107, 105,
            4368, 107,
        ],
    ),
    (
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        false,
        &[
            2, 236820, 3041, 236779, 1340, 236779, 887, 236813, 2364, 107, 3689, 563, 236743,
            236778, 236862, 236778, 145912, 643, 236779, 1340, 236779, 887, 236813, 107, 236820,
            3041, 236779, 1340, 236779, 887, 236813, 4368, 107,
        ],
    ),
    ("Hello  world", true, &[2, 9259, 138, 12392]),
    (
        "naïve café 日本 😀",
        true,
        &[2, 1789, 238527, 560, 33443, 33375, 163543],
    ),
    (
        "\t\tindented    code",
        true,
        &[2, 255969, 724, 16764, 140, 3970],
    ),
    (
        "<0x41> is a byte token",
        true,
        &[
            2, 236820, 236771, 236781, 236812, 236770, 236813, 563, 496, 16812, 8369,
        ],
    ),
    (
        "</s> and <s> and <eos>",
        false,
        &[
            2, 954, 236751, 236813, 532, 236743, 203, 532, 655, 211827, 236813,
        ],
    ),
    (
        "line1\n\n\nline2",
        true,
        &[2, 1257, 236770, 109, 1257, 236778],
    ),
    (
        "1234567890",
        true,
        &[
            2, 236770, 236778, 236800, 236812, 236810, 236825, 236832, 236828, 236819, 236771,
        ],
    ),
    (
        "👨‍👩‍👧‍👦 family",
        true,
        &[
            2, 243874, 237243, 243767, 237243, 244814, 237243, 244990, 2523,
        ],
    ),
    (" leading space", true, &[2, 5830, 2557]),
    (
        "<table><tr><td>1</td></tr></table>",
        false,
        &[2, 168, 173, 175, 236770, 183, 181, 176],
    ),
    ("𐍈 gothic", true, &[2, 478, 382, 379, 374, 97174]),
];

const SMOLLM2_CLI_CASES: &[CliCase] = &[
    (
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        true,
        &[1, 4093, 198, 19556, 2, 198, 1, 520, 9531, 198],
    ),
    (
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        false,
        &[
            44, 108, 306, 79, 3738, 108, 46, 4093, 198, 19556, 44, 108, 306, 79, 486, 108, 46, 198,
            44, 108, 306, 79, 3738, 108, 46, 520, 9531, 198,
        ],
    ),
    (
        "I can't believe it's not butter.",
        true,
        &[57, 416, 982, 2875, 357, 506, 441, 7121, 30],
    ),
    (
        "1234567890",
        true,
        &[33, 34, 35, 36, 37, 38, 39, 40, 41, 32],
    ),
    // Found by the tokenizer fuzz target: the vocabulary has no token for this control byte,
    // and llama-tokenize drops it.
    ("a\u{14}b", true, &[81, 82]),
    ("\u{14}", true, &[]),
    ("   leading spaces", true, &[256, 2899, 5600]),
    ("trailing spaces   ", true, &[4861, 4966, 5600, 333]),
    (
        "naïve café 日本 😀",
        true,
        &[3546, 46494, 37366, 17097, 241, 115, 40993, 40303, 218],
    ),
    (
        "def add(a, b):\n    return a + b\n",
        true,
        &[
            1604, 803, 24, 81, 28, 278, 727, 472, 1003, 253, 1232, 278, 198,
        ],
    ),
    (
        "$100.00 and €50,00",
        true,
        &[20, 33, 32, 32, 30, 32, 32, 284, 24927, 37, 32, 28, 32, 32],
    ),
    ("Hello\r\n\r\nworld", true, &[19556, 7209, 198, 6693]),
    ("<reponame>x", false, &[44, 10368, 46, 104]),
    ("<reponame>x", true, &[4, 104]),
    ("👍🏽 ok", true, &[10813, 235, 231, 10813, 233, 138, 10907]),
];

fn check_cli_cases(tokenizer: &Tokenizer, cases: &[CliCase]) {
    for &(text, parse_special, expected) in cases {
        let ids = tokenizer.encode(text, true, parse_special).unwrap();
        assert_eq!(ids, expected, "{text:?} (parse special: {parse_special})");
    }
}

#[test]
fn gemma3_matches_llama_tokenize_on_tricky_strings() {
    if let Some(tokenizer) = gemma3() {
        check_cli_cases(tokenizer, GEMMA3_CLI_CASES);
    }
}

#[test]
fn smollm2_matches_llama_tokenize_on_tricky_strings() {
    if let Some(tokenizer) = smollm2() {
        check_cli_cases(tokenizer, SMOLLM2_CLI_CASES);
    }
}

/// Piece bytes (without, with specials) and end-of-generation flags from llama.cpp's
/// `llama_token_to_piece` and `llama_vocab_is_eog`; all tokens of both vocabularies were compared
/// once, these are the kinds that differ most.
#[test]
fn pieces_and_end_of_generation_match_llama_cpp() {
    if let Some(gemma) = gemma3() {
        assert_eq!(
            (gemma.bos(), gemma.eos(), gemma.add_bos()),
            (Some(2), Some(1), true)
        );
        let end: Vec<u32> = (0..gemma.n_vocab() as u32)
            .filter(|&id| gemma.is_end_of_generation(id))
            .collect();
        // <eos>, <end_of_turn>, and </s>, which llama.cpp's list of stop texts catches.
        assert_eq!(end, [1, 106, 212]);
        let pieces: [(u32, &[u8], &[u8]); 6] = [
            (2, b"", b"<bos>"),
            (106, b"", b"<end_of_turn>"),
            (212, b"", b"</s>"),
            (168, b"<table>", b"<table>"),
            (248, b"\n", b"\n"),
            (9259, b"Hello", b"Hello"),
        ];
        for (id, plain, special) in pieces {
            assert_eq!(gemma.token_to_piece(id, false), plain, "gemma id {id}");
            assert_eq!(gemma.token_to_piece(id, true), special, "gemma id {id}");
        }
        assert_eq!(gemma.token_to_piece(2523, false), b" family");
    }
    if let Some(smollm) = smollm2() {
        assert_eq!(
            (smollm.bos(), smollm.eos(), smollm.add_bos()),
            (Some(1), Some(2), false)
        );
        let end: Vec<u32> = (0..smollm.n_vocab() as u32)
            .filter(|&id| smollm.is_end_of_generation(id))
            .collect();
        // <|endoftext|>, <|im_end|>, and <reponame>, taken as the FIM repository token.
        assert_eq!(end, [0, 2, 4]);
        assert_eq!(smollm.token_to_piece(1, false), b"");
        assert_eq!(smollm.token_to_piece(1, true), b"<|im_start|>");
        assert_eq!(smollm.token_to_piece(256, false), b"  ");
        assert_eq!(smollm.token_to_piece(241, false), [0x97]);
    }
}

#[derive(serde::Deserialize)]
struct Greedy {
    cases: Vec<GreedyCase>,
}

#[derive(serde::Deserialize)]
struct GreedyCase {
    tokens: Vec<u32>,
    /// llama.cpp's `llama_detokenize` of `tokens`, specials not shown.
    text: String,
}

/// Decoding, whole and streamed, gives llama.cpp's text for the generated continuations in
/// `tests/fixtures/<model_id>/greedy.json`.
fn check_decoding(tokenizer: &Tokenizer, model_id: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model_id)
        .join("greedy.json");
    let Ok(json) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let greedy: Greedy = serde_json::from_str(&json).expect("fixture is valid JSON");
    assert!(!greedy.cases.is_empty(), "{} has no cases", path.display());
    for case in &greedy.cases {
        assert_eq!(tokenizer.decode(&case.tokens, false), case.text);
        let mut decoder = tokenizer.decoder(false);
        let mut streamed: String = case.tokens.iter().map(|&id| decoder.push(id)).collect();
        streamed.push_str(&decoder.finish());
        assert_eq!(streamed, case.text);
    }
}

#[test]
fn gemma3_decodes_like_llama_cpp() {
    if let Some(tokenizer) = gemma3() {
        check_decoding(tokenizer, "gemma3-270m-q4_k_m");
    }
}

#[test]
fn smollm2_decodes_like_llama_cpp() {
    if let Some(tokenizer) = smollm2() {
        check_decoding(tokenizer, "smollm2-135m-q4_1");
    }
}
