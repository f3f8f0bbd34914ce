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

/// Every token `state` allows, in no particular order. The trie is read front to back, a
/// refused subtree skipped whole. The states met on the way are numbered and each (state, byte)
/// step is worked out once, in a table per state: a grammar passes through few distinct
/// states, so nearly every node costs one table lookup.
fn walk(state: &GrammarState, tokenizer: &Tokenizer) -> Result<Vec<u32>, GrammarError> {
    const UNKNOWN: u32 = u32::MAX;
    const REFUSED: u32 = u32::MAX - 1;
    let trie = tokenizer.piece_trie();
    let mut states = vec![state.clone()];
    let mut steps: Vec<[u32; 256]> = vec![[UNKNOWN; 256]];
    let mut numbers: HashMap<StateKey, u32> = HashMap::new();
    let mut allowed = Vec::new();
    // The current node's ancestors: where each one's subtree ends, and its state.
    let mut ancestors = vec![(trie.node_count() as u32, 0u32)];
    let mut index = 1;
    while (index as usize) < trie.node_count() {
        while ancestors.last().is_some_and(|&(end, _)| end <= index) {
            ancestors.pop();
        }
        let parent = ancestors.last().expect("the root spans the trie").1;
        let node = trie.node(index);
        let mut next = steps[parent as usize][usize::from(node.byte)];
        if next == UNKNOWN {
            let mut moved = states[parent as usize].clone();
            moved.advance_bytes(&[node.byte])?;
            next = if moved.is_dead() {
                REFUSED
            } else {
                let key = (moved.stacks.clone(), moved.partial);
                *numbers.entry(key).or_insert_with(|| {
                    states.push(moved);
                    steps.push([UNKNOWN; 256]);
                    states.len() as u32 - 1
                })
            };
            steps[parent as usize][usize::from(node.byte)] = next;
        }
        if next == REFUSED {
            index = node.subtree_end;
            continue;
        }
        allowed.extend_from_slice(trie.tokens_at(index));
        ancestors.push((node.subtree_end, next));
        index += 1;
    }
    if state.can_end() {
        allowed.extend_from_slice(tokenizer.end_of_generation_tokens());
    }
    Ok(allowed)
}
