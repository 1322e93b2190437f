//! The work queue on JetStream (`ringrift_nats::JetStreamWorkQueue`) against a real
//! nats-server: two "nodes" (two queue clients) claim concurrently and every item runs
//! once; a worker that dies holding an item loses it to another after its lease and
//! cannot complete it; failures count attempts up to `failed`; a stale fencing token is
//! refused; a server that stops answering makes a claim fail within a bound, not hang.
//! Scale: finished items leave after the bounded retention while open ones stay; `depth`
//! reads no item record (the JetStream API requests it makes are watched on the server);
//! a lease is the server's (its ack wait), and a redelivery to the worker holding the
//! item is not a failed attempt. Fencing: a leader deposed between its fence check and
//! its enqueue is refused (the check and the commit are one compare-and-set), and the
//! fence never expires whatever the retention.

use futures_util::StreamExt;
use ringrift_nats::work_queue::{JetStreamWorkQueue, QueueOptions};
use ringrift_store::StoreError;
use ringrift_store::work_queue::{NewWork, WorkKind, WorkQueue, WorkStatus};
use ringrift_system_tests::{Nats, free_port, wait_for};
use std::collections::BTreeSet;
use std::time::Duration;

fn queue(url: &str, name: &str) -> JetStreamWorkQueue {
    JetStreamWorkQueue::open(&[url.to_owned()], name, QueueOptions::default()).expect("open")
}

fn depth(q: &JetStreamWorkQueue) -> (u64, u64, u64, u64) {
    let d = q.depth().expect("depth");
    (d.pending, d.claimed, d.completed, d.failed)
}

/// A plain NATS client that sees every JetStream API request other clients make (a core
/// subscription on `$JS.API.>`), to count what a queue call asks the server for.
struct ApiSpy {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    sub: async_nats::Subscriber,
}

impl ApiSpy {
    fn start(url: &str) -> ApiSpy {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (client, sub) = rt.block_on(async {
            let client = async_nats::connect(url).await.expect("spy connects");
            let sub = client.subscribe("$JS.API.>").await.expect("subscribe");
            client.flush().await.expect("flush");
            (client, sub)
        });
        ApiSpy { rt, client, sub }
    }

    /// The API subjects requested while `f` ran (requests made before are drained first).
    fn during<T>(&mut self, f: impl FnOnce() -> T) -> (T, Vec<String>) {
        self.drain();
        let out = f();
        (out, self.drain())
    }

    /// Everything seen so far, up to a marker request sent now: the server delivers in the
    /// order it handled them, and every request of a finished call came before the marker.
    fn drain(&mut self) -> Vec<String> {
        let marker = format!("$JS.API.SPY.{}", free_port());
        let (client, sub) = (&self.client, &mut self.sub);
        self.rt.block_on(async {
            client
                .publish(marker.clone(), "".into())
                .await
                .expect("marker");
            client.flush().await.expect("flush");
            let mut seen = Vec::new();
            loop {
                let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
                    .await
                    .expect("the marker comes back")
                    .expect("subscription open");
                if m.subject.as_str() == marker {
                    return seen;
                }
                seen.push(m.subject.to_string());
            }
        })
    }
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

/// Finished items leave after the bounded retention (the server's max age, no scan of
/// ours) while an open item older than that stays. Before: the one bucket's 7-day max age
/// applied to every item, so with a short retention a pending item vanished too.
#[test]
fn finished_items_are_purged_after_the_retention_and_open_ones_stay() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let keep = Duration::from_secs(2);
    let open = |name: &str| {
        JetStreamWorkQueue::open(
            &[url.clone()],
            name,
            QueueOptions {
                retention: keep,
                ..QueueOptions::default()
            },
        )
        .expect("open")
    };
    let q = open("coordinator");
    let waiting = q.enqueue(&work(WorkKind::Tournament, 3)).expect("enqueue");
    let done = q.enqueue(&work(WorkKind::Selfplay, 3)).expect("enqueue");
    let broken = q.enqueue(&work(WorkKind::Export, 1)).expect("enqueue");
    let lease = Duration::from_secs(30);
    let item = q.claim("w", &[WorkKind::Selfplay], lease).expect("claim");
    assert_eq!(item.map(|i| i.item_id), Some(done.clone()));
    assert!(
        q.complete(&done, "w", &serde_json::json!({"games": 10}))
            .expect("complete")
    );
    let item = q.claim("w", &[WorkKind::Export], lease).expect("claim");
    assert_eq!(item.map(|i| i.item_id), Some(broken.clone()));
    assert!(q.fail(&broken, "w", "boom").expect("fail"));
    assert_eq!(depth(&q), (1, 0, 1, 1));
    assert_eq!(
        q.get(&done).expect("get").map(|i| i.status),
        Some(WorkStatus::Completed)
    );
    // Reopening with the same retention changes nothing; the server removes them.
    let again = open("coordinator-2");
    wait_for("finished items removed", Duration::from_secs(60), || {
        (depth(&again) == (1, 0, 0, 0)).then_some(())
    });
    assert_eq!(q.get(&done).expect("get"), None);
    assert_eq!(q.get(&broken).expect("get"), None);
    let item = q.get(&waiting).expect("get").expect("the open item stays");
    assert_eq!(item.status, WorkStatus::Pending);
    assert_eq!(
        q.open_items(WorkKind::Tournament, None)
            .expect("open")
            .len(),
        1
    );
    let item = q
        .claim("w", &[WorkKind::Tournament], lease)
        .expect("claim")
        .expect("the open item is still claimable");
    assert_eq!(item.item_id, waiting);
}

