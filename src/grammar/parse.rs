//! llama.cpp's GBNF text to rules of symbols. Repetitions (`* + ? {m,n}`) and groups become
//! generated rules here, so the matcher only ever sees characters and rule references.

use super::{CharClass, GrammarError};
use std::collections::HashMap;

/// What one position of an alternative matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Symbol {
    Chars(CharClass),
    Rule(usize),
}

pub type Alternative = Vec<Symbol>;

/// Rules by id, each a list of alternatives, with their names for messages.
pub struct Parsed {
    pub rules: Vec<Vec<Alternative>>,
    pub names: Vec<String>,
    pub root: usize,
}

/// A grammar this large is a mistake or an attack; llama.cpp's JSON grammars use a few thousand.
pub const MAX_SYMBOLS: usize = 200_000;
/// Groups nested deeper than this would recurse the parser without need.
const MAX_NESTING: usize = 128;
/// The largest `{m,n}` bound, so `"a"{1000000}` is an error rather than a million symbols.
const MAX_REPETITION: u32 = 10_000;

pub fn parse(text: &str) -> Result<Parsed, GrammarError> {
    let mut parser = Parser {
        text: text.as_bytes(),
        pos: 0,
        rules: Vec::new(),
        names: Vec::new(),
        ids: HashMap::new(),
        defined: Vec::new(),
        symbols: 0,
        nesting: 0,
    };
    parser.grammar()?;
    let Parser {
        rules,
        names,
        ids,
        defined,
        ..
    } = parser;
    if let Some(id) = defined.iter().position(|d| !d) {
        return Err(GrammarError::Undefined(names[id].clone()));
    }
    let root = *ids.get("root").ok_or(GrammarError::NoRoot)?;
    let parsed = Parsed { rules, names, root };
    check_left_recursion(&parsed)?;
    Ok(parsed)
}

struct Parser<'t> {
    text: &'t [u8],
    pos: usize,
    rules: Vec<Vec<Alternative>>,
    names: Vec<String>,
    ids: HashMap<String, usize>,
    defined: Vec<bool>,
    symbols: usize,
    nesting: usize,
}

