//! The command line: llama.cpp's flag names, so what people already type works.

mod chat;
mod embedding;
mod escapes;
mod generate;
mod perplexity;
mod serve;

use crate::bundle;
use crate::embedding::Pooling;
use crate::engine::{Engine, OpenOptions};
use crate::grammar::{json_schema, Grammar};
use crate::sampling::SamplingParams;
use crate::speculative;
use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use kernels::Kernels;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// The context used when `-c` is not given, unless the model's own is smaller.
const DEFAULT_CONTEXT: usize = 8192;

#[derive(Parser, Debug)]
#[command(
    name = "llmfile",
    version,
    about = "Run a GGUF language model on the CPU",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the token ids of a text as a JSON array.
    Tokenize(TokenizeArgs),
    /// Compute perplexity over a text file, chunked as llama-perplexity does.
    Perplexity(PerplexityArgs),
    /// Print the embeddings of texts as JSON, as llama-embedding does.
    Embedding(EmbeddingArgs),
    /// Measure prompt and generation speed as llama-bench does.
    Bench(BenchArgs),
    /// Measure the throughput of several sequences decoded together, as llama-batched-bench.
    BatchedBench(BatchedBenchArgs),
    /// Make a single executable: this engine with the model (and default arguments) inside.
    Pack(PackArgs),
    /// Describe an llmfile, zip or GGUF (default: this executable).
    Info(InfoArgs),
}

#[derive(Args, Debug)]
struct PackArgs {
    /// The GGUF to embed.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// The executable to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// A draft model to embed too, for speculative decoding (-md).
    #[arg(long = "model-draft", value_name = "FILE")]
    model_draft: Option<PathBuf>,
    /// Default arguments stored as .args (quotes, # comments, `...` for the user's arguments).
    #[arg(long = "args", allow_hyphen_values = true)]
    args: Option<String>,
    /// The engine binary to copy (default: this one).
    #[arg(long = "engine")]
    engine: Option<PathBuf>,
    /// No progress bar.
    #[arg(long = "quiet")]
    quiet: bool,
}

