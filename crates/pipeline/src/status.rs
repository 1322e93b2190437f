//! The one-line "what am I doing" a loop daemon shows in its health message.

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
