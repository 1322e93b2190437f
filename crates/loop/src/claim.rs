//! Leased work-queue claims: claim an item, keep its lease alive while the work runs,
//! then complete or fail it. Shared by every daemon that consumes the queue.

use ringrift_store::work_queue::{WorkItem, WorkKind, WorkQueue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Claims one item of `kinds` for `worker` (off the runtime), or `None`.
pub async fn claim(
    queue: &Arc<dyn WorkQueue>,
    worker: &str,
    kinds: &[WorkKind],
    lease: Duration,
) -> anyhow::Result<Option<WorkItem>> {
    let (q, w, k) = (queue.clone(), worker.to_owned(), kinds.to_vec());
    Ok(tokio::task::spawn_blocking(move || q.claim(&w, &k, lease)).await??)
}

/// What ended the renewals of a lease before the work did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The queue said another worker holds the item now.
    Lost,
    /// No renewal succeeded for two thirds of the lease (a cut link, a queue outage):
    /// the work is stopped before the queue hands the item to another worker.
    Unrenewed(Duration),
}

/// Runs `work` for a claimed item while renewing its lease every third of `lease`;
/// then completes the item with the result or fails it with the error.
///
/// `work` gets a token that fires when the lease is lost or could not be renewed for
/// two thirds of its length: it must stop (cancel its job), because the item will run
/// elsewhere. The item is then neither completed nor failed by this worker (it is no
/// longer this worker's), and the outcome is an error naming why.
pub async fn run_leased<F, W>(
    queue: &Arc<dyn WorkQueue>,
    worker: &str,
    item: &WorkItem,
    lease: Duration,
    work: W,
) -> anyhow::Result<Result<serde_json::Value, String>>
where
    W: FnOnce(CancellationToken) -> F,
    F: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let stop = CancellationToken::new();
    let (ended_tx, mut ended_rx) = tokio::sync::watch::channel(None::<LeaseEnd>);
    let keeper = {
        let (q, id, w, stop) = (
            queue.clone(),
            item.item_id.clone(),
            worker.to_owned(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_millis(100));
            // The lease was taken (or last renewed) no later than now.
            let mut renewed = Instant::now();
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                let (q2, id2, w2) = (q.clone(), id.clone(), w.clone());
                let call = tokio::task::spawn_blocking(move || q2.heartbeat(&id2, &w2, lease));
                let end = match tokio::time::timeout(every, call).await {
                    Ok(Ok(Ok(true))) => {
                        renewed = Instant::now();
                        None
                    }
                    Ok(Ok(Ok(false))) => Some(LeaseEnd::Lost),
                    Ok(Err(_)) => return,
                    Ok(Ok(Err(e))) => {
                        tracing::warn!(item = %id, error = %e, "lease heartbeat failed");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(item = %id, "lease heartbeat unanswered");
                        None
                    }
                };
                let unrenewed = renewed.elapsed();
                let end = end.or_else(|| {
                    (unrenewed >= lease * 2 / 3).then_some(LeaseEnd::Unrenewed(unrenewed))
                });
                if let Some(end) = end {
                    tracing::warn!(item = %id, why = ?end, "stopping the work of a lease this worker no longer holds");
                    let _ = ended_tx.send(Some(end));
                    stop.cancel();
                    return;
                }
            }
        })
    };
    let outcome = work(stop.clone()).await;
    // Recording the outcome is retried while the lease is still renewed (the keeper runs
    // on): a queue out of reach when the work ends (a cut link) must not leave a finished
    // item to expire and run again elsewhere once the link is back.
    let ended =
        |rx: &mut tokio::sync::watch::Receiver<Option<LeaseEnd>>| rx.borrow_and_update().clone();
    let mut tries = 0u32;
    let since = Instant::now();
    let recorded = loop {
        if let Some(end) = ended(&mut ended_rx) {
            break Err(format!(
                "work item {} stopped: its lease ended ({end:?}); the queue gives it to another worker",
                item.item_id
            ));
        }
        let (q, id, w) = (queue.clone(), item.item_id.clone(), worker.to_owned());
        let o = outcome.clone();
        let r = tokio::task::spawn_blocking(move || match &o {
            Ok(v) => q.complete(&id, &w, v),
            Err(e) => q.fail(&id, &w, e),
        })
        .await?;
        match r {
            Ok(true) => break Ok(()),
            // Another worker holds it now (its lease ran out while this outcome waited).
            Ok(false) => {
                break Err(format!(
                    "work item {}: the queue no longer has it as this worker's; its outcome is not recorded",
                    item.item_id
                ));
            }
            Err(e) => {
                tries += 1;
                if tries == 1 || tries % 30 == 0 {
                    tracing::warn!(item = %item.item_id, error = %e, tries, "recording a work item's outcome failed; retrying while its lease is renewed");
                }
                if since.elapsed() >= lease {
                    break Err(format!(
                        "work item {}: its outcome could not be recorded for a whole lease ({e})",
                        item.item_id
                    ));
                }
                // A second, or until the keeper gives the lease up (2/3 of it unrenewed).
                if let Ok(Err(_)) =
                    tokio::time::timeout(Duration::from_secs(1), ended_rx.changed()).await
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    keeper.abort();
    match recorded {
        Ok(()) => Ok(outcome),
        Err(why) => Ok(Err(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_store::StoreError;
    use ringrift_store::work_queue::{NewWork, SqliteWorkQueue};

    /// A link to the queue that fails: lease renewals fail while `renewals_fail`, and the
    /// first `complete_failures` completions fail (a cut link to a shared queue).
    struct Cut(bool, std::sync::atomic::AtomicU32);

    impl ringrift_test_support::queue::Faults for Cut {
        fn heartbeat(&self) -> Option<Result<bool, StoreError>> {
            self.0.then(|| Err(StoreError::Invalid("link cut".into())))
        }
        fn complete(&self) -> Option<Result<bool, StoreError>> {
            use std::sync::atomic::Ordering;
            self.1
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
                .then(|| Err(StoreError::Invalid("link cut".into())))
        }
    }

    fn unreachable(
        q: SqliteWorkQueue,
        renewals_fail: bool,
        complete_failures: u32,
    ) -> ringrift_test_support::queue::Faulty<Cut> {
        ringrift_test_support::queue::Faulty {
            queue: Arc::new(q),
            faults: Cut(
                renewals_fail,
                std::sync::atomic::AtomicU32::new(complete_failures),
            ),
        }
    }

    async fn one_item(q: &Arc<dyn WorkQueue>, lease: Duration) -> WorkItem {
        q.enqueue(&NewWork::new(
            WorkKind::Selfplay,
            None,
            0,
            serde_json::json!({}),
        ))
        .unwrap();
        claim(q, "w1", &[WorkKind::Selfplay], lease)
            .await
            .unwrap()
            .expect("an item")
    }

    #[tokio::test]
    async fn work_whose_lease_cannot_be_renewed_is_stopped_before_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteWorkQueue::open(&dir.path().join("q.db")).unwrap();
        let q: Arc<dyn WorkQueue> = Arc::new(unreachable(sqlite, true, 0));
        let lease = Duration::from_millis(1500);
        let item = one_item(&q, lease).await;
        let started = Instant::now();
        let outcome = run_leased(&q, "w1", &item, lease, |stop| async move {
            // Work far longer than the lease, unless stopped.
            tokio::select! {
                _ = stop.cancelled() => Err("cancelled".to_owned()),
                _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(serde_json::json!({})),
            }
        })
        .await
        .unwrap();
        let took = started.elapsed();
        let err = outcome.expect_err("the work was stopped");
        assert!(err.contains("lease ended"), "{err}");
        assert!(
            took < lease,
            "stopped after {took:?}, not before the lease ({lease:?})"
        );
        // Neither completed nor failed by this worker: still claimed, attempts unchanged.
        let now = q.get(&item.item_id).unwrap().unwrap();
        assert_eq!(
            (now.attempts, now.claimed_by.as_deref()),
            (item.attempts, Some("w1"))
        );
    }

    #[tokio::test]
    async fn work_with_a_renewed_lease_runs_past_it_and_completes() {
        let dir = tempfile::tempdir().unwrap();
        let q: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&dir.path().join("q.db")).unwrap());
        let lease = Duration::from_millis(600);
        let item = one_item(&q, lease).await;
        let outcome = run_leased(&q, "w1", &item, lease, |stop| async move {
            tokio::select! {
                _ = stop.cancelled() => Err("cancelled".to_owned()),
                _ = tokio::time::sleep(lease * 3) => Ok(serde_json::json!({"ok": 1})),
            }
        })
        .await
        .unwrap();
        assert_eq!(outcome, Ok(serde_json::json!({"ok": 1})));
        assert_eq!(
            q.get(&item.item_id).unwrap().unwrap().status,
            ringrift_store::work_queue::WorkStatus::Completed
        );
    }

    #[tokio::test]
    async fn an_outcome_that_cannot_be_recorded_at_once_is_retried_while_the_lease_holds() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteWorkQueue::open(&dir.path().join("q.db")).unwrap();
        let q: Arc<dyn WorkQueue> = Arc::new(unreachable(sqlite, false, 2));
        let lease = Duration::from_secs(30);
        let item = one_item(&q, lease).await;
        let outcome = run_leased(&q, "w1", &item, lease, |_| async {
            Ok(serde_json::json!({"games": 10}))
        })
        .await
        .unwrap();
        assert_eq!(outcome, Ok(serde_json::json!({"games": 10})));
        // Recorded on the third try: done, not left claimed to expire and run again.
        assert_eq!(
            q.get(&item.item_id).unwrap().unwrap().status,
            ringrift_store::work_queue::WorkStatus::Completed
        );
    }
}
