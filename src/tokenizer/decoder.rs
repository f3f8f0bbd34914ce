//! Streaming detokenization: a token may end in the middle of a UTF-8 character (byte tokens,
//! byte-level BPE pieces), so text is released only once its characters are whole.

use super::Tokenizer;

/// Turns ids into text one at a time, holding back an incomplete UTF-8 sequence until the
/// tokens that complete it arrive.
pub struct Decoder<'t> {
    tokenizer: &'t Tokenizer,
    special: bool,
    pending: Vec<u8>,
}

impl<'t> Decoder<'t> {
    /// `special`: whether control tokens print their text (see [`Tokenizer::token_to_piece`]).
    pub fn new(tokenizer: &'t Tokenizer, special: bool) -> Self {
        Decoder {
            tokenizer,
            special,
            pending: Vec::new(),
        }
    }

    /// Adds one token and returns the text it completes, which may be empty. Bytes that can
    /// never become valid UTF-8 come out as U+FFFD.
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(self.tokenizer.token_to_piece(id, self.special));
        let mut text = String::new();
        let mut consumed = 0;
        while consumed < self.pending.len() {
            let rest = &self.pending[consumed..];
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    consumed = self.pending.len();
                }
                Err(error) => {
                    let valid_len = error.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(&rest[..valid_len]));
                    consumed += valid_len;
                    match error.error_len() {
                        Some(invalid_len) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            consumed += invalid_len;
                        }
                        // The tail is the start of a character whose bytes are still to come.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        text
    }

    /// Ends the stream: whatever is still held back, with U+FFFD for an unfinished character.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}
