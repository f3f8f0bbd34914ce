//! `llmfile -p PROMPT`: one completion streamed to stdout, timings on stderr.

use super::{context_size, escapes, open_run_engine, RunArgs};
use crate::generation::{Finish, Generation, Limits};
use crate::session::keep_on_shift;
use crate::speculative;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::time::Instant;

pub(super) fn run(args: RunArgs) -> Result<()> {
    let mut prompt = match (&args.prompt, &args.file) {
        (Some(_), Some(_)) => bail!("pass either -p or -f, not both"),
        (Some(text), None) => text.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?
        }
        (None, None) => bail!("nothing to do: pass -p PROMPT or -f FILE (see --help)"),
    };
    if args.escape {
        prompt = escapes::process(&prompt);
    }
    if let Some(layers) = args.n_gpu_layers {
        eprintln!("llmfile: -ngl {layers} ignored: this engine runs on the CPU");
    }

    let grammar = args.sampling.grammar()?;
    let engine = open_run_engine(&args, args.log_disable)?;
    let tokenizer = engine.tokenizer();
    let n_ctx = context_size(args.ctx_size, engine.model().hparams.context_length);
    let prompt_tokens = tokenizer.encode(&prompt, true, args.special)?;
    if prompt_tokens.is_empty() {
        bail!("the prompt is empty and the model adds no BOS token to start from");
    }
    if prompt_tokens.len() >= n_ctx {
        bail!(
            "the prompt is {} tokens, which does not fit the context of {n_ctx} (use -c to enlarge it)",
            prompt_tokens.len()
        );
    }
    let room = n_ctx - prompt_tokens.len();
    // With --context-shift a full context makes room instead of ending the text, so only -n
    // limits it (-1: until the model ends it, as llama.cpp's).
    let n_predict = match (args.context_shift, usize::try_from(args.n_predict)) {
        (true, Ok(n)) => n,
        (true, Err(_)) => usize::MAX,
        (false, limit) => limit.map_or(room, |n| n.min(room)),
    };
    let keep = keep_on_shift(args.keep, &prompt_tokens, tokenizer.add_bos());
    let limits = Limits {
        sampling: args.sampling.params(&engine)?,
        n_predict,
        stop: Vec::new(),
        ignore_eos: false,
        special: args.special,
        n_probs: 0,
        grammar,
    };

    let speculator = args.speculation.open(&engine, &args.model)?;
    let mut speculation = speculator.map(|s| s.start(n_ctx)).transpose()?;
    let mut session = engine.session(n_ctx)?;
    let mut generation = Generation::new(tokenizer, limits, &prompt_tokens);

    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{prompt}")?;
    stdout.flush()?;

    let prompt_start = Instant::now();
    let logits = session.eval(&prompt_tokens)?;
    let prompt_time = prompt_start.elapsed();

    let generation_start = Instant::now();
    let finished = speculative::decode(
        &mut session,
        &mut generation,
        speculation.as_mut(),
        logits,
        args.context_shift.then_some(keep),
        |step| -> Result<()> {
            write!(stdout, "{}", step.text)?;
            Ok(stdout.flush()?)
        },
    )?;
    if let Some(Finish::Failed(message)) = finished {
        bail!("{message}");
    }
    writeln!(stdout)?;
    let generation_time = generation_start.elapsed();
    let generated = generation.generated();

    if !args.log_disable {
        let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        eprintln!(
            "llmfile: prompt {} tokens in {:.0} ms ({:.1} tokens/s), generated {} tokens in {:.0} ms ({:.1} tokens/s), {} threads, kernels: {}",
            prompt_tokens.len(),
            prompt_time.as_secs_f64() * 1e3,
            rate(prompt_tokens.len(), prompt_time.as_secs_f64()),
            generated,
            generation_time.as_secs_f64() * 1e3,
            rate(generated, generation_time.as_secs_f64()),
            rayon::current_num_threads(),
            engine.model().backend(),
        );
        if let Some(speculation) = &speculation {
            eprintln!("llmfile: {}", speculation.describe());
        }
    }
    Ok(())
}
