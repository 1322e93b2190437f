//! Leased work-queue claims: claim an item, keep its lease alive while the work runs,
//! then complete or fail it. Shared by every daemon that consumes the queue.

use ringrift_store::work_queue::{WorkItem, WorkKind, WorkQueue};
use std::sync::Arc;
use std::time::Duration;

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

/// Runs `work` for a claimed item while renewing its lease every third of `lease`;
/// then completes the item with the result or fails it with the error.
pub async fn run_leased<F>(
    queue: &Arc<dyn WorkQueue>,
    worker: &str,
    item: &WorkItem,
    lease: Duration,
    work: F,
) -> anyhow::Result<Result<serde_json::Value, String>>
where
    F: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let keeper = {
        let (q, id, w) = (queue.clone(), item.item_id.clone(), worker.to_owned());
        tokio::spawn(async move {
            let mut t = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
            t.tick().await;
            loop {
                t.tick().await;
                let (q2, id2, w2) = (q.clone(), id.clone(), w.clone());
                match tokio::task::spawn_blocking(move || q2.heartbeat(&id2, &w2, lease)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        tracing::warn!(item = %id, "lost the lease of a work item");
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(item = %id, error = %e, "lease heartbeat failed"),
                    Err(_) => return,
                }
            }
        })
    };
    let outcome = work.await;
    keeper.abort();
    let (q, id, w) = (queue.clone(), item.item_id.clone(), worker.to_owned());
    let o = outcome.clone();
    tokio::task::spawn_blocking(move || match &o {
        Ok(v) => q.complete(&id, &w, v),
        Err(e) => q.fail(&id, &w, e),
    })
    .await??;
    Ok(outcome)
}
