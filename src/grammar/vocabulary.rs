//! The grammar's state asked about tokens: one token at a time for the few most likely, or the
//! whole vocabulary at once by walking the tokenizer's piece trie, where a refused prefix
//! skips every token under it.

use super::{GrammarError, GrammarState};
use crate::sampling::Constraint;
use crate::tokenizer::Tokenizer;

/// Which tokens may come next under a grammar. End-of-generation tokens may come only where
/// the grammar may end; control tokens never (they print nothing, so the text would not show
/// what the grammar saw).
pub struct TokenFilter<'a> {
    pub state: &'a GrammarState,
    pub tokenizer: &'a Tokenizer,
}

impl Constraint for TokenFilter<'_> {
    type Error = GrammarError;

    fn allows(&mut self, token: u32) -> Result<bool, GrammarError> {
        if self.tokenizer.is_end_of_generation(token) {
            return Ok(self.state.can_end());
        }
        let piece = self.tokenizer.token_to_piece(token, false);
        if piece.is_empty() {
            return Ok(false);
        }
        self.state.allows_bytes(piece)
    }

    fn allowed(&mut self) -> Result<Vec<u32>, GrammarError> {
        let trie = self.tokenizer.piece_trie();
        let mut allowed = Vec::new();
        let mut pending = vec![(trie.root(), self.state.clone())];
        while let Some((node, state)) = pending.pop() {
            for child in trie.children(node) {
                let mut next = state.clone();
                next.advance_bytes(&[trie.node(child).byte])?;
                if next.is_dead() {
                    continue;
                }
                allowed.extend_from_slice(trie.tokens_at(child));
                pending.push((child, next));
            }
        }
        allowed.retain(|&id| !self.tokenizer.is_end_of_generation(id));
        if self.state.can_end() {
            allowed.extend_from_slice(self.tokenizer.end_of_generation_tokens());
        }
        allowed.sort_unstable();
        Ok(allowed)
    }
}
