//! `llmfile --chat`: a conversation in the terminal, in the model's own chat format. Each turn
//! re-renders the whole conversation and evaluates only what the KV cache does not yet hold.

use super::{context_size, escapes, load_model, LoadedFile, RunArgs};
use crate::chat_format::{Message, Role};
use crate::sampling::Sampler;
use crate::server::stop::StopMatcher;
use crate::server::ModelInfo;
use crate::session::Session;
use anyhow::{Context, Result};
use std::io::{BufRead, Write};

pub(super) fn run(args: RunArgs) -> Result<()> {
    let file = LoadedFile::open(&args.model, false)?;
    let (gguf, model, tokenizer) = load_model(&file, &args.model)?;
    let info = ModelInfo::from_gguf(&gguf).with_context(|| file.path.clone())?;
    let format = &info.format;
    let n_ctx = context_size(args.ctx_size, model.hparams.context_length);
    let mut session = Session::new(&model, n_ctx)?;

    let system: Vec<Message> = args
        .prompt
        .iter()
        .map(|text| Message {
            role: Role::System,
            content: if args.escape {
                escapes::process(text)
            } else {
                text.clone()
            },
        })
        .collect();
    let mut messages = system.clone();

    eprintln!(
        "llmfile: chatting with {} ({} format). /clear starts over, /exit quits.",
        info.name,
        format.name()
    );
    let mut stdout = std::io::stdout().lock();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let Some(line) = lines.next().transpose()? else {
            writeln!(stdout)?;
            return Ok(());
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/clear" => {
                messages = system.clone();
                session.truncate(0);
                continue;
            }
            _ => {}
        }
        messages.push(Message {
            role: Role::User,
            content: line,
        });
        let prompt = tokenizer.encode(&format.render(&messages), true, true)?;
        if prompt.len() >= n_ctx {
            messages.pop();
            eprintln!(
                "llmfile: the conversation no longer fits the context of {n_ctx} tokens; /clear starts over (or use -c to enlarge it)"
            );
            continue;
        }
        let mut sampler = Sampler::new((&args.sampling).into());
        prompt.iter().for_each(|&t| sampler.accept(t));
        let remaining = session.reuse_prefix(&prompt);
        let mut logits = session.eval(remaining)?;

        let room = n_ctx - prompt.len();
        let n_predict = usize::try_from(args.n_predict).map_or(room, |n| n.min(room));
        let mut decoder = tokenizer.decoder(false);
        let mut matcher = StopMatcher::new(format.stop_strings());
        let mut reply = String::new();
        let mut stopped_by_word = false;
        for generated in 1..=n_predict {
            let token = sampler.sample(&logits);
            if tokenizer.is_end_of_generation(token) {
                break;
            }
            sampler.accept(token);
            let released = matcher.push(&decoder.push(token));
            write!(stdout, "{}", released.text)?;
            stdout.flush()?;
            reply.push_str(&released.text);
            if released.stop.is_some() {
                stopped_by_word = true;
                break;
            }
            if generated < n_predict {
                logits = session.eval(&[token])?;
            }
        }
        if !stopped_by_word {
            let rest = matcher.finish() + &decoder.finish();
            write!(stdout, "{rest}")?;
            reply.push_str(&rest);
        }
        writeln!(stdout)?;
        messages.push(Message {
            role: Role::Assistant,
            content: reply,
        });
    }
}