/// `depth` is answered from stream info: with 60 finished items it makes a handful of
/// API requests and reads no record (no message get, no consumer to scan a bucket), and
/// stays right across claim, complete, fail and a lease that expires. Before: it read
/// every key of the bucket, finished or not (one consumer and one get per item).
#[test]
fn depth_reads_no_record_and_stays_right_through_the_lifecycle() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let q = queue(&url, "coordinator");
    let lease = Duration::from_secs(30);
    for _ in 0..60 {
        q.enqueue(&work(WorkKind::Selfplay, 3)).expect("enqueue");
        let item = q
            .claim("w", &[WorkKind::Selfplay], lease)
            .expect("claim")
            .expect("item");
        assert!(
            q.complete(&item.item_id, "w", &serde_json::json!({}))
                .expect("complete")
        );
    }
    let mut spy = ApiSpy::start(&url);
    let (d, asked) = spy.during(|| depth(&q));
    assert_eq!(d, (0, 0, 60, 0));
    let reads: Vec<&String> = asked
        .iter()
        .filter(|s| {
            s.contains(".MSG.GET.") || s.contains("DIRECT.GET") || s.contains("CONSUMER.CREATE")
        })
        .collect();
    assert!(reads.is_empty(), "depth read records: {reads:?}");
    assert!(
        asked.len() <= 8,
        "depth asked {} times: {asked:?}",
        asked.len()
    );

    // The counts through each transition.
    let a = q.enqueue(&work(WorkKind::Training, 3)).expect("enqueue");
    let b = q.enqueue(&work(WorkKind::Training, 1)).expect("enqueue");
    let c = q.enqueue(&work(WorkKind::Training, 3)).expect("enqueue");
    assert_eq!(depth(&q), (3, 0, 60, 0));
    let short = Duration::from_secs(1);
    let claim = |w: &str| {
        q.claim(w, &[WorkKind::Training], short)
            .expect("claim")
            .expect("item")
    };
    assert_eq!(claim("w1").item_id, a);
    assert_eq!(depth(&q), (2, 1, 60, 0));
    assert!(
        q.complete(&a, "w1", &serde_json::json!({}))
            .expect("complete")
    );
    assert_eq!(depth(&q), (2, 0, 61, 0));
    assert_eq!(claim("w1").item_id, b);
    assert!(q.fail(&b, "w1", "out of attempts").expect("fail"));
    assert_eq!(depth(&q), (1, 0, 61, 1));
    assert_eq!(claim("w1").item_id, c);
    assert_eq!(depth(&q), (0, 1, 61, 1));
    // w1 stops renewing: after the server's ack wait w2 gets it, still one claimed.
    let item = wait_for("c redelivered to w2", Duration::from_secs(30), || {
        q.claim("w2", &[WorkKind::Training], short).expect("claim")
    });
    assert_eq!((item.item_id.as_str(), item.attempts), (c.as_str(), 1));
    assert_eq!(depth(&q), (0, 1, 61, 1));
    assert!(q.fail(&c, "w2", "retry").expect("fail"));
    assert_eq!(depth(&q), (1, 0, 61, 1));
}

