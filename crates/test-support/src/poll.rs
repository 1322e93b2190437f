//! Polling with a deadline, the one way tests wait: a poll returns as soon as its
//! condition holds, so generous deadlines cost nothing when the code works.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const EVERY: Duration = Duration::from_millis(10);

/// Polls `f` every 10 ms until it returns `Some`; panics naming `what` once `limit` has
/// passed.
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `f` every 10 ms until it returns a value; `None` once `limit` has passed (for
/// callers whose timeout message needs more than [`wait_for`]'s).
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(EVERY);
    }
}

/// Async [`wait_for`]: awaits `f()` every 10 ms (a timer, not a blocked thread).
pub async fn wait_for_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    f: impl FnMut() -> F,
) -> T {
    poll_until_async(limit, f)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Async [`poll_until`].
pub async fn poll_until_async<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(EVERY).await;
    }
}
