//! Grammar-constrained generation: llama.cpp's GBNF grammars, and JSON schemas turned into
//! them. The matcher follows llama.cpp's design: the state is a set of stacks of positions in
//! the rules, each stack one way the text so far can continue; a character advances every stack
//! whose next symbol accepts it and drops the others. A token is allowed when its bytes leave
//! at least one stack (a character cut at the token's end counts when some stack accepts a
//! character starting with those bytes).

pub mod json_schema;
mod parse;
mod vocabulary;

pub use vocabulary::{GrammarFilter, TokenFilter};

use parse::Symbol;
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrammarError {
    #[error("grammar syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("grammar rule {0:?} is used but never defined")]
    Undefined(String),
    #[error("the grammar has no rule named root, where generation starts")]
    NoRoot,
    #[error("grammar rule {0:?} is left-recursive: it can reach itself before matching a character, which a left-to-right matcher cannot follow")]
    LeftRecursive(String),
    #[error("the grammar is too large: {0}")]
    TooLarge(String),
    #[error("the grammar is too ambiguous to follow: one character leads to more than {MAX_STACKS} ways to continue")]
    TooAmbiguous,
}

/// A set of characters: the listed ranges, or everything outside them.
#[derive(Debug, Clone, PartialEq)]
pub struct CharClass {
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl CharClass {
    fn single(c: u32) -> CharClass {
        CharClass {
            ranges: vec![(c, c)],
            negated: false,
        }
    }

    fn any() -> CharClass {
        CharClass {
            ranges: Vec::new(),
            negated: true,
        }
    }

    fn contains(&self, c: u32) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }

    /// Whether any character in `lo..=hi` is in the class: for a character whose first bytes
    /// are known and whose rest is still to come.
    fn meets(&self, lo: u32, hi: u32) -> bool {
        if self.negated {
            // Some character of lo..=hi escapes every range unless one range covers it all.
            !self.ranges.iter().any(|&(a, b)| a <= lo && hi <= b)
        } else {
            self.ranges.iter().any(|&(a, b)| a <= hi && lo <= b)
        }
    }
}

/// One symbol of the flattened rules; every alternative ends with `End`.
#[derive(Debug, Clone, PartialEq)]
enum Element {
    Chars(CharClass),
    Rule(u32),
    End,
}

/// A stack of positions in `Grammar::elements`; the last is the next element to match, always a
/// `Chars` once expanded. Positions whose alternative is finished are never kept, so a rule that
/// ends in a reference to itself (a repetition) does not grow the stack.
type Stack = Vec<u32>;

/// Ambiguity beyond this is refused rather than followed into unbounded memory and time.
pub const MAX_STACKS: usize = 4096;

/// A parsed grammar, shared by the generations that follow it.
#[derive(Debug)]
pub struct Grammar {
    elements: Vec<Element>,
    /// Each rule's alternatives, as positions in `elements`.
    alternatives: Vec<Vec<u32>>,
    root: u32,
}

impl Grammar {
    pub fn parse(text: &str) -> Result<Arc<Grammar>, GrammarError> {
        let parsed = parse::parse(text)?;
        let mut elements = Vec::new();
        let mut alternatives = Vec::with_capacity(parsed.rules.len());
        for rule in &parsed.rules {
            let mut starts = Vec::with_capacity(rule.len());
            for alternative in rule {
                starts.push(elements.len() as u32);
                elements.extend(alternative.iter().map(|symbol| match symbol {
                    Symbol::Chars(class) => Element::Chars(class.clone()),
                    Symbol::Rule(id) => Element::Rule(*id as u32),
                }));
                elements.push(Element::End);
            }
            alternatives.push(starts);
        }
        let grammar = Arc::new(Grammar {
            elements,
            alternatives,
            root: parsed.root as u32,
        });
        // The first expansion is where a hostile grammar would first blow up: fail here, at
        // parse time, rather than mid-generation.
        GrammarState::new(&grammar)?;
        Ok(grammar)
    }

    /// Whether all of `text` is a sentence of the grammar.
    pub fn matches(self: &Arc<Self>, text: &str) -> bool {
        let Ok(mut state) = GrammarState::new(self) else {
            return false;
        };
        state.advance_bytes(text.as_bytes()).is_ok() && state.can_end()
    }

    /// The stacks `stack` stands for once every rule reference on top is replaced by the
    /// alternatives of its rule, added to `out`.
    fn expand(
        &self,
        stack: Stack,
        out: &mut Stacks,
        budget: &mut usize,
    ) -> Result<(), GrammarError> {
        let mut pending = vec![stack];
        // Empty alternatives can lead to one stack many ways; each is followed once.
        let mut visited = HashSet::new();
        while let Some(mut stack) = pending.pop() {
            if !visited.insert(stack.clone()) {
                continue;
            }
            *budget = budget.checked_sub(1).ok_or(GrammarError::TooAmbiguous)?;
            let Some(&top) = stack.last() else {
                out.insert(stack)?;
                continue;
            };
            match &self.elements[top as usize] {
                Element::Chars(_) => out.insert(stack)?,
                Element::Rule(rule) => {
                    stack.pop();
                    if self.elements[top as usize + 1] != Element::End {
                        stack.push(top + 1);
                    }
                    for &start in &self.alternatives[*rule as usize] {
                        let mut next = stack.clone();
                        if self.elements[start as usize] != Element::End {
                            next.push(start);
                        }
                        pending.push(next);
                    }
                }
                Element::End => unreachable!("positions at an alternative's end are never kept"),
            }
        }
        Ok(())
    }

    fn class_at(&self, position: u32) -> &CharClass {
        match &self.elements[position as usize] {
            Element::Chars(class) => class,
            _ => unreachable!("expanded stacks end in characters"),
        }
    }
}

