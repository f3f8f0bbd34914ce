//! The grammar's state asked about tokens: one token at a time for the few most likely, or the
//! whole vocabulary at once by walking the tokenizer's piece trie, where a refused prefix
//! skips every token under it.

use super::{Grammar, GrammarError, GrammarState, PartialChar, Stack};
use crate::sampling::Constraint;
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::sync::Arc;

/// A generation's place in its grammar, with the allowed sets it has already worked out: inside
/// a JSON string or a repetition the state after each token is often the state before it, and
/// the whole-vocabulary walk is then done once.
pub struct GrammarFilter {
    state: GrammarState,
    known: HashMap<StateKey, Vec<u32>>,
}

type StateKey = (Vec<Stack>, PartialChar);

/// Enough for the states a grammar cycles through; more are rare and simply worked out again.
const KNOWN_STATES: usize = 64;

impl GrammarFilter {
    pub fn new(grammar: &Arc<Grammar>) -> Result<GrammarFilter, GrammarError> {
        Ok(GrammarFilter {
            state: GrammarState::new(grammar)?,
            known: HashMap::new(),
        })
    }

    /// Moves past a sampled token.
    pub fn accept(&mut self, token: u32, tokenizer: &Tokenizer) -> Result<(), GrammarError> {
        if tokenizer.is_end_of_generation(token) {
            return Ok(());
        }
        self.state
            .advance_bytes(tokenizer.token_to_piece(token, false))
    }

    /// The filter the sampler asks.
    pub fn tokens<'a>(&'a mut self, tokenizer: &'a Tokenizer) -> TokenFilter<'a> {
        TokenFilter {
            filter: self,
            tokenizer,
        }
    }
}

/// Which tokens may come next under a grammar. End-of-generation tokens may come only where
/// the grammar may end; control tokens never (they print nothing, so the text would not show
/// what the grammar saw).
pub struct TokenFilter<'a> {
    filter: &'a mut GrammarFilter,
    tokenizer: &'a Tokenizer,
}

impl Constraint for TokenFilter<'_> {
    type Error = GrammarError;

    fn allows(&mut self, token: u32) -> Result<bool, GrammarError> {
        let state = &self.filter.state;
        if self.tokenizer.is_end_of_generation(token) {
            return Ok(state.can_end());
        }
        let piece = self.tokenizer.token_to_piece(token, false);
        if piece.is_empty() {
            return Ok(false);
        }
        state.allows_bytes(piece)
    }

    fn allowed(&mut self) -> Result<Vec<u32>, GrammarError> {
        let key = (self.filter.state.stacks.clone(), self.filter.state.partial);
        if let Some(allowed) = self.filter.known.get(&key) {
            return Ok(allowed.clone());
        }
        let allowed = walk(&self.filter.state, self.tokenizer)?;
        if self.filter.known.len() == KNOWN_STATES {
            self.filter.known.clear();
        }
        self.filter.known.insert(key, allowed.clone());
        Ok(allowed)
    }
}

/// Every token `state` allows, in id order. The states met on the way are numbered and each
/// (state, byte) step is worked out once: the trie has about a million nodes for a large
/// vocabulary, but a grammar passes through few distinct states.
fn walk(state: &GrammarState, tokenizer: &Tokenizer) -> Result<Vec<u32>, GrammarError> {
    let trie = tokenizer.piece_trie();
    let mut states = vec![state.clone()];
    let mut numbers: HashMap<StateKey, u32> = HashMap::new();
    let mut steps: HashMap<(u32, u8), Option<u32>> = HashMap::new();
    let mut allowed = Vec::new();
    let mut pending = vec![(trie.root(), 0u32)];
    while let Some((node, number)) = pending.pop() {
        for child in trie.children(node) {
            let byte = trie.node(child).byte;
            let next = match steps.get(&(number, byte)) {
                Some(&next) => next,
                None => {
                    let mut next = states[number as usize].clone();
                    next.advance_bytes(&[byte])?;
                    let next = (!next.is_dead()).then(|| {
                        let key = (next.stacks.clone(), next.partial);
                        *numbers.entry(key).or_insert_with(|| {
                            states.push(next);
                            states.len() as u32 - 1
                        })
                    });
                    steps.insert((number, byte), next);
                    next
                }
            };
            if let Some(next) = next {
                allowed.extend_from_slice(trie.tokens_at(child));
                pending.push((child, next));
            }
        }
    }
    allowed.retain(|&id| !tokenizer.is_end_of_generation(id));
    if state.can_end() {
        allowed.extend_from_slice(tokenizer.end_of_generation_tokens());
    }
    allowed.sort_unstable();
    Ok(allowed)
}
