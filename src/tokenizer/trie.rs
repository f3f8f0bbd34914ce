//! The vocabulary's printed pieces as a prefix tree, so a question asked of every token ("may
//! this come next?") is asked once per shared prefix: a grammar walks the tree and skips every
//! token under a prefix it refuses.
//!
//! The nodes are stored in pre-order (each node before its children, each subtree contiguous),
//! so a walk reads them front to back and skips a refused subtree by jumping to its end: a
//! large vocabulary has about a million nodes, and reading them in order is what keeps a walk
//! over all of them to a few milliseconds.

use super::Tokenizer;

/// One byte below its parent. The tokens whose piece ends here are a run of `tokens`, which
/// is sorted by piece.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub byte: u8,
    /// The index after this node's subtree.
    pub subtree_end: u32,
    tokens_start: u32,
    tokens_end: u32,
}

#[derive(Debug)]
pub struct PieceTrie {
    nodes: Vec<Node>,
    tokens: Vec<u32>,
}

impl PieceTrie {
    /// Every token that prints something (`token_to_piece` without special tokens) and does
    /// not end the generation: control tokens print nothing, and end-of-generation tokens are
    /// asked about on their own.
    pub fn new(tokenizer: &Tokenizer) -> PieceTrie {
        let mut ids: Vec<u32> = (0..tokenizer.n_vocab() as u32)
            .filter(|&id| {
                !tokenizer.token_to_piece(id, false).is_empty()
                    && !tokenizer.is_end_of_generation(id)
            })
            .collect();
        ids.sort_unstable_by(|&a, &b| {
            tokenizer
                .token_to_piece(a, false)
                .cmp(tokenizer.token_to_piece(b, false))
                .then(a.cmp(&b))
        });
        let root = Node {
            byte: 0,
            subtree_end: 0,
            tokens_start: 0,
            tokens_end: 0,
        };
        let mut nodes = vec![root];
        // The nodes of the previous piece's bytes, root first; a node leaves the path when the
        // sorted pieces have left its prefix for good, and its subtree ends there.
        let mut path: Vec<u32> = vec![0];
        let mut previous: &[u8] = &[];
        for (index, &id) in ids.iter().enumerate() {
            let piece = tokenizer.token_to_piece(id, false);
            let shared = piece
                .iter()
                .zip(previous)
                .take_while(|(a, b)| a == b)
                .count();
            for closed in path.drain(shared + 1..) {
                nodes[closed as usize].subtree_end = nodes.len() as u32;
            }
            for &byte in &piece[shared..] {
                path.push(nodes.len() as u32);
                nodes.push(Node {
                    byte,
                    subtree_end: 0,
                    tokens_start: index as u32,
                    tokens_end: index as u32,
                });
            }
            let end = *path.last().expect("a piece has at least one byte") as usize;
            if nodes[end].tokens_start == nodes[end].tokens_end {
                nodes[end].tokens_start = index as u32;
            }
            nodes[end].tokens_end = index as u32 + 1;
            previous = piece;
        }
        for open in path {
            nodes[open as usize].subtree_end = nodes.len() as u32;
        }
        PieceTrie { nodes, tokens: ids }
    }

    /// Node 0 is the root, the empty prefix; it has no byte and no tokens.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, node: u32) -> &Node {
        &self.nodes[node as usize]
    }

    /// The tokens whose piece is the bytes from the root down to `node`.
    pub fn tokens_at(&self, node: u32) -> &[u32] {
        let node = &self.nodes[node as usize];
        &self.tokens[node.tokens_start as usize..node.tokens_end as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_models::synthetic_engine;

    /// Every printing token is found by reading its piece down the tree, and nowhere else;
    /// every subtree is contiguous and its children's bytes are in order.
    #[test]
    fn every_piece_leads_to_its_token() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let trie = PieceTrie::new(tokenizer);
        let mut found = Vec::new();
        // The bytes down to each node on the current path, with the subtree each ends.
        let mut path: Vec<(u32, Vec<u8>)> = vec![(trie.node_count() as u32, Vec::new())];
        let mut last_child_byte: Vec<Option<u8>> = vec![None];
        assert!(trie.tokens_at(0).is_empty());
        for index in 1..trie.node_count() as u32 {
            while path.last().unwrap().0 <= index {
                path.pop();
                last_child_byte.pop();
            }
            let node = trie.node(index);
            assert!(node.subtree_end > index && node.subtree_end <= path.last().unwrap().0);
            let sibling_byte = last_child_byte.last_mut().unwrap();
            assert!(
                *sibling_byte < Some(node.byte),
                "children in byte order, each byte once"
            );
            *sibling_byte = Some(node.byte);
            let mut bytes = path.last().unwrap().1.clone();
            bytes.push(node.byte);
            for &id in trie.tokens_at(index) {
                assert_eq!(tokenizer.token_to_piece(id, false), &bytes[..]);
                found.push(id);
            }
            path.push((node.subtree_end, bytes));
            last_child_byte.push(None);
        }
        found.sort_unstable();
        let printing: Vec<u32> = (0..tokenizer.n_vocab() as u32)
            .filter(|&id| {
                !tokenizer.token_to_piece(id, false).is_empty()
                    && !tokenizer.is_end_of_generation(id)
            })
            .collect();
        assert_eq!(found, printing);
    }
}
