//! The one thread that runs the model. It owns the slots (a KV cache each), takes jobs in
//! arrival order, and advances every busy slot at once: each step is one forward pass holding
//! the next token of every generating slot and, up to the step's token budget, the next chunk
//! of the prompts still being read. The weights are read once per pass whatever the number of
//! slots, so parallel requests share that cost, and a long prompt holds the others back by one
//! chunk, not by itself.

use super::metrics::Metrics;
use crate::engine::Engine;
use crate::generation::{Finish, Generation, Limits};
use crate::grammar::Grammar;
use crate::sampling::SamplingParams;
use crate::session::{Part, Session, SessionError};
use crate::speculative::{self, guess_room, Speculation};
use serde::Serialize;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use crate::generation::TokenProbs;

/// What the HTTP side can see of the scheduler without asking it.
#[derive(Default)]
pub struct Status {
    pub busy: AtomicUsize,
    pub queued: AtomicUsize,
    /// The scheduler has ended, which during serving means it failed outside the model: no
    /// request can be served any more.
    pub stopped: AtomicBool,
    /// Each slot as `GET /slots` shows it, updated every step.
    pub slots: Mutex<Vec<SlotView>>,
    /// What `GET /metrics` counts.
    pub metrics: Metrics,
}

impl Status {
    /// The status of a server whose slots, one per session, have served nothing yet: what
    /// `GET /slots` shows from the moment the address is printed, before the scheduler's first
    /// step publishes anything.
    pub fn new(sessions: &[Session]) -> Status {
        let views = sessions
            .iter()
            .enumerate()
            .map(|(id, session)| SlotView::idle(id, session.n_ctx()))
            .collect();
        Status {
            slots: Mutex::new(views),
            ..Status::default()
        }
    }
}

impl SlotView {
    fn idle(id: usize, n_ctx: usize) -> SlotView {
        SlotView {
            id,
            n_ctx,
            ..SlotView::default()
        }
    }
}

/// One slot, in llama-server's `/slots` shape.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SlotView {
    pub id: usize,
    pub n_ctx: usize,
    pub is_processing: bool,
    /// Tokens of the current (or last) prompt.
    pub n_prompt_tokens: usize,
    /// Of those, already evaluated (cached ones included).
    pub n_prompt_tokens_processed: usize,
    /// Tokens generated so far for the current (or last) request.
    pub n_decoded: usize,
    /// Tokens the slot's KV cache holds.
    pub n_past: usize,
}

/// Marks the scheduler stopped however it ends, a panic included. Its jobs' channels close as
/// the panic unwinds, which ends every waiting request with an error.
struct StoppedOnDrop<'s>(&'s Status);

impl Drop for StoppedOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
    }
}

pub struct Job {
    pub prompt: Vec<u32>,
    pub settings: Settings,
    pub events: Sender<Event>,
    /// Set by the HTTP side when its client has gone: the job is dropped at the next step,
    /// queued, reading its prompt or generating.
    pub cancelled: Arc<AtomicBool>,
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
    /// Never end at an end-of-generation token: they are banned, as llama.cpp's field does.
    pub ignore_eos: bool,
    pub grammar: Option<Arc<Grammar>>,
    /// With `--context-shift`: the prompt tokens to keep when the context fills up (the rest
    /// of the cache is halved and generation goes on); None stops at a full context.
    pub keep_on_shift: Option<usize>,
    /// Guess tokens ahead and check them in one pass (`--spec-type`, `speculative.*`).
    pub speculation: Option<speculative::Params>,
}

impl Settings {
    fn limits(&self) -> Limits {
        Limits {
            sampling: self.sampling.clone(),
            n_predict: self.n_predict,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            special: false,
            n_probs: self.n_probs,
            grammar: self.grammar.clone(),
        }
    }
}

pub enum Event {
    Token {
        text: String,
        probs: Option<TokenProbs>,
        /// The sampled token (llama-server's `return_tokens`); None when the limit allowed
        /// none and only held-back text remains.
        id: Option<u32>,
    },
    Done(Summary),
    Failed(String),
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
    /// Tokens guessed and taken, when the request speculated.
    pub speculation: Option<speculative::Stats>,
}

