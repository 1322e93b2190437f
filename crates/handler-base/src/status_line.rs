//! The one-line "what am I doing" a daemon shows in its health message ([`StatusLine`]),
//! or one line per config key as health details ([`StatusMap`]).

use std::sync::Mutex;

/// Shared between the daemon's work and its `health_check`.
#[derive(Debug, Default)]
pub struct StatusLine(Mutex<String>);

impl StatusLine {
    pub fn new(s: impl Into<String>) -> Self {
        StatusLine(Mutex::new(s.into()))
    }

    pub fn set(&self, s: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = s.into();
    }

    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Per-config status lines, shown as health details (one detail per config).
#[derive(Debug, Default)]
pub struct StatusMap(Mutex<std::collections::BTreeMap<String, String>>);

impl StatusMap {
    /// Sets `key`'s line; returns whether it changed (to log decisions only when they do).
    pub fn set(&self, key: impl Into<String>, line: impl Into<String>) -> bool {
        let (key, line) = (key.into(), line.into());
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(key, line.clone()) != Some(line)
    }

    /// `h` with one detail per key.
    pub fn details(&self, mut h: crate::HealthCheckResult) -> crate::HealthCheckResult {
        for (k, v) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            h = h.detail(k.clone(), v);
        }
        h
    }
}
