//! `llmfile perplexity -m MODEL -f TEXT [-c 512]`.

use super::{open_engine, PerplexityArgs};
use anyhow::{Context, Result};

pub(super) fn run(args: PerplexityArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let engine = open_engine(&args.model, false)?;
    let ppl = crate::perplexity::perplexity(&engine, &text, args.ctx_size, |i, ppl| {
        eprintln!("[{}] {ppl:.4}", i + 1)
    })
    .with_context(|| format!("{}", args.file.display()))?;
    println!("Final estimate: PPL = {ppl:.4}");
    Ok(())
}
