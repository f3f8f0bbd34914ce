//! SentencePiece-style encoding of one text fragment, as llama.cpp's `llm_tokenizer_spm` does it.
//!
//! Written by hand rather than with the `tokenizers` crate: llama.cpp merges the adjacent pair
//! whose concatenation is the vocabulary token with the highest *score* (ties: leftmost), and
//! any token in the table may be the result, whereas the crate's BPE model applies a ranked list
//! of merges and its Unigram model picks a Viterbi segmentation. Neither reproduces llama.cpp's ids
//! on Gemma's vocabulary.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// A run of the text: its byte range, and its neighbours in the chain of live symbols.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols into the token `left ++ right`.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text when queued: a later merge of either side changes it,
    /// which marks the candidate stale.
    len: usize,
}

impl Ord for Bigram {
    /// Highest score first; on equal scores the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// Appends the ids of `text` (spaces already replaced by `▁`) to `out`.
pub(super) fn encode(
    vocab: &Vocab,
    byte_tokens: &[Option<u32>; 256],
    text: &str,
    out: &mut Vec<u32>,
) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (start, ch) in text.char_indices() {
        let index = symbols.len();
        symbols.push(Symbol {
            start,
            len: ch.len_utf8(),
            prev: index.checked_sub(1),
            next: Some(index + 1),
        });
    }
    let Some(last) = symbols.last_mut() else {
        return;
    };
    last.next = None;

    let mut queue = BinaryHeap::new();
    for left in 1..symbols.len() {
        push_bigram(vocab, text, &symbols, &mut queue, left - 1, left);
    }

    while let Some(bigram) = queue.pop() {
        let (left, right) = (symbols[bigram.left], symbols[bigram.right]);
        if left.len == 0 || right.len == 0 || left.len + right.len != bigram.len {
            continue;
        }
        symbols[bigram.left].len += right.len;
        symbols[bigram.left].next = right.next;
        symbols[bigram.right].len = 0;
        if let Some(next) = right.next {
            symbols[next].prev = Some(bigram.left);
        }
        if let Some(prev) = left.prev {
            push_bigram(vocab, text, &symbols, &mut queue, prev, bigram.left);
        }
        if let Some(next) = right.next {
            push_bigram(vocab, text, &symbols, &mut queue, bigram.left, next);
        }
    }

    // Every merged symbol is a token, since only pairs forming a token are queued, so
    // llama.cpp's re-segmentation of non-tokens only ever reaches single characters, which
    // become byte tokens.
    let mut cursor = Some(0);
    while let Some(index) = cursor {
        let symbol = symbols[index];
        let piece = &text[symbol.start..symbol.start + symbol.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| byte_tokens[b as usize])),
        }
        cursor = symbol.next;
    }
}

fn push_bigram(
    vocab: &Vocab,
    text: &str,
    symbols: &[Symbol],
    queue: &mut BinaryHeap<Bigram>,
    left: usize,
    right: usize,
) {
    let start = symbols[left].start;
    let len = symbols[left].len + symbols[right].len;
    if let Some(id) = vocab.id(&text[start..start + len]) {
        queue.push(Bigram {
            score: vocab.scores[id as usize],
            left,
            right,
            len,
        });
    }
}
