//! Tests of the SQLite work queue: exclusive claims, leases, retries.

use super::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};

/// A clock tests move by hand.
#[derive(Default)]
struct FakeClock(AtomicI64);

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn work(kind: WorkKind, priority: i64) -> NewWork {
    NewWork::new(
        kind,
        Some("hex8_2p".parse().expect("key")),
        priority,
        serde_json::json!({"games": 10}),
    )
}

#[test]
fn claims_by_priority_and_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = SqliteWorkQueue::open(&dir.path().join("work_queue.db")).expect("open");
    let low = q.enqueue(&work(WorkKind::Selfplay, 1)).expect("enqueue");
    let high = q.enqueue(&work(WorkKind::Selfplay, 9)).expect("enqueue");
    let train = q.enqueue(&work(WorkKind::Training, 100)).expect("enqueue");
    let got = q
        .claim("w", &[WorkKind::Selfplay], DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert_eq!(got.item_id, high);
    assert_eq!(got.status, WorkStatus::Claimed);
    assert_eq!(got.payload, serde_json::json!({"games": 10}));
    let got = q
        .claim("w", &[], DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert_eq!(got.item_id, train);
    let got = q
        .claim("w", &[WorkKind::Selfplay], DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert_eq!(got.item_id, low);
    assert!(q.claim("w", &[], DEFAULT_LEASE).expect("claim").is_none());
    assert!(
        q.complete(&low, "w", &serde_json::json!({"ok": true}))
            .expect("complete")
    );
    assert!(
        !q.complete(&low, "w", &serde_json::json!({}))
            .expect("twice")
    );
    let d = q.depth().expect("depth");
    assert_eq!((d.pending, d.claimed, d.completed), (0, 2, 1));
}

#[test]
fn eight_threads_never_double_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("work_queue.db");
    let q = SqliteWorkQueue::open(&path).expect("open");
    let n = 400;
    for i in 0..n {
        q.enqueue(&work(WorkKind::Selfplay, i % 7))
            .expect("enqueue");
    }
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                // Each thread its own connection, as separate processes would have.
                let q = SqliteWorkQueue::open(&path).expect("open in thread");
                let mut mine = Vec::new();
                while let Some(item) = q
                    .claim(&format!("w{t}"), &[], DEFAULT_LEASE)
                    .expect("claim")
                {
                    assert_eq!(item.claimed_by.as_deref(), Some(format!("w{t}").as_str()));
                    mine.push(item.item_id);
                }
                mine
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for h in handles {
        for id in h.join().expect("thread") {
            total += 1;
            assert!(seen.insert(id.clone()), "item {id} claimed twice");
        }
    }
    assert_eq!(total, n as usize);
    assert_eq!(q.depth().expect("depth").claimed, n as u64);
}

#[test]
fn expired_lease_returns_item_and_heartbeat_extends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FakeClock::default());
    let q = SqliteWorkQueue::with_clock(&dir.path().join("q.db"), clock.clone()).expect("open");
    let id = q.enqueue(&work(WorkKind::Export, 0)).expect("enqueue");
    let lease = Duration::from_secs(60);
    q.claim("a", &[], lease).expect("claim").expect("item");
    clock.0.store(50_000, Ordering::SeqCst);
    assert!(
        q.heartbeat(&id, "a", lease).expect("heartbeat"),
        "lease now ends at 110 s"
    );
    assert!(
        !q.heartbeat(&id, "b", lease).expect("heartbeat"),
        "b does not hold it"
    );
    clock.0.store(100_000, Ordering::SeqCst);
    assert!(
        q.claim("b", &[], lease).expect("claim").is_none(),
        "still leased to a"
    );
    clock.0.store(110_000, Ordering::SeqCst);
    let again = q
        .claim("b", &[], lease)
        .expect("claim")
        .expect("expired item returns");
    assert_eq!(again.item_id, id);
    assert_eq!(again.attempts, 1);
    assert_eq!(again.last_error.as_deref(), Some("lease expired"));
    assert!(
        !q.complete(&id, "a", &serde_json::json!({}))
            .expect("late complete"),
        "a lost it"
    );
    assert!(!q.heartbeat(&id, "a", lease).expect("late heartbeat"));
}

#[test]
fn failures_retry_then_give_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = SqliteWorkQueue::open(&dir.path().join("q.db")).expect("open");
    let mut w = work(WorkKind::Training, 0);
    w.max_attempts = 2;
    let id = q.enqueue(&w).expect("enqueue");
    q.claim("a", &[], DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert!(q.fail(&id, "a", "oom").expect("fail"));
    let item = q.get(&id).expect("get").expect("exists");
    assert_eq!((item.status, item.attempts), (WorkStatus::Pending, 1));
    q.claim("a", &[], DEFAULT_LEASE)
        .expect("claim")
        .expect("item");
    assert!(q.fail(&id, "a", "oom again").expect("fail"));
    let item = q.get(&id).expect("get").expect("exists");
    assert_eq!((item.status, item.attempts), (WorkStatus::Failed, 2));
    assert_eq!(item.last_error.as_deref(), Some("oom again"));
    assert!(q.claim("a", &[], DEFAULT_LEASE).expect("claim").is_none());
}

#[tokio::test]
async fn async_wrappers_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = SqliteWorkQueue::open(&dir.path().join("q.db")).expect("open");
    let id = q
        .enqueue_async(work(WorkKind::Sync, 0))
        .await
        .expect("enqueue");
    let item = q
        .claim_async("w".into(), vec![], DEFAULT_LEASE)
        .await
        .expect("claim")
        .expect("item");
    assert_eq!(item.item_id, id);
    assert!(
        q.complete_async(id, "w".into(), serde_json::json!(1))
            .await
            .expect("complete")
    );
    assert_eq!(q.depth_async().await.expect("depth").completed, 1);
}

#[test]
fn fenced_enqueue_refuses_a_stale_token_and_accepts_equal_or_higher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = SqliteWorkQueue::open(&dir.path().join("wq.db")).expect("open");
    assert_eq!(q.fence().expect("fence"), None, "no fenced write yet");
    q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 5)
        .expect("first leader");
    q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 5)
        .expect("the same leader again");
    q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 9)
        .expect("a newer leader");
    let err = q
        .enqueue_fenced(&work(WorkKind::Selfplay, 1), 5)
        .expect_err("the deposed leader");
    assert!(
        matches!(err, StoreError::Fenced { token: 5, seen: 9 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("fencing token 5 refused"), "{err}");
    assert_eq!(
        q.depth().expect("depth").pending,
        3,
        "the refused item is not stored"
    );
    assert_eq!(
        q.fence().expect("fence"),
        Some(FenceState {
            token: 9,
            refused: 1,
            last_refused: Some(5)
        })
    );
    q.enqueue(&work(WorkKind::Selfplay, 1))
        .expect("unfenced producers are not affected");
}
