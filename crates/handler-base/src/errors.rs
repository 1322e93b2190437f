//! A bounded, timestamped log of recent errors that surfaces in health details, and the
//! streak of failed handlings and cycles that turns a daemon's health DEGRADED.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Cheap to clone; keeps the newest `cap` errors.
#[derive(Debug, Clone)]
pub struct ErrorLog {
    inner: Arc<Mutex<(VecDeque<(i64, String)>, u64)>>,
    cap: usize,
    /// Handlings and cycles failed in a row, and the newest of those errors.
    streak: Arc<Mutex<(u32, String)>>,
}

impl ErrorLog {
    pub fn new(cap: usize) -> Self {
        ErrorLog {
            inner: Arc::new(Mutex::new((VecDeque::new(), 0))),
            cap,
            streak: Arc::new(Mutex::new((0, String::new()))),
        }
    }

    /// A handling or cycle (the daemon's work, usually a job) failed: recorded, and
    /// counted in the streak.
    pub fn work_failed(&self, what: &str, err: &dyn std::fmt::Display) {
        self.record(what, err);
        let mut s = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_add(1);
        s.1 = format!("{what}: {err}");
    }

    /// A handling or cycle succeeded: the streak ends.
    pub fn work_succeeded(&self) {
        let mut s = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = 0;
        s.1.clear();
    }

    /// Handlings and cycles failed in a row, with the newest error.
    pub fn failing(&self) -> (u32, String) {
        self.streak
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records an error (with the time) and logs it: this is where errors are handled.
    pub fn record(&self, what: &str, err: &dyn std::fmt::Display) {
        tracing::error!(error = %err, "{what}");
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.len() == self.cap {
            g.0.pop_front();
        }
        g.0.push_back((crate::router_client::now_ms(), format!("{what}: {err}")));
        g.1 += 1;
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<(i64, String)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.iter().rev().cloned().collect()
    }

    /// Errors recorded since start (not bounded).
    pub fn total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest() {
        let log = ErrorLog::new(2);
        for i in 0..5 {
            log.record("step", &i);
        }
        let r = log.recent();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1, "step: 4");
        assert_eq!(log.total(), 5);
    }

    #[test]
    fn a_success_ends_the_failure_streak() {
        let log = ErrorLog::new(4);
        log.work_failed("job", &"boom 1");
        log.record("subscription", &"not work");
        log.work_failed("job", &"boom 2");
        assert_eq!(log.failing(), (2, "job: boom 2".to_owned()));
        log.work_succeeded();
        assert_eq!(log.failing().0, 0);
    }
}