impl Summary {
    /// llama-server's `stop_type`.
    pub fn stop_type(&self) -> &'static str {
        if self.stopped_eos {
            "eos"
        } else if self.stopped_word {
            "word"
        } else if self.stopped_limit {
            "limit"
        } else {
            "none"
        }
    }
}

/// The forward pass the scheduler runs: [`Session::eval_batch`], or in tests one that fails.
pub type Forward = dyn Fn(&mut [Part]) -> Result<Vec<f32>, SessionError> + Sync;

struct Slot<'e> {
    session: Session,
    /// The draft model's cache, lent to the slot's task while it speculates with it.
    draft: Option<Session>,
    task: Option<Task<'e>>,
    /// When the slot last finished a task: among slots that share no prefix with a new prompt,
    /// the least recently used one is overwritten.
    last_used: Instant,
    view: SlotView,
}

struct Task<'e> {
    job: Job,
    generation: Generation<'e>,
    speculation: Option<Speculation>,
    /// What the slot evaluates next.
    next: Next,
    summary: Summary,
    prompt_start: Instant,
    generation_start: Instant,
}

#[derive(Clone, Copy)]
enum Next {
    /// The prompt from this index on.
    Prompt(usize),
    /// The token the last step sampled.
    Token(u32),
}

/// One slot's share of a step: which tokens, and how many of the last ones get their logits
/// back. A generating slot's tokens are the one it sampled and its guesses, each with logits.
struct Share {
    slot: usize,
    tokens: Vec<u32>,
    logit_rows: usize,
}

/// Serves jobs on one slot per session until every sender of `jobs` is gone; each step is
/// one forward pass of at most `step_tokens` tokens.
/// `drafts`: the draft model's sessions, one per slot, or none without a draft model.
pub fn run(
    engine: &Engine,
    sessions: Vec<Session>,
    drafts: Vec<Session>,
    step_tokens: usize,
    jobs: Receiver<Job>,
    status: &Status,
) {
    run_with(
        engine,
        sessions,
        drafts,
        step_tokens,
        jobs,
        status,
        &Session::eval_batch,
    )
}

fn run_with(
    engine: &Engine,
    sessions: Vec<Session>,
    drafts: Vec<Session>,
    step_tokens: usize,
    jobs: Receiver<Job>,
    status: &Status,
    forward: &Forward,
) {
    let _stopped = StoppedOnDrop(status);
    let mut drafts = drafts.into_iter();
    let mut slots: Vec<Slot> = sessions
        .into_iter()
        .enumerate()
        .map(|(id, session)| Slot {
            view: SlotView::idle(id, session.n_ctx()),
            session,
            draft: drafts.next(),
            task: None,
            last_used: Instant::now(),
        })
        .collect();
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        let idle = slots.iter().all(|slot| slot.task.is_none());
        if idle && pending.is_empty() {
            publish(&slots, status);
            match jobs.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        pending.extend(jobs.try_iter());
        pending.retain(|job| {
            let wanted = !job.cancelled.load(Ordering::SeqCst);
            if !wanted {
                status.queued.fetch_sub(1, Ordering::SeqCst);
            }
            wanted
        });
        assign(&mut slots, &mut pending, engine, status);
        for slot in &mut slots {
            if slot
                .task
                .as_ref()
                .is_some_and(|task| task.job.cancelled.load(Ordering::SeqCst))
            {
                end_task(slot, status);
            }
        }
        let shares = plan_step(&mut slots, step_tokens);
        if !shares.is_empty() {
            step(&mut slots, &shares, forward, status);
        }
        publish(&slots, status);
    }
}

/// Starts waiting jobs on free slots: the slot a job asks for, else the one whose cache shares
/// the longest prefix with its prompt.
fn assign<'e>(
    slots: &mut [Slot<'e>],
    pending: &mut VecDeque<Job>,
    engine: &'e Engine,
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
                start_task(slot, job, engine);
            }
            None => waiting.push_back(job),
        }
    }
    *pending = waiting;
}

