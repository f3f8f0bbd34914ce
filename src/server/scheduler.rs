//! The one thread that runs the model: it owns the slots, takes jobs in arrival order, and
//! advances every busy slot one token at a time so that parallel requests share the CPU.

use super::stop::StopMatcher;
use crate::sampling::{Sampler, SamplingParams};
use crate::session::Session;
use crate::tokenizer::{Decoder, Tokenizer};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

/// What the HTTP side can see of the scheduler without asking it.
#[derive(Default)]
pub struct Status {
    pub busy: AtomicUsize,
    pub queued: AtomicUsize,
}

pub struct Job {
    pub prompt: Vec<u32>,
    pub settings: Settings,
    pub events: Sender<Event>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub sampling: SamplingParams,
    /// Already capped to what the context leaves after the prompt.
    pub n_predict: usize,
    pub stop: Vec<String>,
    pub n_probs: usize,
    pub cache_prompt: bool,
    pub slot_id: Option<usize>,
    /// Generate through end-of-generation tokens (their text is empty), as llama.cpp's field.
    pub ignore_eos: bool,
}

pub enum Event {
    Token {
        text: String,
        probs: Option<TokenProbs>,
    },
    Done(Summary),
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenProbs {
    pub content: String,
    pub probs: Vec<Candidate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub tok_str: String,
    pub prob: f32,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub slot_id: usize,
    pub tokens_evaluated: usize,
    pub tokens_cached: usize,
    pub tokens_predicted: usize,
    pub stopped_eos: bool,
    pub stopped_word: bool,
    pub stopped_limit: bool,
    pub stopping_word: String,
    pub prompt_ms: f64,
    pub predicted_ms: f64,
}

struct Slot<'a> {
    session: Session<'a>,
    task: Option<Task<'a>>,
    /// When the slot last finished a task: among slots that share no prefix with a new prompt,
    /// the least recently used one is overwritten.
    last_used: Instant,
}

struct Task<'a> {
    job: Job,
    sampler: Sampler,
    decoder: Decoder<'a>,
    matcher: StopMatcher,
    logits: Option<Vec<f32>>,
    summary: Summary,
    generation_start: Instant,
}

