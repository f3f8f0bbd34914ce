//! `.args` expansion on arbitrary text: an error (unclosed quote, `...` twice) or the text's
//! words with the user's arguments placed once, together, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::bundle::expand_args;
use std::ffi::OsString;

fuzz_target!(|text: &str| {
    let Ok(words) = expand_args(Some(text), Vec::new()) else {
        return;
    };
    let user: Vec<OsString> = vec!["--user-a".into(), "--user-b".into()];
    let expanded = expand_args(Some(text), user.clone()).expect("the same text expanded before");
    // The text's own words, in order, with the user's arguments inserted together at one place.
    assert_eq!(expanded.len(), words.len() + user.len());
    assert!((0..=words.len()).any(|at| {
        expanded[..at] == words[..at]
            && expanded[at..at + user.len()] == user[..]
            && expanded[at + user.len()..] == words[at..]
    }));
});
