//! Stores of a RingRift home: one module per database or file kind.
//!
//! Every SQLite store opens its file through [`db::open`] (WAL, busy timeout, schema
//! migrations keyed on `PRAGMA user_version`). The API is synchronous; each store is
//! `Clone + Send + Sync` so async callers use [`OffRuntime::off_runtime`] or the thin
//! `*_async` wrappers, which run the work in `tokio::task::spawn_blocking`.

pub mod db;
pub mod elo;
pub mod error;
mod fence;
#[cfg(test)]
mod fuzz;
pub mod games;
pub mod manifest;
pub mod model_files;
pub mod models;
pub mod paths;
pub mod work_queue;

pub use error::StoreError;
pub use ringrift_contracts::config_key::{self, Board, ConfigKey, InvalidConfigKey};

use std::future::Future;

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs blocking store work off the async runtime.
///
/// Every store is a cheap `Clone` over a shared connection, so the closure gets its own
/// handle on a blocking thread. Daemons must use this (or the `*_async` wrappers) and
/// never call the synchronous API from an async task.
pub trait OffRuntime: Clone + Send + Sync + 'static {
    /// Runs `f(&store)` in `tokio::task::spawn_blocking` and returns its result.
    fn off_runtime<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Self) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&this))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))?
        }
    }
}
