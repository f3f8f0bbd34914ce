//! JSON Schema to GBNF: the grammar that holds generation to the documents a schema accepts,
//! with the meaning of llama.cpp's `common/json-schema-to-grammar.cpp`.
//!
//! The grammar may accept fewer documents than the schema (bounded whitespace and digits,
//! properties in one fixed order, no extra properties unless `additionalProperties` asks for
//! them) but never more: a keyword that cannot be expressed exactly is an error, not dropped.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

/// Deepest nesting of subschemas (and of groups in a pattern) that is converted.
pub const MAX_DEPTH: usize = 64;
/// Largest count a schema may ask for: `minItems`, `maxItems`, `minLength`, `maxLength` and
/// the bounds of `{m,n}` in a pattern.
pub const MAX_REPETITION: u64 = 1000;
/// Largest grammar text produced, in bytes.
pub const MAX_GRAMMAR_BYTES: usize = 1 << 20;
/// Most subschemas visited in one conversion: a bound on the work a hostile schema can cause
/// even where its grammar would stay small.
const MAX_VISITS: usize = 100_000;
/// Longest rule name; names come from property names, which may be arbitrarily long.
const MAX_RULE_NAME: usize = 64;
/// Largest magnitude of an integral part: llama.cpp's `integral-part` has at most 16 digits,
/// so bounds beyond it are clamped to it.
const MAX_INTEGRAL: i128 = 9_999_999_999_999_999;
/// Most digits after the point of a bounded number, as llama.cpp's `decimal-part`.
const FRACTION_DIGITS: u32 = 16;
/// Largest bounded number in units of its last fraction digit: 16 nines on both sides of
/// the point.
const MAX_UNITS: i128 = (MAX_INTEGRAL + 1) * 10i128.pow(FRACTION_DIGITS) - 1;
/// Most significant digits of a number bound: serde_json reads numbers as doubles, and
/// every decimal this short survives the round trip, so the bound is the one written.
const MAX_BOUND_DIGITS: usize = 15;

/// GBNF for any JSON value (the grammar of `response_format: {"type": "json_object"}`, whose
/// root is an object).
pub const JSON_OBJECT_GRAMMAR: &str = r#"root ::= object
space ::= | " " | "\n" [ \t]{0,20}
object ::= "{" space ( string ":" space value ( "," space string ":" space value )* )? "}" space
string ::= "\"" char* "\"" space
char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-C] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [eEfF] [0-9a-fA-F]{3} ) )
value ::= object | array | string | number | boolean | null
array ::= "[" space ( value ( "," space value )* )? "]" space
number ::= "-"? integral-part ( "." decimal-part )? ( [eE] [-+]? integral-part )? space
integral-part ::= [0] | [1-9] [0-9]{0,15}
decimal-part ::= [0-9]{1,16}
boolean ::= ( "true" | "false" ) space
null ::= "null" space
"#;

/// Why a schema has no grammar. Paths are JSON pointers into the schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("unsupported JSON schema keyword \"{keyword}\" at {path}")]
    UnsupportedKeyword { keyword: String, path: String },
    #[error("unsupported JSON schema at {path}: {reason}")]
    Unsupported { path: String, reason: String },
    #[error("invalid JSON schema at {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("unsupported \"pattern\" {pattern:?} at {path}: {reason}")]
    Pattern {
        pattern: String,
        path: String,
        reason: String,
    },
    #[error("no JSON value satisfies the schema at {path}: {reason}")]
    Unsatisfiable { path: String, reason: String },
    #[error("\"$ref\" {reference:?} at {path} points to nothing in this schema")]
    MissingRef { reference: String, path: String },
    #[error(
        "\"$ref\" {reference:?} at {path} is not inside this schema; only \"#/...\" references are supported"
    )]
    RemoteRef { reference: String, path: String },
    #[error("JSON schema nests deeper than {limit} levels at {path}")]
    TooDeep { path: String, limit: usize },
    #[error("{what} at {path} is {value}, above the limit of {limit}")]
    TooLarge {
        what: String,
        path: String,
        value: u64,
        limit: u64,
    },
    #[error("the grammar for this JSON schema would exceed {limit} bytes")]
    GrammarTooLarge { limit: usize },
    #[error("JSON schema too complex: more than {limit} subschemas to convert")]
    TooComplex { limit: usize },
}

/// Converts `schema` to GBNF whose start rule is `root`.
pub fn schema_to_gbnf(schema: &Value) -> Result<String, SchemaError> {
    let mut converter = Converter::new(schema);
    // A `$ref` to "#" is the root rule itself.
    converter.reserve("root");
    converter.refs.insert(String::new(), "root".into());
    converter.left_open.insert(String::new());
    let body = converter.visit_body(schema, "", "", 0)?;
    converter.set_rule("root", body)?;
    Ok(converter.into_text())
}

/// Keywords that annotate but never constrain the document.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "strict",
    // Definitions constrain nothing until a `$ref` names them.
    "$defs",
    "definitions",
];
const GENERIC_KEYWORDS: &[&str] = &["type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref"];
const OBJECT_KEYWORDS: &[&str] = &["properties", "required", "additionalProperties"];
const ARRAY_KEYWORDS: &[&str] = &[
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
];
const STRING_KEYWORDS: &[&str] = &["pattern", "format", "minLength", "maxLength"];
const NUMBER_KEYWORDS: &[&str] = &["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];

fn is_annotation(keyword: &str) -> bool {
    ANNOTATIONS.contains(&keyword)
}

fn is_supported(keyword: &str) -> bool {
    [
        ANNOTATIONS,
        GENERIC_KEYWORDS,
        OBJECT_KEYWORDS,
        ARRAY_KEYWORDS,
        STRING_KEYWORDS,
        NUMBER_KEYWORDS,
    ]
    .iter()
    .any(|group| group.contains(&keyword))
}

/// A rule every grammar may use, with the rules its body names.
struct Primitive {
    name: &'static str,
    body: &'static str,
    deps: &'static [&'static str],
}

/// The bodies of `JSON_OBJECT_GRAMMAR` again, one rule each, plus the string formats.
/// `char` refuses surrogate escapes so that one `char` is one code point, which keeps
/// `minLength` exact.
const PRIMITIVES: &[Primitive] = &[
    Primitive {
        name: "space",
        body: r#"| " " | "\n" [ \t]{0,20}"#,
        deps: &[],
    },
    Primitive {
        name: "value",
        body: "object | array | string | number | boolean | null",
        deps: &["object", "array", "string", "number", "boolean", "null"],
    },
    Primitive {
        name: "object",
        body: r#""{" space ( string ":" space value ( "," space string ":" space value )* )? "}" space"#,
        deps: &["string", "value"],
    },
    Primitive {
        name: "array",
        body: r#""[" space ( value ( "," space value )* )? "]" space"#,
        deps: &["value"],
    },
    Primitive {
        name: "string",
        body: r#""\"" char* "\"" space"#,
        deps: &["char"],
    },
    Primitive {
        name: "char",
        body: r#"[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-C] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [eEfF] [0-9a-fA-F]{3} ) )"#,
        deps: &[],
    },
    Primitive {
        name: "number",
        body: r#""-"? integral-part ( "." decimal-part )? ( [eE] [-+]? integral-part )? space"#,
        deps: &["integral-part", "decimal-part"],
    },
    Primitive {
        name: "integer",
        body: r#""-"? integral-part space"#,
        deps: &["integral-part"],
    },
    Primitive {
        name: "integral-part",
        body: "[0] | [1-9] [0-9]{0,15}",
        deps: &[],
    },
    Primitive {
        name: "decimal-part",
        body: "[0-9]{1,16}",
        deps: &[],
    },
    Primitive {
        name: "boolean",
        body: r#"( "true" | "false" ) space"#,
        deps: &[],
    },
    Primitive {
        name: "null",
        body: r#""null" space"#,
        deps: &[],
    },
    // Keys of additional properties: raw characters only, so that no escape can spell a
    // declared property's name.
    Primitive {
        name: "key-char",
        body: r#"[^"\\\x7F\x00-\x1F]"#,
        deps: &[],
    },
    Primitive {
        name: "uuid",
        body: r#""\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"" space"#,
        deps: &[],
    },
    Primitive {
        name: "date",
        body: r#"[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )"#,
        deps: &[],
    },
    Primitive {
        name: "time",
        body: r#"( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#,
        deps: &[],
    },
    Primitive {
        name: "date-time",
        body: r#"date "T" time"#,
        deps: &["date", "time"],
    },
    Primitive {
        name: "date-string",
        body: r#""\"" date "\"" space"#,
        deps: &["date"],
    },
    Primitive {
        name: "time-string",
        body: r#""\"" time "\"" space"#,
        deps: &["time"],
    },
    Primitive {
        name: "date-time-string",
        body: r#""\"" date-time "\"" space"#,
        deps: &["date-time"],
    },
];

fn is_reserved(name: &str) -> bool {
    name == "root" || PRIMITIVES.iter().any(|p| p.name == name)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Type {
    Null,
    Boolean,
    Object,
    Array,
    String,
    Integer,
    Number,
}

impl Type {
    fn parse(name: &str) -> Option<Type> {
        Some(match name {
            "null" => Type::Null,
            "boolean" => Type::Boolean,
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Type::Null => "null",
            Type::Boolean => "boolean",
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
        }
    }

    fn holds(self, value: &Value) -> bool {
        match self {
            Type::Null => value.is_null(),
            Type::Boolean => value.is_boolean(),
            Type::Object => value.is_object(),
            Type::Array => value.is_array(),
            Type::String => value.is_string(),
            Type::Number => value.is_number(),
            Type::Integer => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
        }
    }
}

/// A JSON pointer one level below `path`.
fn child_path(path: &str, token: &str) -> String {
    format!("{path}/{}", token.replace('~', "~0").replace('/', "~1"))
}

/// How a path is shown in errors: the root is "/".
fn shown(path: &str) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        path.into()
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: shown(path),
        reason: reason.into(),
    }
}

fn unsupported(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Unsupported {
        path: shown(path),
        reason: reason.into(),
    }
}

fn unsatisfiable(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Unsatisfiable {
        path: shown(path),
        reason: reason.into(),
    }
}

/// A rule name derived from `parent` and `part`, before sanitizing.
fn child_name(parent: &str, part: &str) -> String {
    if parent.is_empty() {
        part.into()
    } else {
        format!("{parent}-{part}")
    }
}

/// GBNF rule names allow `[a-zA-Z0-9-]` only; every other run of characters becomes `-`.
fn sanitize(name: &str) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out.truncate(MAX_RULE_NAME);
    out
}

fn is_rule_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A GBNF literal matching exactly `text`.
fn gbnf_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7F' => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `item` repeated `min..=max` times (`max` None: unbounded); `item` must be one GBNF term.
fn repetition(item: &str, min: u64, max: Option<u64>) -> String {
    match (min, max) {
        (_, Some(0)) => String::new(),
        (0, Some(1)) => format!("{item}?"),
        (0, None) => format!("{item}*"),
        (1, None) => format!("{item}+"),
        (1, Some(1)) => item.into(),
        (min, None) => format!("{item}{{{min},}}"),
        (min, Some(max)) if min == max => format!("{item}{{{min}}}"),
        (min, Some(max)) => format!("{item}{{{min},{max}}}"),
    }
}

/// `min..=max` copies of `item` separated by `separator`.
fn separated_repetition(item: &str, separator: &str, min: u64, max: Option<u64>) -> String {
    if max == Some(0) {
        return String::new();
    }
    let rest = repetition(
        &format!("( {separator} {item} )"),
        min.saturating_sub(1),
        max.map(|m| m - 1),
    );
    let list = join_terms(&[item, &rest]);
    if min == 0 {
        format!("( {list} )?")
    } else {
        list
    }
}

