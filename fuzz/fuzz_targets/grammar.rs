//! GBNF grammars (`grammar::Grammar`): parsing arbitrary text and matching arbitrary bytes.
//! Never a panic, and bounded in time and memory whatever the grammar (the limits on size,
//! repetition, nesting and ambiguity); a sentence fed one byte at a time reaches the same
//! verdict as the whole.
//!
//! The input is split at the first NUL: the grammar, then the bytes to match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::grammar::{Grammar, GrammarState};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let sentence = data.get(split + 1..).unwrap_or_default();
    let Ok(grammar) = Grammar::parse(text) else {
        return;
    };
    let mut whole = GrammarState::new(&grammar).expect("a parsed grammar starts");
    let whole_result = whole.advance_bytes(sentence);
    let mut bytewise = GrammarState::new(&grammar).expect("a parsed grammar starts");
    let mut bytewise_result = Ok(());
    for &byte in sentence {
        if bytewise.is_dead() {
            break;
        }
        let allowed = bytewise.allows_bytes(&[byte]);
        bytewise_result = bytewise.advance_bytes(&[byte]);
        if bytewise_result.is_err() {
            break;
        }
        assert_eq!(allowed, Ok(!bytewise.is_dead()));
    }
    if whole_result.is_ok() && bytewise_result.is_ok() {
        assert_eq!(whole.is_dead(), bytewise.is_dead());
        assert_eq!(whole.can_end(), bytewise.can_end());
        if let Ok(text) = std::str::from_utf8(sentence) {
            assert_eq!(grammar.matches(text), whole.can_end());
        }
    }
});