#[derive(Args, Debug)]
struct InfoArgs {
    file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ModelArgs {
    /// Model file (GGUF).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Threads for computation (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Keep the weights mapped from the file, never copied (the default; overrides an
    /// earlier --no-mmap, such as one in a bundle's .args).
    #[arg(long = "mmap", overrides_with = "no_mmap")]
    mmap: bool,
    /// Copy the weights into memory backed by huge pages, which generation reads 15-20%
    /// faster; costs a copy at start and memory of the process's own.
    #[arg(long = "no-mmap", overrides_with = "mmap")]
    no_mmap: bool,
    /// Leave copied weights (--no-mmap) in the file's layout instead of regrouping Q4_K, Q5_K,
    /// Q6_K, Q5_0, Q4_0, Q4_1, Q5_1 and (with AVX-512 VNNI) Q8_0 matrices eight rows at a time
    /// for the kernels (llama.cpp's --no-repack).
    #[arg(long = "no-repack", overrides_with = "repack")]
    no_repack: bool,
    /// Regroup mapped weights too: the file is mapped copy-on-write, and the pages the regrouping
    /// rewrites become the process's own.
    #[arg(long = "repack", overrides_with = "no_repack")]
    repack: bool,
}

impl ModelArgs {
    fn placement(&self) -> bundle::Placement {
        if self.no_mmap {
            bundle::Placement::Memory
        } else if self.repack {
            bundle::Placement::Private
        } else {
            bundle::Placement::Mapped
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of text or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    /// Context size in tokens (0: the model's trained maximum).
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Parse and print special tokens such as <start_of_turn>.
    #[arg(long = "special")]
    special: bool,
    /// Process escapes (\n, \t, \xHH, ...) in the prompt.
    #[arg(short = 'e', long = "escape")]
    escape: bool,
    /// GPU layers: accepted for compatibility; this engine runs on the CPU.
    #[arg(long = "n-gpu-layers")]
    n_gpu_layers: Option<i64>,
    /// Print nothing but the generated text.
    #[arg(long = "log-disable")]
    log_disable: bool,
    /// The chat template: gemma, alpaca, chatml, llama3, plain, or a Jinja file; replaces the
    /// model's own for the API, --chat and the chat page.
    #[arg(long = "chat-template", value_name = "NAME|FILE")]
    chat_template: Option<String>,
    /// The system prompt of --chat.
    #[arg(long = "system-prompt", value_name = "TEXT")]
    system_prompt: Option<String>,
    /// When the context is full, keep the first --keep tokens, drop half of the rest and go
    /// on, instead of stopping (llama.cpp's flag; off by default as there).
    #[arg(long = "context-shift")]
    context_shift: bool,
    /// Prompt tokens a context shift keeps, besides BOS (-1: the whole prompt).
    #[arg(long = "keep", default_value_t = 0, allow_negative_numbers = true)]
    keep: i64,
    /// Print each prompt, as the chat template renders it, to stderr before answering.
    #[arg(long = "verbose-prompt")]
    verbose_prompt: bool,
    /// Accepted for llama.cpp's command lines: attention here always reads the KV cache in one
    /// fused pass per head, so on, off and auto run the same code.
    #[arg(long = "flash-attn", value_name = "on|off|auto", num_args = 0..=1,
          default_missing_value = "on", value_parser = ["on", "off", "auto"])]
    flash_attn: Option<String>,
    /// Lock the weights in memory so the system never pages them out.
    #[arg(long = "mlock")]
    mlock: bool,
    /// Start at once, without reading the weights in first: the first request then pays for
    /// the page faults.
    #[arg(long = "no-warmup")]
    no_warmup: bool,
    #[command(flatten)]
    speculation: SpecArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Speculative decoding, with llama.cpp's flags and defaults.
#[derive(Args, Debug, Clone)]
struct SpecArgs {
    /// Speculative decoding: none, ngram-simple (guesses from the text so far) or
    /// draft-simple (a draft model's; the default when -md is given).
    #[arg(long = "spec-type", value_name = "TYPE",
          value_parser = ["none", "ngram-simple", "draft-simple"])]
    spec_type: Option<String>,
    /// The draft model: a GGUF (or an entry of this executable) with the model's vocabulary.
    #[arg(
        long = "model-draft",
        visible_alias = "spec-draft-model",
        value_name = "FILE"
    )]
    model_draft: Option<PathBuf>,
    /// The most tokens the draft model guesses per pass.
    #[arg(long = "spec-draft-n-max", default_value_t = 3)]
    draft_n_max: usize,
    /// Fewer guesses than this are dropped.
    #[arg(long = "spec-draft-n-min", default_value_t = 0)]
    draft_n_min: usize,
    /// The draft model stops guessing where its top token is less likely than this.
    #[arg(long = "spec-draft-p-min", default_value_t = 0.0)]
    draft_p_min: f32,
    /// ngram-simple: how many of the latest tokens must recur.
    #[arg(long = "spec-ngram-simple-size-n", default_value_t = 12)]
    ngram_size_n: usize,
    /// ngram-simple: the most tokens guessed from what followed them.
    #[arg(long = "spec-ngram-simple-size-m", default_value_t = 48)]
    ngram_size_m: usize,
    /// ngram-simple: how often the latest tokens must have occurred before.
    #[arg(long = "spec-ngram-simple-min-hits", default_value_t = 1)]
    ngram_min_hits: usize,
}

