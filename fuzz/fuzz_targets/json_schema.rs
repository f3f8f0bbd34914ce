//! JSON schemas to grammars (`grammar::json_schema`): any JSON value in. Never a panic, bounded
//! in time and memory; a schema that converts gives a grammar our own GBNF parser accepts,
//! unless it is too large or too ambiguous to follow (never a syntax error, an undefined rule
//! or left recursion: those would be converter bugs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::grammar::{json_schema, Grammar, GrammarError};

fuzz_target!(|data: &[u8]| {
    let Ok(schema) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(gbnf) = json_schema::schema_to_gbnf(&schema) else {
        return;
    };
    match Grammar::parse(&gbnf) {
        Ok(_) | Err(GrammarError::TooLarge(_) | GrammarError::TooAmbiguous) => {}
        Err(error) => panic!("{error}\nschema: {schema}\ngrammar:\n{gbnf}"),
    }
});
