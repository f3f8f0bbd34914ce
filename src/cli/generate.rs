//! `llmfile -p PROMPT`: one completion streamed to stdout, timings on stderr.

use super::{context_size, escapes, load_model, LoadedFile, RunArgs};
use crate::sampling::Sampler;
use crate::session::Session;
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

    let file = LoadedFile::open(&args.model, args.log_disable)?;
    file.map.fault_in(args.log_disable);
    let (_gguf, model, tokenizer) = load_model(&file, &args.model)?;
    let n_ctx = context_size(args.ctx_size, model.hparams.context_length);
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
    let budget = n_ctx - prompt_tokens.len();
    let n_predict = match usize::try_from(args.n_predict) {
        Ok(n) => n.min(budget),
        Err(_) => budget,
    };

    let mut session = Session::new(&model, n_ctx)?;
    let mut sampler = Sampler::new((&args.sampling).into());
    prompt_tokens.iter().for_each(|&t| sampler.accept(t));

    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{prompt}")?;
    stdout.flush()?;

    let prompt_start = Instant::now();
    let mut logits = session.eval(&prompt_tokens)?;
    let prompt_time = prompt_start.elapsed();

    let generation_start = Instant::now();
    let mut decoder = tokenizer.decoder(args.special);
    let mut generated = 0;
    while generated < n_predict {
        let token = sampler.sample(&logits);
        generated += 1;
        if tokenizer.is_end_of_generation(token) {
            break;
        }
        sampler.accept(token);
        write!(stdout, "{}", decoder.push(token))?;
        stdout.flush()?;
        if generated == n_predict {
            break;
        }
        logits = session.eval(&[token])?;
    }
    write!(stdout, "{}", decoder.finish())?;
    writeln!(stdout)?;
    let generation_time = generation_start.elapsed();

    if !args.log_disable {
        let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        eprintln!(
            "llmfile: prompt {} tokens in {:.0} ms ({:.1} tokens/s), generated {} tokens in {:.0} ms ({:.1} tokens/s), {} threads, {} kernels",
            prompt_tokens.len(),
            prompt_time.as_secs_f64() * 1e3,
            rate(prompt_tokens.len(), prompt_time.as_secs_f64()),
            generated,
            generation_time.as_secs_f64() * 1e3,
            rate(generated, generation_time.as_secs_f64()),
            rayon::current_num_threads(),
            model.kernels().isa(),
        );
    }
    Ok(())
}
