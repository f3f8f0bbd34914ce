//! A one-line progress bar on stderr for the slow steps (copying gigabytes, faulting them in).
//! It draws only when stderr is a terminal, so logs and pipes stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW_EVERY: Duration = Duration::from_millis(100);
const BAR_WIDTH: u64 = 30;

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    last_drawn: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// A bar that shows unless `quiet` or stderr is not a terminal.
    pub fn new(label: impl Into<String>, total: u64, quiet: bool) -> Self {
        Progress {
            label: label.into(),
            total,
            done: 0,
            last_drawn: None,
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total);
        if self.enabled && self.last_drawn.is_none_or(|t| t.elapsed() >= REDRAW_EVERY) {
            self.draw();
        }
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self) {
        if self.enabled {
            self.done = self.total;
            self.draw();
            eprintln!();
            self.enabled = false;
        }
    }

    fn draw(&mut self) {
        self.last_drawn = Some(Instant::now());
        let filled = self.done * BAR_WIDTH / self.total.max(1);
        let percent = self.done * 100 / self.total.max(1);
        let mut stderr = std::io::stderr().lock();
        // A failed write to the terminal only loses a frame of the bar.
        let _ = write!(
            stderr,
            "\r{} [{}{}] {percent:>3}% {} / {}",
            self.label,
            "#".repeat(filled as usize),
            " ".repeat((BAR_WIDTH - filled) as usize),
            human_bytes(self.done),
            human_bytes(self.total)
        );
        let _ = stderr.flush();
    }
}

/// A byte count the way people read it: 1023 B, 1.5 KiB, 253.1 MiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
