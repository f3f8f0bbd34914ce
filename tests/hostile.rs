//! Hostile model files run through the real binary. A damaged or absurd GGUF gets one line on
//! stderr and exit code 1, before any allocation sized by the file's claims; weights poisoned
//! with NaN or infinity still let the run finish; a run that fills the context ends cleanly.
//!
//! Every file is the synthetic Gemma 2 in the repository, parsed, changed, and written back by
//! the small GGUF writer below, which also records where each section of the file lies.

use kernels::GgmlType;
use llmfile::gguf::{Gguf, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const SYNTHETIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/models/gemma2-synthetic-q4_k_m.gguf"
);
/// GGUF's alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Peak resident memory allowed to a run that must fail on its header. The whole synthetic
/// model is 2.4 MB; a count trusted from the file would take gigabytes.
const SMALL_RSS_KB: u64 = 64 * 1024;

/// A GGUF's contents, to be edited and written back.
#[derive(Clone)]
struct Model {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorEntry>,
}

#[derive(Clone)]
struct TensorEntry {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
    /// The offset the tensor info states, when a test wants it to differ from where the data
    /// is written.
    stated_offset: Option<u64>,
}

/// One part of an encoded file: the fixed header, a key-value pair, a tensor info, the
/// padding before the data, or a tensor's data.
struct Section {
    label: String,
    start: usize,
    end: usize,
}

struct Encoded {
    bytes: Vec<u8>,
    sections: Vec<Section>,
}

impl Encoded {
    fn section(&self, label: &str) -> &Section {
        self.sections
            .iter()
            .find(|s| s.label == label)
            .unwrap_or_else(|| panic!("no section {label}"))
    }

    /// Where the value of metadata `key` starts (after its key string and type id).
    fn value_at(&self, key: &str) -> usize {
        self.section(&format!("kv {key}")).start + 8 + key.len() + 4
    }

    fn put_u64(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
}

impl Model {
    fn synthetic() -> Model {
        let bytes = std::fs::read(SYNTHETIC).expect("synthetic model in the repository");
        let gguf = Gguf::parse(&bytes).expect("the synthetic model parses");
        Model {
            metadata: gguf.metadata().to_vec(),
            tensors: gguf
                .tensors()
                .iter()
                .map(|t| TensorEntry {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    type_id: t.ty.id(),
                    data: t.data.to_vec(),
                    stated_offset: None,
                })
                .collect(),
        }
    }

    fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    fn array_mut(&mut self, key: &str) -> &mut Vec<Value> {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, Value::Array(items))) => items,
            _ => panic!("no array {key}"),
        }
    }

    fn tensor_mut(&mut self, name: &str) -> &mut TensorEntry {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// Lays the data out with `general.alignment` when it is a power of two, else with 32.
    fn encode(&self) -> Encoded {
        let stated = self.metadata.iter().find_map(|(k, v)| match v {
            Value::U32(a) if k == "general.alignment" => Some(u64::from(*a)),
            _ => None,
        });
        self.encode_aligned(
            stated
                .filter(|a| a.is_power_of_two())
                .unwrap_or(DEFAULT_ALIGNMENT),
        )
    }

    fn encode_aligned(&self, alignment: u64) -> Encoded {
        let mut out = Vec::new();
        let mut sections = Vec::new();
        let mut mark = |out: &Vec<u8>, label: String, start: usize| {
            sections.push(Section {
                label,
                start,
                end: out.len(),
            })
        };
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        mark(&out, "header".into(), 0);
        for (key, value) in &self.metadata {
            let start = out.len();
            put_string(&mut out, key);
            out.extend(type_id(value).to_le_bytes());
            put_value(&mut out, value);
            mark(&out, format!("kv {key}"), start);
        }
        let align = |n: u64| n.div_ceil(alignment) * alignment;
        let mut offsets = Vec::new();
        let mut next = 0u64;
        for tensor in &self.tensors {
            offsets.push(next);
            next = align(next + tensor.data.len() as u64);
        }
        for (tensor, &offset) in self.tensors.iter().zip(&offsets) {
            let start = out.len();
            put_string(&mut out, &tensor.name);
            out.extend((tensor.dims.len() as u32).to_le_bytes());
            for d in &tensor.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(tensor.type_id.to_le_bytes());
            out.extend(tensor.stated_offset.unwrap_or(offset).to_le_bytes());
            mark(&out, format!("tensor info {}", tensor.name), start);
        }
        let start = out.len();
        out.resize(align(out.len() as u64) as usize, 0);
        mark(&out, "padding".into(), start);
        let data_start = out.len();
        for (tensor, &offset) in self.tensors.iter().zip(&offsets) {
            out.resize(data_start + offset as usize, 0);
            let start = out.len();
            out.extend(&tensor.data);
            mark(&out, format!("data {}", tensor.name), start);
        }
        Encoded {
            bytes: out,
            sections,
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn type_id(value: &Value) -> u32 {
    match value {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend(v.to_le_bytes()),
        Value::U16(v) => out.extend(v.to_le_bytes()),
        Value::I16(v) => out.extend(v.to_le_bytes()),
        Value::U32(v) => out.extend(v.to_le_bytes()),
        Value::I32(v) => out.extend(v.to_le_bytes()),
        Value::F32(v) => out.extend(v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            out.extend(items.first().map_or(0, type_id).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(v) => out.extend(v.to_le_bytes()),
        Value::I64(v) => out.extend(v.to_le_bytes()),
        Value::F64(v) => out.extend(v.to_le_bytes()),
    }
}

/// What a run of the binary left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Peak resident set in KiB, when GNU time is there to measure it.
    max_rss_kb: Option<u64>,
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("llmfile-hostile-{}-{name}", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const GNU_TIME: &str = "/usr/bin/time";

/// Runs `llmfile -m FILE ARGS` on `bytes`, under GNU time (for the peak RSS) when it exists.
fn run(name: &str, bytes: &[u8], args: &[&str]) -> Run {
    let model = TempFile::new(name);
    std::fs::write(&model.0, bytes).unwrap();
    let report = TempFile::new(&format!("{name}.time"));
    let binary = env!("CARGO_BIN_EXE_llmfile");
    let timed = Path::new(GNU_TIME).is_file();
    let mut command = if timed {
        let mut c = Command::new(GNU_TIME);
        c.args(["-f", "%M", "-o"]).arg(&report.0).arg(binary);
        c
    } else {
        Command::new(binary)
    };
    let output = command
        .arg("-m")
        .arg(&model.0)
        .args(args)
        .output()
        .expect("llmfile runs");
    let max_rss_kb = timed
        .then(|| std::fs::read_to_string(&report.0).ok())
        .flatten()
        .and_then(|text| text.lines().last()?.trim().parse().ok());
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        max_rss_kb,
    }
}

const GENERATE: [&str; 6] = ["-p", "Hello", "-n", "4", "--temp", "0"];

/// The file is refused with one line naming the problem, exit code 1, no panic.
fn assert_refused(name: &str, bytes: &[u8], expected: &str) -> Run {
    let run = run(name, bytes, &GENERATE);
    let stderr = &run.stderr;
    assert_eq!(run.code, Some(1), "{name}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{name}: not one line: {stderr}");
    assert!(stderr.starts_with("llmfile: "), "{name}: {stderr}");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{name}: {stderr} lacks {expected:?}"
    );
    run
}

/// `assert_refused`, and the refusal came before memory grew.
fn assert_refused_small(name: &str, bytes: &[u8], expected: &str) {
    let run = assert_refused(name, bytes, expected);
    match run.max_rss_kb {
        Some(kb) => assert!(kb < SMALL_RSS_KB, "{name}: peak RSS {kb} KiB"),
        None => eprintln!("note: {GNU_TIME} not found; peak memory of {name} not checked"),
    }
}

fn assert_finishes(name: &str, bytes: &[u8], args: &[&str]) -> Run {
    let run = run(name, bytes, args);
    assert_eq!(run.code, Some(0), "{name}: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{name}: {}", run.stderr);
    run
}

#[test]
fn the_writer_reproduces_a_working_model() {
    let original = std::fs::read(SYNTHETIC).unwrap();
    let encoded = Model::synthetic().encode();
    let from_original = assert_finishes("original", &original, &GENERATE);
    let rewritten = assert_finishes("rewritten", &encoded.bytes, &GENERATE);
    assert_eq!(rewritten.stdout, from_original.stdout);
    assert!(rewritten.stdout.len() > "Hello\n".len());
}

#[test]
fn truncated_at_every_section_boundary() {
    let encoded = Model::synthetic().encode();
    let total = encoded.bytes.len();
    let mut cuts = 0;
    for section in &encoded.sections {
        let expected = if section.label.starts_with("data") || section.label == "padding" {
            "past the end"
        } else {
            "truncated"
        };
        // At the section's first byte a new field is missing; one byte later, the field is
        // cut in half. The end of the tensor data is the end of a whole file.
        for cut in [section.start, section.start + 1] {
            if cut >= section.end.min(total) {
                continue;
            }
            // Too short to hold the magic, the file is not recognizable as a GGUF at all.
            let expected = if cut < 4 {
                "neither a GGUF file"
            } else {
                expected
            };
            assert_refused(&format!("cut-{cut}"), &encoded.bytes[..cut], expected);
            cuts += 1;
        }
    }
    assert!(cuts > 150, "only {cuts} cuts");
}

#[test]
fn dimensions_whose_product_overflows() {
    let cases: [(&str, &str, Vec<u64>); 4] = [
        ("rows", "token_embd.weight", vec![256, 1 << 62]),
        (
            "four-dims",
            "blk.0.attn_q.weight",
            vec![256, 1 << 20, 1 << 20, 1 << 20],
        ),
        ("row-length", "output_norm.weight", vec![u64::MAX]),
        ("row-bytes", "blk.0.attn_q.weight", vec![1 << 63, 4]),
    ];
    for (name, tensor, dims) in cases {
        let mut model = Model::synthetic();
        model.tensor_mut(tensor).dims = dims;
        assert_refused_small(name, &model.encode().bytes, "overflow");
    }
    let mut model = Model::synthetic();
    model.tensor_mut("blk.0.attn_q.weight").dims = vec![100, 256];
    assert_refused(
        "partial-block",
        &model.encode().bytes,
        "do not fit its type's blocks",
    );
}

#[test]
fn tensor_data_past_the_end() {
    for (name, offset) in [("beyond", 1u64 << 32), ("wraps", u64::MAX - 31)] {
        let mut model = Model::synthetic();
        model.tensor_mut("blk.3.ffn_down.weight").stated_offset = Some(offset);
        assert_refused_small(name, &model.encode().bytes, "past the end of the file");
    }
}

#[test]
fn wrong_alignment() {
    for (name, alignment) in [("zero", 0u32), ("not-power", 48), ("odd", 7)] {
        let mut model = Model::synthetic();
        model.set("general.alignment", Value::U32(alignment));
        assert_refused(name, &model.encode().bytes, "not a power of two");
    }

    let mut model = Model::synthetic();
    model.set("general.alignment", Value::String("32".into()));
    assert_refused(
        "alignment-string",
        &model.encode().bytes,
        "should be an integer",
    );

    // A stated alignment the data does not follow.
    let mut model = Model::synthetic();
    model.set("general.alignment", Value::U32(1 << 20));
    assert_refused(
        "alignment-unfollowed",
        &model.encode_aligned(32).bytes,
        "is not a multiple of the alignment 1048576",
    );

    let mut model = Model::synthetic();
    let encoded = model.encode();
    let misplaced = encoded.section("data blk.1.attn_q.weight").start as u64 + 4
        - encoded.section("padding").end as u64;
    model.tensor_mut("blk.1.attn_q.weight").stated_offset = Some(misplaced);
    assert_refused(
        "misaligned-offset",
        &model.encode().bytes,
        "is not a multiple of the alignment 32",
    );

    // Any power of two is legal, and the data then follows it.
    let mut model = Model::synthetic();
    model.set("general.alignment", Value::U32(256));
    assert_finishes("alignment-256", &model.encode().bytes, &GENERATE);
}

/// Sets the scale `d` of every block of every K-quant tensor to `bits` (an f16).
fn poison_scales(model: &mut Model, bits: u16) {
    let q4_k = GgmlType::from_id(12).unwrap();
    let q6_k = GgmlType::from_id(14).unwrap();
    let mut poisoned = 0;
    for tensor in &mut model.tensors {
        // Q4_K blocks (144 bytes) start with d; Q6_K blocks (210 bytes) end with it.
        let (block, d_at) = match GgmlType::from_id(tensor.type_id) {
            Some(t) if t == q4_k => (144, 0),
            Some(t) if t == q6_k => (210, 208),
            _ => continue,
        };
        for block in tensor.data.chunks_exact_mut(block) {
            block[d_at..d_at + 2].copy_from_slice(&bits.to_le_bytes());
        }
        poisoned += 1;
    }
    assert!(poisoned > 20, "only {poisoned} quantized tensors");
}

#[test]
fn nan_and_infinite_scales_still_finish() {
    const NAN: u16 = 0x7E00;
    const INFINITY: u16 = 0x7C00;
    const NEG_INFINITY: u16 = 0xFC00;
    for (name, bits) in [("nan", NAN), ("inf", INFINITY), ("neg-inf", NEG_INFINITY)] {
        let mut model = Model::synthetic();
        poison_scales(&mut model, bits);
        let bytes = model.encode().bytes;
        assert_finishes(&format!("{name}-greedy"), &bytes, &GENERATE);
        assert_finishes(
            &format!("{name}-sampled"),
            &bytes,
            &[
                "-p",
                "Hello",
                "-n",
                "4",
                "--repeat-penalty",
                "1.2",
                "-s",
                "7",
            ],
        );
    }
}

#[test]
fn vocabulary_that_does_not_match_the_embeddings() {
    const KEYS: [&str; 3] = [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
    ];
    let mut model = Model::synthetic();
    for key in KEYS {
        model.array_mut(key).truncate(4000);
    }
    assert_refused(
        "fewer-tokens",
        &model.encode().bytes,
        "tokenizer.ggml.tokens lists 4000 tokens but token_embd.weight has 4096 rows",
    );

    let mut model = Model::synthetic();
    for i in 0..8 {
        model
            .array_mut("tokenizer.ggml.tokens")
            .push(Value::String(format!("extra{i}")));
        model
            .array_mut("tokenizer.ggml.scores")
            .push(Value::F32(0.0));
        model
            .array_mut("tokenizer.ggml.token_type")
            .push(Value::I32(1));
    }
    assert_refused(
        "more-tokens",
        &model.encode().bytes,
        "tokenizer.ggml.tokens lists 4104 tokens but token_embd.weight has 4096 rows",
    );

    for key in &KEYS[1..] {
        let mut model = Model::synthetic();
        model.array_mut(key).truncate(10);
        assert_refused(
            key,
            &model.encode().bytes,
            &format!("{key} has 10 entries but the vocabulary has 4096 tokens"),
        );
    }

    // llama.cpp reads the first n_tokens entries of a longer array; so does llmfile.
    let mut model = Model::synthetic();
    model
        .array_mut("tokenizer.ggml.scores")
        .push(Value::F32(0.0));
    assert_finishes("longer-scores", &model.encode().bytes, &GENERATE);

    let mut model = Model::synthetic();
    model
        .array_mut("tokenizer.ggml.tokens")
        .iter_mut()
        .for_each(|token| *token = Value::U32(7));
    assert_refused(
        "tokens-not-strings",
        &model.encode().bytes,
        "entry 0 of tokenizer.ggml.tokens should be a string",
    );
}

#[test]
fn absurd_lengths_are_refused_before_allocating() {
    let base = Model::synthetic().encode();

    let mut e = Model::synthetic().encode();
    e.put_u64(8, 1 << 40);
    assert_refused_small("tensor-count", &e.bytes, "truncated");

    let mut e = Model::synthetic().encode();
    e.put_u64(16, 1 << 40);
    assert_refused_small("kv-count", &e.bytes, "truncated");

    let mut e = Model::synthetic().encode();
    e.put_u64(base.section("kv general.name").start, u64::MAX);
    assert_refused_small("key-length", &e.bytes, "truncated");

    let mut e = Model::synthetic().encode();
    let at = e.value_at("general.name");
    e.put_u64(at, 1 << 40);
    assert_refused_small("string-length", &e.bytes, "truncated");

    // An array value: item type (u32), then its length (u64).
    for (key, len) in [
        ("tokenizer.ggml.tokens", 1u64 << 61),
        ("tokenizer.ggml.scores", u64::MAX),
        ("tokenizer.ggml.token_type", 1 << 40),
    ] {
        let mut e = Model::synthetic().encode();
        let at = e.value_at(key) + 4;
        e.put_u64(at, len);
        assert_refused_small(&format!("{key}-length"), &e.bytes, "truncated");
    }

    let mut e = Model::synthetic().encode();
    let at = e.section("tensor info output_norm.weight").start + 8 + "output_norm.weight".len();
    e.put_u32(at, u32::MAX);
    assert_refused_small("n-dims", &e.bytes, "dimensions");

    let mut model = Model::synthetic();
    model.set("gemma2.block_count", Value::U32(u32::MAX));
    assert_refused_small("block-count", &model.encode().bytes, "gemma2.block_count");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let bytes = std::fs::read(SYNTHETIC).unwrap();
    let prompt = "the quick brown fox jumps over the lazy dog ".repeat(4);
    let run = run("long-prompt", &bytes, &["-c", "16", "-p", &prompt]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not fit the context of 16"),
        "{}",
        run.stderr
    );
}

/// The numbers in `prompt P tokens ..., generated G tokens`.
fn token_counts(stderr: &str) -> (usize, usize) {
    let number_after = |word: &str| -> usize {
        let rest = &stderr[stderr.find(word).unwrap_or_else(|| panic!("{stderr}")) + word.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (number_after("prompt "), number_after("generated "))
}

#[test]
fn generation_stops_cleanly_when_the_context_is_full() {
    let bytes = std::fs::read(SYNTHETIC).unwrap();
    for n_predict in ["-1", "1000"] {
        let run = assert_finishes(
            &format!("fill-{n_predict}"),
            &bytes,
            &["-p", "Hello", "-n", n_predict, "-c", "32", "--temp", "0"],
        );
        let (prompt, generated) = token_counts(&run.stderr);
        assert_eq!(prompt + generated, 32, "{}", run.stderr);
    }
}

#[test]
fn a_context_beyond_memory_is_refused() {
    // 10^12 positions need 256 TB of keys per layer, more than any address space.
    let bytes = std::fs::read(SYNTHETIC).unwrap();
    let run = run(
        "huge-context",
        &bytes,
        &["-c", "1000000000000", "-p", "Hello"],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("context of 1000000000000 tokens is too large"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_large_context_costs_memory_only_for_the_tokens_used() {
    // A million positions of this model's keys and values are 2 GB; a few tokens use kilobytes.
    let bytes = std::fs::read(SYNTHETIC).unwrap();
    let args = |n_ctx: &'static str| ["-p", "Hello", "-n", "4", "--temp", "0", "-c", n_ctx];
    let small = assert_finishes("context-256", &bytes, &args("256"));
    let large = assert_finishes("context-1m", &bytes, &args("1000000"));
    assert_eq!(small.stdout, large.stdout);
    let (Some(small_kb), Some(large_kb)) = (small.max_rss_kb, large.max_rss_kb) else {
        eprintln!("note: {GNU_TIME} not found; the cache's memory was not measured");
        return;
    };
    assert!(
        large_kb < small_kb + 32 * 1024,
        "peak RSS {large_kb} KiB at -c 1000000 against {small_kb} KiB at -c 256"
    );
}