fn start_task<'e>(slot: &mut Slot<'e>, job: Job, engine: &'e Engine) {
    let cached = if job.settings.cache_prompt {
        let remaining = slot.session.reuse_prefix(&job.prompt).len();
        job.prompt.len() - remaining
    } else {
        slot.session.truncate(0);
        0
    };
    slot.view.is_processing = true;
    slot.view.n_prompt_tokens = job.prompt.len();
    slot.view.n_decoded = 0;
    let speculation = job.settings.speculation.clone().and_then(|params| {
        let draft = match params.kind {
            speculative::Kind::DraftModel => slot.draft.take(),
            speculative::Kind::NGramSimple => None,
        };
        Speculation::new(params, draft).ok()
    });
    slot.task = Some(Task {
        generation: Generation::new(engine.tokenizer(), job.settings.limits(), &job.prompt),
        speculation,
        next: Next::Prompt(cached),
        summary: Summary {
            slot_id: slot.view.id,
            tokens_evaluated: job.prompt.len(),
            tokens_cached: cached,
            ..Summary::default()
        },
        prompt_start: Instant::now(),
        generation_start: Instant::now(),
        job,
    });
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The step's shares: first one token for every generating slot, then prompt chunks while the
/// budget lasts (at least one token, so a prompt always moves), the prompts with the least
/// left first: a short request that arrives while a long prompt is read gets its first token
/// from the next step, a short one, instead of after the whole long prompt.
fn plan_step(slots: &mut [Slot], step_tokens: usize) -> Vec<Share> {
    let mut shares = Vec::new();
    let mut reading = Vec::new();
    let mut budget = step_tokens;
    for (index, slot) in slots.iter_mut().enumerate() {
        if let Some(Task {
            next: Next::Token(_),
            job,
            ..
        }) = &slot.task
        {
            let (len, n_ctx) = (slot.session.tokens().len(), slot.session.n_ctx());
            if let (true, Some(keep)) = (len == n_ctx, job.settings.keep_on_shift) {
                slot.session.make_room(keep);
            }
        }
        match &mut slot.task {
            Some(Task {
                next: Next::Token(token),
                speculation,
                generation,
                ..
            }) => {
                let mut tokens = vec![*token];
                if let Some(speculation) = speculation {
                    let room = guess_room(&slot.session, generation).min(budget.saturating_sub(1));
                    let mut history = slot.session.tokens().to_vec();
                    history.push(*token);
                    tokens.extend(speculation.draft(&history, room));
                }
                budget = budget.saturating_sub(tokens.len());
                shares.push(Share {
                    slot: index,
                    logit_rows: tokens.len(),
                    tokens,
                })
            }
            Some(Task {
                next: Next::Prompt(from),
                job,
                ..
            }) => reading.push((job.prompt.len() - *from, index)),
            None => {}
        }
    }
    reading.sort_unstable();
    let mut finishes_a_prompt = false;
    for (left, index) in reading {
        if budget == 0 && !shares.is_empty() {
            break;
        }
        // A step that completes a prompt leaves the chunk of a longer one to the next step,
        // so the new request's first token waits for a short pass, not a full chunk.
        if finishes_a_prompt && left > budget {
            break;
        }
        let Some(Task {
            next: Next::Prompt(from),
            job,
            ..
        }) = &slots[index].task
        else {
            unreachable!("a slot reading its prompt");
        };
        let take = left.min(budget.max(1));
        budget = budget.saturating_sub(take);
        finishes_a_prompt |= take == left;
        shares.push(Share {
            slot: index,
            tokens: job.prompt[*from..from + take].to_vec(),
            logit_rows: usize::from(take == left),
        });
    }
    shares
}