impl SpecArgs {
    /// What to speculate with, None for plain decoding; the draft model is opened here.
    fn open(&self, target: &Engine, model: &ModelArgs) -> Result<Option<speculative::Speculator>> {
        let kind = match (self.spec_type.as_deref(), &self.model_draft) {
            (Some("none"), _) | (None, None) => return Ok(None),
            (Some("ngram-simple"), _) => speculative::Kind::NGramSimple,
            (Some("draft-simple"), None) => {
                bail!("--spec-type draft-simple needs a draft model (-md FILE)")
            }
            _ => speculative::Kind::DraftModel,
        };
        if self.ngram_size_n == 0 || self.ngram_size_m == 0 {
            bail!("--spec-ngram-simple-size-n and -size-m must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.draft_p_min) {
            bail!("--spec-draft-p-min must be between 0 and 1");
        }
        let draft = match (kind, &self.model_draft) {
            (speculative::Kind::DraftModel, Some(path)) => {
                let options = OpenOptions {
                    placement: model.placement(),
                    quiet: true,
                    warm_up: true,
                    kernels: Kernels::from_env()?,
                    chat_template: None,
                    repack: !model.no_repack,
                };
                let draft = Engine::open(Some(path), &options)
                    .with_context(|| format!("-md {}", path.display()))?;
                speculative::check_vocabularies(target.tokenizer(), draft.tokenizer())
                    .with_context(|| format!("-md {}", path.display()))?;
                Some(draft)
            }
            _ => None,
        };
        let params = speculative::Params {
            kind,
            n_max: self.draft_n_max,
            n_min: self.draft_n_min,
            p_min: self.draft_p_min,
            size_n: self.ngram_size_n,
            size_m: self.ngram_size_m,
            min_hits: self.ngram_min_hits,
        };
        Ok(Some(speculative::Speculator { params, draft }))
    }
}

/// The server and the terminal chat; the server is the mode when no -p, -f or --chat is given.
#[derive(Args, Debug)]
struct ServeArgs {
    /// Serve the chat page and the HTTP API (the default without -p, -f or --chat).
    #[arg(long = "server")]
    server: bool,
    /// Chat in the terminal, in the model's chat template (-sys or -p sets the system prompt).
    #[arg(
        long = "chat",
        visible_alias = "conversation",
        conflicts_with = "server"
    )]
    chat: bool,
    /// Address the server listens on.
    #[arg(long = "host", default_value = "127.0.0.1")]
    host: String,
    /// Port the server listens on; if it is taken, the next ones are tried (0: any free port).
    #[arg(long = "port", default_value_t = 8080)]
    port: u16,
    /// Do not open the chat page in a browser.
    #[arg(long = "nobrowser")]
    nobrowser: bool,
    /// Requests served at once, each with its own KV cache of -c tokens (-np); the busy ones
    /// share every forward pass.
    #[arg(long = "parallel", default_value_t = 1)]
    parallel: usize,
    /// Require `Authorization: Bearer KEY` on the API.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Tokens one scheduler step may evaluate across all slots (-b).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    batch_size: usize,
    /// Tokens in one forward pass (-ub); a step is one pass, so a long prompt holds the
    /// generating slots back by at most this many tokens' work.
    #[arg(long = "ubatch-size", default_value_t = 512)]
    ubatch_size: usize,
    /// Answer GET /slots with each slot's state (behind --api-key when one is set).
    #[arg(long = "slots", overrides_with = "no_slots")]
    slots: bool,
    /// Do not answer GET /slots (the default).
    #[arg(long = "no-slots", overrides_with = "slots")]
    no_slots: bool,
    /// Answer GET /metrics with llama-server's metrics in Prometheus's text format (behind
    /// --api-key when one is set).
    #[arg(long = "metrics")]
    metrics: bool,
    /// Fill-in-the-middle prompts (/infill, suffix on /v1/completions) in suffix-prefix-middle
    /// order rather than prefix-suffix-middle, for models trained that way.
    #[arg(long = "spm-infill")]
    spm_infill: bool,
    /// Accepted for llama-server's command lines: /v1/embeddings and /embedding are always
    /// served.
    #[arg(long = "embedding", visible_alias = "embeddings")]
    embedding: bool,
    /// How the server's embeddings pool their tokens: none, mean, cls or last (default: the
    /// model's pooling, else mean).
    #[arg(long = "pooling", value_name = "none|mean|cls|last")]
    pooling: Option<Pooling>,
}

#[derive(Args, Debug, Clone)]
struct SamplingArgs {
    /// Temperature (0: greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    temp: f32,
    /// Top-k sampling (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    /// Top-p (nucleus) sampling (1.0: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    /// Min-p sampling (0.0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for repeated tokens (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens the repeat penalty considers.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    repeat_last_n: usize,
    /// Subtracted from a recent token's logit per time it occurred (0.0: off).
    #[arg(
        long = "frequency-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    frequency_penalty: f32,
    /// Subtracted once from the logit of a token that occurred recently (0.0: off).
    #[arg(
        long = "presence-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    presence_penalty: f32,
    /// TOKEN_ID(+/-)BIAS added to a token's logit, e.g. 15043+1 or 15043-inf to ban it;
    /// repeat the flag for several tokens.
    #[arg(short = 'l', long = "logit-bias", value_name = "TOKEN_ID(+/-)BIAS",
          value_parser = parse_logit_bias)]
    logit_bias: Vec<(u32, f32)>,
    /// Random seed.
    #[arg(short = 's', long = "seed", default_value_t = 0xFFFF_FFFF)]
    seed: u64,
    /// Constrain the output to a GBNF grammar (llama.cpp's syntax).
    #[arg(long = "grammar", group = "constraint")]
    grammar: Option<String>,
    /// Constrain the output to the GBNF grammar in this file.
    #[arg(long = "grammar-file", group = "constraint")]
    grammar_file: Option<PathBuf>,
    /// Constrain the output to JSON that this JSON schema accepts (`{}`: any JSON object).
    #[arg(short = 'j', long = "json-schema", group = "constraint")]
    json_schema: Option<String>,
    /// Constrain the output to the JSON schema in this file.
    #[arg(long = "json-schema-file", group = "constraint")]
    json_schema_file: Option<PathBuf>,
}

