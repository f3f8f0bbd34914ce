//! Default arguments carried in a bundle's `.args` entry.
//!
//! The text is split on whitespace; `'...'` keeps everything literally, `"..."` too except that
//! `\"` and `\\` stand for `"` and `\`; a word starting with `#` comments out the rest of its
//! line. A bare `...` marks where the user's own arguments go; without one they go at the end.
//! Backslashes outside quotes are literal so that Windows paths need no doubling.

use super::BundleError;
use std::ffi::OsString;
use std::iter::Peekable;
use std::str::Chars;

/// The name of the entry holding default arguments, as llamafile names it.
pub const ARGS_ENTRY: &str = ".args";

const USER_ARGS_MARKER: &str = "...";

#[derive(Debug, PartialEq)]
enum Word {
    Literal(String),
    UserArgs,
}

/// Splits `.args` text into words, marking where the user's arguments go.
fn split(text: &str) -> Result<Vec<Word>, BundleError> {
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut words = Vec::new();
    loop {
        while let Some(&c) = chars.peek() {
            if !c.is_whitespace() {
                break;
            }
            if c == '\n' {
                line += 1;
            }
            chars.next();
        }
        match chars.peek() {
            None => break,
            Some('#') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
                continue;
            }
            Some(_) => {}
        }

        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\'' | '"' => {
                    quoted = true;
                    read_quoted(&mut chars, c, &mut word, &mut line)?;
                }
                c => word.push(c),
            }
        }
        words.push(if !quoted && word == USER_ARGS_MARKER {
            Word::UserArgs
        } else {
            Word::Literal(word)
        });
    }
    if words.iter().filter(|w| **w == Word::UserArgs).count() > 1 {
        return Err(BundleError::ArgsMarkerTwice);
    }
    Ok(words)
}

/// Reads up to the closing `quote`, the opening one already consumed.
fn read_quoted(
    chars: &mut Peekable<Chars>,
    quote: char,
    word: &mut String,
    line: &mut usize,
) -> Result<(), BundleError> {
    let opened_on = *line;
    loop {
        let Some(c) = chars.next() else {
            return Err(BundleError::ArgsUnclosedQuote {
                quote,
                line: opened_on,
            });
        };
        match c {
            c if c == quote => return Ok(()),
            '\\' if quote == '"' && matches!(chars.peek(), Some('"' | '\\')) => {
                word.extend(chars.next());
            }
            c => {
                if c == '\n' {
                    *line += 1;
                }
                word.push(c);
            }
        }
    }
}

/// Combines a bundle's default arguments with the user's (both without the program name).
/// `None` (no `.args`) gives the user's arguments unchanged.
pub fn expand_args(
    embedded_args: Option<&str>,
    user_args: Vec<OsString>,
) -> Result<Vec<OsString>, BundleError> {
    let Some(text) = embedded_args else {
        return Ok(user_args);
    };
    let words = split(text)?;
    let mut user_args = Some(user_args);
    let mut expanded = Vec::with_capacity(words.len());
    for word in words {
        match word {
            Word::Literal(arg) => expanded.push(OsString::from(arg)),
            Word::UserArgs => expanded.extend(user_args.take().into_iter().flatten()),
        }
    }
    expanded.extend(user_args.into_iter().flatten());
    Ok(expanded)
}

/// Checks `.args` text without expanding it, so that `pack` refuses text that would fail at
/// every start of the bundle.
pub fn validate(text: &str) -> Result<(), BundleError> {
    split(text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn expand(text: &str, user: &[&str]) -> Vec<String> {
        expand_args(Some(text), os(user))
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn without_args_entry_user_args_pass_through() {
        let user = os(&["-p", "hi"]);
        assert_eq!(expand_args(None, user.clone()).unwrap(), user);
    }

    #[test]
    fn user_args_are_appended_without_marker() {
        assert_eq!(
            expand("-m gemma.gguf\n--temp 0\n", &["-p", "hello"]),
            ["-m", "gemma.gguf", "--temp", "0", "-p", "hello"]
        );
    }

    #[test]
    fn marker_in_the_middle_takes_user_args_there() {
        assert_eq!(
            expand("-m gemma.gguf ... --server --nobrowser", &["-c", "2048"]),
            ["-m", "gemma.gguf", "-c", "2048", "--server", "--nobrowser"]
        );
    }

    #[test]
    fn mode_flags_survive_expansion() {
        // llamafile issue #783: a mode flag inside .args must reach the mode choice.
        assert_eq!(expand("--server\n...\n", &[]), ["--server"]);
        assert_eq!(
            expand("-p 'Once upon a time'", &["-n", "5"]),
            ["-p", "Once upon a time", "-n", "5"]
        );
    }

    #[test]
    fn marker_with_no_user_args_vanishes() {
        assert_eq!(
            expand("-m a.gguf ... -t 2", &[]),
            ["-m", "a.gguf", "-t", "2"]
        );
    }

    #[test]
    fn quoted_marker_is_a_literal_argument() {
        assert_eq!(expand("-p '...'", &["x"]), ["-p", "...", "x"]);
    }

    #[test]
    fn quotes_comments_and_escapes() {
        let text = "# defaults for the demo\n\
                    -p \"say \\\"hi\\\" \\\\ now\"  # trailing comment\n\
                    --name 'it''s'\n\
                    a#b ''\n\
                    C:\\models\\x.gguf";
        assert_eq!(
            expand(text, &[]),
            [
                "-p",
                "say \"hi\" \\ now",
                "--name",
                "its",
                "a#b",
                "",
                "C:\\models\\x.gguf"
            ]
        );
    }

    #[test]
    fn quoted_text_may_span_lines() {
        assert_eq!(
            expand("-p 'two\nlines' -n 1", &[]),
            ["-p", "two\nlines", "-n", "1"]
        );
    }

    #[test]
    fn unclosed_quote_names_quote_and_line() {
        let err = expand_args(Some("-m a.gguf\n-p \"oops\n--temp 0"), vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            ".args: the \" quote opened on line 2 is never closed"
        );
        let err = expand_args(Some("'"), vec![]).unwrap_err();
        assert!(
            err.to_string().contains("' quote opened on line 1"),
            "{err}"
        );
    }

    #[test]
    fn two_markers_are_refused() {
        let err = expand_args(Some("... -m a.gguf ..."), vec![]).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn empty_and_comment_only_texts_expand_to_user_args() {
        assert_eq!(expand("", &["-h"]), ["-h"]);
        assert_eq!(expand("  # nothing here\n\n", &["-h"]), ["-h"]);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_user_args_are_kept() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![0x66, 0xff, 0x6f]);
        let out = expand_args(Some("-m a.gguf"), vec![odd.clone()]).unwrap();
        assert_eq!(
            out,
            vec![OsString::from("-m"), OsString::from("a.gguf"), odd]
        );
    }
}