pub fn run<'a>(
    sessions: Vec<Session<'a>>,
    tokenizer: &'a Tokenizer,
    jobs: Receiver<Job>,
    status: &Status,
) {
    let mut slots: Vec<Slot> = sessions
        .into_iter()
        .map(|session| Slot {
            session,
            task: None,
            last_used: Instant::now(),
        })
        .collect();
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        let idle = slots.iter().all(|slot| slot.task.is_none());
        if idle && pending.is_empty() {
            match jobs.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        pending.extend(jobs.try_iter());
        assign(&mut slots, &mut pending, tokenizer, status);
        for (slot_id, slot) in slots.iter_mut().enumerate() {
            if slot.task.is_some() && !step(slot, slot_id, tokenizer) {
                slot.task = None;
                slot.last_used = Instant::now();
                status.busy.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Starts waiting jobs on free slots: the slot a job asks for, else the one whose cache shares
/// the longest prefix with its prompt.
fn assign<'a>(
    slots: &mut [Slot<'a>],
    pending: &mut VecDeque<Job>,
    tokenizer: &'a Tokenizer,
    status: &Status,
) {
    let mut waiting = VecDeque::new();
    while let Some(job) = pending.pop_front() {
        let free = |slot: &&mut Slot| slot.task.is_none();
        let chosen = match job.settings.slot_id {
            Some(id) => slots.get_mut(id).filter(|slot| slot.task.is_none()),
            None => slots.iter_mut().filter(free).max_by_key(|slot| {
                let shared = if job.settings.cache_prompt {
                    common_prefix(slot.session.tokens(), &job.prompt)
                } else {
                    0
                };
                (shared, std::cmp::Reverse(slot.last_used))
            }),
        };
        match chosen {
            Some(slot) => {
                status.queued.fetch_sub(1, Ordering::SeqCst);
                status.busy.fetch_add(1, Ordering::SeqCst);
                slot.task = Some(Task::new(job, tokenizer));
            }
            None => waiting.push_back(job),
        }
    }
    *pending = waiting;
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<'a> Task<'a> {
    fn new(job: Job, tokenizer: &'a Tokenizer) -> Task<'a> {
        let mut sampler = Sampler::new(job.settings.sampling.clone());
        job.prompt.iter().for_each(|&t| sampler.accept(t));
        Task {
            matcher: StopMatcher::new(job.settings.stop.iter().cloned()),
            decoder: tokenizer.decoder(false),
            sampler,
            logits: None,
            summary: Summary {
                tokens_evaluated: job.prompt.len(),
                ..Summary::default()
            },
            generation_start: Instant::now(),
            job,
        }
    }
}

enum Progress {
    Continues,
    Finished,
    ClientGone,
    Failed(String),
}

/// Advances a slot by its prompt or by one token; false when its task is over.
fn step(slot: &mut Slot, slot_id: usize, tokenizer: &Tokenizer) -> bool {
    let Some(mut task) = slot.task.take() else {
        return false;
    };
    match advance(&mut slot.session, &mut task, slot_id, tokenizer) {
        Progress::Continues => {
            slot.task = Some(task);
            true
        }
        Progress::Finished => {
            finish(task);
            false
        }
        Progress::ClientGone => false,
        Progress::Failed(message) => {
            let _ = task.job.events.send(Event::Failed(message));
            false
        }
    }
}

fn advance(
    session: &mut Session,
    task: &mut Task,
    slot_id: usize,
    tokenizer: &Tokenizer,
) -> Progress {
    let Some(logits) = task.logits.take() else {
        return evaluate_prompt(session, task, slot_id);
    };
    let settings = &task.job.settings;
    let summary = &mut task.summary;
    if summary.tokens_predicted == settings.n_predict {
        summary.stopped_limit = true;
        return Progress::Finished;
    }
    let token = task.sampler.sample(&logits);
    summary.tokens_predicted += 1;
    if !settings.ignore_eos && tokenizer.is_end_of_generation(token) {
        summary.stopped_eos = true;
        return Progress::Finished;
    }
    task.sampler.accept(token);
    let probs =
        (settings.n_probs > 0).then(|| top_probs(&logits, token, settings.n_probs, tokenizer));
    let released = task.matcher.push(&task.decoder.push(token));
    // An event goes out for every token, even one whose text is held back, so that a client
    // that has left is noticed at the next token.
    let event = Event::Token {
        text: released.text,
        probs,
    };
    if task.job.events.send(event).is_err() {
        return Progress::ClientGone;
    }
    if let Some(word) = released.stop {
        summary.stopped_word = true;
        summary.stopping_word = word;
        return Progress::Finished;
    }
    if summary.tokens_predicted == settings.n_predict {
        summary.stopped_limit = true;
        return Progress::Finished;
    }
    match session.eval(&[token]) {
        Ok(next) => {
            task.logits = Some(next);
            Progress::Continues
        }
        Err(error) => Progress::Failed(error.to_string()),
    }
}

fn evaluate_prompt(session: &mut Session, task: &mut Task, slot_id: usize) -> Progress {
    let start = Instant::now();
    let prompt = &task.job.prompt;
    let remaining = if task.job.settings.cache_prompt {
        session.reuse_prefix(prompt)
    } else {
        session.truncate(0);
        prompt
    };
    task.summary.slot_id = slot_id;
    task.summary.tokens_cached = prompt.len() - remaining.len();
    match session.eval(remaining) {
        Ok(logits) => {
            task.summary.prompt_ms = start.elapsed().as_secs_f64() * 1e3;
            task.logits = Some(logits);
            task.generation_start = Instant::now();
            Progress::Continues
        }
        Err(error) => Progress::Failed(error.to_string()),
    }
}

/// Sends what was held back (text that turned out to be no stop string, an unfinished UTF-8
/// character) and the summary.
fn finish(mut task: Task) {
    if !task.summary.stopped_word {
        let rest = task.matcher.finish() + &task.decoder.finish();
        if !rest.is_empty() {
            let _ = task.job.events.send(Event::Token {
                text: rest,
                probs: None,
            });
        }
    }
    task.summary.predicted_ms = task.generation_start.elapsed().as_secs_f64() * 1e3;
    let _ = task.job.events.send(Event::Done(task.summary));
}

/// The `n` most likely tokens after the softmax of the raw logits, and the chosen token's text.
fn top_probs(logits: &[f32], chosen: u32, n: usize, tokenizer: &Tokenizer) -> TokenProbs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(order.len());
    order.select_nth_unstable_by(n.saturating_sub(1), |&a, &b| {
        logits[b as usize].total_cmp(&logits[a as usize])
    });
    order.truncate(n);
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let piece = |id: u32| String::from_utf8_lossy(tokenizer.token_to_piece(id, true)).into_owned();
    TokenProbs {
        content: piece(chosen),
        probs: order
            .into_iter()
            .map(|id| Candidate {
                tok_str: piece(id),
                prob: (logits[id as usize] - max).exp() / sum,
            })
            .collect(),
    }
}