/// A lease is judged by the server: an item whose holder stopped renewing is delivered
/// to another worker once the consumer's ack wait has passed, whatever lease the holder's
/// own clock wrote down; and an item delivered again to the worker holding it is not a
/// failed attempt. Before: a redelivery to the same worker counted an attempt, and a
/// taker compared the holder's wall-clock lease with its own clock (nacking until then).
#[test]
fn leases_are_the_servers_and_a_redelivery_to_the_holder_is_no_attempt() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let q = queue(&url, "coordinator");
    let ack_wait = Duration::from_secs(1);
    let id = q.enqueue(&work(WorkKind::Evaluation, 3)).expect("enqueue");
    let w1 = queue(&url, "w1");
    // The first claim of a kind sets the consumer's ack wait: 1 s.
    let item = w1
        .claim("w1", &[WorkKind::Evaluation], ack_wait)
        .expect("claim")
        .expect("item");
    assert_eq!((item.item_id.as_str(), item.attempts), (id.as_str(), 0));
    // w1 misses its heartbeats; the server delivers it again, to w1 itself.
    let again = wait_for("redelivery to w1", Duration::from_secs(30), || {
        w1.claim("w1", &[WorkKind::Evaluation], ack_wait)
            .expect("claim")
    });
    assert_eq!(again.item_id, id);
    assert_eq!(
        again.attempts, 0,
        "a redelivery to the holder is not a failed attempt"
    );
    assert_eq!(again.claimed_by.as_deref(), Some("w1"));
    assert!(w1.heartbeat(&id, "w1", ack_wait).expect("heartbeat"));

    // w1 claims another item with a lease of an hour by its own clock, then dies. The
    // server's ack wait (1 s) is the lease: w2 gets it without waiting for w1's clock.
    assert!(
        w1.complete(&id, "w1", &serde_json::json!({}))
            .expect("complete")
    );
    let id2 = q.enqueue(&work(WorkKind::Evaluation, 3)).expect("enqueue");
    let item = w1
        .claim("w1", &[WorkKind::Evaluation], Duration::from_secs(3600))
        .expect("claim")
        .expect("item");
    assert_eq!(item.item_id, id2);
    drop(w1);
    let w2 = queue(&url, "w2");
    let item = wait_for("redelivery to w2", Duration::from_secs(30), || {
        w2.claim("w2", &[WorkKind::Evaluation], ack_wait)
            .expect("claim")
    });
    assert_eq!(item.item_id, id2);
    assert_eq!(item.attempts, 1, "the lost lease counts once");
    assert_eq!(item.claimed_by.as_deref(), Some("w2"));
    let late = queue(&url, "w1");
    assert!(
        !late
            .heartbeat(&id2, "w1", ack_wait)
            .expect("late heartbeat")
    );
    assert!(
        !late
            .complete(&id2, "w1", &serde_json::json!({}))
            .expect("late complete")
    );
    assert!(
        w2.complete(&id2, "w2", &serde_json::json!({}))
            .expect("complete")
    );
    assert_eq!(depth(&q), (0, 0, 2, 0));
}

/// The ids of the open items of `kind`.
fn open_ids(q: &JetStreamWorkQueue, kind: WorkKind) -> BTreeSet<String> {
    q.open_items(kind, None)
        .expect("open")
        .into_iter()
        .map(|i| i.item_id)
        .collect()
}

