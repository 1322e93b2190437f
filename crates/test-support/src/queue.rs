//! A work queue with faults: every call goes to a real queue unless the test's [`Faults`]
//! answer it first (a cut link failing renewals or completions, a stale listing of held
//! items).

use ringrift_store::StoreError;
use ringrift_store::work_queue::{NewWork, QueueDepth, WorkItem, WorkKind, WorkQueue};
use std::sync::Arc;
use std::time::Duration;

/// What a test changes of a queue's answers; every default leaves the call to the queue.
pub trait Faults: Send + Sync + 'static {
    /// `Some(answer)` instead of renewing a lease.
    fn heartbeat(&self) -> Option<Result<bool, StoreError>> {
        None
    }
    /// `Some(answer)` instead of recording a completion.
    fn complete(&self) -> Option<Result<bool, StoreError>> {
        None
    }
    /// The items listed as held, given the queue's own listing.
    fn held_by(&self, listed: Vec<WorkItem>) -> Vec<WorkItem> {
        listed
    }
}

/// `queue` with `faults`.
pub struct Faulty<F> {
    pub queue: Arc<dyn WorkQueue>,
    pub faults: F,
}

impl<F: Faults> WorkQueue for Faulty<F> {
    fn enqueue(&self, w: &NewWork) -> Result<String, StoreError> {
        self.queue.enqueue(w)
    }
    fn claim(
        &self,
        worker: &str,
        kinds: &[WorkKind],
        lease: Duration,
    ) -> Result<Option<WorkItem>, StoreError> {
        self.queue.claim(worker, kinds, lease)
    }
    fn heartbeat(&self, id: &str, worker: &str, lease: Duration) -> Result<bool, StoreError> {
        self.faults
            .heartbeat()
            .unwrap_or_else(|| self.queue.heartbeat(id, worker, lease))
    }
    fn complete(
        &self,
        id: &str,
        worker: &str,
        result: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.faults
            .complete()
            .unwrap_or_else(|| self.queue.complete(id, worker, result))
    }
    fn fail(&self, id: &str, worker: &str, error: &str) -> Result<bool, StoreError> {
        self.queue.fail(id, worker, error)
    }
    fn requeue_expired(&self) -> Result<usize, StoreError> {
        self.queue.requeue_expired()
    }
    fn depth(&self) -> Result<QueueDepth, StoreError> {
        self.queue.depth()
    }
    fn get(&self, id: &str) -> Result<Option<WorkItem>, StoreError> {
        self.queue.get(id)
    }
    fn held_by(&self, worker: &str) -> Result<Vec<WorkItem>, StoreError> {
        Ok(self.faults.held_by(self.queue.held_by(worker)?))
    }
    fn open_items(
        &self,
        kind: WorkKind,
        config: Option<ringrift_store::ConfigKey>,
    ) -> Result<Vec<WorkItem>, StoreError> {
        self.queue.open_items(kind, config)
    }
    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        self.queue.oldest_pending_ms()
    }
}
