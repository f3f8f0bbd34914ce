//! `llmfile --chat`: a conversation in the terminal, in the model's own chat template. Each turn
//! re-renders the whole conversation and evaluates only what the KV cache does not yet hold;
//! when it outgrows the context, its oldest turns are left out.

use super::{context_size, escapes, open_run_engine, RunArgs};
use crate::chat_format::{Message, Role};
use crate::chat_template::DEFAULT_RESERVE;
use crate::generation::{Finish, Generation, Limits};
use crate::speculative;
use anyhow::{bail, Result};
use std::io::{BufRead, Write};

pub(super) fn run(args: RunArgs) -> Result<()> {
    let grammar = args.sampling.grammar()?;
    let engine = open_run_engine(&args, false)?;
    let (tokenizer, info) = (engine.tokenizer(), engine.info());
    let template = &info.template;
    let n_ctx = context_size(args.ctx_size, engine.model().hparams.context_length);
    let mut session = engine.session(n_ctx)?;
    let speculator = args.speculation.open(&engine, &args.model)?;

    let system: Vec<Message> = args
        .system_prompt
        .iter()
        .chain(&args.prompt)
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
        "llmfile: chatting with {} ({} template). /clear starts over, /exit quits.",
        info.name,
        template.format().name()
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
        let reserve = usize::try_from(args.n_predict).unwrap_or(DEFAULT_RESERVE);
        let fitted = match template.fit(tokenizer, &messages, n_ctx, reserve) {
            Ok(fitted) => fitted,
            Err(error) => {
                messages.pop();
                eprintln!(
                    "llmfile: {error}; /clear starts over (or use -c to enlarge the context)"
                );
                continue;
            }
        };
        if fitted.dropped_turns > 0 {
            eprintln!(
                "llmfile: ({} earlier turns no longer fit the context of {n_ctx} tokens and are left out)",
                fitted.dropped_turns
            );
        }
        if args.verbose_prompt {
            eprintln!("llmfile: prompt:\n{}", fitted.text);
        }
        let prompt = fitted.tokens;
        let room = n_ctx - prompt.len();
        let limits = Limits {
            sampling: args.sampling.params(&engine)?,
            n_predict: usize::try_from(args.n_predict).map_or(room, |n| n.min(room)),
            stop: template.stop_strings(),
            ignore_eos: false,
            special: false,
            n_probs: 0,
            grammar: grammar.clone(),
        };
        let mut generation = Generation::new(tokenizer, limits, &prompt);
        let remaining = session.reuse_prefix(&prompt);
        let logits = session.eval(remaining)?;
        let mut speculation = speculator.as_ref().map(|s| s.start(n_ctx)).transpose()?;
        let mut reply = String::new();
        let finished = speculative::decode(
            &mut session,
            &mut generation,
            speculation.as_mut(),
            logits,
            None,
            |step| -> Result<()> {
                write!(stdout, "{}", step.text)?;
                stdout.flush()?;
                reply.push_str(&step.text);
                Ok(())
            },
        )?;
        if let Some(Finish::Failed(message)) = finished {
            bail!("{message}");
        }
        writeln!(stdout)?;
        messages.push(Message {
            role: Role::Assistant,
            content: reply,
        });
    }
}