/// Runs one forward pass over the shares and hands each slot its logits. A panic inside the
/// model fails the requests of this pass only: the model itself is read-only, so only these
/// slots' caches are suspect, and they are emptied.
fn step(slots: &mut [Slot], shares: &[Share], forward: &Forward, status: &Status) {
    let busy = slots.iter().filter(|slot| slot.task.is_some()).count();
    status.metrics.decoded(busy);
    let n_vocab = slots[0].session.engine().model().hparams.n_vocab;
    let mut sessions: Vec<Option<&mut Session>> = slots
        .iter_mut()
        .map(|slot| Some(&mut slot.session))
        .collect();
    let mut parts: Vec<Part> = shares
        .iter()
        .map(|share| Part {
            session: sessions[share.slot]
                .take()
                .expect("a slot has one share per step"),
            tokens: &share.tokens,
            logits_from: share.tokens.len() - share.logit_rows,
        })
        .collect();
    let outcome = catch_unwind(AssertUnwindSafe(|| forward(&mut parts)));
    drop(parts);
    let logits = match outcome {
        Ok(Ok(logits)) => logits,
        Ok(Err(error)) => {
            fail_all(slots, shares, &error.to_string(), status);
            return;
        }
        Err(_) => {
            eprintln!("llmfile: the model failed during a step; its requests get an error and the server goes on");
            fail_all(
                slots,
                shares,
                "the model failed on this request (see the server's log); other requests go on",
                status,
            );
            return;
        }
    };
    let mut rows = logits.as_slice();
    let mut endings = Vec::new();
    for share in shares {
        let slot = &mut slots[share.slot];
        let task = slot.task.as_mut().expect("a share belongs to a busy slot");
        match task.next {
            Next::Prompt(from) => {
                let next = from + share.tokens.len();
                task.next = Next::Prompt(next);
                slot.view.n_prompt_tokens_processed = next;
            }
            Next::Token(_) => {}
        }
        if share.logit_rows == 0 {
            continue;
        }
        let (logits, rest) = rows.split_at(share.logit_rows * n_vocab);
        rows = rest;
        let guesses = match task.next {
            Next::Prompt(_) => {
                let prompt_time = task.prompt_start.elapsed();
                task.summary.prompt_ms = prompt_time.as_secs_f64() * 1e3;
                let evaluated = task.summary.tokens_evaluated - task.summary.tokens_cached;
                status.metrics.prompt_read(evaluated, prompt_time);
                task.generation_start = Instant::now();
                &[][..]
            }
            Next::Token(_) => &share.tokens[1..],
        };
        let (progress, taken) = advance(task, logits, guesses);
        let evaluated = slot.session.tokens().len();
        slot.session.truncate(evaluated - (guesses.len() - taken));
        slot.view.n_decoded = task.generation.generated();
        match progress {
            Progress::Continues => {}
            Progress::ClientGone => {
                end_task(slot, status);
            }
            Progress::Finished(summary) => {
                endings.extend(end_task(slot, status).map(|task| (task, Event::Done(summary))));
            }
            Progress::Failed(message) => {
                endings.extend(end_task(slot, status).map(|task| (task, Event::Failed(message))));
            }
        }
    }
    // The slots are free and their views current before the clients hear they are done, so
    // that what a client asks next (`/health`, `/slots`, another request) sees its request over.
    publish(slots, status);
    for (task, event) in endings {
        let _ = task.job.events.send(event);
    }
}

enum Progress {
    Continues,
    Finished(Summary),
    Failed(String),
    ClientGone,
}

/// Samples the slot's next tokens from `logits` (one row, or one after the last token and
/// after each of its `guesses`) and sends their text; returns how many guesses were taken.
fn advance(task: &mut Task, logits: &[f32], guesses: &[u32]) -> (Progress, usize) {
    let (steps, taken) = task.generation.step_drafted(logits, guesses);
    if let Some(speculation) = &mut task.speculation {
        speculation.accepted(taken);
    }
    task.summary.tokens_predicted = task.generation.generated();
    let mut last = None;
    for step in steps {
        // An event goes out for every token, even one whose text is held back, so that a
        // client that has left is noticed at the next token.
        let sent = step.token.is_none() && step.text.is_empty()
            || task
                .job
                .events
                .send(Event::Token {
                    text: step.text,
                    probs: step.probs,
                    id: step.token,
                })
                .is_ok();
        if !sent {
            return (Progress::ClientGone, taken);
        }
        last = Some((step.finished, step.token));
    }
    let finished = match last.expect("a step per row read") {
        (None, Some(token)) => {
            task.next = Next::Token(token);
            return (Progress::Continues, taken);
        }
        (finished, _) => finished,
    };
    (finish(task, finished), taken)
}

