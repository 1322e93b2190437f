//! Progress of long jobs: a bar on a terminal, a line every few seconds otherwise (logs).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Reports `done / total` of a named phase.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    bar: Option<ProgressBar>,
    last_line: Instant,
    started: Instant,
    quiet: bool,
}

/// How often the non-TTY form prints.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// A bar when stderr is a terminal, periodic lines otherwise; nothing when `quiet`.
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            total,
            done: 0,
            bar,
            last_line: Instant::now(),
            started: Instant::now(),
            quiet,
        }
    }

    /// Silent progress (tests, library callers).
    pub fn hidden() -> Self {
        Progress::new("", 0, true)
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if !self.quiet && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprintln!("{}: {}/{} ({rate:.1}/s)", self.label, self.done, self.total);
        }
    }

    /// Free-form status (epoch losses and the like).
    pub fn message(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{}: {msg}", self.label),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        } else if !self.quiet {
            eprintln!(
                "{}: {}/{} done in {:.1}s",
                self.label,
                self.done,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