impl SamplingArgs {
    /// The grammar the flags ask for, parsed; errors name the flag.
    fn grammar(&self) -> Result<Option<Arc<Grammar>>> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
        };
        let (flag, text) = match (
            &self.grammar,
            &self.grammar_file,
            &self.json_schema,
            &self.json_schema_file,
        ) {
            (Some(text), ..) => ("--grammar", text.clone()),
            (_, Some(path), ..) => ("--grammar-file", read(path)?),
            (_, _, Some(schema), _) => ("--json-schema", schema_grammar(schema, "--json-schema")?),
            (.., Some(path)) => (
                "--json-schema-file",
                schema_grammar(&read(path)?, "--json-schema-file")?,
            ),
            _ => return Ok(None),
        };
        Grammar::parse(&text)
            .map(Some)
            .with_context(|| format!("{flag}: cannot use the grammar"))
    }
}

/// llama.cpp's `--logit-bias 15043+1` / `15043-inf`.
fn parse_logit_bias(text: &str) -> Result<(u32, f32), String> {
    let split = text
        .find(['+', '-'])
        .ok_or_else(|| format!("{text:?} is not TOKEN_ID(+/-)BIAS, such as 15043+1"))?;
    let (id, bias) = text.split_at(split);
    let id = id
        .parse()
        .map_err(|_| format!("{id:?} in {text:?} is not a token id"))?;
    let bias: f32 = bias
        .parse()
        .map_err(|_| format!("{bias:?} in {text:?} is not a number"))?;
    if bias.is_nan() {
        return Err(format!("the bias in {text:?} is not a number"));
    }
    Ok((id, bias))
}

fn schema_grammar(schema: &str, flag: &str) -> Result<String> {
    let schema: serde_json::Value = serde_json::from_str(schema)
        .with_context(|| format!("{flag}: the schema is not valid JSON"))?;
    json_schema::schema_to_gbnf(&schema).with_context(|| format!("{flag}: cannot use the schema"))
}

impl SamplingArgs {
    /// The sampling settings, with `-l` checked against the model's vocabulary.
    fn params(&self, engine: &Engine) -> Result<SamplingParams> {
        let n_vocab = engine.tokenizer().n_vocab();
        if let Some((id, _)) = self
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= n_vocab)
        {
            bail!("--logit-bias: token id {id} is outside the vocabulary of {n_vocab}");
        }
        let args = self;
        Ok(SamplingParams {
            temperature: args.temp,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            repeat_last_n: args.repeat_last_n,
            frequency_penalty: args.frequency_penalty,
            presence_penalty: args.presence_penalty,
            logit_bias: args.logit_bias.clone(),
            seed: args.seed,
        })
    }
}

#[derive(Args, Debug)]
struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Parse special tokens such as <start_of_turn> in the text.
    #[arg(long = "special")]
    special: bool,
}

#[derive(Args, Debug)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx_size: usize,
}

#[derive(Args, Debug)]
struct EmbeddingArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The texts to embed, split at each --embd-separator.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the texts from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// How the tokens' vectors become one: none, mean, cls or last (default: the model's
    /// pooling, else mean).
    #[arg(long = "pooling", value_name = "none|mean|cls|last")]
    pooling: Option<Pooling>,
    /// -1 none, 0 the int16 range, 1 taxicab, 2 Euclidean (unit length), p > 2: p-norm.
    #[arg(
        long = "embd-normalize",
        default_value_t = 2,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-1..)
    )]
    embd_normalize: i32,
    /// What separates the texts given with -p or -f.
    #[arg(long = "embd-separator", default_value = "\n")]
    embd_separator: String,
    /// json (OpenAI's list) or array (an array of arrays).
    #[arg(long = "embd-output-format", default_value = "json", value_parser = ["json", "array"])]
    embd_output_format: String,
    /// Context size in tokens, the most one text may have (0: the model's trained maximum).
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Tokens in one forward pass at most (-ub); short texts share a pass.
    #[arg(long = "ubatch-size", default_value_t = 512)]
    ubatch_size: usize,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens evaluated in one batch, comma-separated as llama-bench takes them: a test
    /// for each (0: none).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Tokens generated one at a time, comma-separated: a test for each (0: none).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
}