/// The summary of a generation that ended, or why it failed.
fn finish(task: &mut Task, finished: Option<Finish>) -> Progress {
    let summary = &mut task.summary;
    match finished {
        Some(Finish::StopString(word)) => {
            summary.stopped_word = true;
            summary.stopping_word = word;
        }
        Some(Finish::EndOfGeneration) => summary.stopped_eos = true,
        Some(Finish::Limit) | None => summary.stopped_limit = true,
        Some(Finish::Failed(message)) => return Progress::Failed(message),
    }
    summary.predicted_ms = task.generation_start.elapsed().as_secs_f64() * 1e3;
    summary.speculation = task.speculation.as_ref().map(|s| s.stats);
    Progress::Finished(summary.clone())
}

/// Frees the slot, returning the task it held, and counts the tokens it generated.
fn end_task<'e>(slot: &mut Slot<'e>, status: &Status) -> Option<Task<'e>> {
    let mut task = slot.task.take()?;
    if let Some(draft) = task.speculation.take().and_then(Speculation::into_draft) {
        slot.draft = Some(draft);
    }
    let generated = task.generation.generated();
    if generated > 0 {
        status
            .metrics
            .generated(generated, task.generation_start.elapsed());
    }
    slot.last_used = Instant::now();
    slot.view.is_processing = false;
    status.busy.fetch_sub(1, Ordering::SeqCst);
    Some(task)
}

fn fail_all(slots: &mut [Slot], shares: &[Share], message: &str, status: &Status) {
    for share in shares {
        let slot = &mut slots[share.slot];
        slot.session.truncate(0);
        if let Some(task) = end_task(slot, status) {
            let _ = task.job.events.send(Event::Failed(message.to_string()));
        }
    }
}

