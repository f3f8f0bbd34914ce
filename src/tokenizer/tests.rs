//! The algorithms on tiny hand-made vocabularies, where the right answer can be worked out by
//! hand. Parity with llama.cpp on the real vocabularies is in `parity_tests`.

use super::vocab::{Role, VocabSpec};
use super::{Tokenizer, TokenizerError};

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then `tokens`.
fn spm_spec(tokens: &[(&str, f32, i32)]) -> VocabSpec {
    let mut entries: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, UNKNOWN),
        ("<s>".into(), 0.0, CONTROL),
        ("</s>".into(), 0.0, CONTROL),
    ];
    entries.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
    entries.extend(tokens.iter().map(|&(t, s, ty)| (t.to_string(), s, ty)));
    VocabSpec {
        model: "llama".into(),
        tokens: entries.iter().map(|e| e.0.clone()).collect(),
        scores: Some(entries.iter().map(|e| e.1).collect()),
        token_types: Some(entries.iter().map(|e| e.2).collect()),
        add_space_prefix: Some(false),
        ..VocabSpec::default()
    }
}

fn normal(texts: &[(&'static str, f32)]) -> Vec<(&'static str, f32, i32)> {
    texts.iter().map(|&(t, s)| (t, s, NORMAL)).collect()
}

/// The id of each text, so expectations read as tokens rather than numbers.
fn ids(tokenizer: &Tokenizer, texts: &[&str]) -> Vec<u32> {
    texts
        .iter()
        .map(|t| {
            tokenizer
                .vocab
                .id(t)
                .unwrap_or_else(|| panic!("{t:?} not in vocab"))
        })
        .collect()
}

fn encode(tokenizer: &Tokenizer, text: &str, parse_special: bool) -> Vec<u32> {
    tokenizer.encode(text, false, parse_special).unwrap()
}

#[test]
fn spm_merges_the_highest_scoring_pair_first() {
    let bc_wins = Tokenizer::from_spec(spm_spec(&normal(&[
        ("a", -1.0),
        ("b", -1.0),
        ("c", -1.0),
        ("ab", -3.0),
        ("bc", -2.0),
    ])))
    .unwrap();
    assert_eq!(encode(&bc_wins, "abc", false), ids(&bc_wins, &["a", "bc"]));

    let ab_wins = Tokenizer::from_spec(spm_spec(&normal(&[
        ("a", -1.0),
        ("b", -1.0),
        ("c", -1.0),
        ("ab", -2.0),
        ("bc", -3.0),
    ])))
    .unwrap();
    assert_eq!(encode(&ab_wins, "abc", false), ids(&ab_wins, &["ab", "c"]));
}

#[test]
fn spm_breaks_score_ties_leftmost() {
    let tokenizer = Tokenizer::from_spec(spm_spec(&normal(&[("a", -1.0), ("aa", -2.0)]))).unwrap();
    assert_eq!(
        encode(&tokenizer, "aaa", false),
        ids(&tokenizer, &["aa", "a"])
    );
}

#[test]
fn spm_merges_greedily_not_optimally() {
    // "abcd" is a token, but "bc" scores best, and once merged "a"+"bc" and "bc"+"d" are not
    // tokens, so "abcd" is never reached. A Viterbi (Unigram) segmentation would pick "abcd".
    let tokenizer = Tokenizer::from_spec(spm_spec(&normal(&[
        ("a", -1.0),
        ("b", -1.0),
        ("c", -1.0),
        ("d", -1.0),
        ("ab", -5.0),
        ("cd", -5.0),
        ("bc", -0.5),
        ("abcd", -9.0),
    ])))
    .unwrap();
    assert_eq!(
        encode(&tokenizer, "abcd", false),
        ids(&tokenizer, &["a", "bc", "d"])
    );
}

#[test]
fn spm_falls_back_to_byte_tokens() {
    let tokenizer = Tokenizer::from_spec(spm_spec(&normal(&[("a", -1.0)]))).unwrap();
    assert_eq!(
        encode(&tokenizer, "aé", false),
        ids(&tokenizer, &["a", "<0xC3>", "<0xA9>"])
    );
}

#[test]
fn spm_replaces_spaces_and_prefixes_one_when_asked() {
    let tokens = normal(&[
        ("▁", -1.0),
        ("a", -1.0),
        ("▁a", -0.5),
        ("b", -1.0),
        ("▁b", -0.5),
    ]);
    let mut spec = spm_spec(&tokens);
    let plain = Tokenizer::from_spec(spec.clone()).unwrap();
    assert_eq!(encode(&plain, "a b", false), ids(&plain, &["a", "▁b"]));

    spec.add_space_prefix = Some(true);
    let prefixed = Tokenizer::from_spec(spec).unwrap();
    assert_eq!(
        encode(&prefixed, "a b", false),
        ids(&prefixed, &["▁a", "▁b"])
    );
    // The prefix also follows a special token, but not plain text.
    assert_eq!(
        encode(&prefixed, "a<s>b", true),
        ids(&prefixed, &["▁a", "<s>", "▁b"])
    );
}

#[test]
fn spm_defaults_follow_llama_cpp() {
    let mut spec = spm_spec(&normal(&[("▁a", -1.0)]));
    spec.add_space_prefix = None;
    let tokenizer = Tokenizer::from_spec(spec).unwrap();
    assert!(tokenizer.add_bos());
    assert_eq!(tokenizer.bos(), Some(1));
    assert_eq!(tokenizer.eos(), Some(2));
    assert_eq!(
        tokenizer.encode("a", true, false).unwrap(),
        ids(&tokenizer, &["<s>", "▁a"])
    );
}

#[test]
fn add_special_adds_bos_and_eos_as_the_vocabulary_asks() {
    let mut spec = spm_spec(&normal(&[("a", -1.0)]));
    spec.add_bos = Some(false);
    spec.add_eos = Some(true);
    let tokenizer = Tokenizer::from_spec(spec).unwrap();
    assert_eq!(
        tokenizer.encode("a", true, false).unwrap(),
        ids(&tokenizer, &["a", "</s>"])
    );
    assert_eq!(
        tokenizer.encode("a", false, false).unwrap(),
        ids(&tokenizer, &["a"])
    );
    assert_eq!(
        tokenizer.encode("", false, false).unwrap(),
        Vec::<u32>::new()
    );
}

#[test]
fn control_tokens_are_parsed_only_when_asked_user_defined_always() {
    let mut tokens = normal(&[("<", -1.0), ("s", -1.0), (">", -1.0), ("x", -1.0)]);
    tokens.push(("<x>", 0.0, USER_DEFINED));
    let tokenizer = Tokenizer::from_spec(spm_spec(&tokens)).unwrap();
    assert_eq!(
        encode(&tokenizer, "<s><x>", true),
        ids(&tokenizer, &["<s>", "<x>"])
    );
    assert_eq!(
        encode(&tokenizer, "<s><x>", false),
        ids(&tokenizer, &["<", "s", ">", "<x>"])
    );
}

#[test]
fn specials_split_longest_text_first_not_leftmost() {
    let mut tokens = normal(&[("a", -1.0), ("b", -1.0), ("c", -1.0), ("d", -1.0)]);
    tokens.push(("ab", 0.0, USER_DEFINED));
    tokens.push(("bcd", 0.0, USER_DEFINED));
    let tokenizer = Tokenizer::from_spec(spm_spec(&tokens)).unwrap();
    assert_eq!(
        encode(&tokenizer, "abcd", false),
        ids(&tokenizer, &["a", "bcd"])
    );
    assert_eq!(
        encode(&tokenizer, "ab ab", false),
        ids(&tokenizer, &["ab", "<0xE2>", "<0x96>", "<0x81>", "ab"])
    );
}

#[test]
fn pieces_print_as_llama_cpp_prints_them() {
    let mut tokens = normal(&[("▁hi", -1.0)]);
    tokens.push(("<x>", 0.0, USER_DEFINED));
    tokens.push(("<gone>", 0.0, 5));
    let tokenizer = Tokenizer::from_spec(spm_spec(&tokens)).unwrap();
    let piece = |text: &str, special: bool| {
        tokenizer
            .token_to_piece(ids(&tokenizer, &[text])[0], special)
            .to_vec()
    };
    assert_eq!(piece("▁hi", false), b" hi");
    assert_eq!(piece("<0x0A>", false), b"\n");
    assert_eq!(piece("<s>", false), b"");
    assert_eq!(piece("<s>", true), b"<s>");
    assert_eq!(piece("<unk>", false), b"");
    assert_eq!(piece("<x>", false), b"<x>");
    assert_eq!(piece("<gone>", true), b"");
    assert_eq!(tokenizer.token_to_piece(u32::MAX, true), b"");
}

#[test]
fn decode_joins_pieces_and_replaces_only_a_broken_end() {
    let tokenizer = Tokenizer::from_spec(spm_spec(&normal(&[("▁hi", -1.0)]))).unwrap();
    let e_acute = ids(&tokenizer, &["<0xC3>", "<0xA9>"]);
    let mut all = ids(&tokenizer, &["<s>", "▁hi"]);
    all.extend(&e_acute);
    assert_eq!(tokenizer.decode(&all, false), " hié");
    assert_eq!(tokenizer.decode(&all, true), "<s> hié");
    assert_eq!(tokenizer.decode(&e_acute[..1], false), "\u{FFFD}");
}

#[test]
fn decoder_holds_back_an_unfinished_character() {
    let tokenizer = Tokenizer::from_spec(spm_spec(&normal(&[("▁hi", -1.0)]))).unwrap();
    let [hi, b0, b1, b2, b3] =
        ids(&tokenizer, &["▁hi", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"])[..]
    else {
        unreachable!()
    };
    let mut decoder = tokenizer.decoder(false);
    assert_eq!(decoder.push(hi), " hi");
    assert_eq!(decoder.push(b0), "");
    assert_eq!(decoder.push(b1), "");
    assert_eq!(decoder.push(b2), "");
    assert_eq!(decoder.push(b3), "😀");
    assert_eq!(decoder.finish(), "");

    let mut decoder = tokenizer.decoder(false);
    assert_eq!(decoder.push(b0), "");
    assert_eq!(decoder.push(hi), "\u{FFFD} hi");
    assert_eq!(decoder.push(b0), "");
    assert_eq!(decoder.finish(), "\u{FFFD}");
}

/// A byte-level BPE vocabulary: the 256 byte characters, then `extra`, with `merges`.
fn bpe_spec(pre: Option<&str>, extra: &[&str], merges: &[&str]) -> VocabSpec {
    let byte_of_char = super::bpe::byte_of_char_table();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
    tokens.extend(
        (0u32..512)
            .filter(|&c| byte_of_char[c as usize].is_some())
            .map(|c| char::from_u32(c).unwrap().to_string()),
    );
    tokens.extend(extra.iter().map(|t| t.to_string()));
    let mut token_types = vec![NORMAL; tokens.len()];
    token_types[0] = CONTROL;
    VocabSpec {
        model: "gpt2".into(),
        pre: pre.map(str::to_string),
        tokens,
        token_types: Some(token_types),
        merges: Some(merges.iter().map(|m| m.to_string()).collect()),
        role_ids: vec![(Role::Bos, 0), (Role::Eos, 0)],
        ..VocabSpec::default()
    }
}

#[test]
fn bpe_merges_by_rank_within_pre_tokenized_words() {
    let tokenizer =
        Tokenizer::from_spec(bpe_spec(Some("gpt-2"), &["ab", "Ġab"], &["a b", "Ġ ab"])).unwrap();
    assert_eq!(
        encode(&tokenizer, "ab ab", false),
        ids(&tokenizer, &["ab", "Ġab"])
    );
    assert_eq!(
        tokenizer.decode(&encode(&tokenizer, "ab ab é", false), false),
        "ab ab é"
    );
    assert_eq!(
        encode(&tokenizer, "<|endoftext|>a", true),
        ids(&tokenizer, &["<|endoftext|>", "a"])
    );
}

#[test]
fn bpe_pre_tokenizer_type_decides_the_digit_split() {
    let spec = |pre| bpe_spec(Some(pre), &["12"], &["1 2"]);
    let gpt2 = Tokenizer::from_spec(spec("gpt-2")).unwrap();
    assert_eq!(encode(&gpt2, "12", false), ids(&gpt2, &["12"]));
    let smollm = Tokenizer::from_spec(spec("smollm")).unwrap();
    assert_eq!(encode(&smollm, "12", false), ids(&smollm, &["1", "2"]));
}

#[test]
fn bpe_without_pre_uses_the_default_and_unknown_pre_is_an_error() {
    assert!(Tokenizer::from_spec(bpe_spec(None, &[], &[])).is_ok());
    assert!(matches!(
        Tokenizer::from_spec(bpe_spec(Some("no-such-pre"), &[], &[])),
        Err(TokenizerError::UnknownPreTokenizer(name)) if name == "no-such-pre"
    ));
}

#[test]
fn end_of_generation_follows_llama_cpp() {
    let mut tokens = normal(&[("a", -1.0)]);
    tokens.push(("<end_of_turn>", 0.0, CONTROL));
    tokens.push(("<reponame>", 0.0, NORMAL));
    tokens.push(("<stop>", 0.0, CONTROL));
    let mut spec = spm_spec(&tokens);
    let stop = spec.tokens.len() as u32 - 1;
    spec.role_ids.push((Role::Eot, stop));
    let tokenizer = Tokenizer::from_spec(spec).unwrap();
    let [a, end_of_turn, reponame] = ids(&tokenizer, &["a", "<end_of_turn>", "<reponame>"])[..]
    else {
        unreachable!()
    };
    assert!(tokenizer.is_end_of_generation(tokenizer.eos().unwrap()));
    assert!(tokenizer.is_end_of_generation(end_of_turn));
    assert!(tokenizer.is_end_of_generation(stop));
    // Recognized by its text as the FIM repository token, which llama.cpp also stops on; that
    // makes it a control token, printed only with specials.
    assert!(tokenizer.is_end_of_generation(reponame));
    assert_eq!(tokenizer.token_to_piece(reponame, false), b"");
    assert!(!tokenizer.is_end_of_generation(a));
}

#[test]
fn fim_tokens_come_from_the_keys_then_from_their_texts() {
    let mut tokens = normal(&[("a", -1.0)]);
    for text in [
        "<|fim_prefix|>",
        "<fim_suffix>",
        "<PRE>",
        "<reponame>",
        "<|file_sep|>",
    ] {
        tokens.push((text, 0.0, USER_DEFINED));
    }
    tokens.push(("<hole>", 0.0, CONTROL));
    tokens.push(("<fill>", 0.0, CONTROL));
    let spec = spm_spec(&tokens);
    let [qwen_pre, granite_suf, codellama_pre, reponame, file_sep, hole, fill] = ids(
        &Tokenizer::from_spec(spec.clone()).unwrap(),
        &[
            "<|fim_prefix|>",
            "<fim_suffix>",
            "<PRE>",
            "<reponame>",
            "<|file_sep|>",
            "<hole>",
            "<fill>",
        ],
    )[..] else {
        unreachable!()
    };

    // No keys: every role whose text is there, the lowest id where several are; no middle.
    let by_text = Tokenizer::from_spec(spec.clone()).unwrap();
    let fim = by_text.fim();
    assert_eq!(fim.pre, Some(qwen_pre.min(codellama_pre)));
    assert_eq!(fim.suf, Some(granite_suf));
    assert_eq!(fim.mid, None);
    assert_eq!((fim.rep, fim.sep), (Some(reponame), Some(file_sep)));
    // Found by its text, a FIM token becomes a control token, parsed only with specials.
    assert_eq!(
        encode(&by_text, "<fim_suffix>", false).len(),
        "<fim_suffix>".len()
    );
    assert_eq!(encode(&by_text, "<fim_suffix>", true), vec![granite_suf]);

    // A key wins over the texts, and the deprecated keys, read last, over the current ones.
    let mut keyed = spec;
    keyed.role_ids = vec![
        (Role::FimSuf, fill),
        (Role::FimMid, hole),
        (Role::FimMid, fill),
        (Role::FimSep, 1_000_000),
    ];
    let fim = Tokenizer::from_spec(keyed).unwrap().fim();
    assert_eq!((fim.suf, fim.mid), (Some(fill), Some(fill)));
    // An id outside the vocabulary is ignored, leaving the text's token.
    assert_eq!(fim.sep, Some(file_sep));
}

#[test]
fn broken_vocabularies_give_errors() {
    let unknown_model = VocabSpec {
        model: "wordpiece".into(),
        ..spm_spec(&[])
    };
    assert!(matches!(
        Tokenizer::from_spec(unknown_model),
        Err(TokenizerError::UnknownModel(_))
    ));

    let mut short_scores = spm_spec(&[]);
    short_scores.scores.as_mut().unwrap().pop();
    assert!(matches!(
        Tokenizer::from_spec(short_scores),
        Err(TokenizerError::ArrayTooShort {
            key: "tokenizer.ggml.scores",
            ..
        })
    ));

    let mut short_types = spm_spec(&[]);
    short_types.token_types.as_mut().unwrap().truncate(3);
    assert!(matches!(
        Tokenizer::from_spec(short_types),
        Err(TokenizerError::ArrayTooShort { .. })
    ));

    let duplicate = spm_spec(&normal(&[("a", -1.0), ("a", -2.0)]));
    assert!(matches!(
        Tokenizer::from_spec(duplicate),
        Err(TokenizerError::DuplicateToken { .. })
    ));

    let empty = VocabSpec {
        model: "llama".into(),
        ..VocabSpec::default()
    };
    assert!(matches!(
        Tokenizer::from_spec(empty),
        Err(TokenizerError::EmptyVocabulary)
    ));

    let mut no_bos = bpe_spec(Some("gpt-2"), &[], &[]);
    no_bos.role_ids.clear();
    no_bos.tokens.truncate(5);
    no_bos.token_types.as_mut().unwrap().truncate(5);
    no_bos.add_bos = Some(true);
    assert!(matches!(
        Tokenizer::from_spec(no_bos),
        Err(TokenizerError::MissingSpecialToken("BOS"))
    ));

    let mut no_merges = bpe_spec(Some("gpt-2"), &[], &[]);
    no_merges.merges = None;
    assert!(matches!(
        Tokenizer::from_spec(no_merges),
        Err(TokenizerError::MissingMerges)
    ));

    let bad_merge = bpe_spec(Some("gpt-2"), &[], &["ab"]);
    assert!(matches!(
        Tokenizer::from_spec(bad_merge),
        Err(TokenizerError::BadMerge { index: 0, .. })
    ));
}

#[test]
fn every_supported_pre_tokenizer_builds_and_splits() {
    for pre in super::bpe::PRE_TOKENIZERS {
        for name in pre.names {
            let tokenizer = Tokenizer::from_spec(bpe_spec(Some(name), &[], &[]))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = "Hello, world 123!\n";
            let ids = encode(&tokenizer, text, false);
            assert_eq!(ids.len(), text.len(), "{name}");
            assert_eq!(tokenizer.decode(&ids, false), text, "{name}");
        }
    }
}
