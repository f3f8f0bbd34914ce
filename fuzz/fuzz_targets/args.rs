//! `.args` expansion on arbitrary text: an error (unclosed quote, `...` twice) or the user's
//! arguments placed exactly once, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::bundle::expand_args;
use std::ffi::OsString;

fuzz_target!(|text: &str| {
    let user: Vec<OsString> = vec!["--user-arg-a".into(), "--user-arg-b".into()];
    let Ok(expanded) = expand_args(Some(text), user.clone()) else {
        return;
    };
    let at = expanded
        .iter()
        .position(|arg| *arg == user[0])
        .expect("the user's arguments are always kept");
    // The text could itself spell the marker words, so only the user's pair, in order, counts.
    assert!(expanded[at..].starts_with(&user) || text.contains("--user-arg-a"));
});
