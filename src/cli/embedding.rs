//! `llmfile embedding -m MODEL -p TEXT`: llama-embedding's command, printing its
//! `--embd-output-format json` (the default here) or `array`.

use super::{context_size, escapes, open_engine, EmbeddingArgs};
use crate::embedding::{self, Pooling};
use anyhow::{bail, Context, Result};
use std::fmt::Write;

pub(super) fn run(args: EmbeddingArgs) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        // llama-embedding processes escapes by default, so `-p "a\nb"` is two texts there too.
        (Some(prompt), None) => escapes::process(prompt),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?
        }
        _ => bail!("give the text to embed with -p TEXT or -f FILE"),
    };
    if args.embd_separator.is_empty() {
        bail!("--embd-separator must not be empty");
    }
    if args.ubatch_size == 0 {
        bail!("-ub must be at least 1");
    }
    let engine = open_engine(&args.model, true)?;
    let n_ctx = context_size(args.ctx_size, engine.model().hparams.context_length);
    let pooling = args
        .pooling
        .unwrap_or(Pooling::default_for(engine.info().pooling));
    // One input per separated part, as llama-embedding splits its prompt.
    let mut inputs = Vec::new();
    for (index, part) in text.split(args.embd_separator.as_str()).enumerate() {
        let tokens = engine.tokenizer().encode(part, true, true)?;
        if tokens.is_empty() {
            bail!("input {index} is empty and the model adds no BOS token: nothing to embed");
        }
        if tokens.len() > n_ctx {
            bail!(
                "input {index} is {} tokens, more than the context of {n_ctx} (use -c to enlarge it)",
                tokens.len()
            );
        }
        inputs.push(tokens);
    }
    let started = std::time::Instant::now();
    let mut vectors: Vec<Vec<f32>> =
        embedding::embed(&engine, &inputs, pooling, args.ubatch_size, &|| false)?
            .into_iter()
            .flatten()
            .collect();
    let seconds = started.elapsed().as_secs_f64();
    for vector in &mut vectors {
        embedding::normalize(vector, args.embd_normalize);
    }
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    eprintln!(
        "llmfile: {} inputs, {tokens} tokens, {pooling} pooling: {:.1} tokens/s",
        inputs.len(),
        tokens as f64 / seconds.max(1e-9),
        pooling = pooling.name(),
    );
    print!(
        "{}",
        render(&vectors, args.embd_normalize, &args.embd_output_format)
    );
    Ok(())
}

/// The vectors as llama-embedding prints them: `json` is OpenAI's list shape, `array` a bare
/// array of arrays; numbers with seven decimals, or none when normalised to the int16 range.
fn render(vectors: &[Vec<f32>], norm: i32, format: &str) -> String {
    let number = |v: f32| {
        if norm == 0 {
            format!("{v:.0}")
        } else {
            format!("{v:.7}")
        }
    };
    let array = |vector: &[f32]| {
        let items: Vec<String> = vector.iter().map(|&v| number(v)).collect();
        format!("[{}]", items.join(","))
    };
    let mut out = String::new();
    if format == "array" {
        let rows: Vec<String> = vectors.iter().map(|v| array(v)).collect();
        let _ = writeln!(out, "[{}]", rows.join(","));
        return out;
    }
    out.push_str("{\n  \"object\": \"list\",\n  \"data\": [\n");
    let entries: Vec<String> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            format!(
                "    {{\n      \"object\": \"embedding\",\n      \"index\": {index},\n      \"embedding\": {}\n    }}",
                array(vector)
            )
        })
        .collect();
    out.push_str(&entries.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn the_output_is_llama_embeddings_json() {
        let json = render(&[vec![0.5, -0.25], vec![1.0, 0.0]], 2, "json");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["object"], "list");
        assert_eq!(value["data"][1]["index"], 1);
        assert_eq!(value["data"][0]["embedding"][1], -0.25);
        assert!(json.contains("[0.5000000,-0.2500000]"), "{json}");
        assert_eq!(render(&[vec![3.0, -2.0]], 0, "array"), "[[3,-2]]\n");
    }
}
