//! The vocabulary's printed pieces as a prefix tree, so a question asked of every token ("may
//! this come next?") is asked once per shared prefix: a grammar walks the tree and skips every
//! token under a prefix it refuses.

use super::Tokenizer;

/// A node is one byte below its parent; the tokens whose piece ends here are a run of
/// `tokens`, which is sorted by piece.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub byte: u8,
    first_child: u32,
    next_sibling: u32,
    tokens_start: u32,
    tokens_end: u32,
}

const NONE: u32 = u32::MAX;

#[derive(Debug)]
pub struct PieceTrie {
    nodes: Vec<Node>,
    tokens: Vec<u32>,
}

impl PieceTrie {
    /// Every token that prints something (`token_to_piece` without special tokens); control
    /// tokens print nothing and are left out.
    pub fn new(tokenizer: &Tokenizer) -> PieceTrie {
        let mut ids: Vec<u32> = (0..tokenizer.n_vocab() as u32)
            .filter(|&id| !tokenizer.token_to_piece(id, false).is_empty())
            .collect();
        ids.sort_by(|&a, &b| {
            tokenizer
                .token_to_piece(a, false)
                .cmp(tokenizer.token_to_piece(b, false))
        });
        let root = Node {
            byte: 0,
            first_child: NONE,
            next_sibling: NONE,
            tokens_start: 0,
            tokens_end: 0,
        };
        let mut nodes = vec![root];
        let mut last_child = vec![NONE];
        // The nodes of the previous piece's bytes, root first.
        let mut path: Vec<u32> = vec![0];
        let mut previous: &[u8] = &[];
        for (index, &id) in ids.iter().enumerate() {
            let piece = tokenizer.token_to_piece(id, false);
            let shared = piece
                .iter()
                .zip(previous)
                .take_while(|(a, b)| a == b)
                .count();
            path.truncate(shared + 1);
            for &byte in &piece[shared..] {
                let parent = *path.last().expect("the root stays on the path") as usize;
                let node = nodes.len() as u32;
                nodes.push(Node {
                    byte,
                    first_child: NONE,
                    next_sibling: NONE,
                    tokens_start: index as u32,
                    tokens_end: index as u32,
                });
                last_child.push(NONE);
                match last_child[parent] {
                    NONE => nodes[parent].first_child = node,
                    sibling => nodes[sibling as usize].next_sibling = node,
                }
                last_child[parent] = node;
                path.push(node);
            }
            let end = *path.last().expect("a piece has at least one byte") as usize;
            if nodes[end].tokens_start == nodes[end].tokens_end {
                nodes[end].tokens_start = index as u32;
            }
            nodes[end].tokens_end = index as u32 + 1;
            previous = piece;
        }
        PieceTrie { nodes, tokens: ids }
    }

    pub fn root(&self) -> u32 {
        0
    }

    pub fn node(&self, node: u32) -> &Node {
        &self.nodes[node as usize]
    }

    /// The node's children, in byte order.
    pub fn children(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.nodes[node as usize].first_child;
        std::iter::from_fn(move || {
            let current = next;
            (current != NONE).then(|| {
                next = self.nodes[current as usize].next_sibling;
                current
            })
        })
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

    /// Every printing token is found by walking its piece's bytes, and nowhere else.
    #[test]
    fn every_piece_leads_to_its_token() {
        let engine = synthetic_engine();
        let tokenizer = engine.tokenizer();
        let trie = PieceTrie::new(tokenizer);
        let mut found = Vec::new();
        let mut pending = vec![(trie.root(), Vec::new())];
        while let Some((node, bytes)) = pending.pop() {
            for &id in trie.tokens_at(node) {
                assert_eq!(tokenizer.token_to_piece(id, false), &bytes[..]);
                found.push(id);
            }
            let mut last_byte = None;
            for child in trie.children(node) {
                let byte = trie.node(child).byte;
                assert!(
                    last_byte < Some(byte),
                    "children in byte order, each byte once"
                );
                last_byte = Some(byte);
                let mut longer = bytes.clone();
                longer.push(byte);
                pending.push((child, longer));
            }
        }
        found.sort_unstable();
        let printing: Vec<u32> = (0..tokenizer.n_vocab() as u32)
            .filter(|&id| !tokenizer.token_to_piece(id, false).is_empty())
            .collect();
        assert_eq!(found, printing);
    }
}