impl Parser<'_> {
    fn grammar(&mut self) -> Result<(), GrammarError> {
        self.space(true);
        while self.pos < self.text.len() {
            self.rule()?;
            self.space(true);
        }
        Ok(())
    }

    fn rule(&mut self) -> Result<(), GrammarError> {
        let name = self.name()?;
        self.space(false);
        if !self.text[self.pos..].starts_with(b"::=") {
            return Err(self.error("expected ::= after the rule name"));
        }
        self.pos += 3;
        self.space(true);
        let id = self.rule_id(&name);
        if self.defined[id] {
            return Err(self.error(&format!("rule {name:?} is defined twice")));
        }
        let alternatives = self.alternatives(&name, false)?;
        self.rules[id] = alternatives;
        self.defined[id] = true;
        match self.peek() {
            None | Some(b'\n' | b'\r') => Ok(()),
            Some(_) => Err(self.error("expected the end of the line after the rule")),
        }
    }

    fn alternatives(&mut self, name: &str, nested: bool) -> Result<Vec<Alternative>, GrammarError> {
        let mut alternatives = vec![self.sequence(name, nested)?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            self.space(true);
            alternatives.push(self.sequence(name, nested)?);
        }
        Ok(alternatives)
    }

    /// Symbols up to `|`, `)` or (outside groups) the end of the line. `last` marks where the
    /// latest element began, which a following repetition applies to.
    fn sequence(&mut self, name: &str, nested: bool) -> Result<Alternative, GrammarError> {
        let mut sequence = Vec::new();
        let mut last: Option<usize> = None;
        loop {
            let start = sequence.len();
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    let mut any = false;
                    while self.peek() != Some(b'"') {
                        if self.peek().is_none() {
                            return Err(self.error("unterminated string literal"));
                        }
                        let c = self.char()?;
                        sequence.push(Symbol::Chars(CharClass::single(c)));
                        any = true;
                    }
                    self.pos += 1;
                    // An empty literal matches nothing; a repetition after it repeats nothing.
                    last = any.then_some(start);
                }
                Some(b'[') => {
                    self.pos += 1;
                    sequence.push(Symbol::Chars(self.class()?));
                    last = Some(start);
                }
                Some(b'.') => {
                    self.pos += 1;
                    sequence.push(Symbol::Chars(CharClass::any()));
                    last = Some(start);
                }
                Some(b'(') => {
                    self.pos += 1;
                    self.nesting += 1;
                    if self.nesting > MAX_NESTING {
                        return Err(self.error("groups are nested too deeply"));
                    }
                    self.space(true);
                    let alternatives = self.alternatives(name, true)?;
                    self.nesting -= 1;
                    if self.peek() != Some(b')') {
                        return Err(self.error("expected ) to close the group"));
                    }
                    self.pos += 1;
                    let group = self.generated_rule(name, alternatives);
                    sequence.push(Symbol::Rule(group));
                    last = Some(start);
                }
                Some(c) if is_name_byte(c) => {
                    let reference = self.name()?;
                    let id = self.rule_id(&reference);
                    sequence.push(Symbol::Rule(id));
                    last = Some(start);
                }
                Some(b'*' | b'+' | b'?' | b'{') => {
                    let Some(from) = last.take() else {
                        return Err(self.error("a repetition must follow something to repeat"));
                    };
                    let (min, max) = self.repetition()?;
                    let item = sequence.split_off(from);
                    let repeated = self.repeat(name, item, min, max)?;
                    sequence.extend(repeated);
                }
                _ => break,
            }
            self.count(sequence.len().saturating_sub(start))?;
            self.space(nested);
        }
        Ok(sequence)
    }

    /// `*`, `+`, `?` or `{m}`, `{m,}`, `{m,n}` as (min, max), max None for no bound.
    fn repetition(&mut self) -> Result<(u32, Option<u32>), GrammarError> {
        let c = self.peek().unwrap_or_default();
        self.pos += 1;
        match c {
            b'*' => return Ok((0, None)),
            b'+' => return Ok((1, None)),
            b'?' => return Ok((0, Some(1))),
            _ => {}
        }
        self.space(true);
        let min = self.number()?;
        self.space(true);
        let max = match self.peek() {
            Some(b'}') => Some(min),
            Some(b',') => {
                self.pos += 1;
                self.space(true);
                if self.peek() == Some(b'}') {
                    None
                } else {
                    Some(self.number()?)
                }
            }
            _ => return Err(self.error("expected , or } in a repetition count")),
        };
        self.space(true);
        if self.peek() != Some(b'}') {
            return Err(self.error("expected } to close the repetition count"));
        }
        self.pos += 1;
        if max.is_some_and(|max| max < min) {
            return Err(self.error("a repetition's maximum is below its minimum"));
        }
        Ok((min, max))
    }

    fn number(&mut self) -> Result<u32, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or_default();
        if digits.is_empty() {
            return Err(self.error("expected a number in the repetition count"));
        }
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPETITION => Ok(n),
            _ => Err(GrammarError::TooLarge(format!(
                "repetition count {digits} is above the limit of {MAX_REPETITION}"
            ))),
        }
    }

    /// `item` repeated: `min` copies, then either a rule `r ::= item r |` (no maximum) or
    /// `max - min` nested optional copies, `r1 ::= item r2 |`, so no string has two parses.
    fn repeat(
        &mut self,
        name: &str,
        item: Vec<Symbol>,
        min: u32,
        max: Option<u32>,
    ) -> Result<Vec<Symbol>, GrammarError> {
        let copies = max.unwrap_or(min + 1) as usize;
        self.count(item.len().saturating_mul(copies))?;
        let mut out = Vec::with_capacity(item.len() * min as usize + 1);
        for _ in 0..min {
            out.extend(item.iter().cloned());
        }
        match max {
            None => {
                let id = self.generated_rule(name, Vec::new());
                let mut repeat = item;
                repeat.push(Symbol::Rule(id));
                self.rules[id] = vec![repeat, Vec::new()];
                out.push(Symbol::Rule(id));
            }
            Some(max) if max > min => {
                let mut tail: Option<usize> = None;
                for _ in min..max {
                    let mut optional = item.clone();
                    optional.extend(tail.map(Symbol::Rule));
                    tail = Some(self.generated_rule(name, vec![optional, Vec::new()]));
                }
                out.extend(tail.map(Symbol::Rule));
            }
            Some(_) => {}
        }
        Ok(out)
    }

    /// `[...]` after the `[`.
    fn class(&mut self) -> Result<CharClass, GrammarError> {
        let negated = self.peek() == Some(b'^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        while self.peek() != Some(b']') {
            if self.peek().is_none() {
                return Err(self.error("unterminated character class"));
            }
            let low = self.char()?;
            let high = if self.peek() == Some(b'-') && self.text.get(self.pos + 1) != Some(&b']') {
                self.pos += 1;
                if self.peek().is_none() {
                    return Err(self.error("unterminated character class"));
                }
                self.char()?
            } else {
                low
            };
            if high < low {
                return Err(self.error("a character range ends below its start"));
            }
            ranges.push((low, high));
        }
        self.pos += 1;
        Ok(CharClass { ranges, negated })
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self) -> Result<u32, GrammarError> {
        let rest = std::str::from_utf8(&self.text[self.pos..])
            .map_err(|_| self.error("the grammar is not valid UTF-8"))?;
        let c = rest
            .chars()
            .next()
            .ok_or_else(|| self.error("unexpected end"))?;
        self.pos += c.len_utf8();
        if c != '\\' {
            return Ok(c as u32);
        }
        let escape = self.peek().ok_or_else(|| self.error("unfinished escape"))?;
        self.pos += 1;
        let hex_digits = match escape {
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            b'n' => return Ok('\n' as u32),
            b'r' => return Ok('\r' as u32),
            b't' => return Ok('\t' as u32),
            b'0' => return Ok(0),
            b'\\' | b'"' | b'[' | b']' | b'-' | b'^' | b'/' => return Ok(u32::from(escape)),
            other => {
                return Err(self.error(&format!(
                    "unknown escape \\{}",
                    char::from(other).escape_default()
                )))
            }
        };
        let digits = self
            .text
            .get(self.pos..self.pos + hex_digits)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .filter(|&v| char::from_u32(v).is_some())
            .ok_or_else(|| {
                self.error("expected hexadecimal digits of a character after \\x, \\u or \\U")
            })?;
        self.pos += hex_digits;
        Ok(digits)
    }

    fn name(&mut self) -> Result<String, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_byte) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected a rule name"));
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    fn rule_id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.rules.len();
        self.rules.push(Vec::new());
        self.names.push(name.to_string());
        self.defined.push(false);
        self.ids.insert(name.to_string(), id);
        id
    }

    /// A rule of the parser's own making, named after the rule it serves for messages.
    fn generated_rule(&mut self, parent: &str, alternatives: Vec<Alternative>) -> usize {
        let id = self.rules.len();
        self.rules.push(alternatives);
        self.names.push(format!("{parent}-{id}"));
        self.defined.push(true);
        id
    }

    fn count(&mut self, symbols: usize) -> Result<(), GrammarError> {
        self.symbols = self.symbols.saturating_add(symbols);
        if self.symbols > MAX_SYMBOLS {
            return Err(GrammarError::TooLarge(format!(
                "more than {MAX_SYMBOLS} symbols once repetitions are written out"
            )));
        }
        Ok(())
    }

    /// Skips blanks and `#` comments, and line ends where `newlines` allows them.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' => self.pos += 1,
                b'\r' | b'\n' if newlines => self.pos += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n' && c != b'\r') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn error(&self, message: &str) -> GrammarError {
        let before = &self.text[..self.pos.min(self.text.len())];
        let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        GrammarError::Syntax {
            line,
            column: String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1,
            message: message.to_string(),
        }
    }
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// A rule that can reach itself before matching a character would send the matcher round
/// forever; llama.cpp refuses these too. Nullable rules make the reach go further than the
/// first symbol: in `a ::= b? a`, `a` reaches itself through the empty `b?`.
fn check_left_recursion(parsed: &Parsed) -> Result<(), GrammarError> {
    let n = parsed.rules.len();
    let mut nullable = vec![false; n];
    loop {
        let mut changed = false;
        for (id, alternatives) in parsed.rules.iter().enumerate() {
            if !nullable[id]
                && alternatives.iter().any(|alt| {
                    alt.iter()
                        .all(|s| matches!(s, Symbol::Rule(r) if nullable[*r]))
                })
            {
                nullable[id] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let leftmost: Vec<Vec<usize>> = parsed
        .rules
        .iter()
        .map(|alternatives| {
            let mut reached = Vec::new();
            for alt in alternatives {
                for symbol in alt {
                    match symbol {
                        Symbol::Rule(r) => {
                            reached.push(*r);
                            if !nullable[*r] {
                                break;
                            }
                        }
                        Symbol::Chars(_) => break,
                    }
                }
            }
            reached
        })
        .collect();
    // Depth-first search with colours, iterative so a long chain of rules cannot overflow.
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut colour = vec![UNSEEN; n];
    for start in 0..n {
        if colour[start] != UNSEEN {
            continue;
        }
        let mut path = vec![(start, 0)];
        colour[start] = ON_PATH;
        while let Some((rule, next)) = path.last_mut() {
            let rule = *rule;
            if let Some(&target) = leftmost[rule].get(*next) {
                *next += 1;
                match colour[target] {
                    ON_PATH => {
                        return Err(GrammarError::LeftRecursive(parsed.names[target].clone()))
                    }
                    UNSEEN => {
                        colour[target] = ON_PATH;
                        path.push((target, 0));
                    }
                    _ => {}
                }
            } else {
                colour[rule] = DONE;
                path.pop();
            }
        }
    }
    Ok(())
}