#[derive(Args, Debug)]
struct BatchedBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt lengths, comma-separated.
    #[arg(long = "npp", value_delimiter = ',', default_value = "128")]
    prompt_lengths: Vec<usize>,
    /// Tokens generated per sequence, comma-separated.
    #[arg(long = "ntg", value_delimiter = ',', default_value = "128")]
    generation_lengths: Vec<usize>,
    /// Numbers of parallel sequences, comma-separated.
    #[arg(long = "npl", value_delimiter = ',', default_value = "1,2,4")]
    parallel: Vec<usize>,
    /// One prompt read once and shared by all sequences.
    #[arg(long = "pps")]
    shared_prompt: bool,
    /// Tokens in one forward pass at most (-ub).
    #[arg(long = "ubatch-size", default_value_t = 512)]
    ubatch_size: usize,
    /// Accepted for llama-batched-bench's command lines: each pass is at most -ub tokens (-b).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    batch_size: usize,
    /// Accepted for llama-batched-bench's command lines: each sequence gets the context it
    /// needs (-c).
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
}

/// llama.cpp spells some long options with one dash (`-ngl 99`); clap reads a single dash as
/// bundled short flags, so those spellings are rewritten to their long forms first.
fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| match arg.to_str() {
            Some("-ngl") => "--n-gpu-layers".into(),
            Some("-sp") => "--special".into(),
            Some("-np") => "--parallel".into(),
            Some("-npp") => "--npp".into(),
            Some("-ntg") => "--ntg".into(),
            Some("-npl") => "--npl".into(),
            Some("-pps") => "--pps".into(),
            Some("-ub") => "--ubatch-size".into(),
            Some("-fa") => "--flash-attn".into(),
            Some("-cnv") => "--chat".into(),
            Some("-sys") => "--system-prompt".into(),
            Some("-md") => "--model-draft".into(),
            _ => arg,
        })
        .collect()
}