/// Two leaders interleave a fenced enqueue: the old one (token 1) passes its fence check,
/// the new one (token 2) enqueues (raising the fence), then the old one's enqueue goes
/// on. Its commit is a compare-and-set of the fence key on the revision its check read,
/// so it fails, the check is made again and the stale token is refused (`Fenced`, its
/// record removed): only the new leader's item is there and claimable. Before: the fence
/// was raised and the item enqueued in two separate steps, and the deposed leader's item
/// went through.
#[test]
fn a_leader_deposed_between_its_fence_check_and_its_enqueue_is_refused() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let (n1, n2) = (queue(&url, "n1"), queue(&url, "n2"));
    let before = n1
        .enqueue_fenced(&work(WorkKind::Selfplay, 1), 1)
        .expect("n1 leads with token 1");
    let late = n1
        .prepare_fenced(&work(WorkKind::Selfplay, 1), 1)
        .expect("token 1 is still the highest: the check passes");
    let late_id = late.item_id().to_owned();
    let theirs = n2
        .enqueue_fenced(&work(WorkKind::Selfplay, 1), 2)
        .expect("n2 leads with token 2");
    match n1.commit_fenced(late) {
        Err(StoreError::Fenced { token: 1, seen: 2 }) => {}
        other => panic!("the deposed leader's enqueue must be refused: {other:?}"),
    }
    assert_eq!(n1.get(&late_id).expect("get"), None, "no record left");
    let open = open_ids(&n2, WorkKind::Selfplay);
    assert_eq!(open, BTreeSet::from([before.clone(), theirs.clone()]));
    assert_eq!(depth(&n2), (2, 0, 0, 0));
    let mut claimed = BTreeSet::new();
    while let Some(item) = n2
        .claim("w", &[WorkKind::Selfplay], Duration::from_secs(30))
        .expect("claim")
    {
        assert!(claimed.len() < 2, "more items than enqueued: {claimed:?}");
        claimed.insert(item.item_id);
    }
    assert_eq!(claimed, BTreeSet::from([before, theirs]));
    // Refused at the check as well, once the higher token is there.
    match n1.enqueue_fenced(&work(WorkKind::Selfplay, 1), 1) {
        Err(StoreError::Fenced { token: 1, seen: 2 }) => {}
        other => panic!("token 1 after 2 must be refused: {other:?}"),
    }
    // Two enqueues of the same leader interleaved both commit (the second retries its
    // compare-and-set on the revision the first wrote).
    let a = n2
        .prepare_fenced(&work(WorkKind::Export, 1), 2)
        .expect("prepare a");
    let b = n2
        .prepare_fenced(&work(WorkKind::Export, 1), 2)
        .expect("prepare b");
    let b = n2.commit_fenced(b).expect("commit b");
    let a = n2.commit_fenced(a).expect("commit a, after b");
    let open = open_ids(&n2, WorkKind::Export);
    assert_eq!(open, BTreeSet::from([a, b]));
}

/// The fence bucket has no max age whatever the finished-item retention (here 1 s), and
/// an older fence bucket made with one (the 7-day layout) is changed to none on open, so
/// the highest token is never forgotten; the fenced token survives the retention.
#[test]
fn the_fence_never_expires_whatever_the_retention() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let js = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("connect"));
        js.create_stream(async_nats::jetstream::stream::Config {
            name: format!("KV_{}", ringrift_nats::work_queue::FENCE_BUCKET),
            subjects: vec![format!("$KV.{}.>", ringrift_nats::work_queue::FENCE_BUCKET)],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            allow_rollup: true,
            ..Default::default()
        })
        .await
        .expect("an old fence bucket with a max age");
        js
    });
    let keep = Duration::from_secs(1);
    let q = JetStreamWorkQueue::open(
        &[url.clone()],
        "coordinator",
        QueueOptions {
            retention: keep,
            ..QueueOptions::default()
        },
    )
    .expect("open");
    let max_age = |bucket: &str| {
        rt.block_on(async {
            js.get_stream(format!("KV_{bucket}"))
                .await
                .expect("stream")
                .info()
                .await
                .expect("info")
                .config
                .max_age
        })
    };
    use ringrift_nats::work_queue::{
        CLAIMS_BUCKET, COMPLETED_BUCKET, FAILED_BUCKET, FENCE_BUCKET, OPEN_BUCKET,
    };
    assert_eq!(
        max_age(FENCE_BUCKET),
        Duration::ZERO,
        "the fence never expires"
    );
    assert_eq!(max_age(OPEN_BUCKET), Duration::ZERO);
    assert_eq!(max_age(CLAIMS_BUCKET), Duration::ZERO);
    assert_eq!(max_age(COMPLETED_BUCKET), keep);
    assert_eq!(max_age(FAILED_BUCKET), keep);
    let id = q
        .enqueue_fenced(&work(WorkKind::Selfplay, 1), 7)
        .expect("token 7");
    let item = q
        .claim("w", &[WorkKind::Selfplay], Duration::from_secs(30))
        .expect("claim")
        .expect("item");
    assert_eq!(item.item_id, id);
    assert!(
        q.complete(&id, "w", &serde_json::json!({}))
            .expect("complete")
    );
    // Past the retention the finished item is gone; the fence still holds token 7.
    wait_for("the finished item removed", Duration::from_secs(60), || {
        (depth(&q).2 == 0).then_some(())
    });
    match q.enqueue_fenced(&work(WorkKind::Selfplay, 1), 6) {
        Err(StoreError::Fenced { token: 6, seen: 7 }) => {}
        other => panic!("token 6 after 7 must be refused after the retention: {other:?}"),
    }
}
