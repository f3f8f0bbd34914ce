//! `-e`: the backslash escapes llama.cpp understands in prompts.

/// Replaces `\n`, `\r`, `\t`, `\'`, `\"`, `\\`, `\a`, `\b`, `\f`, `\v`, `\0` and `\xHH`; any
/// other backslash is kept as typed, so a Windows path survives.
pub fn process(input: &str) -> String {
    let mut out = Vec::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let replacement = match bytes[i + 1] {
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'\'' => Some(b'\''),
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'v' => Some(0x0b),
            b'0' => Some(0),
            b'x' => input
                .get(i + 2..i + 4)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match replacement {
            Some(byte) => {
                out.push(byte);
                i += if bytes[i + 1] == b'x' { 4 } else { 2 };
            }
            None => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    // A `\xHH` may produce a lone byte of a multi-byte sequence; keep the text valid.
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::process;

    #[test]
    fn common_escapes() {
        assert_eq!(process(r#"a\nb\tc\\d\"e"#), "a\nb\tc\\d\"e");
        assert_eq!(process(r"\x41\x7a"), "Az");
    }

    #[test]
    fn unknown_and_trailing_backslashes_stay() {
        assert_eq!(process(r"C:\Users\q"), r"C:\Users\q");
        assert_eq!(process("end\\"), "end\\");
        assert_eq!(process(r"\xZZ"), r"\xZZ");
    }
}