/// The known flag closest to `unknown` in edit distance, llama.cpp's one-dash spellings
/// included.
fn nearest_flag(unknown: &str) -> String {
    let unknown = unknown.split('=').next().unwrap_or(unknown);
    let command = Cli::command();
    let flags = command.get_arguments().flat_map(|arg| {
        let long = arg.get_long().map(|l| format!("--{l}"));
        let aliases = arg
            .get_all_aliases()
            .unwrap_or_default()
            .into_iter()
            .map(|a| format!("--{a}"));
        let short = arg.get_short().map(|c| format!("-{c}"));
        long.into_iter().chain(aliases).chain(short)
    });
    let one_dash = ["-ngl", "-sp", "-np", "-ub", "-fa", "-cnv", "-sys"].map(String::from);
    // A flag the typed text begins is what was meant (`--ctx` for `--ctx-size`), before any
    // flag a few edits away.
    flags
        .chain(one_dash)
        .min_by_key(|flag| (!flag.starts_with(unknown), edit_distance(unknown, flag)))
        .unwrap_or_else(|| "--help".into())
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`: a swap is one edit,
/// so `--tmep` is nearest `--temp`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

pub fn main_with_args(args: Vec<OsString>) -> Result<()> {
    // A bundle's .args hold flags for running the model, so they are expanded before the mode
    // is chosen, but not in front of a subcommand, which they would not fit.
    let is_subcommand = args.get(1).and_then(|a| a.to_str()).is_some_and(|a| {
        Cli::command()
            .get_subcommands()
            .any(|command| command.get_name() == a)
    });
    let args = if is_subcommand {
        args
    } else {
        bundle::expand_own_args(args)?
    };
    let cli = match Cli::try_parse_from(normalize_args(args)) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        // clap's own report spans several lines (usage, hints); one line is easier to act on.
        Err(e) => {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            let first = first.trim_start_matches("error: ");
            let unknown = e.get(clap::error::ContextKind::InvalidArg);
            match (e.kind(), unknown) {
                (clap::error::ErrorKind::UnknownArgument, Some(flag)) => {
                    let flag = flag.to_string();
                    bail!(
                        "{first}; the nearest known flag is {} (see --help)",
                        nearest_flag(&flag)
                    )
                }
                _ => bail!("{first} (see --help)"),
            }
        }
    };
    match cli.command {
        Some(Command::Tokenize(args)) => tokenize(args),
        Some(Command::Perplexity(args)) => perplexity::run(args),
        Some(Command::Embedding(args)) => embedding::run(args),
        Some(Command::Bench(args)) => {
            let engine = open_engine(&args.model, false)?;
            crate::bench::run(&engine, &args.n_prompt, &args.n_gen, args.repetitions)?;
            Ok(())
        }
        Some(Command::BatchedBench(args)) => {
            if args.ubatch_size == 0 || args.parallel.contains(&0) {
                bail!("-ub and every -npl must be at least 1");
            }
            let engine = open_engine(&args.model, false)?;
            let settings = crate::batched_bench::Settings {
                prompt_lengths: args.prompt_lengths,
                generation_lengths: args.generation_lengths,
                parallel: args.parallel,
                shared_prompt: args.shared_prompt,
                ubatch: args.ubatch_size.min(args.batch_size.max(1)),
            };
            crate::batched_bench::run(&engine, &settings)?;
            Ok(())
        }
        Some(Command::Pack(args)) => bundle::pack(&bundle::PackOptions {
            model: args.model,
            output: args.output,
            draft: args.model_draft,
            args: args.args,
            engine: args.engine,
            quiet: args.quiet,
        })
        .map_err(Into::into),
        Some(Command::Info(args)) => {
            print!("{}", bundle::info(args.file.as_deref())?);
            println!("kernels: {} (this CPU)", Kernels::from_env()?);
            Ok(())
        }
        None if cli.run.serve.chat => chat::run(cli.run),
        None if cli.run.serve.server || (cli.run.prompt.is_none() && cli.run.file.is_none()) => {
            serve::run(cli.run)
        }
        None => generate::run(cli.run),
    }
}

fn init_threads(args: &ModelArgs) -> Result<()> {
    if let Some(threads) = args.threads {
        if threads == 0 {
            bail!("-t must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("starting the thread pool")?;
    }
    Ok(())
}

/// Starts the thread pool `-t` asks for and opens the model; `quiet` hides the progress bar.
fn open_engine(args: &ModelArgs, quiet: bool) -> Result<Arc<Engine>> {
    init_threads(args)?;
    let options = OpenOptions {
        placement: args.placement(),
        quiet,
        warm_up: true,
        kernels: Kernels::from_env()?,
        chat_template: None,
        repack: !args.no_repack,
    };
    Ok(Engine::open(args.model.as_deref(), &options)?)
}

/// The engine for generating, chatting and serving: `open_engine` with the run's own flags
/// (`--chat-template`, `--no-warmup`, `--mlock`).
fn open_run_engine(args: &RunArgs, quiet: bool) -> Result<Arc<Engine>> {
    init_threads(&args.model)?;
    let options = OpenOptions {
        placement: args.model.placement(),
        quiet,
        warm_up: !args.no_warmup,
        kernels: Kernels::from_env()?,
        chat_template: args.chat_template.clone(),
        repack: !args.model.no_repack,
    };
    let engine = Engine::open(args.model.model.as_deref(), &options)?;
    if args.mlock {
        engine.lock_in_memory().context(
            "--mlock: cannot lock the weights in memory (raise the limit with `ulimit -l`, or run without --mlock)",
        )?;
    }
    Ok(engine)
}

/// `-c`: 0 means the model's trained context; unset means 8192 or the model's, if smaller.
fn context_size(requested: Option<usize>, trained: usize) -> usize {
    match requested {
        Some(0) => trained,
        Some(n) => n,
        None => DEFAULT_CONTEXT.min(trained),
    }
}

fn tokenize(args: TokenizeArgs) -> Result<()> {
    let engine = open_engine(&args.model, false)?;
    let ids = engine
        .tokenizer()
        .encode(&args.prompt, true, args.special)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