/// Distinct stacks, in a stable order.
#[derive(Default, Clone)]
struct Stacks {
    list: Vec<Stack>,
    seen: HashSet<Stack>,
}

impl Stacks {
    fn insert(&mut self, stack: Stack) -> Result<(), GrammarError> {
        if self.seen.contains(&stack) {
            return Ok(());
        }
        if self.list.len() == MAX_STACKS {
            return Err(GrammarError::TooAmbiguous);
        }
        self.seen.insert(stack.clone());
        self.list.push(stack);
        Ok(())
    }
}

/// Work allowed for one character's expansions, against grammars whose empty alternatives
/// multiply the ways to the same stack.
const EXPANSION_BUDGET: usize = 1 << 16;

/// A character whose first bytes have been seen: its value so far and the bytes still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct PartialChar {
    value: u32,
    remaining: u8,
    /// The smallest character a sequence of this length may encode; below it is an overlong
    /// encoding, which is no UTF-8 (`E0 80 A0` is not a space).
    minimum: u32,
}

impl PartialChar {
    /// The characters this one may still become.
    fn range(self) -> (u32, u32) {
        let shift = 6 * u32::from(self.remaining);
        let lo = (self.value << shift).max(self.minimum);
        let hi = (((self.value + 1) << shift) - 1).min(char::MAX as u32);
        (lo, hi)
    }
}

/// Where a generation is in its grammar.
#[derive(Clone)]
pub struct GrammarState {
    grammar: Arc<Grammar>,
    stacks: Vec<Stack>,
    partial: PartialChar,
}

impl GrammarState {
    pub fn new(grammar: &Arc<Grammar>) -> Result<GrammarState, GrammarError> {
        let mut stacks = Stacks::default();
        let mut budget = EXPANSION_BUDGET;
        let root = grammar.root as usize;
        for &start in &grammar.alternatives[root] {
            let stack = if grammar.elements[start as usize] == Element::End {
                Vec::new()
            } else {
                vec![start]
            };
            grammar.expand(stack, &mut stacks, &mut budget)?;
        }
        Ok(GrammarState {
            grammar: Arc::clone(grammar),
            stacks: stacks.list,
            partial: PartialChar::default(),
        })
    }

    /// Whether the text so far is a whole sentence, so generation may end here.
    pub fn can_end(&self) -> bool {
        self.partial.remaining == 0 && self.stacks.iter().any(Vec::is_empty)
    }

    /// Whether nothing at all may follow: the text so far leads nowhere.
    pub fn is_dead(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Moves past `bytes`. On an error (bytes that are no UTF-8, or that the grammar does not
    /// allow) the state is left with no stacks.
    pub fn advance_bytes(&mut self, bytes: &[u8]) -> Result<(), GrammarError> {
        for &byte in bytes {
            self.advance_byte(byte)?;
            if self.stacks.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Whether `bytes` may come next, without moving.
    pub fn allows_bytes(&self, bytes: &[u8]) -> Result<bool, GrammarError> {
        let mut probe = self.clone();
        probe.advance_bytes(bytes)?;
        Ok(!probe.stacks.is_empty())
    }

    fn advance_byte(&mut self, byte: u8) -> Result<(), GrammarError> {
        let Some(partial) = next_partial(self.partial, byte) else {
            self.stacks.clear();
            return Ok(());
        };
        self.partial = partial;
        if partial.remaining > 0 {
            let (lo, hi) = partial.range();
            let grammar = &self.grammar;
            self.stacks.retain(|stack| {
                stack
                    .last()
                    .is_some_and(|&top| grammar.class_at(top).meets(lo, hi))
            });
            return Ok(());
        }
        self.partial = PartialChar::default();
        self.advance_char(partial.value)
    }

    fn advance_char(&mut self, c: u32) -> Result<(), GrammarError> {
        let grammar = &self.grammar;
        let mut next = Stacks::default();
        let mut budget = EXPANSION_BUDGET;
        for stack in &self.stacks {
            let Some(&top) = stack.last() else { continue };
            if !grammar.class_at(top).contains(c) {
                continue;
            }
            let mut moved = stack.clone();
            moved.pop();
            if grammar.elements[top as usize + 1] != Element::End {
                moved.push(top + 1);
            }
            grammar.expand(moved, &mut next, &mut budget)?;
        }
        self.stacks = next.list;
        Ok(())
    }
}

/// UTF-8 one byte at a time: the character so far after `byte`, or None when the byte cannot
/// come here (a stray continuation byte, a lead byte inside a character, an overlong or
/// out-of-range start).
fn next_partial(partial: PartialChar, byte: u8) -> Option<PartialChar> {
    if partial.remaining > 0 {
        if byte & 0xC0 != 0x80 {
            return None;
        }
        let next = PartialChar {
            value: (partial.value << 6) | u32::from(byte & 0x3F),
            remaining: partial.remaining - 1,
            minimum: partial.minimum,
        };
        let (lo, hi) = next.range();
        let overlong_or_too_large = lo > hi;
        let surrogate = (0xD800..=0xDFFF).contains(&lo) && hi <= 0xDFFF;
        return (!overlong_or_too_large && !surrogate).then_some(next);
    }
    let (value, remaining, minimum) = match byte {
        0x00..=0x7F => (u32::from(byte), 0, 0),
        0xC2..=0xDF => (u32::from(byte & 0x1F), 1, 0x80),
        0xE0..=0xEF => (u32::from(byte & 0x0F), 2, 0x800),
        0xF0..=0xF4 => (u32::from(byte & 0x07), 3, 0x1_0000),
        _ => return None,
    };
    Some(PartialChar {
        value,
        remaining,
        minimum,
    })
}

#[cfg(test)]
mod tests;
