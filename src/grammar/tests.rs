use super::*;
use crate::sampling::{Constraint, Sampler, SamplingParams};
use crate::test_models::synthetic_engine;

fn grammar(text: &str) -> Arc<Grammar> {
    Grammar::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn check(text: &str, accepted: &[&str], refused: &[&str]) {
    let g = grammar(text);
    for sentence in accepted {
        assert!(g.matches(sentence), "{text:?} should match {sentence:?}");
    }
    for sentence in refused {
        assert!(
            !g.matches(sentence),
            "{text:?} should not match {sentence:?}"
        );
    }
}

#[test]
fn literals_classes_and_alternatives() {
    check(
        r#"root ::= "yes" | "no""#,
        &["yes", "no"],
        &["", "ye", "yesno", "No"],
    );
    check(
        "root ::= [a-c0-9_] [^a-z\\n] .",
        &["a0x", "_A\n", "9 é"],
        &["dA1", "aa1", "a\n1", "a0"],
    );
    check(
        r#"root ::= "\x41\u00e9\t\"\\" [\]\-\[]"#,
        &["Aé\t\"\\]", "Aé\t\"\\-", "Aé\t\"\\["],
        &["Aé\t\"\\a"],
    );
    check(
        "root ::= \"日本\" [語-語]",
        &["日本語"],
        &["日本", "日本人"],
    );
}

#[test]
fn rules_groups_comments_and_lines() {
    let text = r#"
        # a list of numbers
        root ::= "[" ( num ( "," num )* )? "]"   # comment after a rule
        num  ::= [0-9]+ (
            "." [0-9]+
        )?
    "#;
    check(
        text,
        &["[]", "[1]", "[1,22,3.5]", "[0.25,7]"],
        &["[", "[1,]", "[,1]", "[1.]", "[a]"],
    );
}

#[test]
fn repetitions() {
    check(r#"root ::= "a"*"#, &["", "a", "aaaa"], &["b", "ab"]);
    check(r#"root ::= "a"+"#, &["a", "aaa"], &[""]);
    check(r#"root ::= "ab"?"c""#, &["c", "abc"], &["ac", "abab c"]);
    check(r#"root ::= "ab"{2}"#, &["abab"], &["ab", "ababab"]);
    check(r#"root ::= [x]{2,}"#, &["xx", "xxxxx"], &["x", ""]);
    check(r#"root ::= [x]{1,3}"#, &["x", "xx", "xxx"], &["", "xxxx"]);
    check(r#"root ::= [x]{0,2} "y""#, &["y", "xy", "xxy"], &["xxxy"]);
    check(
        r#"root ::= ("a" | "bc"){2,3}"#,
        &["aa", "abc", "bcbca"],
        &["a", "aaaa"],
    );
}

#[test]
fn recursion_that_is_not_on_the_left() {
    let text = r#"
root ::= expr
expr ::= term (("+" | "-") term)*
term ::= [0-9]+ | "(" expr ")"
"#;
    check(
        text,
        &["1", "1+2", "(1+2)-3", "((4))", "2-(3+(4-5))"],
        &["", "1+", "(1", "1)", "()"],
    );
}

#[test]
fn refuses_grammars_it_cannot_follow() {
    let error = |text: &str| Grammar::parse(text).expect_err(text);
    assert!(matches!(error("root ::= ("), GrammarError::Syntax { .. }));
    assert!(matches!(
        error("root ::= \"abc"),
        GrammarError::Syntax { .. }
    ));
    assert!(matches!(error("root ::= [a-"), GrammarError::Syntax { .. }));
    assert!(matches!(
        error("root ::= \"\\q\""),
        GrammarError::Syntax { .. }
    ));
    assert!(matches!(
        error("root ::= * \"a\""),
        GrammarError::Syntax { .. }
    ));
    assert!(matches!(
        error("root ::= [z-a]"),
        GrammarError::Syntax { .. }
    ));
    assert!(matches!(
        error("root ::= \"a\"{3,1}"),
        GrammarError::Syntax { .. }
    ));
    assert!(matches!(error("root = \"a\""), GrammarError::Syntax { .. }));
    assert!(matches!(
        error("root ::= \"a\"\nroot ::= \"b\""),
        GrammarError::Syntax { .. }
    ));
    assert_eq!(
        error("root ::= item"),
        GrammarError::Undefined("item".into())
    );
    assert_eq!(error("item ::= \"a\""), GrammarError::NoRoot);
    assert_eq!(error(""), GrammarError::NoRoot);
    assert!(matches!(
        error("root ::= root \"a\" | \"a\""),
        GrammarError::LeftRecursive(_)
    ));
    assert!(matches!(
        error("root ::= a\na ::= b \"x\"\nb ::= \"y\"? a"),
        GrammarError::LeftRecursive(_)
    ));
    assert!(matches!(
        error("root ::= (\"a\"?)*"),
        GrammarError::LeftRecursive(_)
    ));
    assert!(matches!(
        error("root ::= \"a\"{1000000}"),
        GrammarError::TooLarge(_)
    ));
    assert!(matches!(
        error("root ::= \"abcdefghij\"{9000} \"klmnopqrst\"{9000} \"uvwxyz0123\"{9000}"),
        GrammarError::TooLarge(_)
    ));
    let deep = format!("root ::= {}\"a\"{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(error(&deep), GrammarError::Syntax { .. }));
}

#[test]
fn ambiguity_is_bounded() {
    // Every "a" may be read by any of 64 rules: 64 ways on for each character, deduplicated.
    let alternatives: Vec<String> = (0..64).map(|i| format!("r{i}")).collect();
    let mut text = format!("root ::= ({})*\n", alternatives.join(" | "));
    for name in &alternatives {
        text += &format!("{name} ::= \"a\"\n");
    }
    assert!(grammar(&text).matches("aaaa"));
    // Exponentially many ways to the same place are followed once each.
    let doubled = format!("root ::= {}\"b\"", "(\"\" | \"\")".repeat(40));
    assert!(grammar(&doubled).matches("b"));
    // Genuinely many distinct continuations are refused, not followed into unbounded memory.
    let wide = |n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        let rules: String = names.iter().map(|r| format!("\n{r} ::= \"{r}\"")).collect();
        format!("root ::= \"a\" ({})", names.join(" | ")) + &rules
    };
    assert!(grammar(&wide(MAX_STACKS)).matches("ar7"));
    let mut state = GrammarState::new(&grammar(&wide(MAX_STACKS + 1))).unwrap();
    assert_eq!(state.advance_bytes(b"a"), Err(GrammarError::TooAmbiguous));
    assert!(matches!(
        Grammar::parse(&wide(MAX_STACKS + 1).replacen("\"a\" ", "", 1)),
        Err(GrammarError::TooAmbiguous)
    ));
}

#[test]
fn characters_cut_between_tokens() {
    let g = grammar("root ::= \"é\" [a]");
    let state = GrammarState::new(&g).unwrap();
    let e_acute = "é".as_bytes();
    assert!(state.allows_bytes(&e_acute[..1]).unwrap());
    assert!(!state.allows_bytes(&"ê".as_bytes()[..1]).unwrap() || "ê".as_bytes()[0] == e_acute[0]);
    assert!(
        !state.allows_bytes(&"日".as_bytes()[..1]).unwrap(),
        "a three-byte lead"
    );
    assert!(!state.allows_bytes(b"a").unwrap());
    let mut state = state;
    state.advance_bytes(&e_acute[..1]).unwrap();
    assert!(!state.can_end(), "half a character is no end");
    assert!(state.allows_bytes(&e_acute[1..]).unwrap());
    assert!(!state.allows_bytes(&"è".as_bytes()[1..]).unwrap());
    assert!(!state.allows_bytes(b"a").unwrap(), "a character cut short");
    state.advance_bytes(&e_acute[1..]).unwrap();
    assert!(state.allows_bytes(b"a").unwrap());
    // Invalid UTF-8 never passes, even where any character would.
    let any = GrammarState::new(&grammar("root ::= .*")).unwrap();
    assert!(!any.allows_bytes(&[0x80]).unwrap());
    assert!(!any.allows_bytes(&[0xC3, 0x41]).unwrap());
    assert!(!any.allows_bytes(&[0xFF]).unwrap());
    assert!(any.allows_bytes(&[0xE6, 0x97]).unwrap());
    // Overlong encodings, surrogates and characters past U+10FFFF are no UTF-8 either.
    assert!(!any.allows_bytes(&[0xE0, 0x80, 0xA0]).unwrap());
    assert!(!any.allows_bytes(&[0xF0, 0x80]).unwrap());
    assert!(!any.allows_bytes(&[0xED, 0xA0, 0x80]).unwrap());
    assert!(!any.allows_bytes(&[0xF4, 0x90]).unwrap());
    assert!(any.allows_bytes("\u{10FFFF}".as_bytes()).unwrap());
    // A lead byte never stands for a character it cannot start: 0xE0 starts U+0800 and up.
    let space = GrammarState::new(&grammar("root ::= \" \"")).unwrap();
    for lead in [0xC2, 0xE0, 0xF0] {
        assert!(!space.allows_bytes(&[lead]).unwrap(), "{lead:#x}");
    }
    // A negated class accepts a cut character unless one range covers all it may become.
    let not_e = GrammarState::new(&grammar("root ::= [^é]")).unwrap();
    assert!(not_e.allows_bytes(&e_acute[..1]).unwrap());
    let not_block = GrammarState::new(&grammar("root ::= [^\\u00c0-\\u00ff]")).unwrap();
    assert!(!not_block.allows_bytes(&e_acute[..1]).unwrap());
}

#[test]
fn a_token_may_span_several_elements() {
    let g = grammar("root ::= \"{\" ws \"\\\"\" [a-z]+ \"\\\"\" ws \"}\"\nws ::= \" \"?");
    let state = GrammarState::new(&g).unwrap();
    assert!(state.allows_bytes(b"{ \"ab").unwrap());
    assert!(state.allows_bytes(b"{\"a\"}").unwrap());
    assert!(!state.allows_bytes(b"{  \"").unwrap());
    assert!(!state.allows_bytes(b"{\"\"").unwrap());
}

/// The trie walk and asking each token in turn agree on every state along a sentence.
#[test]
fn the_vocabulary_walk_agrees_with_each_token_asked_alone() {
    let engine = synthetic_engine();
    let tokenizer = engine.tokenizer();
    let g = grammar("root ::= \"<\" [a-z]+ \">\" (\" \" | \"é\" | \"日本\")* [0-9]{1,3}\n");
    let mut filter = GrammarFilter::new(&g).unwrap();
    let pieces = ["<", "div", ">", " ", "é", "日", "本", " ", " ", "12"];
    for piece in pieces {
        let mut tokens = filter.tokens(tokenizer);
        let mut walked = tokens.allowed().unwrap();
        walked.sort_unstable();
        let mut again = tokens.allowed().unwrap();
        again.sort_unstable();
        assert_eq!(walked, again, "the second answer is remembered");
        let asked: Vec<u32> = (0..tokenizer.n_vocab() as u32)
            .filter(|&id| tokens.allows(id).unwrap())
            .collect();
        assert_eq!(walked, asked, "before {piece:?}");
        assert!(!walked.is_empty());
        let ids = tokenizer.encode(piece, false, false).unwrap();
        for id in ids {
            filter.accept(id, tokenizer).unwrap();
        }
    }
    let at_end = filter.tokens(tokenizer).allowed().unwrap();
    assert!(at_end.contains(&tokenizer.eos().unwrap()));
}

/// Sampling under a grammar draws from the allowed tokens in proportion to what the chain
/// gives them, as if the refused tokens had never been there.
#[test]
fn constrained_sampling_follows_the_renormalized_distribution() {
    struct Even;
    impl Constraint for Even {
        type Error = std::convert::Infallible;
        fn allows(&mut self, token: u32) -> Result<bool, Self::Error> {
            Ok(token.is_multiple_of(2))
        }
        fn allowed(&mut self) -> Result<Vec<u32>, Self::Error> {
            Ok((0..8).filter(|t| t % 2 == 0).collect())
        }
    }
    let logits = [3.0, 0.0, 1.0, 2.5, 0.5, 2.0, 0.0, -1.0];
    for top_k in [0, 2, 40] {
        let mut sampler = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k,
            top_p: 1.0,
            min_p: 0.0,
            seed: 11,
            ..SamplingParams::default()
        });
        let draws = 40_000;
        let mut counts = [0usize; 8];
        for _ in 0..draws {
            counts[sampler
                .sample_constrained(&logits, &mut Even)
                .unwrap()
                .unwrap() as usize] += 1;
        }
        let kept: Vec<usize> = match top_k {
            2 => vec![0, 2],
            _ => vec![0, 2, 4, 6],
        };
        let total: f64 = kept.iter().map(|&t| f64::from(logits[t]).exp()).sum();
        for token in 0..8 {
            let expected = if kept.contains(&token) {
                f64::from(logits[token]).exp() / total
            } else {
                0.0
            };
            let seen = counts[token] as f64 / draws as f64;
            assert!(
                (seen - expected).abs() < 0.01,
                "top_k {top_k}: token {token} drawn {seen:.4}, expected {expected:.4}"
            );
        }
    }
    let mut greedy = Sampler::new(SamplingParams {
        temperature: 0.0,
        ..SamplingParams::default()
    });
    assert_eq!(
        greedy.sample_constrained(&logits, &mut Even).unwrap(),
        Some(0)
    );
    let odd_first = [1.0, 3.0, 0.5, 2.0, 0.9, 0.0, 0.0, 0.0];
    assert_eq!(
        greedy.sample_constrained(&odd_first, &mut Even).unwrap(),
        Some(0)
    );
}