fn publish(slots: &[Slot], status: &Status) {
    let views = slots
        .iter()
        .map(|slot| SlotView {
            n_past: slot.session.tokens().len(),
            ..slot.view.clone()
        })
        .collect();
    if let Ok(mut shown) = status.slots.lock() {
        *shown = views;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_models::synthetic_engine;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_scheduler_that_panics_is_marked_stopped() {
        let status = Status::default();
        let ended = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _stopped = StoppedOnDrop(&status);
                    assert!(!status.stopped.load(Ordering::SeqCst));
                    panic!("the model failed on purpose");
                })
                .join()
        });
        assert!(ended.is_err());
        assert!(status.stopped.load(Ordering::SeqCst));
    }

    fn greedy(n_predict: usize) -> Settings {
        Settings {
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            n_predict,
            stop: Vec::new(),
            n_probs: 0,
            cache_prompt: true,
            slot_id: None,
            ignore_eos: true,
            grammar: None,
            keep_on_shift: None,
            speculation: None,
        }
    }

    /// Sends a job and returns its events' receiver and its cancel flag.
    fn submit(
        jobs: &Sender<Job>,
        status: &Status,
        prompt: Vec<u32>,
        settings: Settings,
    ) -> (Receiver<Event>, Arc<AtomicBool>) {
        let (events, receiver) = mpsc::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        status.queued.fetch_add(1, Ordering::SeqCst);
        jobs.send(Job {
            prompt,
            settings,
            events,
            cancelled: Arc::clone(&cancelled),
        })
        .unwrap();
        (receiver, cancelled)
    }

    /// The text and summary of a job, or its failure.
    fn outcome(events: &Receiver<Event>) -> Result<(String, Summary), String> {
        let mut text = String::new();
        loop {
            match events.recv_timeout(Duration::from_secs(60)) {
                Ok(Event::Token { text: piece, .. }) => text.push_str(&piece),
                Ok(Event::Done(summary)) => return Ok((text, summary)),
                Ok(Event::Failed(message)) => return Err(message),
                Err(error) => return Err(format!("no end: {error}")),
            }
        }
    }

    #[test]
    fn a_step_takes_every_generating_token_then_the_shortest_prompts_first() {
        let engine = synthetic_engine();
        let mut slots: Vec<Slot> = (0..3)
            .map(|id| Slot {
                session: engine.session(256).unwrap(),
                draft: None,
                task: None,
                last_used: Instant::now(),
                view: SlotView {
                    id,
                    ..SlotView::default()
                },
            })
            .collect();
        let job = |prompt: Vec<u32>| Job {
            prompt,
            settings: greedy(4),
            events: mpsc::channel().0,
            cancelled: Arc::new(AtomicBool::new(false)),
        };
        start_task(
            &mut slots[0],
            job((0..100).map(|i| 300 + i).collect()),
            &engine,
        );
        start_task(&mut slots[1], job(vec![2, 10, 11, 12, 13]), &engine);
        start_task(&mut slots[2], job(vec![2, 20]), &engine);
        slots[2].task.as_mut().unwrap().next = Next::Token(42);

        let shares = plan_step(&mut slots, 16);
        let summary: Vec<(usize, usize, usize)> = shares
            .iter()
            .map(|share| (share.slot, share.tokens.len(), share.logit_rows))
            .collect();
        assert_eq!(summary, [(2, 1, 1), (1, 5, 1)], "the long chunk waits");
        assert_eq!(shares[0].tokens, [42]);

        // Without a short prompt to finish, the long one takes what the budget leaves.
        slots[1].task = None;
        let shares = plan_step(&mut slots, 16);
        let summary: Vec<(usize, usize, usize)> = shares
            .iter()
            .map(|share| (share.slot, share.tokens.len(), share.logit_rows))
            .collect();
        assert_eq!(summary, [(2, 1, 1), (0, 15, 0)]);

        // With the budget spent by generating tokens, a prompt still moves by one token.
        let shares = plan_step(&mut slots[..1], 0);
        assert_eq!(shares[0].tokens.len(), 1);
    }

    /// Token 7 makes the stand-in model panic, as a fault inside a forward pass would.
    const POISON: u32 = 7;

    fn poisoned_forward(parts: &mut [Part]) -> Result<Vec<f32>, SessionError> {
        if parts.iter().any(|part| part.tokens.contains(&POISON)) {
            panic!("a fault inside the model, on purpose");
        }
        Session::eval_batch(parts)
    }

    #[test]
    fn a_panic_in_the_model_fails_its_request_and_the_server_goes_on() {
        let engine = synthetic_engine();
        let status = Status::default();
        let sessions = (0..2).map(|_| engine.session(128).unwrap()).collect();
        let (jobs, receiver) = mpsc::channel();
        std::thread::scope(|scope| {
            let (engine, status) = (&engine, &status);
            scope.spawn(move || {
                run_with(
                    engine,
                    sessions,
                    Vec::new(),
                    512,
                    receiver,
                    status,
                    &poisoned_forward,
                )
            });
            let before = submit(&jobs, status, vec![2, 10, 11, 12], greedy(8));
            let before = outcome(&before.0).expect("a healthy request");
            let poisoned = submit(&jobs, status, vec![2, 10, POISON, 12], greedy(8));
            let failure = outcome(&poisoned.0).expect_err("the poisoned request fails");
            assert!(failure.contains("the model failed"), "{failure}");
            let after = submit(&jobs, status, vec![2, 10, 11, 12], greedy(8));
            let after = outcome(&after.0).expect("the next request is served");
            assert_eq!(after.0, before.0, "the same answer as before the fault");
            assert!(!status.stopped.load(Ordering::SeqCst));
            assert_eq!(status.busy.load(Ordering::SeqCst), 0);
            drop(jobs);
        });
    }
}