/// Joins GBNF terms with spaces, skipping empty ones.
fn join_terms(terms: &[&str]) -> String {
    terms
        .iter()
        .filter(|t| !t.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

struct Converter<'s> {
    root: &'s Value,
    /// Rules in the order they were made; the text puts `root` first.
    rules: Vec<(String, String)>,
    index: HashMap<String, usize>,
    next_suffix: HashMap<String, usize>,
    /// Rule of each `$ref` target, by JSON pointer.
    refs: HashMap<String, String>,
    /// `$ref` targets being converted with no token consumed since they started: reaching one
    /// again would make a left-recursive grammar.
    left_open: HashSet<String>,
    bytes: usize,
    visits: usize,
}

impl<'s> Converter<'s> {
    fn new(root: &'s Value) -> Self {
        let mut converter = Converter {
            root,
            rules: Vec::new(),
            index: HashMap::new(),
            next_suffix: HashMap::new(),
            refs: HashMap::new(),
            left_open: HashSet::new(),
            bytes: 0,
            visits: 0,
        };
        converter.primitive("space");
        converter
    }

    fn into_text(self) -> String {
        let mut text = String::with_capacity(self.bytes);
        let root = self.rules.iter().filter(|(name, _)| name == "root");
        let others = self.rules.iter().filter(|(name, _)| name != "root");
        for (name, body) in root.chain(others) {
            text.push_str(name);
            text.push_str(" ::= ");
            text.push_str(body);
            text.push('\n');
        }
        text
    }

    /// An unused rule name made from `base`.
    fn fresh_name(&mut self, base: &str) -> String {
        let mut base = sanitize(base);
        if base.is_empty() || base == "-" {
            base = "rule".into();
        }
        if !self.index.contains_key(&base) && !is_reserved(&base) {
            return base;
        }
        loop {
            let n = self.next_suffix.entry(base.clone()).or_insert(0);
            *n += 1;
            let candidate = format!("{base}{n}");
            if !self.index.contains_key(&candidate) && !is_reserved(&candidate) {
                return candidate;
            }
        }
    }

    /// Claims `name` for a rule whose body comes later (`set_rule`).
    fn reserve(&mut self, name: &str) {
        self.index.insert(name.into(), self.rules.len());
        self.rules.push((name.into(), String::new()));
    }

    fn set_rule(&mut self, name: &str, body: String) -> Result<(), SchemaError> {
        self.bytes += name.len() + body.len() + 6;
        if self.bytes > MAX_GRAMMAR_BYTES {
            return Err(SchemaError::GrammarTooLarge {
                limit: MAX_GRAMMAR_BYTES,
            });
        }
        let i = self.index[name];
        self.rules[i].1 = body;
        Ok(())
    }

    /// Adds a rule under a fresh name made from `base`, and returns that name.
    fn add_rule(&mut self, base: &str, body: String) -> Result<String, SchemaError> {
        let name = self.fresh_name(base);
        self.reserve(&name);
        self.set_rule(&name, body)?;
        Ok(name)
    }

    /// Name of a built-in rule, added with the rules it needs on first use.
    fn primitive(&mut self, name: &'static str) -> &'static str {
        if self.index.contains_key(name) {
            return name;
        }
        let primitive = PRIMITIVES
            .iter()
            .find(|p| p.name == name)
            .expect("every primitive named in this file is in PRIMITIVES");
        self.reserve(name);
        // Primitives are a fixed few hundred bytes, far below the limit.
        self.bytes += name.len() + primitive.body.len() + 6;
        self.rules[self.index[name]].1 = primitive.body.into();
        for dep in primitive.deps {
            self.primitive(dep);
        }
        name
    }

    /// A rule name for `schema`: the rule its body already is, or a new one.
    fn visit(
        &mut self,
        schema: &Value,
        name: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        let body = self.visit_body(schema, name, path, depth)?;
        if is_rule_name(&body) {
            Ok(body)
        } else {
            self.add_rule(name, body)
        }
    }

    /// The body of a rule matching exactly the JSON texts `schema` accepts (or some of them).
    fn visit_body(
        &mut self,
        schema: &Value,
        name: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        self.count_visit(path, depth)?;
        let map = match schema {
            Value::Bool(true) => return Ok(self.primitive("value").into()),
            Value::Bool(false) => return Err(unsatisfiable(path, "the schema is `false`")),
            Value::Object(map) => map,
            _ => return Err(invalid(path, "a schema must be an object or a boolean")),
        };
        check_keywords(map, path)?;
        let constraining: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !is_annotation(k))
            .collect();

        if let Some(reference) = map.get("$ref") {
            if constraining.len() == 1 {
                return self.reference(reference, path, depth);
            }
            // Keywords beside a `$ref` apply too (2019-09 and later): both must hold.
            let merged = self.merge_all(&[schema], path, depth)?;
            return self.visit_body(&merged, name, path, depth + 1);
        }
        if map.contains_key("allOf") {
            let merged = self.merge_all(&[schema], path, depth)?;
            return self.visit_body(&merged, name, &child_path(path, "allOf"), depth + 1);
        }
        if map.contains_key("anyOf") || map.contains_key("oneOf") {
            return self.union_body(map, name, path, depth);
        }
        if map.contains_key("enum") || map.contains_key("const") {
            return self.enum_body(map, path);
        }

        let types = schema_types(map, path)?;
        let mut bodies = Vec::new();
        for ty in types {
            bodies.push(match ty {
                None => self.primitive("value").into(),
                Some(Type::Null) => self.primitive("null").into(),
                Some(Type::Boolean) => self.primitive("boolean").into(),
                Some(Type::Integer) => self.integer_body(map, path)?,
                Some(Type::Number) => self.number_body(map, path)?,
                Some(Type::String) => self.string_body(map, path)?,
                Some(Type::Object) => self.object_body(map, name, path, depth)?,
                Some(Type::Array) => self.array_body(map, name, path, depth)?,
            });
        }
        Ok(bodies.join(" | "))
    }

    fn count_visit(&mut self, path: &str, depth: usize) -> Result<(), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError::TooDeep {
                path: shown(path),
                limit: MAX_DEPTH,
            });
        }
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(SchemaError::TooComplex { limit: MAX_VISITS });
        }
        Ok(())
    }

    /// The rule of a `$ref` target, converted once however often it is named.
    fn reference(
        &mut self,
        reference: &Value,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        let (pointer, target) = self.resolve(reference, path)?;
        if self.left_open.contains(&pointer) {
            return Err(unsupported(
                path,
                format!(
                    "\"$ref\" {reference} refers back to itself before any JSON token (left recursion)"
                ),
            ));
        }
        if let Some(rule) = self.refs.get(&pointer) {
            return Ok(rule.clone());
        }
        let name = self.fresh_name(&format!("ref{pointer}"));
        self.reserve(&name);
        self.refs.insert(pointer.clone(), name.clone());
        self.left_open.insert(pointer.clone());
        let body = self.visit_body(target, &name, &pointer, depth + 1)?;
        self.left_open.remove(&pointer);
        self.set_rule(&name, body)?;
        Ok(name)
    }

    /// The JSON pointer a local `$ref` names, and the subschema there.
    fn resolve(&self, reference: &Value, path: &str) -> Result<(String, &'s Value), SchemaError> {
        let Some(text) = reference.as_str() else {
            return Err(invalid(path, "\"$ref\" must be a string"));
        };
        let Some(fragment) = text.strip_prefix('#') else {
            return Err(SchemaError::RemoteRef {
                reference: text.into(),
                path: shown(path),
            });
        };
        let pointer = percent_decode(fragment)
            .ok_or_else(|| invalid(path, format!("\"$ref\" {text:?} has a malformed %-escape")))?;
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(unsupported(
                path,
                format!("\"$ref\" {text:?}: only JSON pointer fragments (\"#/...\") are supported"),
            ));
        }
        let missing = || SchemaError::MissingRef {
            reference: text.into(),
            path: shown(path),
        };
        let target = self.root.pointer(&pointer).ok_or_else(missing)?;
        Ok((pointer, target))
    }

    /// `anyOf` / `oneOf`: any one alternative, each also held to the keywords beside it.
    ///
    /// `oneOf` is converted as `anyOf`: a document matching two alternatives is accepted.
    fn union_body(
        &mut self,
        map: &Map<String, Value>,
        name: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        if map.contains_key("anyOf") && map.contains_key("oneOf") {
            return Err(unsupported(path, "\"anyOf\" together with \"oneOf\""));
        }
        let keyword = if map.contains_key("anyOf") {
            "anyOf"
        } else {
            "oneOf"
        };
        let alternatives = non_empty_array(map, keyword, path)?;
        let siblings: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| k.as_str() != keyword && !is_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let siblings = Value::Object(siblings);
        let mut rules = Vec::with_capacity(alternatives.len());
        for (i, alternative) in alternatives.iter().enumerate() {
            let alt_path = child_path(&child_path(path, keyword), &i.to_string());
            let alt_name = if name.is_empty() {
                format!("alternative-{i}")
            } else {
                format!("{name}-{i}")
            };
            let rule = if siblings.as_object().is_some_and(Map::is_empty) {
                self.visit(alternative, &alt_name, &alt_path, depth + 1)?
            } else {
                let merged = self.merge_all(&[&siblings, alternative], &alt_path, depth)?;
                self.visit(&merged, &alt_name, &alt_path, depth + 1)?
            };
            rules.push(rule);
        }
        Ok(rules.join(" | "))
    }

    /// `enum` / `const`: the listed values, as written by `serde_json`, of the allowed types.
    fn enum_body(&mut self, map: &Map<String, Value>, path: &str) -> Result<String, SchemaError> {
        if let Some(other) = map
            .keys()
            .find(|k| !is_annotation(k) && !["enum", "const", "type"].contains(&k.as_str()))
        {
            return Err(unsupported(
                path,
                format!("\"enum\" or \"const\" together with \"{other}\""),
            ));
        }
        let mut values = enum_values(map, path)?;
        if map.contains_key("type") {
            let types = declared_types(map, path)?;
            values.retain(|v| types.iter().any(|t| t.holds(v)));
        }
        if values.is_empty() {
            return Err(unsatisfiable(
                path,
                "no value of \"enum\" / \"const\" has the declared type",
            ));
        }
        let literals: Vec<String> = values
            .iter()
            .map(|v| gbnf_literal(&v.to_string()))
            .collect();
        Ok(format!("( {} ) space", literals.join(" | ")))
    }

    fn integer_body(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
    ) -> Result<String, SchemaError> {
        let (low, high) = number_bounds(map, path)?;
        if low.is_none() && high.is_none() {
            return Ok(self.primitive("integer").into());
        }
        let low_int = low.as_ref().map(|b| {
            if b.exclusive {
                (b.value.floor() as i128).saturating_add(1)
            } else {
                b.value.ceil() as i128
            }
        });
        let high_int = high.as_ref().map(|b| {
            if b.exclusive {
                (b.value.ceil() as i128).saturating_sub(1)
            } else {
                b.value.floor() as i128
            }
        });
        if let (Some(l), Some(h), Some(low), Some(high)) = (low_int, high_int, &low, &high) {
            if l > h {
                return Err(unsatisfiable(
                    path,
                    format!(
                        "no integer lies between {} and {}",
                        low.shown(),
                        high.shown()
                    ),
                ));
            }
        }
        let low = low_int.unwrap_or(-MAX_INTEGRAL);
        let high = high_int.unwrap_or(MAX_INTEGRAL);
        if low > MAX_INTEGRAL || high < -MAX_INTEGRAL {
            return Err(unsupported(
                path,
                format!(
                    "bounds beyond the {} digits a grammar number may have",
                    MAX_INTEGRAL.to_string().len()
                ),
            ));
        }
        let (low, high) = (low.max(-MAX_INTEGRAL), high.min(MAX_INTEGRAL));
        Ok(format!("( {} ) space", signed_range(low, high)))
    }

    /// Bounded numbers are written in decimal notation, without exponent, with at most
    /// `FRACTION_DIGITS` digits after the point: every such number in the range is accepted,
    /// in every spelling (trailing zeros, "-0"), and no other.
    fn number_body(&mut self, map: &Map<String, Value>, path: &str) -> Result<String, SchemaError> {
        let (low, high) = number_bounds(map, path)?;
        if low.is_none() && high.is_none() {
            return Ok(self.primitive("number").into());
        }
        let low_units = low
            .as_ref()
            .map_or(Ok(-MAX_UNITS), |b| b.inner_units(true, path))?;
        let high_units = high
            .as_ref()
            .map_or(Ok(MAX_UNITS), |b| b.inner_units(false, path))?;
        if let (Some(low), Some(high)) = (&low, &high) {
            if low_units > high_units {
                return Err(unsupported(
                    path,
                    format!(
                        "no number with at most {FRACTION_DIGITS} digits after the point lies between {} and {}",
                        low.shown(),
                        high.shown()
                    ),
                ));
            }
        }
        let mut alternatives = Vec::new();
        if high_units >= 0 {
            alternatives.push(self.magnitude(low_units.max(0), high_units));
        }
        // "-0" and "-0.0" are zero too.
        if low_units <= 0 {
            alternatives.push(format!(
                "\"-\" ( {} )",
                self.magnitude((-high_units).max(0), -low_units)
            ));
        }
        Ok(format!("( {} ) space", alternatives.join(" | ")))
    }

    /// Non-negative numbers from `low` to `high` units (of the last fraction digit), without
    /// exponent: an integral part strictly between the bounds' takes any fraction, the bounds'
    /// own integral parts only the fractions on the inside.
    fn magnitude(&mut self, low: i128, high: i128) -> String {
        let scale = 10i128.pow(FRACTION_DIGITS);
        let split = |units: i128| {
            let fraction = format!(
                "{:0width$}",
                units % scale,
                width = FRACTION_DIGITS as usize
            );
            ((units / scale) as u64, fraction.into_bytes())
        };
        let ((low_int, low_fraction), (high_int, high_fraction)) = (split(low), split(high));
        if low_int == high_int {
            return join_terms(&[
                &format!("\"{low_int}\""),
                &fraction_between(&low_fraction, &high_fraction, 0),
            ]);
        }
        let mut alternatives = Vec::new();
        let mut first_any = low_int;
        if !all(&low_fraction, b'0') {
            alternatives.push(join_terms(&[
                &format!("\"{low_int}\""),
                &fraction_at_least(&low_fraction, 0),
            ]));
            first_any += 1;
        }
        let high_is_ceiling = all(&high_fraction, b'9');
        let last_any = if high_is_ceiling {
            high_int
        } else {
            high_int - 1
        };
        if first_any <= last_any {
            let integral = if first_any == 0 && last_any == MAX_INTEGRAL as u64 {
                self.primitive("integral-part").to_string()
            } else {
                group(unsigned_range(first_any, last_any))
            };
            alternatives.push(format!("{integral} {}", fraction_run(0, "[0-9]")));
        }
        if !high_is_ceiling {
            alternatives.push(join_terms(&[
                &format!("\"{high_int}\""),
                &fraction_at_most(&high_fraction, 0),
            ]));
        }
        alternatives.join(" | ")
    }

    fn string_body(&mut self, map: &Map<String, Value>, path: &str) -> Result<String, SchemaError> {
        let has_length = map.contains_key("minLength") || map.contains_key("maxLength");
        let kinds = [
            map.contains_key("pattern"),
            map.contains_key("format"),
            has_length,
        ];
        if kinds.iter().filter(|&&k| k).count() > 1 {
            return Err(unsupported(
                path,
                "only one of \"pattern\", \"format\" or \"minLength\"/\"maxLength\" per string",
            ));
        }
        if let Some(pattern) = map.get("pattern") {
            let Some(pattern) = pattern.as_str() else {
                return Err(invalid(path, "\"pattern\" must be a string"));
            };
            return self.pattern_body(pattern, path);
        }
        if let Some(format) = map.get("format") {
            let rule = match format.as_str() {
                Some("date") => "date-string",
                Some("time") => "time-string",
                Some("date-time") => "date-time-string",
                Some("uuid") => "uuid",
                _ => {
                    return Err(unsupported(
                        path,
                        format!("\"format\" {format} (supported: date, time, date-time, uuid)"),
                    ))
                }
            };
            return Ok(self.primitive(rule).into());
        }
        if has_length {
            let min = count(map, "minLength", path)?.unwrap_or(0);
            let max = count(map, "maxLength", path)?;
            if max.is_some_and(|m| m < min) {
                return Err(unsatisfiable(
                    path,
                    format!(
                        "\"minLength\" {min} is above \"maxLength\" {}",
                        max.unwrap_or(0)
                    ),
                ));
            }
            let chars = repetition(self.primitive("char"), min, max);
            return Ok(join_terms(&[r#""\"""#, &chars, r#""\"""#, "space"]));
        }
        Ok(self.primitive("string").into())
    }

    fn pattern_body(&mut self, pattern: &str, path: &str) -> Result<String, SchemaError> {
        let error = |reason: String| SchemaError::Pattern {
            pattern: pattern.into(),
            path: shown(path),
            reason,
        };
        let regex = Pattern::parse(pattern).map_err(error)?;
        let expr = regex.body.emit().map_err(error)?;
        let expr = if matches!(regex.body, Regex::Alternation(_)) {
            format!("( {} )", expr.text)
        } else {
            expr.text
        };
        // JSON Schema patterns match anywhere in the string unless anchored.
        let any = if regex.anchored_start && regex.anchored_end {
            ""
        } else {
            self.primitive("char");
            "char*"
        };
        let terms: [&str; 3] = if expr.is_empty() {
            [any, "", ""]
        } else {
            [
                if regex.anchored_start { "" } else { any },
                &expr,
                if regex.anchored_end { "" } else { any },
            ]
        };
        let inner = join_terms(&terms);
        Ok(join_terms(&[r#""\"""#, &inner, r#""\"""#, "space"]))
    }

    /// llama.cpp's object: required properties first, then optional ones, each in the order
    /// of `properties`, then any additional properties.
    fn object_body(
        &mut self,
        map: &Map<String, Value>,
        name: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        let properties = match map.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(invalid(path, "\"properties\" must be an object")),
        };
        let additional = map.get("additionalProperties");
        let required = required_names(map, path)?;
        let no_properties = properties.is_none_or(Map::is_empty);
        if no_properties
            && required.is_empty()
            && additional.is_none_or(|a| a == &Value::Bool(true))
        {
            return Ok(self.primitive("object").into());
        }
        let empty = Map::new();
        let properties = properties.unwrap_or(&empty);
        for key in &required {
            if !properties.contains_key(key) {
                let reason = format!("required property {key:?} is not in \"properties\"");
                return Err(if additional == Some(&Value::Bool(false)) {
                    unsatisfiable(path, reason)
                } else {
                    unsupported(path, reason)
                });
            }
        }

        // Inside the braces a token has been consumed: recursion is no longer left recursion.
        let saved = std::mem::take(&mut self.left_open);
        let result = self.object_rules(properties, &required, additional, name, path, depth);
        self.left_open = saved;
        let (required_kvs, optional_kvs) = result?;

        let mut body = String::from(r#""{" space"#);
        if !required_kvs.is_empty() {
            body.push(' ');
            body.push_str(&required_kvs.join(r#" "," space "#));
        }
        if !optional_kvs.is_empty() {
            // rest[i]: optional entries i.. each behind a comma; the last may repeat when it
            // stands for additional properties.
            let mut rest: Vec<String> = vec![String::new(); optional_kvs.len()];
            for i in (1..optional_kvs.len()).rev() {
                let (kv, repeats, base) = &optional_kvs[i];
                let one = format!(r#"( "," space {kv} )"#);
                let own = if *repeats {
                    format!("{one}*")
                } else {
                    format!("{one}?")
                };
                let next = rest.get(i + 1).map_or("", String::as_str);
                rest[i] = self.add_rule(&format!("{base}-rest"), join_terms(&[&own, next]))?;
            }
            let mut firsts = Vec::new();
            for (i, (kv, repeats, _)) in optional_kvs.iter().enumerate() {
                let own = if *repeats {
                    format!(r#"{kv} ( "," space {kv} )*"#)
                } else {
                    kv.clone()
                };
                let next = rest.get(i + 1).map_or("", String::as_str);
                firsts.push(join_terms(&[&own, next]));
            }
            let choice = firsts.join(" | ");
            if required_kvs.is_empty() {
                body.push_str(&format!(" ( {choice} )?"));
            } else {
                body.push_str(&format!(r#" ( "," space ( {choice} ) )?"#));
            }
        }
        body.push_str(r#" "}" space"#);
        Ok(body)
    }

    /// The key-value rules of an object: required ones, then optional ones as
    /// (rule, repeats, name base).
    #[allow(clippy::type_complexity)]
    fn object_rules(
        &mut self,
        properties: &Map<String, Value>,
        required: &[String],
        additional: Option<&Value>,
        name: &str,
        path: &str,
        depth: usize,
    ) -> Result<(Vec<String>, Vec<(String, bool, String)>), SchemaError> {
        let mut required_kvs = Vec::new();
        let mut optional_kvs = Vec::new();
        let properties_path = child_path(path, "properties");
        let required: HashSet<&str> = required.iter().map(String::as_str).collect();
        for (key, schema) in properties {
            let is_required = required.contains(key.as_str());
            if schema == &Value::Bool(false) {
                if is_required {
                    return Err(unsatisfiable(
                        path,
                        format!("required property {key:?} has the schema `false`"),
                    ));
                }
                // The property must be absent; it stays out of the additional keys below.
                continue;
            }
            let prop_name = child_name(name, key);
            let value = self.visit(
                schema,
                &prop_name,
                &child_path(&properties_path, key),
                depth + 1,
            )?;
            let key_literal = gbnf_literal(&Value::String(key.clone()).to_string());
            let kv = self.add_rule(
                &format!("{prop_name}-kv"),
                format!(r#"{key_literal} space ":" space {value}"#),
            )?;
            if is_required {
                required_kvs.push(kv);
            } else {
                optional_kvs.push((kv, false, sanitize(&prop_name)));
            }
        }
        let value = match additional {
            None | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(self.primitive("value").to_string()),
            Some(schema) => Some(self.visit(
                schema,
                &child_name(name, "additional-value"),
                &child_path(path, "additionalProperties"),
                depth + 1,
            )?),
        };
        if let Some(value) = value {
            let key = if properties.is_empty() {
                self.primitive("string").to_string()
            } else {
                let body = not_strings(properties.keys());
                self.primitive("key-char");
                self.add_rule(&child_name(name, "additional-k"), body)?
            };
            let base = child_name(name, "additional");
            let kv = self.add_rule(&format!("{base}-kv"), format!(r#"{key} ":" space {value}"#))?;
            optional_kvs.push((kv, true, sanitize(&base)));
        }
        Ok((required_kvs, optional_kvs))
    }

    fn array_body(
        &mut self,
        map: &Map<String, Value>,
        name: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        let min = count(map, "minItems", path)?.unwrap_or(0);
        let mut max = count(map, "maxItems", path)?;
        // Positions with their own schema, then the schema of every later item.
        let (prefix, prefix_keyword, rest, rest_keyword): (&[Value], &str, Option<&Value>, &str) =
            match (map.get("prefixItems"), map.get("items")) {
                (Some(Value::Array(p)), items) => (p, "prefixItems", items, "items"),
                (Some(_), _) => return Err(invalid(path, "\"prefixItems\" must be an array")),
                (None, Some(Value::Array(p))) => {
                    (p, "items", map.get("additionalItems"), "additionalItems")
                }
                (None, items) => (&[], "", items, "items"),
            };
        if prefix.is_empty() && rest.is_none() && min == 0 && max.is_none() {
            return Ok(self.primitive("array").into());
        }
        if max.is_some_and(|m| m < min) {
            return Err(unsatisfiable(path, "\"minItems\" is above \"maxItems\""));
        }

        let saved = std::mem::take(&mut self.left_open);
        let result = (|| -> Result<(Vec<String>, Option<String>), SchemaError> {
            let mut items = Vec::new();
            for (i, schema) in prefix.iter().enumerate() {
                let item_path = child_path(&child_path(path, prefix_keyword), &i.to_string());
                let item_name = child_name(name, &format!("tuple-{i}"));
                items.push(self.visit(schema, &item_name, &item_path, depth + 1)?);
            }
            // After a tuple, llama.cpp allows no more items unless a schema says which.
            let rest = match rest {
                Some(Value::Bool(false)) => None,
                None if !prefix.is_empty() => None,
                None | Some(Value::Bool(true)) => Some(self.primitive("value").to_string()),
                Some(schema) => Some(self.visit(
                    schema,
                    &child_name(name, "item"),
                    &child_path(path, rest_keyword),
                    depth + 1,
                )?),
            };
            Ok((items, rest))
        })();
        self.left_open = saved;
        let (items, rest) = result?;

        let k = items.len() as u64;
        if rest.is_none() {
            max = Some(max.map_or(k, |m| m.min(k)));
            if min > k {
                return Err(unsatisfiable(
                    path,
                    format!("\"minItems\" {min} is above the {k} items allowed"),
                ));
            }
        }
        let list = if items.is_empty() {
            separated_repetition(
                rest.as_deref().unwrap_or_default(),
                r#""," space"#,
                min,
                max,
            )
        } else {
            // What follows the tuple: later items, each behind a comma.
            let mut seq = match &rest {
                Some(item) if max.is_none_or(|m| m > k) => repetition(
                    &format!(r#"( "," space {item} )"#),
                    min.saturating_sub(k),
                    max.map(|m| m - k),
                ),
                _ => String::new(),
            };
            let present = max.map_or(k, |m| m.min(k)) as usize;
            for i in (0..present).rev() {
                let current = join_terms(&[&items[i], &seq]);
                let mandatory = (i as u64) < min;
                seq = match (i, mandatory) {
                    (0, true) => current,
                    (0, false) => format!("( {current} )?"),
                    (_, true) => format!(r#""," space {current}"#),
                    (_, false) => format!(r#"( "," space {current} )?"#),
                };
            }
            seq
        };
        Ok(join_terms(&[r#""[" space"#, &list, r#""]" space"#]))
    }

    /// Flattens `parts` (and their `allOf`s and `$ref`s) into one schema that holds exactly
    /// when all of them hold, or says why it cannot.
    fn merge_all(
        &mut self,
        parts: &[&Value],
        path: &str,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        let mut flat = Vec::new();
        for part in parts {
            self.flatten(part, path, depth + 1, &mut flat)?;
        }
        merge_flat(flat, path)
    }

    fn flatten(
        &mut self,
        schema: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<Map<String, Value>>,
    ) -> Result<(), SchemaError> {
        self.count_visit(path, depth)?;
        let map = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(unsatisfiable(path, "the schema is `false`")),
            Value::Object(map) => map,
            _ => return Err(invalid(path, "a schema must be an object or a boolean")),
        };
        check_keywords(map, path)?;
        let mut own: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| !is_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(reference) = own.remove("$ref") {
            let (pointer, target) = self.resolve(&reference, path)?;
            self.flatten(target, &pointer, depth + 1, out)?;
        }
        if let Some(all) = own.remove("allOf") {
            let Value::Array(all) = all else {
                return Err(invalid(path, "\"allOf\" must be an array"));
            };
            for (i, part) in all.iter().enumerate() {
                let part_path = child_path(&child_path(path, "allOf"), &i.to_string());
                self.flatten(part, &part_path, depth + 1, out)?;
            }
        }
        if !own.is_empty() {
            out.push(own);
        }
        Ok(())
    }
}

/// Every keyword of `map` must be one this converter knows.
fn check_keywords(map: &Map<String, Value>, path: &str) -> Result<(), SchemaError> {
    match map.keys().find(|k| !is_supported(k)) {
        Some(keyword) => Err(SchemaError::UnsupportedKeyword {
            keyword: keyword.clone(),
            path: shown(path),
        }),
        None => Ok(()),
    }
}

/// One schema equivalent to all of `parts` together.
fn merge_flat(parts: Vec<Map<String, Value>>, path: &str) -> Result<Value, SchemaError> {
    let at = child_path(path, "allOf");
    let with = |keyword: &str| parts.iter().filter(|p| p.contains_key(keyword)).count();
    // `additionalProperties` only sees the properties of its own schema.
    for part in parts.iter().filter(|p| {
        p.get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(true))
    }) {
        let own = part.get("properties").and_then(Value::as_object);
        for other in &parts {
            let Some(Value::Object(props)) = other.get("properties") else {
                continue;
            };
            if let Some(key) = props
                .keys()
                .find(|k| !own.is_some_and(|o| o.contains_key(*k)))
            {
                return Err(unsupported(
                    &at,
                    format!("property {key:?} of one part is outside \"additionalProperties\" of another"),
                ));
            }
        }
    }
    // `items` after `prefixItems` (or `additionalItems` after `items`) counts positions of
    // its own schema only.
    let tuple_parts = parts
        .iter()
        .filter(|p| {
            p.contains_key("prefixItems")
                || p.contains_key("additionalItems")
                || p.get("items").is_some_and(Value::is_array)
        })
        .count();
    let item_parts = parts
        .iter()
        .filter(|p| p.get("items").is_some_and(|i| !i.is_array()) && !p.contains_key("prefixItems"))
        .count();
    if tuple_parts > 1 || (tuple_parts == 1 && item_parts > 0) {
        return Err(unsupported(
            &at,
            "tuples (\"prefixItems\") in several parts",
        ));
    }
    for keyword in ["exclusiveMinimum", "exclusiveMaximum"] {
        if parts.len() > 1
            && parts
                .iter()
                .any(|p| p.get(keyword).is_some_and(Value::is_boolean))
        {
            return Err(unsupported(
                &at,
                format!("draft-4 boolean \"{keyword}\" inside \"allOf\""),
            ));
        }
    }
    if with("anyOf") + with("oneOf") > 1 {
        return Err(unsupported(&at, "several \"anyOf\"/\"oneOf\" to combine"));
    }

    let mut out = Map::new();
    let mut types: Option<Vec<Type>> = None;
    let mut values: Option<Vec<Value>> = None;
    for part in &parts {
        for (keyword, value) in part {
            match keyword.as_str() {
                "type" => {
                    let these = declared_types(part, path)?;
                    types = Some(match types {
                        None => these,
                        Some(before) => intersect_types(&before, &these),
                    });
                }
                "enum" | "const" => {
                    let these =
                        enum_values(&Map::from_iter([(keyword.clone(), value.clone())]), path)?;
                    let texts: HashSet<String> = these.iter().map(Value::to_string).collect();
                    let mut kept = values.take().unwrap_or(these);
                    kept.retain(|v| texts.contains(&v.to_string()));
                    values = Some(kept);
                }
                "required" => {
                    let mut names = required_names(part, path)?;
                    if let Some(Value::Array(before)) = out.get("required") {
                        let before: HashSet<&str> =
                            before.iter().filter_map(Value::as_str).collect();
                        names.retain(|n| !before.contains(n.as_str()));
                    }
                    let list = out
                        .entry("required")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.extend(names.into_iter().map(Value::String));
                    }
                }
                "properties" => {
                    let Value::Object(props) = value else {
                        return Err(invalid(path, "\"properties\" must be an object"));
                    };
                    let merged = out
                        .entry("properties")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(merged) = merged {
                        for (key, schema) in props {
                            let both = match merged.remove(key) {
                                Some(before) => serde_json::json!({ "allOf": [before, schema] }),
                                None => schema.clone(),
                            };
                            merged.insert(key.clone(), both);
                        }
                    }
                }
                "items" if value.is_object() || value.is_boolean() => {
                    let both = match out.remove("items") {
                        Some(before) => serde_json::json!({ "allOf": [before, value] }),
                        None => value.clone(),
                    };
                    out.insert("items".into(), both);
                }
                "minimum" | "minItems" | "minLength" | "exclusiveMinimum" => {
                    merge_bound(&mut out, keyword, value, path, |a, b| a.max(b))?;
                }
                "maximum" | "maxItems" | "maxLength" | "exclusiveMaximum" => {
                    merge_bound(&mut out, keyword, value, path, |a, b| a.min(b))?;
                }
                _ => match out.get(keyword) {
                    Some(before) if before != value => {
                        return Err(unsupported(&at, format!("parts disagree on \"{keyword}\"")))
                    }
                    _ => {
                        out.insert(keyword.clone(), value.clone());
                    }
                },
            }
        }
    }
    if let Some(types) = types {
        if types.is_empty() {
            return Err(unsatisfiable(&at, "the parts allow no common \"type\""));
        }
        let names = types
            .iter()
            .map(|t| Value::String(t.name().into()))
            .collect();
        out.insert("type".into(), Value::Array(names));
    }
    if let Some(values) = values {
        if values.is_empty() {
            return Err(unsatisfiable(
                &at,
                "the parts share no \"enum\" / \"const\" value",
            ));
        }
        out.insert("enum".into(), Value::Array(values));
    }
    Ok(Value::Object(out))
}

fn merge_bound(
    out: &mut Map<String, Value>,
    keyword: &str,
    value: &Value,
    path: &str,
    pick: fn(f64, f64) -> f64,
) -> Result<(), SchemaError> {
    let Some(new) = value.as_f64() else {
        return Err(invalid(path, format!("\"{keyword}\" must be a number")));
    };
    let merged = match out.get(keyword).and_then(Value::as_f64) {
        Some(before) if pick(before, new) == before => return Ok(()),
        _ => value.clone(),
    };
    out.insert(keyword.into(), merged);
    Ok(())
}

fn intersect_types(a: &[Type], b: &[Type]) -> Vec<Type> {
    let has = |set: &[Type], t: Type| {
        set.contains(&t) || (t == Type::Integer && set.contains(&Type::Number))
    };
    [
        Type::Null,
        Type::Boolean,
        Type::Object,
        Type::Array,
        Type::String,
        Type::Integer,
        Type::Number,
    ]
    .into_iter()
    .filter(|&t| has(a, t) && has(b, t))
    .collect()
}

/// The `type` keyword as a list.
fn declared_types(map: &Map<String, Value>, path: &str) -> Result<Vec<Type>, SchemaError> {
    let parse = |v: &Value| {
        v.as_str().and_then(Type::parse).ok_or_else(|| {
            invalid(
                path,
                format!("\"type\" {v} is not one of null, boolean, object, array, string, integer, number"),
            )
        })
    };
    match map.get("type") {
        None => Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(parse).collect(),
        Some(single) => Ok(vec![parse(single)?]),
    }
}

/// The types to build, one body each; `None` is any value. Without `type`, the types whose
/// keywords appear (llama.cpp reads `properties` as an object, and so on).
fn schema_types(map: &Map<String, Value>, path: &str) -> Result<Vec<Option<Type>>, SchemaError> {
    let mut types = declared_types(map, path)?;
    if map.contains_key("type") {
        if types.is_empty() {
            return Err(unsatisfiable(path, "\"type\" is an empty list"));
        }
    } else {
        let present = |group: &[&str]| group.iter().any(|k| map.contains_key(*k));
        for (group, ty) in [
            (OBJECT_KEYWORDS, Type::Object),
            (ARRAY_KEYWORDS, Type::Array),
            (STRING_KEYWORDS, Type::String),
            (NUMBER_KEYWORDS, Type::Number),
        ] {
            if present(group) {
                types.push(ty);
            }
        }
        if types.is_empty() {
            return Ok(vec![None]);
        }
    }
    types.sort();
    types.dedup();
    if types.contains(&Type::Number) {
        types.retain(|&t| t != Type::Integer);
    }
    Ok(types.into_iter().map(Some).collect())
}

fn enum_values(map: &Map<String, Value>, path: &str) -> Result<Vec<Value>, SchemaError> {
    let mut values: Option<Vec<Value>> = None;
    if let Some(value) = map.get("const") {
        values = Some(vec![value.clone()]);
    }
    if let Some(list) = map.get("enum") {
        let Value::Array(list) = list else {
            return Err(invalid(path, "\"enum\" must be an array"));
        };
        let mut seen = HashSet::new();
        let mut unique: Vec<Value> = Vec::new();
        for v in list {
            if seen.insert(v.to_string()) {
                unique.push(v.clone());
            }
        }
        if let Some(before) = &values {
            unique.retain(|v| before.contains(v));
        }
        values = Some(unique);
    }
    Ok(values.unwrap_or_default())
}

fn required_names(map: &Map<String, Value>, path: &str) -> Result<Vec<String>, SchemaError> {
    let Some(list) = map.get("required") else {
        return Ok(Vec::new());
    };
    let bad = || invalid(path, "\"required\" must be an array of strings");
    let mut seen = HashSet::new();
    let mut names: Vec<String> = Vec::new();
    for item in list.as_array().ok_or_else(bad)? {
        let name = item.as_str().ok_or_else(bad)?;
        if seen.insert(name) {
            names.push(name.into());
        }
    }
    Ok(names)
}

fn non_empty_array<'m>(
    map: &'m Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<&'m [Value], SchemaError> {
    match map.get(keyword) {
        Some(Value::Array(list)) if !list.is_empty() => Ok(list),
        _ => Err(invalid(
            path,
            format!("\"{keyword}\" must be a non-empty array"),
        )),
    }
}

/// A count keyword (`minItems`, ...): a non-negative whole number within `MAX_REPETITION`.
fn count(map: &Map<String, Value>, keyword: &str, path: &str) -> Result<Option<u64>, SchemaError> {
    let Some(value) = map.get(keyword) else {
        return Ok(None);
    };
    let n = match (value.as_u64(), value.as_f64()) {
        (Some(n), _) => n,
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 => f.min(u64::MAX as f64) as u64,
        _ => {
            return Err(invalid(
                path,
                format!("\"{keyword}\" must be a non-negative whole number"),
            ))
        }
    };
    if n > MAX_REPETITION {
        return Err(SchemaError::TooLarge {
            what: format!("\"{keyword}\""),
            path: shown(path),
            value: n,
            limit: MAX_REPETITION,
        });
    }
    Ok(Some(n))
}

fn number(map: &Map<String, Value>, keyword: &str, path: &str) -> Result<Option<f64>, SchemaError> {
    match map.get(keyword) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(path, format!("\"{keyword}\" must be a number"))),
    }
}

/// Draft 4 writes `exclusiveMinimum: true` to make `minimum` exclusive.
fn draft4_exclusive(
    map: &Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<bool, SchemaError> {
    match map.get(keyword) {
        Some(Value::Bool(b)) => {
            let bound = if keyword == "exclusiveMinimum" {
                "minimum"
            } else {
                "maximum"
            };
            if *b && !map.contains_key(bound) {
                return Err(invalid(
                    path,
                    format!("\"{keyword}\": true without \"{bound}\""),
                ));
            }
            Ok(*b)
        }
        _ => Ok(false),
    }
}

/// The numeric (draft 6 and later) form of `exclusiveMinimum` / `exclusiveMaximum`.
fn exclusive_bound(
    map: &Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<Option<f64>, SchemaError> {
    match map.get(keyword) {
        Some(Value::Bool(_)) => Ok(None),
        _ => number(map, keyword, path),
    }
}

/// A lower or upper bound on a number, as the schema wrote it.
struct Bound {
    keyword: &'static str,
    value: f64,
    exclusive: bool,
    text: String,
}

impl Bound {
    /// The bound as errors show it, e.g. `"exclusiveMinimum" 3`.
    fn shown(&self) -> String {
        let draft4 = if self.exclusive && !self.keyword.starts_with("exclusive") {
            " (exclusive)"
        } else {
            ""
        };
        format!("\"{}\" {}{draft4}", self.keyword, self.text)
    }

    /// The number a grammar writes nearest the bound on its inside (of a `lower` bound,
    /// above it), in units of the last fraction digit; a bound that leaves nothing a grammar
    /// writes on its inside is an error.
    fn inner_units(&self, lower: bool, path: &str) -> Result<i128, SchemaError> {
        let (floor, exact) = self.scaled(path)?;
        let (units, side) = if lower {
            (floor + i128::from(self.exclusive || !exact), "above")
        } else {
            (floor - i128::from(self.exclusive && exact), "below")
        };
        if units.abs() > MAX_UNITS && (units > 0) == lower {
            return Err(unsupported(
                path,
                format!(
                    "{} is {side} any number a grammar writes (at most {} digits before the point)",
                    self.shown(),
                    MAX_INTEGRAL.to_string().len()
                ),
            ));
        }
        Ok(units.clamp(-MAX_UNITS, MAX_UNITS))
    }

    /// The bound in units of the last fraction digit a grammar writes, rounded down, and
    /// whether that is exact; beyond the numbers a grammar writes it is clamped to just
    /// outside them.
    fn scaled(&self, path: &str) -> Result<(i128, bool), SchemaError> {
        // The shortest decimal that reads back as `value`: with at most
        // `MAX_BOUND_DIGITS` significant digits, it is the decimal the schema wrote.
        let text = format!("{:e}", self.value);
        let (mantissa, exponent) = text.split_once('e').expect("`{:e}` writes an exponent");
        let exponent: i32 = exponent.parse().expect("`{:e}` writes a whole exponent");
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        if digits.len() > MAX_BOUND_DIGITS {
            return Err(unsupported(
                path,
                format!(
                    "{} has more than {MAX_BOUND_DIGITS} significant digits, more than a JSON number read as a double keeps exactly",
                    self.shown()
                ),
            ));
        }
        let mut mantissa: i128 = digits.parse().expect("at most 15 ASCII digits");
        if self.value < 0.0 {
            mantissa = -mantissa;
        }
        let shift = exponent - (digits.len() as i32 - 1) + FRACTION_DIGITS as i32;
        let outside = MAX_UNITS + 1;
        Ok(if shift >= 0 {
            let units = 10i128
                .checked_pow(shift as u32)
                .and_then(|p| p.checked_mul(mantissa))
                .unwrap_or(mantissa.signum() * outside);
            (units.clamp(-outside, outside), true)
        } else {
            match 10i128.checked_pow(shift.unsigned_abs()) {
                Some(p) => (mantissa.div_euclid(p), mantissa.rem_euclid(p) == 0),
                // Smaller in magnitude than one unit.
                None => (-i128::from(mantissa < 0), mantissa == 0),
            }
        })
    }
}

/// The tightest lower and upper bounds on a number; bounds that leave no number between
/// them are an error.
fn number_bounds(
    map: &Map<String, Value>,
    path: &str,
) -> Result<(Option<Bound>, Option<Bound>), SchemaError> {
    let exclusive_min = draft4_exclusive(map, "exclusiveMinimum", path)?;
    let exclusive_max = draft4_exclusive(map, "exclusiveMaximum", path)?;
    let bound = |keyword: &'static str, exclusive: bool| -> Result<Option<Bound>, SchemaError> {
        let value = if keyword.starts_with("exclusive") {
            exclusive_bound(map, keyword, path)?
        } else {
            number(map, keyword, path)?
        };
        Ok(value.map(|value| Bound {
            keyword,
            value,
            exclusive,
            text: map[keyword].to_string(),
        }))
    };
    let low = tighter(
        bound("minimum", exclusive_min)?,
        bound("exclusiveMinimum", true)?,
        true,
    );
    let high = tighter(
        bound("maximum", exclusive_max)?,
        bound("exclusiveMaximum", true)?,
        false,
    );
    if let (Some(l), Some(h)) = (&low, &high) {
        if l.value > h.value {
            return Err(unsatisfiable(
                path,
                format!("{} is above {}", l.shown(), h.shown()),
            ));
        }
        if l.value == h.value && (l.exclusive || h.exclusive) {
            return Err(unsatisfiable(
                path,
                format!(
                    "{} and {} leave no number between them",
                    l.shown(),
                    h.shown()
                ),
            ));
        }
    }
    Ok((low, high))
}

/// The stricter of two lower (or upper) bounds: at equal values, the exclusive one.
fn tighter(a: Option<Bound>, b: Option<Bound>, lower: bool) -> Option<Bound> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let keep_a = if a.value == b.value {
                a.exclusive || !b.exclusive
            } else {
                (a.value > b.value) == lower
            };
            Some(if keep_a { a } else { b })
        }
        (a, b) => a.or(b),
    }
}

/// Integers in `low..=high` without leading zeros (and without "-0").
fn signed_range(low: i128, high: i128) -> String {
    let mut alternatives = Vec::new();
    if low < 0 {
        let smallest = if high < 0 { -high } else { 1 };
        alternatives.push(format!(
            "\"-\" ( {} )",
            unsigned_range(smallest as u64, -low as u64)
        ));
    }
    if high >= 0 {
        alternatives.push(unsigned_range(low.max(0) as u64, high as u64));
    }
    alternatives.join(" | ")
}

/// Decimal numerals of `low..=high`, one alternative group per digit count.
fn unsigned_range(low: u64, high: u64) -> String {
    let mut alternatives = Vec::new();
    let mut start = low;
    loop {
        let digits = start.to_string().len() as u32;
        let top = 10u64.pow(digits) - 1;
        let end = high.min(top);
        alternatives.push(same_length_range(
            start.to_string().as_bytes(),
            end.to_string().as_bytes(),
        ));
        if end == high {
            break;
        }
        start = top + 1;
    }
    alternatives.join(" | ")
}

/// Digit strings of one length from `low` to `high`: a common prefix, then the first
/// differing digit split into its lowest value, the values between, and its highest value.
fn same_length_range(low: &[u8], high: &[u8]) -> String {
    let common = low.iter().zip(high).take_while(|(a, b)| a == b).count();
    let prefix = std::str::from_utf8(&low[..common]).expect("digits are ASCII");
    if common == low.len() {
        return format!("\"{prefix}\"");
    }
    let (first, last) = (low[common], high[common]);
    let (low_rest, high_rest) = (&low[common + 1..], &high[common + 1..]);
    let width = low_rest.len();
    let mut alternatives = Vec::new();
    if width == 0 {
        alternatives.push(digit_class(first, last));
    } else {
        let any_digits = if width == 1 {
            "[0-9]".to_string()
        } else {
            format!("[0-9]{{{width}}}")
        };
        let low_is_floor = low_rest.iter().all(|&d| d == b'0');
        let high_is_ceiling = high_rest.iter().all(|&d| d == b'9');
        let middle_first = if low_is_floor { first } else { first + 1 };
        let middle_last = if high_is_ceiling { last } else { last - 1 };
        if !low_is_floor {
            let nines = vec![b'9'; width];
            let rest = group(same_length_range(low_rest, &nines));
            alternatives.push(format!("[{}] {rest}", first as char));
        }
        if middle_first <= middle_last {
            alternatives.push(format!(
                "{} {any_digits}",
                digit_class(middle_first, middle_last)
            ));
        }
        if !high_is_ceiling {
            let zeros = vec![b'0'; width];
            let rest = group(same_length_range(&zeros, high_rest));
            alternatives.push(format!("[{}] {rest}", last as char));
        }
    }
    let choice = alternatives.join(" | ");
    match (prefix.is_empty(), alternatives.len()) {
        (true, _) => choice,
        (false, 1) => format!("\"{prefix}\" {choice}"),
        (false, _) => format!("\"{prefix}\" ( {choice} )"),
    }
}

/// The digits from `low` to `high` (ASCII).
fn digit_class(low: u8, high: u8) -> String {
    if low == high {
        format!("[{}]", low as char)
    } else {
        format!("[{}-{}]", low as char, high as char)
    }
}

/// `expr` made one term in a sequence.
fn group(expr: String) -> String {
    if expr.contains('|') {
        format!("( {expr} )")
    } else {
        expr
    }
}

fn all(digits: &[u8], digit: u8) -> bool {
    digits.iter().all(|&d| d == digit)
}

/// The fraction digits from position `i` on (with the point, at 0), any number of them
/// up to `FRACTION_DIGITS`, each in `class`.
fn fraction_run(i: usize, class: &str) -> String {
    let room = FRACTION_DIGITS as u64 - i as u64;
    if i == 0 {
        format!("( \".\" {class}{{1,{room}}} )?")
    } else {
        repetition(class, 0, Some(room))
    }
}

/// Fraction digits from position `i` on whose value, padded with zeros, is at least
/// `low[i..]`; `low` holds all `FRACTION_DIGITS` digits.
fn fraction_at_least(low: &[u8], i: usize) -> String {
    if all(&low[i..], b'0') {
        return fraction_run(i, "[0-9]");
    }
    let digit = low[i];
    let mut alternatives = Vec::new();
    // A shorter fraction reads as if padded with zeros, so it must pass `low` before it ends.
    let mut first_any = digit;
    if !all(&low[i + 1..], b'0') {
        alternatives.push(join_terms(&[
            &format!("\"{}\"", digit as char),
            &fraction_at_least(low, i + 1),
        ]));
        first_any += 1;
    }
    if first_any <= b'9' {
        alternatives.push(join_terms(&[
            &digit_class(first_any, b'9'),
            &repetition("[0-9]", 0, Some(FRACTION_DIGITS as u64 - 1 - i as u64)),
        ]));
    }
    fraction_choice(i, alternatives, false)
}

/// Fraction digits from position `i` on whose value, padded with zeros, is at most
/// `high[i..]`.
fn fraction_at_most(high: &[u8], i: usize) -> String {
    if all(&high[i..], b'9') {
        return fraction_run(i, "[0-9]");
    }
    if all(&high[i..], b'0') {
        return fraction_run(i, "[0]");
    }
    let digit = high[i];
    let rest_is_ceiling = all(&high[i + 1..], b'9');
    let mut alternatives = Vec::new();
    if rest_is_ceiling || digit > b'0' {
        let last_any = if rest_is_ceiling { digit } else { digit - 1 };
        alternatives.push(join_terms(&[
            &digit_class(b'0', last_any),
            &repetition("[0-9]", 0, Some(FRACTION_DIGITS as u64 - 1 - i as u64)),
        ]));
    }
    if !rest_is_ceiling {
        alternatives.push(join_terms(&[
            &format!("\"{}\"", digit as char),
            &fraction_at_most(high, i + 1),
        ]));
    }
    fraction_choice(i, alternatives, true)
}

/// Fraction digits from position `i` on whose value, padded with zeros, lies from
/// `low[i..]` to `high[i..]`.
fn fraction_between(low: &[u8], high: &[u8], i: usize) -> String {
    if all(&low[i..], b'0') {
        return fraction_at_most(high, i);
    }
    if all(&high[i..], b'9') {
        return fraction_at_least(low, i);
    }
    let (first, last) = (low[i], high[i]);
    let alternatives = if first == last {
        vec![join_terms(&[
            &format!("\"{}\"", first as char),
            &fraction_between(low, high, i + 1),
        ])]
    } else {
        let mut alternatives = Vec::new();
        let mut first_any = first;
        if !all(&low[i + 1..], b'0') {
            alternatives.push(join_terms(&[
                &format!("\"{}\"", first as char),
                &fraction_at_least(low, i + 1),
            ]));
            first_any += 1;
        }
        let high_is_ceiling = all(&high[i + 1..], b'9');
        let last_any = if high_is_ceiling { last } else { last - 1 };
        if first_any <= last_any {
            alternatives.push(join_terms(&[
                &digit_class(first_any, last_any),
                &repetition("[0-9]", 0, Some(FRACTION_DIGITS as u64 - 1 - i as u64)),
            ]));
        }
        if !high_is_ceiling {
            alternatives.push(join_terms(&[
                &format!("\"{}\"", last as char),
                &fraction_at_most(high, i + 1),
            ]));
        }
        alternatives
    };
    // `low[i..]` is not zero, so the fraction cannot end here.
    fraction_choice(i, alternatives, false)
}

/// One digit position's `alternatives` as one term, after the point at position 0, and
/// optional where the fraction `may_end` there.
fn fraction_choice(i: usize, alternatives: Vec<String>, may_end: bool) -> String {
    let choice = alternatives.join(" | ");
    let digits = if i == 0 {
        format!("\".\" {}", group(choice))
    } else {
        choice
    };
    if may_end {
        format!("( {digits} )?")
    } else if i == 0 {
        digits
    } else {
        group(digits)
    }
}

/// A JSON string key that is none of `names`, spelled with raw characters only, as a trie:
/// at each node, a listed next character leads deeper, any other ends the match.
fn not_strings<'a>(names: impl Iterator<Item = &'a String>) -> String {
    #[derive(Default)]
    struct Node {
        children: BTreeMap<char, Node>,
        end: bool,
    }
    fn expr(node: &Node) -> String {
        if node.children.is_empty() {
            return if node.end { "key-char+" } else { "key-char*" }.into();
        }
        let mut alternatives = Vec::new();
        let mut listed = Vec::new();
        for (&c, child) in &node.children {
            // A character that needs an escape cannot follow: keys here are raw.
            if is_json_raw(c as u32) {
                alternatives.push(format!("{} {}", gbnf_literal(&c.to_string()), expr(child)));
                listed.push((c as u32, c as u32));
            }
        }
        let others = subtract(&json_raw(), &normalize(listed));
        if !others.is_empty() {
            alternatives.push(format!("{} key-char*", class_text(&others)));
        }
        let choice = alternatives.join(" | ");
        if node.end {
            format!("( {choice} )")
        } else {
            format!("( {choice} )?")
        }
    }
    let mut root = Node::default();
    for name in names {
        let mut node = &mut root;
        for c in name.chars() {
            node = node.children.entry(c).or_default();
        }
        node.end = true;
    }
    format!(r#""\"" {} "\"" space"#, expr(&root))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---- Character sets: sorted, disjoint, non-adjacent inclusive ranges of code points. ----

type Ranges = Vec<(u32, u32)>;

const MAX_CHAR: u32 = 0x10FFFF;
const SURROGATES: (u32, u32) = (0xD800, 0xDFFF);
/// Characters a JSON string may hold unescaped (as `char` writes them: no DEL either).
const JSON_RAW: [(u32, u32); 3] = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7E)];
const JSON_RAW_TAIL: (u32, u32) = (0x80, MAX_CHAR);

fn is_json_raw(c: u32) -> bool {
    JSON_RAW.iter().any(|&(a, b)| (a..=b).contains(&c)) || c >= JSON_RAW_TAIL.0
}

fn json_raw() -> Ranges {
    let mut r = JSON_RAW.to_vec();
    r.push(JSON_RAW_TAIL);
    r
}

fn normalize(mut ranges: Ranges) -> Ranges {
    ranges.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn complement(ranges: &[(u32, u32)]) -> Ranges {
    let mut out = Vec::new();
    let mut next = 0u32;
    for &(a, b) in ranges {
        if a > next {
            out.push((next, a - 1));
        }
        next = b.saturating_add(1);
    }
    if next <= MAX_CHAR && ranges.last().is_none_or(|&(_, b)| b < MAX_CHAR) {
        out.push((next, MAX_CHAR));
    }
    out
}

fn subtract(a: &[(u32, u32)], b: &[(u32, u32)]) -> Ranges {
    let keep = complement(&normalize(b.to_vec()));
    let mut out = Vec::new();
    for &(a0, a1) in &normalize(a.to_vec()) {
        for &(k0, k1) in &keep {
            let (lo, hi) = (a0.max(k0), a1.min(k1));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    out
}

fn contains(ranges: &[(u32, u32)], c: u32) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&c))
}

/// A GBNF character class for `ranges`, negated when that is shorter. Surrogates never
/// occur in text, so they are left out of whichever side is written.
fn class_text(ranges: &[(u32, u32)]) -> String {
    let positive = subtract(ranges, &[SURROGATES]);
    let negative = subtract(&complement(ranges), &[SURROGATES]);
    let (negated, items) = if !negative.is_empty() && negative.len() < positive.len() {
        (true, negative)
    } else {
        (false, positive)
    };
    let mut out = String::from(if negated { "[^" } else { "[" });
    for (a, b) in items {
        out.push_str(&class_char(a));
        if b > a {
            out.push('-');
            out.push_str(&class_char(b));
        }
    }
    out.push(']');
    out
}

fn class_char(c: u32) -> String {
    match char::from_u32(c) {
        Some(ch) if (ch == ' ' || ch.is_ascii_graphic()) && !"\\[]-^\"".contains(ch) => {
            ch.to_string()
        }
        Some(ch) if !ch.is_ascii() => ch.to_string(),
        _ => format!("\\x{c:02X}"),
    }
}

// ---- Patterns: the regular subset of ECMA-262 regular expressions. ----

#[derive(Clone)]
enum Regex {
    Chars(Ranges),
    Sequence(Vec<Regex>),
    Alternation(Vec<Regex>),
    Repeat(Box<Regex>, u64, Option<u64>),
}

struct Pattern {
    body: Regex,
    anchored_start: bool,
    anchored_end: bool,
}

/// GBNF for part of a pattern: a JSON-escaped literal (kept apart so neighbours merge) or
/// an expression, `atomic` when a postfix operator applies to all of it.
enum Piece {
    Literal(String),
    Expr { text: String, atomic: bool },
}

struct Emitted {
    text: String,
    atomic: bool,
}

impl Piece {
    fn finish(self) -> Emitted {
        match self {
            Piece::Literal(text) if text.is_empty() => Emitted {
                text,
                atomic: false,
            },
            Piece::Literal(text) => Emitted {
                text: gbnf_literal(&text),
                atomic: true,
            },
            Piece::Expr { text, atomic } => Emitted { text, atomic },
        }
    }
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Pattern, String> {
        let mut chars: Vec<char> = pattern.chars().collect();
        let anchored_start = chars.first() == Some(&'^');
        if anchored_start {
            chars.remove(0);
        }
        let backslashes = chars
            .iter()
            .rev()
            .skip(1)
            .take_while(|&&c| c == '\\')
            .count();
        let anchored_end = chars.last() == Some(&'$') && backslashes % 2 == 0;
        if anchored_end {
            chars.pop();
        }
        let mut parser = RegexParser {
            chars,
            pos: 0,
            depth: 0,
        };
        let body = parser.alternation()?;
        if parser.pos < parser.chars.len() {
            return Err("unbalanced parenthesis".into());
        }
        if matches!(body, Regex::Alternation(_)) && (anchored_start || anchored_end) {
            return Err(
                "\"^\" or \"$\" around a top-level \"|\" (write ^(a|b)$ to anchor every alternative)"
                    .into(),
            );
        }
        Ok(Pattern {
            body,
            anchored_start,
            anchored_end,
        })
    }
}

struct RegexParser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

enum ClassItem {
    Char(u32),
    Set(Ranges),
}

const DIGITS: &[(u32, u32)] = &[(0x30, 0x39)];
const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];
/// ECMA-262 `\s`: white space and line terminators.
const WHITE_SPACE: &[(u32, u32)] = &[
    (0x09, 0x0D),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
];
/// What `.` does not match: the line terminators.
const LINE_TERMINATORS: &[(u32, u32)] = &[(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)];

impl RegexParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn alternation(&mut self) -> Result<Regex, String> {
        let mut branches = vec![self.sequence()?];
        while self.eat('|') {
            branches.push(self.sequence()?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().expect("one branch")
        } else {
            Regex::Alternation(branches)
        })
    }

    fn sequence(&mut self) -> Result<Regex, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(match self.quantifier()? {
                Some((min, max)) => Regex::Repeat(Box::new(atom), min, max),
                None => atom,
            });
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Regex::Sequence(items)
        })
    }

    fn atom(&mut self) -> Result<Regex, String> {
        let c = self.next().expect("sequence checked for a character");
        Ok(match c {
            '(' => self.group()?,
            '[' => Regex::Chars(self.class()?),
            '.' => Regex::Chars(complement(LINE_TERMINATORS)),
            '\\' => match self.escape(false)? {
                ClassItem::Char(c) => Regex::Chars(vec![(c, c)]),
                ClassItem::Set(set) => Regex::Chars(set),
            },
            '^' | '$' => {
                return Err(format!(
                    "anchor \"{c}\" inside the pattern (only at its ends)"
                ))
            }
            '*' | '+' | '?' | '{' => return Err(format!("\"{c}\" with nothing to repeat")),
            c => Regex::Chars(vec![(c as u32, c as u32)]),
        })
    }

    fn group(&mut self) -> Result<Regex, String> {
        if self.eat('?') {
            match self.next() {
                Some(':') => {}
                Some('=') | Some('!') => return Err("lookahead".into()),
                Some('<') if matches!(self.peek(), Some('=') | Some('!')) => {
                    return Err("lookbehind".into())
                }
                Some('<') => while self.next().ok_or("unterminated group name")? != '>' {},
                _ => return Err("unsupported group \"(?\"".into()),
            }
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("groups nest deeper than {MAX_DEPTH}"));
        }
        let inner = self.alternation()?;
        self.depth -= 1;
        if !self.eat(')') {
            return Err("unbalanced parenthesis".into());
        }
        // Kept in a sequence so that a grouped alternation stays grouped.
        Ok(match inner {
            Regex::Alternation(_) => Regex::Sequence(vec![inner]),
            inner => inner,
        })
    }

    fn quantifier(&mut self) -> Result<Option<(u64, Option<u64>)>, String> {
        let bounds = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                let min = self.bound()?.ok_or("malformed \"{m,n}\"")?;
                let max = if self.eat(',') {
                    self.bound()?
                } else {
                    Some(min)
                };
                if !self.eat('}') {
                    return Err("malformed \"{m,n}\"".into());
                }
                if max.is_some_and(|m| m < min) {
                    return Err(format!("\"{{{min},..}}\" with a maximum below the minimum"));
                }
                self.pos -= 1;
                (min, max)
            }
            _ => return Ok(None),
        };
        self.pos += 1;
        // A lazy quantifier matches the same strings.
        self.eat('?');
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return Err("a quantifier after a quantifier".into());
        }
        Ok(Some(bounds))
    }

    fn bound(&mut self) -> Result<Option<u64>, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        match digits.parse::<u64>() {
            Ok(n) if n <= MAX_REPETITION => Ok(Some(n)),
            _ => Err(format!(
                "repetition count {digits} is above the limit of {MAX_REPETITION}"
            )),
        }
    }

    fn hex(&mut self, digits: usize) -> Result<u32, String> {
        let text: String = (0..digits).filter_map(|_| self.next()).collect();
        match u32::from_str_radix(&text, 16) {
            Ok(v) if text.len() == digits => Ok(v),
            _ => Err(format!("malformed hex escape {text:?}")),
        }
    }

    fn escape(&mut self, in_class: bool) -> Result<ClassItem, String> {
        let c = self.next().ok_or("trailing backslash")?;
        Ok(match c {
            'd' => ClassItem::Set(DIGITS.to_vec()),
            'D' => ClassItem::Set(complement(DIGITS)),
            'w' => ClassItem::Set(WORD.to_vec()),
            'W' => ClassItem::Set(complement(WORD)),
            's' => ClassItem::Set(WHITE_SPACE.to_vec()),
            'S' => ClassItem::Set(complement(WHITE_SPACE)),
            'b' if in_class => ClassItem::Char(0x08),
            'b' | 'B' => return Err("word boundary".into()),
            '1'..='9' => return Err("backreference".into()),
            'k' => return Err("named backreference".into()),
            'p' | 'P' => return Err("Unicode property escape".into()),
            '0' if self.peek().is_some_and(|c| c.is_ascii_digit()) => {
                return Err("octal escape".into())
            }
            '0' => ClassItem::Char(0),
            'n' => ClassItem::Char(0x0A),
            'r' => ClassItem::Char(0x0D),
            't' => ClassItem::Char(0x09),
            'f' => ClassItem::Char(0x0C),
            'v' => ClassItem::Char(0x0B),
            'x' => ClassItem::Char(self.hex(2)?),
            'u' => {
                let c = self.hex(4)?;
                if (SURROGATES.0..=SURROGATES.1).contains(&c) {
                    return Err("surrogate escape".into());
                }
                ClassItem::Char(c)
            }
            c if c.is_ascii_alphanumeric() => return Err(format!("unknown escape \"\\{c}\"")),
            c => ClassItem::Char(c as u32),
        })
    }

    fn class(&mut self) -> Result<Ranges, String> {
        let negated = self.eat('^');
        let mut ranges = Vec::new();
        loop {
            let item = match self.next() {
                None => return Err("unterminated character class".into()),
                Some(']') => break,
                Some('\\') => self.escape(true)?,
                Some(c) => ClassItem::Char(c as u32),
            };
            let is_range =
                self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&c| c != ']');
            if !is_range {
                match item {
                    ClassItem::Char(c) => ranges.push((c, c)),
                    ClassItem::Set(set) => ranges.extend(set),
                }
                continue;
            }
            self.pos += 1;
            let end = match self.next() {
                Some('\\') => self.escape(true)?,
                Some(c) => ClassItem::Char(c as u32),
                None => return Err("unterminated character class".into()),
            };
            match (item, end) {
                (ClassItem::Char(a), ClassItem::Char(b)) if a <= b => ranges.push((a, b)),
                (ClassItem::Char(_), ClassItem::Char(_)) => {
                    return Err("character range out of order".into())
                }
                _ => return Err("a range with \"\\d\", \"\\w\" or \"\\s\" at an end".into()),
            }
        }
        let ranges = normalize(ranges);
        Ok(if negated { complement(&ranges) } else { ranges })
    }
}

fn alternation(mut branches: Vec<Regex>) -> Option<Regex> {
    match branches.len() {
        0 => None,
        1 => branches.pop(),
        _ => Some(Regex::Alternation(branches)),
    }
}

/// The JSON text of one string character: raw where JSON allows it, else its escape.
fn json_escaped(c: u32) -> String {
    match c {
        0x22 => "\\\"".into(),
        0x5C => "\\\\".into(),
        0x08 => "\\b".into(),
        0x0C => "\\f".into(),
        0x0A => "\\n".into(),
        0x0D => "\\r".into(),
        0x09 => "\\t".into(),
        c if !is_json_raw(c) => format!("\\u{c:04x}"),
        c => char::from_u32(c).map(String::from).unwrap_or_default(),
    }
}

/// Escapes offered for characters of a set that JSON cannot hold raw; other control
/// characters are left out of sets (fewer strings, never more).
const SHORT_ESCAPES: [u32; 7] = [0x22, 0x5C, 0x08, 0x0C, 0x0A, 0x0D, 0x09];

impl Regex {
    fn nullable(&self) -> bool {
        match self {
            Regex::Chars(_) => false,
            Regex::Sequence(items) => items.iter().all(Regex::nullable),
            Regex::Alternation(branches) => branches.iter().any(Regex::nullable),
            Regex::Repeat(inner, min, _) => *min == 0 || inner.nullable(),
        }
    }

    /// The same strings less the empty one (None: only the empty one). An unbounded repeat of
    /// something that matches the empty string would be a left-recursive grammar rule.
    fn without_empty(&self) -> Option<Regex> {
        if !self.nullable() {
            return Some(self.clone());
        }
        match self {
            Regex::Chars(_) => Some(self.clone()),
            Regex::Alternation(branches) => {
                let branches = branches.iter().filter_map(Regex::without_empty).collect();
                alternation(branches)
            }
            // A non-empty match has a first non-empty item; the ones before it match empty.
            Regex::Sequence(items) => {
                let branches: Vec<Regex> = (0..items.len())
                    .filter_map(|i| {
                        let first = items[i].without_empty()?;
                        let mut sequence = vec![first];
                        sequence.extend(items[i + 1..].iter().cloned());
                        Some(Regex::Sequence(sequence))
                    })
                    .collect();
                alternation(branches)
            }
            Regex::Repeat(inner, min, max) => {
                let inner_nullable = inner.nullable();
                let inner = inner.without_empty()?;
                let min = if inner_nullable { 1 } else { (*min).max(1) };
                Some(Regex::Repeat(Box::new(inner), min, *max))
            }
        }
    }

    fn emit(&self) -> Result<Emitted, String> {
        Ok(self.piece()?.finish())
    }

    fn piece(&self) -> Result<Piece, String> {
        Ok(match self {
            Regex::Chars(set) if set.len() == 1 && set[0].0 == set[0].1 => {
                Piece::Literal(json_escaped(set[0].0))
            }
            Regex::Chars(set) => {
                let raw = subtract(set, &complement(&json_raw()));
                let mut alternatives = Vec::new();
                if !subtract(&raw, &[SURROGATES]).is_empty() {
                    alternatives.push(class_text(&raw));
                }
                for c in SHORT_ESCAPES {
                    if contains(set, c) {
                        alternatives.push(gbnf_literal(&json_escaped(c)));
                    }
                }
                match alternatives.len() {
                    0 => return Err("a character class that matches no character".into()),
                    1 => Piece::Expr {
                        text: alternatives.pop().expect("one alternative"),
                        atomic: true,
                    },
                    _ => Piece::Expr {
                        text: format!("( {} )", alternatives.join(" | ")),
                        atomic: true,
                    },
                }
            }
            Regex::Sequence(items) => {
                let mut terms: Vec<String> = Vec::new();
                let mut literal = String::new();
                let mut last = None;
                for item in items {
                    match item.piece()? {
                        Piece::Literal(text) => literal.push_str(&text),
                        Piece::Expr { text, atomic } => {
                            if !literal.is_empty() {
                                terms.push(gbnf_literal(&std::mem::take(&mut literal)));
                            }
                            if matches!(item, Regex::Alternation(_)) {
                                terms.push(format!("( {text} )"));
                                last = Some(true);
                            } else if !text.is_empty() {
                                terms.push(text);
                                last = Some(atomic);
                            }
                        }
                    }
                }
                if terms.is_empty() {
                    return Ok(Piece::Literal(literal));
                }
                if !literal.is_empty() {
                    terms.push(gbnf_literal(&literal));
                    last = Some(true);
                }
                let atomic = terms.len() == 1 && last == Some(true);
                Piece::Expr {
                    text: terms.join(" "),
                    atomic,
                }
            }
            Regex::Alternation(branches) => {
                let texts = branches
                    .iter()
                    .map(|b| b.emit().map(|e| e.text))
                    .collect::<Result<Vec<_>, _>>()?;
                Piece::Expr {
                    text: texts.join(" | "),
                    atomic: false,
                }
            }
            Regex::Repeat(inner, _, None) if inner.nullable() => match inner.without_empty() {
                Some(inner) => Regex::Repeat(Box::new(inner), 0, None).piece()?,
                None => Piece::Literal(String::new()),
            },
            Regex::Repeat(inner, min, max) => {
                let inner = inner.emit()?;
                let text = if inner.text.is_empty() {
                    String::new()
                } else if inner.atomic {
                    repetition(&inner.text, *min, *max)
                } else {
                    repetition(&format!("( {} )", inner.text), *min, *max)
                };
                Piece::Expr {
                    text,
                    atomic: false,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::Grammar;
    use serde_json::json;

    /// The grammar of `schema`, which the GBNF parser must accept.
    fn gbnf(schema: Value) -> String {
        let text = match schema_to_gbnf(&schema) {
            Ok(text) => text,
            Err(e) => panic!("{schema} failed: {e}"),
        };
        if let Err(e) = Grammar::parse(&text) {
            panic!("the grammar of {schema} does not parse: {e}\n{text}");
        }
        text
    }

    /// `schema`'s grammar matches each of `good` and none of `bad`.
    fn check(schema: Value, good: &[&str], bad: &[&str]) {
        let text = gbnf(schema.clone());
        let grammar = Grammar::parse(&text).expect("checked by gbnf");
        for doc in good {
            assert!(grammar.matches(doc), "{schema} refuses {doc}\n{text}");
        }
        for doc in bad {
            assert!(!grammar.matches(doc), "{schema} accepts {doc}\n{text}");
        }
    }

    fn error(schema: Value) -> String {
        match schema_to_gbnf(&schema) {
            Ok(text) => panic!("{schema} converted to\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// The body of rule `name` in `grammar`.
    fn rule<'g>(grammar: &'g str, name: &str) -> &'g str {
        let prefix = format!("{name} ::= ");
        grammar
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no rule {name} in\n{grammar}"))
    }

    #[test]
    fn json_object_grammar_is_the_object_schema() {
        assert_eq!(gbnf(json!({"type": "object"})), JSON_OBJECT_GRAMMAR);
    }

    #[test]
    fn empty_schema_and_true_are_any_value() {
        for schema in [
            json!({}),
            json!(true),
            json!({"title": "t", "description": "d"}),
        ] {
            let g = gbnf(schema);
            assert_eq!(rule(&g, "root"), "value");
            assert!(rule(&g, "value").contains("object | array"));
        }
    }

    #[test]
    fn primitives() {
        assert_eq!(rule(&gbnf(json!({"type": "string"})), "root"), "string");
        assert_eq!(rule(&gbnf(json!({"type": "boolean"})), "root"), "boolean");
        assert_eq!(rule(&gbnf(json!({"type": "null"})), "root"), "null");
        assert_eq!(rule(&gbnf(json!({"type": "integer"})), "root"), "integer");
        assert_eq!(rule(&gbnf(json!({"type": "number"})), "root"), "number");
        assert_eq!(rule(&gbnf(json!({"type": "array"})), "root"), "array");
    }

    #[test]
    fn type_list_is_a_union() {
        let g = gbnf(json!({"type": ["string", "null"]}));
        assert_eq!(rule(&g, "root"), "null | string");
        // number covers integer
        let g = gbnf(json!({"type": ["integer", "number"]}));
        assert_eq!(rule(&g, "root"), "number");
    }

    #[test]
    fn object_properties_required_first() {
        let g = gbnf(json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "required": ["b"],
        }));
        assert_eq!(rule(&g, "a-kv"), r#""\"a\"" space ":" space string"#);
        assert_eq!(rule(&g, "b-kv"), r#""\"b\"" space ":" space integer"#);
        assert_eq!(
            rule(&g, "root"),
            r#""{" space b-kv ( "," space ( a-kv ) )? "}" space"#
        );
    }

    #[test]
    fn object_optional_properties_keep_order() {
        let g = gbnf(json!({
            "properties": {"a": {}, "b": {}, "c": {}},
        }));
        assert_eq!(
            rule(&g, "root"),
            r#""{" space ( a-kv b-rest | b-kv c-rest | c-kv )? "}" space"#
        );
        assert_eq!(rule(&g, "b-rest"), r#"( "," space b-kv )? c-rest"#);
        assert_eq!(rule(&g, "c-rest"), r#"( "," space c-kv )?"#);
    }

    #[test]
    fn object_additional_properties() {
        let g = gbnf(json!({"type": "object", "additionalProperties": false}));
        assert_eq!(rule(&g, "root"), r#""{" space "}" space"#);

        let g = gbnf(json!({"type": "object", "additionalProperties": {"type": "integer"}}));
        assert_eq!(rule(&g, "additional-kv"), r#"string ":" space integer"#);
        assert_eq!(
            rule(&g, "root"),
            r#""{" space ( additional-kv ( "," space additional-kv )* )? "}" space"#
        );

        let g = gbnf(json!({
            "properties": {"ab": {"type": "null"}},
            "required": ["ab"],
            "additionalProperties": true,
        }));
        assert_eq!(
            rule(&g, "additional-k"),
            r#""\"" ( "a" ( "b" key-char+ | [^\x00-\x1F\x22\x5Cb\x7F] key-char* )? | [^\x00-\x1F\x22\x5Ca\x7F] key-char* )? "\"" space"#
        );
        assert_eq!(rule(&g, "additional-kv"), r#"additional-k ":" space value"#);
        assert_eq!(
            rule(&g, "root"),
            r#""{" space ab-kv ( "," space ( additional-kv ( "," space additional-kv )* ) )? "}" space"#
        );
    }

    #[test]
    fn property_names_are_sanitized_and_escaped() {
        let g = gbnf(json!({
            "properties": {"a b\"c": {"type": "string"}, "root": {"type": "null"}},
            "required": ["a b\"c", "root"],
        }));
        assert_eq!(
            rule(&g, "a-b-c-kv"),
            r#""\"a b\\\"c\"" space ":" space string"#
        );
        assert_eq!(rule(&g, "root-kv"), r#""\"root\"" space ":" space null"#);
    }

    #[test]
    fn false_property_is_left_out() {
        let g = gbnf(json!({"properties": {"a": false, "b": {}}, "additionalProperties": true}));
        assert!(!g.contains("a-kv"));
        assert!(rule(&g, "additional-k").contains("\"a\" key-char+"));
    }

    #[test]
    fn arrays() {
        let g = gbnf(json!({"type": "array", "items": {"type": "integer"}}));
        assert_eq!(
            rule(&g, "root"),
            r#""[" space ( integer ( "," space integer )* )? "]" space"#
        );
        let g = gbnf(json!({"items": {"type": "string"}, "minItems": 2, "maxItems": 4}));
        assert_eq!(
            rule(&g, "root"),
            r#""[" space string ( "," space string ){1,3} "]" space"#
        );
        let g = gbnf(json!({"type": "array", "maxItems": 1}));
        assert_eq!(rule(&g, "root"), r#""[" space ( value )? "]" space"#);
        let g = gbnf(json!({"type": "array", "maxItems": 0}));
        assert_eq!(rule(&g, "root"), r#""[" space "]" space"#);
    }

    #[test]
    fn tuples() {
        let g = gbnf(json!({"prefixItems": [{"type": "string"}, {"type": "integer"}]}));
        assert_eq!(
            rule(&g, "root"),
            r#""[" space ( string ( "," space integer )? )? "]" space"#
        );
        let g = gbnf(json!({
            "prefixItems": [{"type": "string"}],
            "items": {"type": "null"},
            "minItems": 2,
        }));
        assert_eq!(
            rule(&g, "root"),
            r#""[" space string ( "," space null )+ "]" space"#
        );
        let g = gbnf(json!({"items": [{"type": "string"}, {"type": "null"}], "minItems": 2}));
        assert_eq!(
            rule(&g, "root"),
            r#""[" space string "," space null "]" space"#
        );
    }

    #[test]
    fn string_lengths() {
        let g = gbnf(json!({"type": "string", "minLength": 1, "maxLength": 3}));
        assert_eq!(rule(&g, "root"), r#""\"" char{1,3} "\"" space"#);
        let g = gbnf(json!({"type": "string", "minLength": 2}));
        assert_eq!(rule(&g, "root"), r#""\"" char{2,} "\"" space"#);
    }

    #[test]
    fn formats() {
        assert_eq!(
            rule(&gbnf(json!({"type": "string", "format": "date"})), "root"),
            "date-string"
        );
        assert_eq!(
            rule(&gbnf(json!({"format": "time"})), "root"),
            "time-string"
        );
        let g = gbnf(json!({"type": "string", "format": "date-time"}));
        assert_eq!(rule(&g, "root"), "date-time-string");
        assert_eq!(rule(&g, "date-time"), r#"date "T" time"#);
        let g = gbnf(json!({"type": "string", "format": "uuid"}));
        assert!(rule(&g, "uuid").starts_with(r#""\"" [0-9a-fA-F]{8} "-""#));
    }

    #[test]
    fn enums_and_consts() {
        let g = gbnf(json!({"enum": ["a", 1, null, {"x": [true]}]}));
        assert_eq!(
            rule(&g, "root"),
            r#"( "\"a\"" | "1" | "null" | "{\"x\":[true]}" ) space"#
        );
        let g = gbnf(json!({"const": "he said \"hi\"\n"}));
        assert_eq!(rule(&g, "root"), r#"( "\"he said \\\"hi\\\"\\n\"" ) space"#);
        let g = gbnf(json!({"type": "string", "enum": ["a", 2]}));
        assert_eq!(rule(&g, "root"), r#"( "\"a\"" ) space"#);
        let g = gbnf(json!({"properties": {"k": {"enum": [1, 2]}}, "required": ["k"]}));
        assert_eq!(rule(&g, "k"), r#"( "1" | "2" ) space"#);
    }

    #[test]
    fn unions() {
        let g = gbnf(
            json!({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0, "maximum": 9}]}),
        );
        assert_eq!(rule(&g, "root"), "string | alternative-1");
        assert_eq!(rule(&g, "alternative-1"), "( [0-9] ) space");
        let g = gbnf(json!({"oneOf": [{"type": "null"}, {"type": "boolean"}]}));
        assert_eq!(rule(&g, "root"), "null | boolean");
        // keywords beside anyOf hold for every alternative
        let g = gbnf(json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "anyOf": [{"required": ["a"]}, {}],
        }));
        assert_eq!(rule(&g, "root"), "alternative-0 | alternative-1");
        assert_eq!(
            rule(&g, "alternative-0"),
            r#""{" space alternative-0-a-kv "}" space"#
        );
    }

    #[test]
    fn all_of_merges() {
        let g = gbnf(json!({
            "allOf": [
                {"properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}},
            ],
        }));
        assert_eq!(
            rule(&g, "root"),
            r#""{" space a-kv ( "," space ( b-kv ) )? "}" space"#
        );
        let g = gbnf(json!({"allOf": [{"type": "integer", "minimum": 3}, {"maximum": 5}]}));
        assert_eq!(rule(&g, "root"), "( [3-5] ) space");
        let g = gbnf(json!({"allOf": [{"enum": [1, 2, 3]}, {"enum": [3, 2, 7]}]}));
        assert_eq!(rule(&g, "root"), r#"( "2" | "3" ) space"#);
    }

    #[test]
    fn refs() {
        let g = gbnf(json!({
            "$defs": {"name": {"type": "string"}},
            "definitions": {"n": {"type": "integer"}},
            "properties": {"a": {"$ref": "#/$defs/name"}, "b": {"$ref": "#/definitions/n"}},
            "required": ["a", "b"],
        }));
        assert_eq!(rule(&g, "ref-defs-name"), "string");
        assert_eq!(rule(&g, "ref-definitions-n"), "integer");
        assert_eq!(rule(&g, "a-kv"), r#""\"a\"" space ":" space ref-defs-name"#);
    }

    #[test]
    fn recursive_refs_make_one_rule() {
        let g = gbnf(json!({
            "$defs": {"node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/node"}, "v": {"type": "integer"}},
                "required": ["v"],
            }},
            "$ref": "#/$defs/node",
        }));
        assert_eq!(rule(&g, "root"), "ref-defs-node");
        assert_eq!(
            rule(&g, "ref-defs-node-next-kv"),
            r#""\"next\"" space ":" space ref-defs-node"#
        );
        let g = gbnf(json!({"type": "array", "items": {"$ref": "#"}}));
        assert_eq!(
            rule(&g, "root"),
            r#""[" space ( root ( "," space root )* )? "]" space"#
        );
    }

    #[test]
    fn ref_with_siblings_holds_both() {
        let g = gbnf(json!({
            "$defs": {"n": {"type": "integer", "minimum": 0}},
            "properties": {"a": {"$ref": "#/$defs/n", "maximum": 20}},
            "required": ["a"],
        }));
        assert_eq!(rule(&g, "a"), "( [0-9] | [1] [0-9] | [2] \"0\" ) space");
    }

    #[test]
    fn integer_ranges() {
        let range = |min: i64, max: i64| {
            rule(
                &gbnf(json!({"type": "integer", "minimum": min, "maximum": max})),
                "root",
            )
            .to_string()
        };
        assert_eq!(range(0, 9), "( [0-9] ) space");
        assert_eq!(range(5, 25), "( [5-9] | [1] [0-9] | [2] [0-5] ) space");
        assert_eq!(range(-3, 3), r#"( "-" ( [1-3] ) | [0-3] ) space"#);
        assert_eq!(range(-20, -10), r#"( "-" ( [1] [0-9] | [2] "0" ) ) space"#);
        assert_eq!(range(100, 100), r#"( "100" ) space"#);
        assert_eq!(
            range(123, 456),
            "( [1] ( [2] [3-9] | [3-9] [0-9] ) | [2-3] [0-9]{2} | [4] ( [0-4] [0-9] | [5] [0-6] ) ) space"
        );
        let g = gbnf(json!({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}));
        assert_eq!(rule(&g, "root"), "( [1-9] ) space");
        let g = gbnf(json!({"type": "integer", "minimum": 1.5, "maximum": 3.5}));
        assert_eq!(rule(&g, "root"), "( [2-3] ) space");
        let g = gbnf(json!({"type": "integer", "minimum": 0}));
        assert!(rule(&g, "root").ends_with("[1-9] [0-9]{15} ) space"));
    }

    #[test]
    fn number_bounds() {
        let g = gbnf(json!({"type": "number", "minimum": 0, "maximum": 1}));
        assert_eq!(
            rule(&g, "root"),
            r#"( "0" ( "." [0-9]{1,16} )? | "1" ( "." [0]{1,16} )? | "-" ( "0" ( "." [0]{1,16} )? ) ) space"#
        );
        let g = gbnf(json!({"type": "number", "minimum": -1, "maximum": -1}));
        assert_eq!(
            rule(&g, "root"),
            r#"( "-" ( "1" ( "." [0]{1,16} )? ) ) space"#
        );
        let g = gbnf(json!({"type": "number", "minimum": -1.5, "maximum": 2.25}));
        assert_eq!(
            rule(&g, "root"),
            concat!(
                r#"( [0-1] ( "." [0-9]{1,16} )? "#,
                r#"| "2" ( "." ( [0-1] [0-9]{0,15} | "2" ( [0-4] [0-9]{0,14} | "5" [0]{0,14} )? ) )? "#,
                r#"| "-" ( "0" ( "." [0-9]{1,16} )? | "1" ( "." ( [0-4] [0-9]{0,15} | "5" [0]{0,15} ) )? ) ) space"#
            )
        );
        // Without an upper bound, any integral part above the lower bound's.
        let g = gbnf(json!({"type": "number", "maximum": 1e300}));
        assert_eq!(
            rule(&g, "root"),
            r#"( integral-part ( "." [0-9]{1,16} )? | "-" ( integral-part ( "." [0-9]{1,16} )? ) ) space"#
        );
    }

    #[test]
    fn patterns() {
        let body =
            |p: &str| rule(&gbnf(json!({"type": "string", "pattern": p})), "root").to_string();
        assert_eq!(body("^abc$"), r#""\"" "abc" "\"" space"#);
        assert_eq!(body("^a+b?c*$"), r#""\"" "a"+ "b"? "c"* "\"" space"#);
        assert_eq!(
            body("^[a-z0-9_]{2,5}$"),
            r#""\"" [0-9_a-z]{2,5} "\"" space"#
        );
        assert_eq!(
            body(r"^\d{3}-\d{4}$"),
            r#""\"" [0-9]{3} "-" [0-9]{4} "\"" space"#
        );
        assert_eq!(body("^(ab|cd)e$"), r#""\"" ( "ab" | "cd" ) "e" "\"" space"#);
        assert_eq!(body("^(?:x|y){2}$"), r#""\"" ( "x" | "y" ){2} "\"" space"#);
        assert_eq!(body("ab"), r#""\"" char* "ab" char* "\"" space"#);
        assert_eq!(body("^ab"), r#""\"" "ab" char* "\"" space"#);
        assert_eq!(body("^$"), r#""\"" "\"" space"#);
        assert_eq!(body(r#"^"\\$"#), r#""\"" "\\\"\\\\" "\"" space"#);
        assert_eq!(
            body("^.$"),
            concat!(
                r#""\"" ( [^\x00-\x1F\x22\x5C\x7F"#,
                "\u{2028}-\u{2029}",
                r#"] | "\\\"" | "\\\\" | "\\b" | "\\f" | "\\t" ) "\"" space"#
            )
        );
        assert_eq!(body("^[^a]$").matches("[^").count(), 1);
        let space = body(r"^\s$");
        assert!(space.starts_with(r#""\"" ( [ "#), "{space}");
        assert!(
            space.contains(r#" | "\\n" | "#) && space.contains('\u{3000}'),
            "{space}"
        );
    }

    #[test]
    fn annotations_are_ignored() {
        let g = gbnf(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "x", "title": "t", "description": "d", "default": 1, "examples": [1],
            "$comment": "c", "deprecated": false, "readOnly": true, "writeOnly": false,
            "strict": true, "type": "integer",
        }));
        assert_eq!(rule(&g, "root"), "integer");
    }

    #[test]
    fn unsupported_keywords_name_keyword_and_path() {
        assert_eq!(
            error(json!({"properties": {"a": {"not": {"type": "string"}}}})),
            "unsupported JSON schema keyword \"not\" at /properties/a"
        );
        for keyword in [
            "if",
            "dependentRequired",
            "patternProperties",
            "uniqueItems",
            "multipleOf",
            "minProperties",
            "contains",
            "propertyNames",
            "unevaluatedProperties",
        ] {
            let e = error(json!({"items": {keyword: 1}}));
            assert_eq!(
                e,
                format!("unsupported JSON schema keyword \"{keyword}\" at /items")
            );
        }
        assert!(
            error(json!({"type": "string", "format": "email"})).contains("\"format\" \"email\"")
        );
        assert!(
            error(json!({"type": "string", "pattern": "^a$", "maxLength": 3}))
                .contains("only one of")
        );
        assert!(error(json!({"enum": ["a"], "maxLength": 3})).contains("maxLength"));
        assert!(error(json!({"properties": {}, "required": ["x"]})).contains("\"x\""));
        assert!(error(json!({"type": "frob"})).contains("\"frob\""));
        assert!(error(json!({"anyOf": [{}], "oneOf": [{}]})).contains("oneOf"));
        assert!(
            error(json!({"allOf": [{"pattern": "a"}, {"pattern": "b"}]})).contains("\"pattern\"")
        );
        assert!(error(json!({
            "allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}, "additionalProperties": false}],
        }))
        .contains("\"a\""));
        assert!(error(json!({"allOf": [{"prefixItems": [{}]}, {"items": {}}]})).contains("tuples"));
    }

    #[test]
    fn unsupported_patterns_name_the_pattern() {
        for (pattern, reason) in [
            ("^(?=a)b$", "lookahead"),
            ("^(?<!a)b$", "lookbehind"),
            (r"^(a)\1$", "backreference"),
            (r"^\bword$", "word boundary"),
            ("^a$|^b$", "anchor"),
            ("^a|b$", "top-level"),
            ("a^b", "anchor"),
            ("^a{2000}$", "limit of 1000"),
            ("^(ab$", "unbalanced"),
            ("^ab)$", "unbalanced"),
            ("^[ab$", "unterminated"),
            ("^*a$", "nothing to repeat"),
            (r"^\p{L}$", "Unicode property"),
            ("^[\\x00-\\x07]$", "no character"),
        ] {
            let e = error(json!({"type": "string", "pattern": pattern}));
            assert!(e.contains(&format!("{pattern:?}")), "{e}");
            assert!(e.contains(reason), "{pattern}: {e}");
        }
    }

    #[test]
    fn refs_that_cannot_resolve() {
        assert_eq!(
            error(json!({"properties": {"a": {"$ref": "#/$defs/missing"}}})),
            "\"$ref\" \"#/$defs/missing\" at /properties/a points to nothing in this schema"
        );
        assert!(
            error(json!({"$ref": "https://example.com/s.json"})).contains("not inside this schema")
        );
        assert!(error(json!({"$ref": "other.json#/a"})).contains("not inside this schema"));
        assert!(
            error(json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}))
                .contains("left recursion")
        );
        assert!(
            error(json!({"anyOf": [{"$ref": "#"}, {"type": "null"}]})).contains("left recursion")
        );
        // A cycle through allOf is cut by the depth limit.
        assert!(error(
            json!({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"})
        )
        .contains("deeper"));
    }

    #[test]
    fn unsatisfiable_schemas() {
        assert!(error(json!(false)).contains("false"));
        for kind in ["integer", "number"] {
            for (bounds, reason) in [
                (
                    json!({"minimum": 5, "maximum": 3}),
                    r#""minimum" 5 is above "maximum" 3"#,
                ),
                (
                    json!({"minimum": 2.5, "exclusiveMaximum": -1}),
                    r#""minimum" 2.5 is above "exclusiveMaximum" -1"#,
                ),
                (
                    json!({"exclusiveMinimum": 3, "exclusiveMaximum": 3}),
                    r#""exclusiveMinimum" 3 and "exclusiveMaximum" 3 leave no number between them"#,
                ),
                (
                    json!({"minimum": 0.5, "exclusiveMaximum": 0.5}),
                    r#""minimum" 0.5 and "exclusiveMaximum" 0.5 leave no number between them"#,
                ),
                (
                    json!({"minimum": 1, "exclusiveMinimum": true, "maximum": 1}),
                    r#""minimum" 1 (exclusive) and "maximum" 1 leave no number between them"#,
                ),
                // The tighter of "minimum" and "exclusiveMinimum" counts.
                (
                    json!({"minimum": 0, "exclusiveMinimum": 2, "maximum": 1}),
                    r#""exclusiveMinimum" 2 is above "maximum" 1"#,
                ),
            ] {
                let mut schema = bounds;
                schema["type"] = json!(kind);
                let mut nested = json!({"properties": {"a": schema.clone()}});
                assert_eq!(
                    error(schema),
                    format!("no JSON value satisfies the schema at /: {reason}")
                );
                nested["type"] = json!("object");
                assert!(error(nested).contains("at /properties/a"));
            }
        }
        assert_eq!(
            error(json!({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 4})),
            r#"no JSON value satisfies the schema at /: no integer lies between "exclusiveMinimum" 3 and "exclusiveMaximum" 4"#
        );
        assert!(
            error(json!({"type": "string", "minLength": 3, "maxLength": 2}))
                .contains(r#""minLength" 3 is above "maxLength" 2"#)
        );
        assert!(error(json!({"type": "array", "minItems": 3, "maxItems": 2})).contains("minItems"));
        assert!(
            error(json!({"prefixItems": [{}], "items": false, "minItems": 2})).contains("minItems")
        );
        assert!(error(json!({"type": "string", "enum": [1, 2]})).contains("enum"));
        assert!(
            error(json!({"allOf": [{"type": "string"}, {"type": "integer"}]})).contains("type")
        );
    }

    #[test]
    fn limits() {
        let mut deep = json!({"type": "string"});
        for _ in 0..70 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(error(deep).contains("deeper than 64"));
        for keyword in ["minItems", "maxItems"] {
            let e = error(json!({"type": "array", keyword: 1001}));
            assert_eq!(
                e,
                format!("\"{keyword}\" at / is 1001, above the limit of 1000")
            );
        }
        for keyword in ["minLength", "maxLength"] {
            assert!(error(json!({"type": "string", keyword: 5000})).contains("limit of 1000"));
        }
        assert!(gbnf(json!({"type": "string", "maxLength": 1000})).contains("char{0,1000}"));
        let big: Vec<String> = (0..20_000)
            .map(|i| format!("value number {i:>40}"))
            .collect();
        assert_eq!(
            error(json!({"enum": big})),
            "the grammar for this JSON schema would exceed 1048576 bytes"
        );
        let many = vec![json!({"type": "null"}); 110_000];
        assert!(error(json!({"anyOf": many})).contains("too complex"));
        // Keywords beside anyOf are converted once per alternative: 2^20 times here.
        let mut doubling = json!({"type": "null"});
        for _ in 0..20 {
            doubling = json!({"anyOf": [{}, {"required": []}], "properties": {"x": doubling}});
        }
        let e = error(doubling);
        assert!(e.contains("too complex") || e.contains("exceed"), "{e}");
    }

    #[test]
    fn names_stay_short() {
        let long = "x".repeat(500);
        let g =
            gbnf(json!({"properties": {long.clone(): {"properties": {long: {"type": "string"}}}}}));
        assert!(g
            .lines()
            .all(|l| l.split(" ::= ").next().unwrap().len() <= MAX_RULE_NAME + 4));
    }

    #[test]
    fn matcher_any_value_and_primitives() {
        check(
            json!({"type": "object"}),
            &[
                r#"{}"#,
                r#"{"a": [1, 2.5e3, "x\n\u00e9", true, null, {"b": {}}]}"#,
                "{ }",
            ],
            &[
                "[]",
                "1",
                r#"{"a"}"#,
                r#"{"a": 01}"#,
                r#"{"a": "\ud800"}"#,
                "{\"a\":\"\x01\"}",
            ],
        );
        check(
            json!({}),
            &["1", "\"s\"", "[1]", "null", "-0.5E-3", "{}"],
            &["", "nul", "+1", "1."],
        );
        check(
            json!({"type": "string"}),
            &[r#""""#, r#""a\"b\\/""#, "\"é\""],
            &["\"a", "1", r#""\x""#],
        );
        check(
            json!({"type": "boolean"}),
            &["true", "false"],
            &["1", "\"true\""],
        );
        check(json!({"type": "null"}), &["null"], &["0", "\"null\""]);
        check(
            json!({"type": "integer"}),
            &["0", "-12", "1234567890123456"],
            &["1.5", "01", "1e3", "12345678901234567"],
        );
        check(
            json!({"type": "number"}),
            &["0", "-1.25", "3e10", "1E-2"],
            &["1.", ".5", "--1", "\"1\""],
        );
        check(
            json!({"type": ["string", "null"]}),
            &["null", "\"a\""],
            &["1", "true"],
        );
        // bounded whitespace
        let text = format!("{{{}}}", " ".repeat(2));
        check(json!({"type": "object"}), &["{\n\t}"], &[&text]);
        check(
            json!({"type": "array"}),
            &["[\n]", "[ 1 ,\n  2 ]"],
            &["[1 2]"],
        );
    }

    #[test]
    fn matcher_objects() {
        let schema = json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
            "required": ["a"],
        });
        check(
            schema,
            &[
                r#"{"a": 1}"#,
                r#"{"a": 1, "b": "x"}"#,
                r#"{"a": 1, "c": true}"#,
                r#"{"a":1,"b":"x","c":false}"#,
            ],
            &[
                r#"{}"#,
                r#"{"b": "x"}"#,
                r#"{"a": "1"}"#,
                r#"{"a": 1, "d": 2}"#,
                r#"{"a": 1, "c": true, "b": "x"}"#,
                r#"{"a": 1,}"#,
            ],
        );
        check(
            json!({"properties": {"ab": {"type": "null"}}, "additionalProperties": {"type": "integer"}}),
            &[
                r#"{}"#,
                r#"{"ab": null}"#,
                r#"{"ab": null, "a": 1, "abc": 2, "": 3}"#,
                r#"{"x": 1, "y": 2}"#,
            ],
            &[
                r#"{"ab": 1}"#,
                r#"{"x": "s"}"#,
                r#"{"ab": null, "ab": 1}"#,
                r#"{"a\u0062": 1}"#,
            ],
        );
        check(
            json!({"type": "object", "additionalProperties": false}),
            &["{}", "{ }"],
            &[r#"{"a": 1}"#],
        );
        check(
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            &["{}", r#"{"k": "v", "l": "w"}"#],
            &[r#"{"k": 1}"#],
        );
    }

    #[test]
    fn matcher_arrays() {
        check(
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}),
            &["[1]", "[1, 2]", "[1,2,3]"],
            &["[]", "[1, 2, 3, 4]", "[\"a\"]", "[1,]"],
        );
        check(
            json!({"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": {"type": "null"}}),
            &["[]", "[\"a\"]", "[\"a\", 1]", "[\"a\", 1, null, null]"],
            &["[1]", "[\"a\", \"b\"]", "[\"a\", 1, 2]"],
        );
        check(
            json!({"prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 1}),
            &["[\"a\"]", "[\"a\", 1]"],
            &["[]", "[\"a\", 1, null]"],
        );
    }

    #[test]
    fn matcher_strings() {
        check(
            json!({"type": "string", "minLength": 2, "maxLength": 3}),
            &[r#""ab""#, r#""abc""#, r#""a\n""#, r#""éé""#, r#""\u00e9x""#],
            &[r#""a""#, r#""abcd""#, r#""""#],
        );
        check(
            json!({"enum": ["red", "green", 3, null]}),
            &[r#""red""#, r#""green""#, "3", "null"],
            &[r#""blue""#, "4", r#""Red""#],
        );
        check(
            json!({"const": {"a": [1]}}),
            &[r#"{"a":[1]}"#],
            &[r#"{"a":[2]}"#],
        );
        check(
            json!({"format": "date"}),
            &[r#""2024-02-29""#],
            &[r#""2024-13-01""#, r#""24-01-01""#],
        );
        check(
            json!({"type": "string", "format": "date-time"}),
            &[
                r#""2024-02-29T12:30:00Z""#,
                r#""2024-02-29T23:59:59.123+05:30""#,
            ],
            &[r#""2024-02-29 12:30:00Z""#, r#""2024-02-29T24:00:00Z""#],
        );
        check(
            json!({"format": "time"}),
            &[r#""08:00:00-01:00""#],
            &[r#""08:00""#],
        );
        check(
            json!({"format": "uuid"}),
            &[r#""123e4567-e89b-12d3-a456-426614174000""#],
            &[r#""123e4567e89b12d3a456426614174000""#],
        );
    }

    #[test]
    fn matcher_patterns() {
        let pattern = |p: &str, good: &[&str], bad: &[&str]| {
            let quote = |docs: &[&str]| docs.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>();
            let (good, bad) = (quote(good), quote(bad));
            let good: Vec<&str> = good.iter().map(String::as_str).collect();
            let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
            check(json!({"type": "string", "pattern": p}), &good, &bad);
        };
        pattern(
            r"^\d{3}-\d{4}$",
            &["555-1234"],
            &["5551234", "555-12345", "a55-1234"],
        );
        pattern(
            "^[A-Z][a-z]+( [A-Z][a-z]+)*$",
            &["Ada", "Ada Lovelace"],
            &["ada", "Ada  L", "A"],
        );
        pattern("^(cat|dog)s?$", &["cat", "dogs"], &["cats!", "bird"]);
        pattern("^a{2,}b{0,1}$", &["aa", "aaab"], &["a", "aabb"]);
        pattern(
            "^x.y$",
            &["x-y", r#"x\"y"#, r"x\\y", r"x\ty"],
            &["xy", r"x\ny", "x\u{1}y"],
        );
        pattern(r"^[^0-9]+$", &["abc", r#"\"q\""#], &["a1"]);
        pattern("ab", &["ab", "xaby", r#"\"ab"#], &["a", "ba"]);
        pattern("^ab", &["ab", "abc"], &["cab"]);
        pattern("ab$", &["ab", "cab"], &["abc"]);
        pattern(r#"^say \"hi\"\\$"#, &[r#"say \"hi\"\\"#], &[r#"say "hi"\"#]);
        pattern(r"^\w+@\w+\.com$", &["a_1@b.com"], &["a@b.org", "@b.com"]);
        pattern(r"^(?:\s|-)*$", &["", r" \t-\n"], &["x"]);
    }

    #[test]
    fn matcher_integer_ranges() {
        let cases: &[(Value, &[i64], &[i64])] = &[
            (json!({"minimum": 0, "maximum": 9}), &[0, 5, 9], &[-1, 10]),
            (
                json!({"minimum": 5, "maximum": 25}),
                &[5, 9, 10, 19, 20, 25],
                &[4, 26, 30, 0],
            ),
            (
                json!({"minimum": -3, "maximum": 3}),
                &[-3, -1, 0, 3],
                &[-4, 4],
            ),
            (
                json!({"minimum": -120, "maximum": -7}),
                &[-120, -100, -99, -7, -10],
                &[-6, -121, 7, 0],
            ),
            (
                json!({"minimum": 123, "maximum": 4567}),
                &[123, 199, 999, 1000, 4567, 4499],
                &[122, 4568, 5000, 99],
            ),
            (json!({"minimum": 1}), &[1, 9, 10, 99999], &[0, -1]),
            (json!({"maximum": -10}), &[-10, -11, -99999], &[-9, 0, 10]),
            (json!({"maximum": 15}), &[15, 0, -99999, 9], &[16, 20, 100]),
            (
                json!({"minimum": -15}),
                &[-15, -9, 0, 99999],
                &[-16, -20, -100],
            ),
            (
                json!({"exclusiveMinimum": 0, "exclusiveMaximum": 100}),
                &[1, 99],
                &[0, 100],
            ),
            (
                json!({"minimum": 0, "exclusiveMinimum": true, "maximum": 3}),
                &[1, 3],
                &[0],
            ),
        ];
        for (bounds, good, bad) in cases {
            let mut schema = bounds.clone();
            schema["type"] = json!("integer");
            let text = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>();
            let (good, bad) = (text(good), text(bad));
            let good: Vec<&str> = good.iter().map(String::as_str).collect();
            let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
            check(schema, &good, &bad);
        }
        // Every integer of a range, exhaustively.
        for (min, max) in [(0, 1000), (-1000, -1), (-57, 1033), (7, 7), (98, 1002)] {
            let g = Grammar::parse(&gbnf(
                json!({"type": "integer", "minimum": min, "maximum": max}),
            ))
            .unwrap();
            for v in -1100i64..1100 {
                assert_eq!(
                    g.matches(&v.to_string()),
                    (min..=max).contains(&v),
                    "{v} in {min}..={max}"
                );
            }
        }
    }

    #[test]
    fn matcher_number_bounds() {
        check(
            json!({"type": "number", "minimum": 0, "maximum": 10}),
            &["0", "0.5", "9.999", "10", "10.0"],
            &["-0.1", "10.01", "11", "1e1", "-1"],
        );
        check(
            json!({"type": "number", "minimum": -2}),
            &["-2", "-1.5", "0", "12345.5", "-2.000"],
            &["-2.5", "-3", "-2.0001"],
        );
        check(
            json!({"type": "number", "maximum": -2}),
            &["-2", "-2.5", "-300"],
            &["-1.5", "0", "2", "-1.99"],
        );
    }

    /// A JSON number without exponent in units of its 16th fraction digit, or None where
    /// a bounded grammar cannot write it (more than 16 digits on either side of the point).
    fn units(text: &str) -> Option<i128> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (integral, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if integral.len() > 16 || fraction.len() > 16 {
            return None;
        }
        let value = integral.parse::<i128>().unwrap() * 10i128.pow(16)
            + format!("{fraction:0<16}").parse::<i128>().unwrap();
        Some(if negative { -value } else { value })
    }

    /// `units` written with all 16 fraction digits.
    fn spelled(units: i128) -> String {
        let sign = if units < 0 { "-" } else { "" };
        let scale = 10i128.pow(16);
        let magnitude = units.abs();
        format!("{sign}{}.{:016}", magnitude / scale, magnitude % scale)
    }

    #[test]
    fn matcher_number_ranges_exhaustively() {
        // (bound keyword, bound as written): draft 6 exclusive bounds, or draft 4's.
        let cases: &[&[(&str, &str)]] = &[
            &[("minimum", "-1.5"), ("maximum", "2.25")],
            &[("exclusiveMinimum", "0.1"), ("maximum", "0.3")],
            &[("minimum", "-10.05"), ("exclusiveMaximum", "-9.5")],
            &[("minimum", "0"), ("maximum", "0.001")],
            &[("minimum", "-0.5"), ("maximum", "0.5")],
            &[("minimum", "3.14")],
            &[("maximum", "-2.5")],
            &[("exclusiveMinimum", "-0.001"), ("exclusiveMaximum", "0")],
            &[("exclusiveMinimum", "0"), ("maximum", "1")],
            &[("minimum", "2.5"), ("maximum", "2.50")],
            &[("minimum", "-0.0"), ("maximum", "0.0")],
            &[("minimum", "9.999"), ("exclusiveMaximum", "10.001")],
            &[("minimum", "0.0625"), ("maximum", "0.5")],
            &[
                ("minimum", "-0.25"),
                ("exclusiveMinimum", "true"),
                ("maximum", "0.75"),
                ("exclusiveMaximum", "true"),
            ],
            // The tighter of two lower bounds, at equal values the exclusive one.
            &[("minimum", "1.25"), ("exclusiveMinimum", "1.25")],
            &[("minimum", "1.75"), ("exclusiveMinimum", "1.25")],
        ];
        let fractions: Vec<String> = (1..=3)
            .flat_map(|len| {
                (0..10u32.pow(len)).map(move |n| format!("{n:0width$}", width = len as usize))
            })
            .collect();
        for bounds in cases {
            let mut schema = json!({"type": "number"});
            let (mut low, mut high) = (i128::MIN, i128::MAX);
            let draft4 = bounds.iter().any(|(_, v)| *v == "true");
            for &(keyword, text) in *bounds {
                schema[keyword] = serde_json::from_str(text).unwrap();
                if text == "true" {
                    continue;
                }
                let bound = units(text).unwrap();
                let exclusive = keyword.starts_with("exclusive") || draft4;
                if keyword.ends_with("inimum") {
                    low = low.max(bound + i128::from(exclusive));
                } else {
                    high = high.min(bound - i128::from(exclusive));
                }
            }
            let text = gbnf(schema.clone());
            let grammar = Grammar::parse(&text).unwrap();
            let written: Vec<i128> = bounds
                .iter()
                .filter(|(_, t)| *t != "true")
                .map(|(_, t)| units(t).unwrap())
                .collect();
            // Every decimal with up to 3 fraction digits whose integral part is next to a
            // bound's, and the far ends.
            let mut window: Vec<u64> = vec![0, 1];
            for bound in &written {
                let integral = (bound.abs() / 10i128.pow(16)) as u64;
                window.extend(integral.saturating_sub(1)..=integral + 1);
            }
            window.sort();
            window.dedup();
            let mut candidates: Vec<String> = Vec::new();
            for sign in ["", "-"] {
                for integral in &window {
                    candidates.push(format!("{sign}{integral}"));
                    for fraction in &fractions {
                        candidates.push(format!("{sign}{integral}.{fraction}"));
                    }
                }
                for far in ["99", "99.5", "9999999999999999.9999999999999999"] {
                    candidates.push(format!("{sign}{far}"));
                }
                // More digits than a bounded grammar writes.
                candidates.push(format!("{sign}10000000000000000"));
                candidates.push(format!("{sign}1.00000000000000000"));
            }
            for bound in bounds
                .iter()
                .filter(|(_, t)| *t != "true")
                .map(|(_, t)| units(t).unwrap())
            {
                for near in bound - 1..=bound + 1 {
                    candidates.push(spelled(near));
                    candidates.push(format!("{}0", spelled(near)));
                }
            }
            for candidate in &candidates {
                let expected = units(candidate).is_some_and(|v| (low..=high).contains(&v));
                assert_eq!(
                    grammar.matches(candidate),
                    expected,
                    "{schema}: {candidate}\n{text}"
                );
            }
            // Spellings no JSON number has, or only with an exponent.
            for bad in ["01", "-01.5", "1.", ".5", "+1", "1e0", "0.5e0", "--1", ""] {
                assert!(!grammar.matches(bad), "{schema} accepts {bad:?}\n{text}");
            }
        }
    }

    #[test]
    fn number_bounds_beyond_what_a_grammar_writes() {
        // Bounds finer than 16 fraction digits round to the nearest number inside.
        check(
            json!({"type": "number", "minimum": 1.5e-20, "maximum": 1}),
            &["0.0000000000000001", "1", "0.5"],
            &[
                "0",
                "0.0",
                "-0",
                "0.00000000000000001",
                "1.0000000000000001",
            ],
        );
        check(
            json!({"type": "number", "exclusiveMaximum": -2.5e-17}),
            &["-0.0000000000000001", "-5"],
            &["0", "-0", "-0.0000000000000000"],
        );
        // Bounds above what a grammar writes leave the whole side open.
        check(
            json!({"type": "number", "minimum": -1e300, "exclusiveMaximum": 1e20}),
            &[
                "9999999999999999.9999999999999999",
                "-9999999999999999.9999999999999999",
            ],
            &["10000000000000000"],
        );
        assert_eq!(
            error(json!({"type": "number", "minimum": 1e20})),
            r#"unsupported JSON schema at /: "minimum" 1e+20 is above any number a grammar writes (at most 16 digits before the point)"#
        );
        assert!(error(json!({"type": "number", "exclusiveMaximum": -1e17}))
            .contains(r#""exclusiveMaximum" -1e+17 is below any number"#));
        assert_eq!(
            error(json!({"type": "number", "minimum": 1e-17, "maximum": 2e-17})),
            r#"unsupported JSON schema at /: no number with at most 16 digits after the point lies between "minimum" 1e-17 and "maximum" 2e-17"#
        );
        for (keyword, value) in [("minimum", 0.1 + 0.2), ("maximum", 1.0 / 3.0)] {
            let e = error(json!({"properties": {"x": {"type": "number", keyword: value}}}));
            assert!(e.contains(&format!("\"{keyword}\" {value}")), "{e}");
            assert!(e.contains("at /properties/x"), "{e}");
            assert!(e.contains("more than 15 significant digits"), "{e}");
        }
        // 15 digits are kept exactly.
        check(
            json!({"type": "number", "minimum": 0.123456789012345}),
            &["0.123456789012345", "0.1234567890123450", "1"],
            &["0.1234567890123449", "0.12345678901234"],
        );
    }

    #[test]
    fn matcher_unions_all_of_and_refs() {
        check(
            json!({"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "string"}}]}),
            &["1", "[\"a\"]", "[]"],
            &["[1]", "\"a\""],
        );
        check(
            json!({"allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"a": {"minimum": 1, "maximum": 5}, "b": {"type": "string"}}},
            ]}),
            &[r#"{"a": 3}"#, r#"{"a": 5, "b": "x"}"#],
            &[r#"{"a": 0}"#, r#"{"b": "x"}"#, r#"{"a": 6}"#],
        );
        check(
            json!({
                "$defs": {"tree": {
                    "type": "object",
                    "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}}},
                    "required": ["v"],
                }},
                "$ref": "#/$defs/tree",
            }),
            &[
                r#"{"v": 1}"#,
                r#"{"v": 1, "kids": [{"v": 2, "kids": []}, {"v": 3}]}"#,
            ],
            &[r#"{"v": 1, "kids": [{}]}"#, r#"{"kids": []}"#],
        );
        check(
            json!({"type": "object", "properties": {"x": {"type": "integer"}}, "anyOf": [{"required": ["x"]}, {"properties": {"y": {"type": "null"}}, "required": ["y"]}]}),
            // Required properties come first.
            &[r#"{"x": 1}"#, r#"{"y": null, "x": 1}"#, r#"{"y": null}"#],
            // Without "additionalProperties", only the listed properties (as llama.cpp).
            &["{}", r#"{"x": "s"}"#, r#"{"x": 1, "z": 2}"#],
        );
    }

    #[test]
    fn patterns_that_match_empty() {
        let body =
            |p: &str| rule(&gbnf(json!({"type": "string", "pattern": p})), "root").to_string();
        assert_eq!(body("^(a|)$"), r#""\"" ( "a" |  ) "\"" space"#);
        assert_eq!(body("^()$"), r#""\"" "\"" space"#);
        // An unbounded repeat of what may match nothing repeats its non-empty part instead.
        assert_eq!(body("^(a*)*$"), r#""\"" ( "a"+ )* "\"" space"#);
        assert_eq!(body("^(a|b?)*c$"), r#""\"" ( "a" | "b" )* "c" "\"" space"#);
        check(
            json!({"type": "string", "pattern": "^(a?b?)+c$"}),
            &["\"c\"", "\"abc\"", "\"bac\"", "\"aabbc\""],
            &["\"ca\"", "\"\""],
        );
        check(
            json!({"type": "string", "pattern": "^(|x)y$"}),
            &["\"y\"", "\"xy\""],
            &["\"xxy\""],
        );
    }
}
