//! `llmfile --chat`: a conversation in the terminal, in the model's own chat format. Each turn
//! re-renders the whole conversation and evaluates only what the KV cache does not yet hold.

use super::{context_size, escapes, open_engine, RunArgs};
use crate::chat_format::{Message, Role};
use crate::generation::{Finish, Generation, Limits};
use anyhow::{bail, Result};
use std::io::{BufRead, Write};

pub(super) fn run(args: RunArgs) -> Result<()> {
    let grammar = args.sampling.grammar()?;
    let engine = open_engine(&args.model, false)?;
    let (tokenizer, info) = (engine.tokenizer(), engine.info());
    let format = &info.format;
    let n_ctx = context_size(args.ctx_size, engine.model().hparams.context_length);
    let mut session = engine.session(n_ctx)?;

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
        let room = n_ctx - prompt.len();
        let limits = Limits {
            sampling: (&args.sampling).into(),
            n_predict: usize::try_from(args.n_predict).map_or(room, |n| n.min(room)),
            stop: format.stop_strings(),
            ignore_eos: false,
            special: false,
            n_probs: 0,
            grammar: grammar.clone(),
        };
        let mut generation = Generation::new(tokenizer, limits, &prompt);
        let remaining = session.reuse_prefix(&prompt);
        let mut logits = session.eval(remaining)?;
        let mut reply = String::new();
        loop {
            let step = generation.step(&logits);
            write!(stdout, "{}", step.text)?;
            stdout.flush()?;
            reply.push_str(&step.text);
            match (step.finished, step.token) {
                (None, Some(token)) => logits = session.eval(&[token])?,
                (Some(Finish::Failed(message)), _) => bail!("{message}"),
                _ => break,
            }
        }
        writeln!(stdout)?;
        messages.push(Message {
            role: Role::Assistant,
            content: reply,
        });
    }
}
