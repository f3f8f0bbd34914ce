//! `.args` expansion on arbitrary text: an error (unclosed quote, `...` twice) or the user's
//! arguments placed exactly once, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::bundle::expand_args;
use std::ffi::OsString;

fuzz_target!(|text: &str| {
    let user: Vec<OsString> = vec!["--user-a".into(), "--user-b".into()];
    let Ok(expanded) = expand_args(Some(text), user.clone()) else {
        return;
    };
    // Text that spells the user's arguments itself cannot tell where they went.
    if text.contains("--user-") {
        return;
    }
    let at = expanded
        .iter()
        .position(|arg| *arg == user[0])
        .expect("the user's arguments are always kept");
    assert!(expanded[at..].starts_with(&user), "kept together, in order");
    assert_eq!(expanded.iter().filter(|arg| **arg == user[0]).count(), 1);
});
