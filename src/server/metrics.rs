//! llama-server's `GET /metrics`: what the scheduler counts, in Prometheus's text format
//! (version 0.0.4) under llama.cpp's metric names, so that a dashboard made for llama-server
//! reads this server too.

use super::scheduler::SlotView;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Tokens and the time they took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub tokens: u64,
    pub seconds: f64,
}

impl Tally {
    fn add(&mut self, tokens: usize, time: Duration) {
        self.tokens += tokens as u64;
        self.seconds += time.as_secs_f64();
    }

    fn per_second(self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// What the scheduler has done since the server started.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Prompt tokens evaluated, cached ones not included, and the time their prompts took.
    pub prompt: Tally,
    /// Tokens generated, and the time from each request's first token to its last.
    pub predicted: Tally,
    /// The same since the last scrape: llama-server's throughput gauges average over that
    /// window, so that they follow the load rather than the server's whole life.
    pub prompt_window: Tally,
    pub predicted_window: Tally,
    /// Forward passes, and the busy slots summed over them.
    pub decodes: u64,
    pub busy_slots: u64,
}

/// The scheduler's counters, shared with the HTTP side.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<Counters>);

impl Metrics {
    /// A request's prompt has been read to its end.
    pub fn prompt_read(&self, evaluated: usize, time: Duration) {
        let mut counters = self.lock();
        counters.prompt.add(evaluated, time);
        counters.prompt_window.add(evaluated, time);
    }

    /// A request has ended after generating `generated` tokens in `time`.
    pub fn generated(&self, generated: usize, time: Duration) {
        let mut counters = self.lock();
        counters.predicted.add(generated, time);
        counters.predicted_window.add(generated, time);
    }

    /// A forward pass ran with `busy` slots holding requests.
    pub fn decoded(&self, busy: usize) {
        let mut counters = self.lock();
        counters.decodes += 1;
        counters.busy_slots += busy as u64;
    }

    /// The counters, and a new window for the throughput gauges.
    pub fn scrape(&self) -> Counters {
        let mut counters = self.lock();
        let scraped = counters.clone();
        counters.prompt_window = Tally::default();
        counters.predicted_window = Tally::default();
        scraped
    }

    /// Counting goes on after a panic elsewhere: the counters are plain numbers, never half
    /// written.
    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the server is doing now, beside the counters.
pub struct Now<'a> {
    pub slots: &'a [SlotView],
    pub processing: usize,
    pub deferred: usize,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// The exposition text: a HELP and a TYPE line before each metric's one sample.
pub fn render(counters: &Counters, now: &Now) -> String {
    let kv_tokens: usize = now.slots.iter().map(|slot| slot.n_past).sum();
    let kv_capacity: usize = now.slots.iter().map(|slot| slot.n_ctx).sum();
    let ratio = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
    let metrics = [
        (
            "prompt_tokens_total",
            Kind::Counter,
            "Number of prompt tokens processed, excluding cached tokens.",
            counters.prompt.tokens as f64,
        ),
        (
            "prompt_seconds_total",
            Kind::Counter,
            "Prompt process time.",
            counters.prompt.seconds,
        ),
        (
            "tokens_predicted_total",
            Kind::Counter,
            "Number of generation tokens processed.",
            counters.predicted.tokens as f64,
        ),
        (
            "tokens_predicted_seconds_total",
            Kind::Counter,
            "Predict process time.",
            counters.predicted.seconds,
        ),
        (
            "n_decode_total",
            Kind::Counter,
            "Total number of forward passes (llama_decode() calls in llama-server).",
            counters.decodes as f64,
        ),
        (
            "n_busy_slots_per_decode",
            Kind::Gauge,
            "Average number of busy slots per forward pass.",
            ratio(counters.busy_slots as f64, counters.decodes as f64),
        ),
        (
            "prompt_tokens_seconds",
            Kind::Gauge,
            "Average prompt throughput in tokens/s since the last scrape.",
            counters.prompt_window.per_second(),
        ),
        (
            "predicted_tokens_seconds",
            Kind::Gauge,
            "Average generation throughput in tokens/s since the last scrape.",
            counters.predicted_window.per_second(),
        ),
        (
            "kv_cache_usage_ratio",
            Kind::Gauge,
            "KV-cache usage of all slots together. 1 means 100 percent usage.",
            ratio(kv_tokens as f64, kv_capacity as f64),
        ),
        (
            "kv_cache_tokens",
            Kind::Gauge,
            "KV-cache tokens of all slots together.",
            kv_tokens as f64,
        ),
        (
            "requests_processing",
            Kind::Gauge,
            "Number of requests processing.",
            now.processing as f64,
        ),
        (
            "requests_deferred",
            Kind::Gauge,
            "Number of requests deferred (waiting for a slot).",
            now.deferred as f64,
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in metrics {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}\n"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_its_help_and_type_and_the_windows_restart_at_each_scrape() {
        let metrics = Metrics::default();
        metrics.prompt_read(10, Duration::from_millis(500));
        metrics.generated(4, Duration::from_secs(2));
        metrics.decoded(2);
        metrics.decoded(1);
        let slots = [
            SlotView {
                n_ctx: 100,
                n_past: 30,
                ..SlotView::default()
            },
            SlotView {
                n_ctx: 100,
                n_past: 20,
                ..SlotView::default()
            },
        ];
        let now = Now {
            slots: &slots,
            processing: 1,
            deferred: 3,
        };
        let text = render(&metrics.scrape(), &now);
        let value = |name: &str| {
            let line = text
                .lines()
                .find(|line| line.starts_with(&format!("llamacpp:{name} ")))
                .unwrap_or_else(|| panic!("no {name} in {text}"));
            assert!(text.contains(&format!("# HELP llamacpp:{name} ")));
            assert!(text.contains(&format!("# TYPE llamacpp:{name} ")));
            line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
        };
        assert_eq!(value("prompt_tokens_total"), 10.0);
        assert_eq!(value("prompt_seconds_total"), 0.5);
        assert_eq!(value("prompt_tokens_seconds"), 20.0);
        assert_eq!(value("tokens_predicted_total"), 4.0);
        assert_eq!(value("predicted_tokens_seconds"), 2.0);
        assert_eq!(value("n_decode_total"), 2.0);
        assert_eq!(value("n_busy_slots_per_decode"), 1.5);
        assert_eq!(value("kv_cache_tokens"), 50.0);
        assert_eq!(value("kv_cache_usage_ratio"), 0.25);
        assert_eq!(value("requests_processing"), 1.0);
        assert_eq!(value("requests_deferred"), 3.0);
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 12);

        let text = render(&metrics.scrape(), &now);
        assert!(text.contains("llamacpp:prompt_tokens_total 10\n"), "{text}");
        assert!(
            text.contains("llamacpp:prompt_tokens_seconds 0\n"),
            "{text}"
        );
    }

    #[test]
    fn an_idle_server_renders_zeros_not_nan() {
        let text = render(
            &Counters::default(),
            &Now {
                slots: &[],
                processing: 0,
                deferred: 0,
            },
        );
        assert!(!text.contains("NaN"), "{text}");
    }
}
