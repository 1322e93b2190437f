//! The work queue on JetStream (`ringrift_nats::JetStreamWorkQueue`) against a real
//! nats-server: two "nodes" (two queue clients) claim concurrently and every item runs
//! once; a worker that dies holding an item loses it to another after its lease and
//! cannot complete it; failures count attempts up to `failed`; a stale fencing token is
//! refused; a server that stops answering makes a claim fail within a bound, not hang.

use ringrift_nats::work_queue::{JetStreamWorkQueue, QueueOptions};
use ringrift_store::StoreError;
use ringrift_store::work_queue::{NewWork, WorkKind, WorkQueue, WorkStatus};
use ringrift_system_tests::{Nats, wait_for};
use std::collections::BTreeSet;
use std::time::Duration;

fn queue(url: &str, name: &str) -> JetStreamWorkQueue {
    JetStreamWorkQueue::open(&[url.to_owned()], name, QueueOptions::default()).expect("open")
}

fn work(kind: WorkKind, max_attempts: u32) -> NewWork {
    NewWork {
        max_attempts,
        ..NewWork::new(kind, None, 0, serde_json::json!({"games": 10}))
    }
}

#[test]
fn two_nodes_share_the_queue_and_each_item_runs_once() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let coordinator = queue(&url, "coordinator");
    let ids: BTreeSet<String> = (0..20)
        .map(|_| {
            coordinator
                .enqueue(&work(WorkKind::Selfplay, 3))
                .expect("enqueue")
        })
        .collect();
    assert_eq!(coordinator.depth().expect("depth").pending, 20);
    assert_eq!(
        coordinator
            .open_items(WorkKind::Selfplay, None)
            .expect("open")
            .len(),
        20
    );
    // Two workers on "other nodes" drain it concurrently.
    let workers: Vec<_> = ["w1", "w2"]
        .into_iter()
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let q = queue(&url, w);
                let mut ran = Vec::new();
                while let Some(item) = q
                    .claim(w, &[WorkKind::Selfplay], Duration::from_secs(30))
                    .expect("claim")
                {
                    assert!(
                        q.complete(&item.item_id, w, &serde_json::json!({"ok": true}))
                            .expect("complete")
                    );
                    ran.push(item.item_id);
                }
                ran
            })
        })
        .collect();
    let ran: Vec<Vec<String>> = workers
        .into_iter()
        .map(|h| h.join().expect("worker"))
        .collect();
    let all: Vec<&String> = ran.iter().flatten().collect();
    let unique: BTreeSet<String> = all.iter().map(|s| s.to_string()).collect();
    assert_eq!(all.len(), 20, "no item twice: {ran:?}");
    assert_eq!(unique, ids);
    let d = coordinator.depth().expect("depth");
    assert_eq!((d.pending, d.claimed, d.completed), (0, 0, 20));
}

#[test]
fn a_dead_workers_item_is_redelivered_after_its_lease() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let q = queue(&url, "coordinator");
    let id = q.enqueue(&work(WorkKind::Training, 3)).expect("enqueue");
    let lease = Duration::from_secs(1);
    {
        let dying = queue(&url, "w1");
        let item = dying
            .claim("w1", &[WorkKind::Training], lease)
            .expect("claim")
            .expect("item");
        assert_eq!(item.item_id, id);
        // w1 dies holding it: no ack, no heartbeat.
    }
    let w2 = queue(&url, "w2");
    let item = wait_for("redelivery to w2", Duration::from_secs(15), || {
        w2.claim("w2", &[WorkKind::Training], lease).expect("claim")
    });
    assert_eq!(item.item_id, id);
    assert_eq!(item.attempts, 1, "the lost lease counts as an attempt");
    // The dead worker's late completion is refused; w2's counts.
    let late = queue(&url, "w1");
    assert!(
        !late
            .complete(&id, "w1", &serde_json::json!({}))
            .expect("late complete")
    );
    assert!(w2.heartbeat(&id, "w2", lease).expect("heartbeat"));
    assert!(
        w2.complete(&id, "w2", &serde_json::json!({}))
            .expect("complete")
    );
    assert_eq!(
        q.get(&id).expect("get").expect("item").status,
        WorkStatus::Completed
    );
    assert!(
        w2.claim("w2", &[WorkKind::Training], lease)
            .expect("claim")
            .is_none()
    );
}

#[test]
fn failures_count_attempts_and_stale_fencing_tokens_are_refused() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let q = queue(&url, "coordinator");
    let id = q.enqueue(&work(WorkKind::Export, 2)).expect("enqueue");
    for attempt in 1..=2 {
        let item = wait_for("the item again", Duration::from_secs(10), || {
            q.claim("w", &[WorkKind::Export], Duration::from_secs(30))
                .expect("claim")
        });
        assert_eq!(item.item_id, id);
        assert!(q.fail(&id, "w", &format!("boom {attempt}")).expect("fail"));
    }
    let item = q.get(&id).expect("get").expect("item");
    assert_eq!(item.status, WorkStatus::Failed);
    assert_eq!(item.attempts, 2);
    assert_eq!(item.last_error.as_deref(), Some("boom 2"));

    q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 5)
        .expect("token 5");
    q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 5)
        .expect("token 5 again");
    match q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 4) {
        Err(StoreError::Fenced { token: 4, seen: 5 }) => {}
        other => panic!("token 4 after 5 must be refused: {other:?}"),
    }
    q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 6)
        .expect("token 6");
    assert_eq!(
        q.open_items(WorkKind::Selfplay, None).expect("open").len(),
        3
    );
}

#[test]
fn a_claim_against_a_frozen_server_ends_within_a_bound() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let q = queue(&url, "w1");
    // One round trip first, so the claim below needs only its fetch.
    let id = q.enqueue(&work(WorkKind::Selfplay, 3)).expect("enqueue");
    let item = q
        .claim("w1", &[WorkKind::Selfplay], Duration::from_secs(30))
        .expect("claim")
        .expect("item");
    assert_eq!(item.item_id, id);
    nats.signal(0, nix::sys::signal::Signal::SIGSTOP);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = q.claim("w1", &[WorkKind::Selfplay], Duration::from_secs(30));
        let _ = tx.send(out.map(|i| i.map(|i| i.item_id)));
    });
    let out = rx.recv_timeout(Duration::from_secs(30));
    nats.signal(0, nix::sys::signal::Signal::SIGCONT);
    let out = out.expect("the claim ended while the server was frozen");
    // Nothing was claimable; either answer is honest, a hang is not.
    assert!(matches!(out, Ok(None) | Err(_)), "{out:?}");
}
