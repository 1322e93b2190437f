//! Delivery accounting of durable consumers: ack wait, max ack pending, every failed
//! delivery counted (expiry, disconnect holding a started event; not one never started,
//! nor a router stop), acks above the floor surviving a router crash, where a
//! new consumer starts, retention that reports what it removed unacked, and a late ack
//! of an ended session that moves the floor only past what was acked.

use super::{Log, client, http_get, next, stats, work, work_id};
use ringrift_proto::wire::{self, EventType, subscribe_request::Start};
use ringrift_system_tests::{Home, wait_for_async};
use std::time::Duration;

type Client = handler_base::router_client::Client;

fn request(name: &str, ack_wait_ms: u32, max_ack_pending: u32) -> wire::SubscribeRequest {
    wire::SubscribeRequest {
        consumer: name.into(),
        types: vec![EventType::WorkQueued as i32],
        start: Some(Start::FromSeq(1)),
        ack_wait_ms,
        max_ack_pending,
        ..Default::default()
    }
}

async fn open(c: &mut Client, req: wire::SubscribeRequest) -> tonic::Streaming<wire::Event> {
    c.subscribe(req).await.expect("subscribe").into_inner()
}

/// The next event if one arrives within `d` (used to show that none does).
async fn within(s: &mut tonic::Streaming<wire::Event>, d: Duration) -> Option<wire::Event> {
    tokio::time::timeout(d, s.message())
        .await
        .ok()
        .map(|r| r.expect("stream ok").expect("stream open"))
}

async fn ack(c: &mut Client, consumer: &str, seq: u64, in_progress: bool) {
    c.ack(wire::AckRequest {
        consumer: consumer.into(),
        seq,
        in_progress,
        ..Default::default()
    })
    .await
    .expect("ack");
}

async fn letters(c: &mut Client) -> Vec<wire::DeadLetter> {
    c.list_dead_letters(wire::ListDeadLettersRequest::default())
        .await
        .expect("list dead letters")
        .into_inner()
        .letters
}

async fn unacked_delivery_is_redelivered_after_ack_wait_and_dead_lettered_at_max_deliver(log: Log) {
    let home = log.home();
    let (_router, addr) =
        home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=3"]);
    let mut c = client(&addr).await;
    let seq = c.publish(work("silent")).await.unwrap().into_inner().seq;
    let mut s = open(&mut c, request("silent", 200, 10)).await;
    // Neither acked nor nacked: delivered again after each ack wait, three in all.
    for n in 1..=3 {
        let ev = next(&mut s).await;
        assert_eq!(
            (ev.seq, work_id(&ev).as_str()),
            (seq, "silent"),
            "delivery {n}"
        );
    }
    let l = wait_for_async("the dead letter", Duration::from_secs(30), || {
        let mut c = c.clone();
        async move { letters(&mut c).await.into_iter().next() }
    })
    .await;
    assert_eq!((l.seq, l.failures, l.consumer.as_str()), (seq, 3, "silent"));
    assert!(l.reason.contains("ack wait"), "{}", l.reason);
    assert!(
        within(&mut s, Duration::from_millis(600)).await.is_none(),
        "no fourth delivery"
    );
    // The consumer moved on.
    let after = c.publish(work("after")).await.unwrap().into_inner().seq;
    assert_eq!(next(&mut s).await.seq, after);
}

async fn in_progress_acks_keep_a_long_handling_from_being_redelivered(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let seq = c.publish(work("long")).await.unwrap().into_inner().seq;
    let mut s = open(&mut c, request("long", 300, 10)).await;
    assert_eq!(next(&mut s).await.seq, seq);
    // Working for 4 ack waits, reporting progress every 100 ms.
    for _ in 0..12 {
        ack(&mut c, "long", seq, true).await;
        assert!(
            within(&mut s, Duration::from_millis(100)).await.is_none(),
            "redelivered while in progress"
        );
    }
    ack(&mut c, "long", seq, false).await;
    let st = stats(&mut c).await;
    let me = st.consumers.iter().find(|x| x.name == "long").unwrap();
    assert_eq!((me.pending, me.ack_floor), (0, seq));
    assert!(letters(&mut c).await.is_empty());
}

async fn a_consumer_that_dies_holding_an_event_uses_up_deliveries_across_router_restarts(log: Log) {
    let home = log.home();
    let (mut router, addr) =
        home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=3"]);
    let mut c = client(&addr).await;
    let seq = c.publish(work("poison")).await.unwrap().into_inner().seq;
    // Two "crashes": take the event, then drop the stream without ack or nack.
    for n in 1..=2 {
        let mut s = open(&mut c, request("crashy", 60_000, 10)).await;
        assert_eq!(next(&mut s).await.seq, seq, "delivery {n}");
        drop(s);
        // Deadlines are generous: under the whole suite's load a restart and a
        // disconnect once took more than 10 s to be seen (alone: 3 s for the test).
        wait_for_async("the disconnect to be seen", Duration::from_secs(30), || {
            let mut c = c.clone();
            async move {
                let st = stats(&mut c).await;
                st.consumers
                    .iter()
                    .any(|x| x.name == "crashy" && !x.connected)
                    .then_some(())
            }
        })
        .await;
    }
    // The count is persisted: a router restart does not reset it.
    router.kill9();
    let (_router2, addr) = home.start_router(&addr, &["--set", "event_router.max_deliver=3"]);
    let mut c = client(&addr).await;
    let mut s = open(&mut c, request("crashy", 60_000, 10)).await;
    assert_eq!(next(&mut s).await.seq, seq, "delivery 3");
    drop(s);
    let l = wait_for_async("the dead letter", Duration::from_secs(30), || {
        let mut c = c.clone();
        async move { letters(&mut c).await.into_iter().next() }
    })
    .await;
    assert_eq!((l.seq, l.failures), (seq, 3));
    let after = c.publish(work("after")).await.unwrap().into_inner().seq;
    let mut s = open(&mut c, request("crashy", 60_000, 10)).await;
    assert_eq!(
        next(&mut s).await.seq,
        after,
        "the poison event is not delivered again"
    );
}

async fn max_ack_pending_holds_back_new_events_until_acks_arrive(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    for i in 0..20 {
        c.publish(work(&format!("w{i}"))).await.unwrap();
    }
    let mut s = open(&mut c, request("bounded", 60_000, 5)).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut s).await.seq);
    }
    assert!(
        within(&mut s, Duration::from_millis(500)).await.is_none(),
        "a sixth event while 5 are unacked"
    );
    assert_eq!(stats(&mut c).await.consumers[0].pending, 5);
    ack(&mut c, "bounded", got[0], false).await;
    assert_eq!(next(&mut s).await.seq, got[4] + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_above_the_floor_survive_a_router_sigkill() {
    let home = Home::new();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    for i in 0..4 {
        c.publish(work(&format!("w{i}"))).await.unwrap();
    }
    let mut s = open(&mut c, request("gappy", 60_000, 10)).await;
    let seqs: Vec<u64> = [
        next(&mut s).await,
        next(&mut s).await,
        next(&mut s).await,
        next(&mut s).await,
    ]
    .iter()
    .map(|e| e.seq)
    .collect();
    // Ack all but the first: the floor stays below it, the rest are acked above it.
    for &q in &seqs[1..] {
        ack(&mut c, "gappy", q, false).await;
    }
    router.kill9();
    let (_router2, addr) = home.start_router(&addr, &[]);
    let mut c = client(&addr).await;
    let mut s = open(&mut c, request("gappy", 60_000, 10)).await;
    assert_eq!(next(&mut s).await.seq, seqs[0]);
    assert!(
        within(&mut s, Duration::from_millis(500)).await.is_none(),
        "an event acked before the crash was delivered again"
    );
}

async fn a_new_durable_consumer_without_a_start_begins_at_the_head(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    for i in 0..3 {
        c.publish(work(&format!("old{i}"))).await.unwrap();
    }
    let mut req = request("fresh", 0, 0);
    req.start = None;
    let mut s = open(&mut c, req.clone()).await;
    let new = c.publish(work("new")).await.unwrap().into_inner().seq;
    let ev = next(&mut s).await;
    assert_eq!(
        (ev.seq, work_id(&ev).as_str()),
        (new, "new"),
        "history was replayed"
    );
    // Asking for history still works.
    let mut req = request("historian", 0, 0);
    req.start = Some(Start::FromSeq(1));
    let mut s = open(&mut c, req).await;
    assert_eq!(work_id(&next(&mut s).await), "old0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_reports_events_removed_before_a_consumer_acked_them() {
    let home = Home::new();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    // A consumer that takes the first event, acks it, and goes away.
    let mut s = open(&mut c, request("laggard", 60_000, 100)).await;
    let first = c.publish(work("w0")).await.unwrap().into_inner().seq;
    assert_eq!(next(&mut s).await.seq, first);
    ack(&mut c, "laggard", first, false).await;
    drop(s);
    for i in 1..10 {
        c.publish(work(&format!("w{i}"))).await.unwrap();
    }
    router.term(Duration::from_secs(10));
    // Restarted with a 3-event limit: the first pass (one interval after start) removes
    // w0..w6, of which the laggard acked only w0.
    let (_router, addr) = home.start_router(
        &addr,
        &[
            "--set",
            "event_router.retention_max_events=3",
            "--set",
            "event_router.retention_interval_s=1",
            "--set",
            "event_router.retention_chunk=2",
        ],
    );
    let mut c = client(&addr).await;
    let mut watch = open(
        &mut c,
        wire::SubscribeRequest {
            types: vec![EventType::EventsExpired as i32],
            start: Some(Start::Latest(true)),
            ..Default::default()
        },
    )
    .await;
    let ev = next(&mut watch).await;
    let Some(wire::event::Payload::EventsExpired(x)) = ev.payload else {
        panic!("not an EVENTS_EXPIRED payload: {ev:?}");
    };
    assert_eq!(
        (
            x.consumer.as_str(),
            x.count,
            x.first_seq,
            x.last_seq,
            x.reason.as_str()
        ),
        ("laggard", 6, first + 1, first + 6, "count")
    );
    let text = http_get(&addr, "/metrics").await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("ringrift_router_events_expired_unacked_total{consumer=\"laggard\"}")
        })
        .unwrap_or_else(|| panic!("no expired counter for the laggard in\n{text}"));
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(n >= 6.0, "{line}");
}

#[test]
fn a_dead_log_writer_ends_the_router_with_a_failure() {
    let home = Home::new();
    // The writer thread panics right after its third commit.
    let (mut router, addr) = home.start_router(
        "127.0.0.1:0",
        &["--set", "failpoints=event_log_after_commit=2*off->panic"],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = client(&addr).await;
        for i in 0..5 {
            // The third publish's ack is lost with the writer; later ones fail.
            if c.publish(work(&format!("w{i}"))).await.is_err() {
                break;
            }
        }
    });
    let st = ringrift_system_tests::wait_for("the router to exit", Duration::from_secs(20), || {
        router.try_exit()
    });
    assert!(!st.success(), "router exited {st}");
    assert_ne!(
        st.code(),
        Some(64),
        "a dead writer is not a configuration error"
    );
    assert!(
        home.log("ringrift-event-router")
            .contains("writer thread stopped")
    );
}

/// The router's counter `ringrift_router_<name>` from /metrics.
async fn counter(addr: &str, name: &str) -> f64 {
    let text = http_get(addr, "/metrics").await;
    let want = format!("ringrift_router_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_stay_fast_while_retention_removes_a_million_events() {
    use prost::Message;
    const OLD: i64 = 1_000_000;
    let home = Home::new();
    // Let the router create its schema, then fill the log with a million expired events.
    let (mut router, _) = home.start_router("127.0.0.1:0", &[]);
    router.term(Duration::from_secs(10));
    let mut data = Vec::new();
    let mut ev = work("old");
    ev.id = "old".into();
    ev.encode(&mut data).expect("encode");
    {
        let mut db =
            rusqlite::Connection::open(home.path().join("events/events.db")).expect("open log");
        let tx = db.transaction().expect("tx");
        {
            let mut ins = tx
                .prepare("INSERT INTO events (seq, id, type, stored_ms, data) VALUES (?1, ?2, ?3, 1000, ?4)")
                .expect("prepare");
            for seq in 1..=OLD {
                ins.execute(rusqlite::params![
                    seq,
                    format!("old-{seq}"),
                    EventType::WorkQueued as i32,
                    data
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let (_router, addr) = home.start_router(
        "127.0.0.1:0",
        &[
            "--set",
            "event_router.retention_max_age_s=3600",
            "--set",
            "event_router.retention_interval_s=1",
        ],
    );
    let mut c = client(&addr).await;
    let mut lat = Vec::new();
    let mut during = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut i = 0u64;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not finish in 300 s"
        );
        let removed = if i % 50 == 0 {
            Some(counter(&addr, "events_retention_removed_total").await)
        } else {
            None
        };
        if removed == Some(OLD as f64) {
            break;
        }
        let t = std::time::Instant::now();
        c.publish(work(&format!("new{i}"))).await.expect("publish");
        let d = t.elapsed();
        if removed.is_some_and(|r| r > 0.0) || during > 0 {
            during += 1;
            lat.push(d);
        }
        i += 1;
    }
    lat.sort();
    assert!(
        lat.len() >= 200,
        "only {} publishes measured during the pass",
        lat.len()
    );
    let p99 = lat[lat.len() * 99 / 100];
    let p50 = lat[lat.len() / 2];
    eprintln!(
        "publish latency during retention of {OLD} events: {} publishes, p50 {p50:?}, p99 {p99:?}",
        lat.len()
    );
    // Removing the million rows in one transaction holds the writer for seconds; in
    // 256-row transactions a publish waits at most one small batch. The bounds leave room
    // for a loaded 2-core CI machine (quiet: p99 ~15 ms; under a parallel suite up to
    // ~25 ms seen) and still fail on a pass that holds the writer for long.
    let max = lat[lat.len() - 1];
    assert!(
        p99 < Duration::from_millis(60) && max < Duration::from_secs(1),
        "p99 {p99:?} (p50 {p50:?}, max {max:?}) over {} publishes",
        lat.len()
    );
}

/// Watchdog messages ("WATCHDOG=1") received on `sock` within `d` (queued ones included).
fn watchdog_pings(sock: &std::os::unix::net::UnixDatagram, d: Duration) -> usize {
    let end = std::time::Instant::now() + d;
    let mut n = 0;
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match sock.recv(&mut buf) {
            Ok(k) => {
                n += String::from_utf8_lossy(&buf[..k])
                    .lines()
                    .filter(|l| *l == "WATCHDOG=1")
                    .count()
            }
            Err(_) => break,
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_log_writer_stops_the_watchdog_and_fails_health() {
    let home = Home::new();
    let sock_path = home.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    // The first publishing transaction hangs for 4 s; a writer busy for over 0.5 s counts as stuck.
    let mut router = home.spawn_env(
        "ringrift-event-router",
        &[
            "--set",
            "event_router.listen=127.0.0.1:0",
            "--set",
            "heartbeat_interval_s=3600",
            "--set",
            "event_router.writer_stuck_s=0.5",
            "--set",
            "failpoints=event_log_publish_commit=1*sleep(4000)",
        ],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let addr = home.wait_addr("event_router", &mut router);
    assert!(
        watchdog_pings(&sock, Duration::from_millis(500)) >= 2,
        "no watchdog pings while healthy"
    );
    let mut c = client(&addr).await;
    let publish =
        tokio::spawn(async move { c.publish(work("slow")).await.map(|r| r.into_inner().seq) });
    // Stuck from 0.5 s into the 4 s transaction: health fails and the pings stop.
    let why = wait_for_async("/health to fail", Duration::from_secs(3), || {
        let addr = addr.clone();
        async move {
            let (code, body) = ringrift_system_tests::http_get_with(&addr, "/health", None).await?;
            (code == 503).then_some(body)
        }
    })
    .await;
    assert!(why.contains("stuck"), "{why}");
    let sock = tokio::task::spawn_blocking(move || {
        // Pings sent before the writer counted as stuck may still be queued (one
        // watchdog period included): drop them, then count.
        watchdog_pings(&sock, Duration::from_millis(150));
        let n = watchdog_pings(&sock, Duration::from_millis(1000));
        (n, sock)
    });
    let (stuck_pings, sock) = sock.await.expect("join");
    assert_eq!(stuck_pings, 0, "watchdog pinged while the writer was stuck");
    // The transaction finishes: the publish is acked and the pings resume.
    let seq = tokio::time::timeout(Duration::from_secs(10), publish)
        .await
        .expect("publish within 10 s")
        .expect("join")
        .expect("publish acked");
    assert_eq!(seq, 1);
    let resumed =
        tokio::task::spawn_blocking(move || watchdog_pings(&sock, Duration::from_millis(600)));
    assert!(
        resumed.await.expect("join") >= 2,
        "watchdog pings did not resume"
    );
}

/// A cumulative ack covers what the subscriber has read, never a redelivery still in its
/// stream: 1 and 2 delivered, 1 nacked and delivered again after 2; acking 2
/// cumulatively leaves that second delivery of 1 awaiting its own ack, so a subscriber
/// that stops before handling it gets 1 once more from its next session.
async fn a_cumulative_ack_does_not_cover_a_redelivery_sent_after_it(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let one = c.publish(work("one")).await.unwrap().into_inner().seq;
    let two = c.publish(work("two")).await.unwrap().into_inner().seq;
    let mut s = open(&mut c, request("cumul", 60_000, 10)).await;
    assert_eq!((next(&mut s).await.seq, next(&mut s).await.seq), (one, two));
    c.nack(wire::NackRequest {
        consumer: "cumul".into(),
        seq: one,
        reason: "try again".into(),
    })
    .await
    .expect("nack");
    assert_eq!(next(&mut s).await.seq, one, "redelivered after the nack");
    c.ack(wire::AckRequest {
        consumer: "cumul".into(),
        seq: two,
        cumulative: true,
        ..Default::default()
    })
    .await
    .expect("cumulative ack");
    drop(s);
    let mut s = open(&mut c, request("cumul", 60_000, 10)).await;
    let again = next(&mut s).await;
    assert_eq!(
        (again.seq, work_id(&again).as_str()),
        (one, "one"),
        "the redelivery sent after 2 was acked by the cumulative ack of 2"
    );
}

/// Waits (bounded) until the router shows durable consumer `name` without a session.
async fn wait_disconnected(c: &Client, name: &str) {
    wait_for_async("the disconnect to be seen", Duration::from_secs(30), || {
        let mut c = c.clone();
        async move {
            let st = stats(&mut c).await;
            st.consumers
                .iter()
                .any(|x| x.name == name && !x.connected)
                .then_some(())
        }
    })
    .await;
}

/// A late ack (issue 28, point 0): a consumer is sent up to 1,000 events, reads 100, its
/// stream ends, then it acks the 50th. The floor may pass only what was acked: the next
/// session gets every event after the 50th (the first 50 too, unless the late ack
/// counted). Before the fix the SQLite log moved the floor to the highest seq the ended
/// session was sent, and events 51..1,000 never reached the consumer again.
async fn a_late_ack_moves_the_floor_only_past_acked_events(log: Log, cumulative: bool) {
    const N: usize = 1_000;
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let mut seqs = Vec::with_capacity(N);
    for chunk in 0..N / 100 {
        let events = (0..100)
            .map(|k| work(&format!("late-{}", chunk * 100 + k)))
            .collect();
        let acks = c
            .publish_batch(wire::PublishBatchRequest { events })
            .await
            .expect("publish")
            .into_inner()
            .acks;
        seqs.extend(acks.into_iter().map(|a| a.seq));
    }
    let name = if cumulative {
        "late-cumul"
    } else {
        "late-single"
    };
    let mut s = open(&mut c, request(name, 60_000, N as u32)).await;
    let mut read = Vec::new();
    for _ in 0..100 {
        read.push(next(&mut s).await.seq);
    }
    assert_eq!(read, seqs[..100], "delivered in order");
    drop(s);
    wait_disconnected(&c, name).await;
    let fiftieth = read[49];
    // The session that was sent it has ended: the router may take the ack or refuse it
    // (JetStream refuses a single one it no longer holds); it must not ack more.
    let late = c
        .ack(wire::AckRequest {
            consumer: name.into(),
            seq: fiftieth,
            cumulative,
            ..Default::default()
        })
        .await;
    let st = stats(&mut c).await;
    let me = st.consumers.iter().find(|x| x.name == name).unwrap();
    assert!(
        me.ack_floor <= fiftieth,
        "the late ack of {fiftieth} ({late:?}) moved the floor to {}: events after it were never acked",
        me.ack_floor
    );
    let mut s = open(&mut c, request(name, 60_000, N as u32)).await;
    let mut missing: std::collections::BTreeSet<u64> =
        seqs.iter().copied().filter(|s| *s > fiftieth).collect();
    while let Some(&first) = missing.first() {
        let ev = tokio::time::timeout(Duration::from_secs(20), s.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} events after the late ack never came back (from seq {first})",
                    missing.len()
                )
            })
            .expect("stream ok")
            .expect("stream open");
        missing.remove(&ev.seq);
    }
}

async fn a_late_cumulative_ack_moves_the_floor_only_past_acked_events(log: Log) {
    a_late_ack_moves_the_floor_only_past_acked_events(log, true).await;
}

async fn a_late_single_ack_moves_the_floor_only_past_acked_events(log: Log) {
    a_late_ack_moves_the_floor_only_past_acked_events(log, false).await;
}

/// Progress on `seq`: `queued` (still waiting at the consumer) or started.
async fn progress(c: &mut Client, consumer: &str, seq: u64, queued: bool) {
    c.ack(wire::AckRequest {
        consumer: consumer.into(),
        seq,
        in_progress: true,
        queued,
        ..Default::default()
    })
    .await
    .expect("progress");
}

/// A session that ends holding events counts a failed delivery only for those the
/// consumer started (an in-progress ack without `queued`): with `max_deliver` 2, two
/// sessions that each hold a (started), b (reported queued) and c (never reported)
/// dead-letter a alone. A router stopped gracefully (twice) while the consumer works on
/// b counts nothing either: b is delivered again, not dead-lettered. Before: every
/// session end and every router stop counted a failure for each held event, so a, b and
/// c were all dead-lettered after the second session.
async fn only_started_deliveries_count_when_a_session_ends(log: Log) {
    let home = log.home();
    let args = ["--set", "event_router.max_deliver=2"];
    let (mut router, addr) = home.start_router("127.0.0.1:0", &args);
    let mut c = client(&addr).await;
    let mut seqs = Vec::new();
    for id in ["a", "b", "c"] {
        seqs.push(c.publish(work(id)).await.unwrap().into_inner().seq);
    }
    for round in 1..=2 {
        let mut s = open(&mut c, request("lanes", 60_000, 10)).await;
        for (id, seq) in ["a", "b", "c"].iter().zip(&seqs) {
            let ev = next(&mut s).await;
            assert_eq!(
                (work_id(&ev), ev.seq),
                (id.to_string(), *seq),
                "round {round}"
            );
        }
        progress(&mut c, "lanes", seqs[0], false).await;
        progress(&mut c, "lanes", seqs[1], true).await;
        drop(s);
        wait_disconnected(&c, "lanes").await;
    }
    let dead: Vec<(u64, u32)> = letters(&mut c)
        .await
        .iter()
        .map(|l| (l.seq, l.failures))
        .collect();
    assert_eq!(dead, vec![(seqs[0], 2)], "only the started event");
    for stop in 1..=2 {
        let mut s = open(&mut c, request("lanes", 60_000, 10)).await;
        let ev = next(&mut s).await;
        assert_eq!(ev.seq, seqs[1], "b again after router stop {}", stop - 1);
        progress(&mut c, "lanes", ev.seq, false).await;
        let st = router.term(Duration::from_secs(60));
        assert!(st.success(), "graceful router stop {stop}: {st}");
        drop(s);
        (router, _) = home.start_router(&addr, &args);
        c = client(&addr).await;
    }
    let mut s = open(&mut c, request("lanes", 60_000, 10)).await;
    let ev = next(&mut s).await;
    assert_eq!(ev.seq, seqs[1], "b is not dead-lettered by router stops");
    ack(&mut c, "lanes", ev.seq, false).await;
    // c, never started, may come only after its 60 s ack wait: on JetStream under load a
    // stopping router sometimes does not hand it back (an open flake, see the closing
    // note of 2026-12-08); this test is about what is counted, so it waits that long.
    let ev = within(&mut s, Duration::from_secs(75))
        .await
        .expect("c within its ack wait");
    assert_eq!(ev.seq, seqs[2]);
    ack(&mut c, "lanes", seqs[2], false).await;
    assert_eq!(letters(&mut c).await.len(), 1, "still only a dead-lettered");
}

/// An event the consumer reported queued (an in-progress ack with `queued`) whose ack
/// wait runs out anyway (the report came late, behind a long handling on a loaded
/// machine) is sent again, and that expiry is no failed delivery: with `max_deliver` 2,
/// four such expiries dead-letter nothing, while an unreported one is still charged.
async fn an_ack_wait_that_runs_out_on_a_queued_event_is_no_failed_delivery(log: Log) {
    let home = log.home();
    let (_router, addr) =
        home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=2"]);
    let mut c = client(&addr).await;
    let queued = c.publish(work("queued")).await.unwrap().into_inner().seq;
    let mut s = open(&mut c, request("behind", 300, 10)).await;
    for n in 1..=4 {
        let ev = next(&mut s).await;
        assert_eq!(ev.seq, queued, "delivery {n}");
        // Reported queued once, then not renewed: the wait runs out.
        c.ack(wire::AckRequest {
            consumer: "behind".into(),
            seq: queued,
            in_progress: true,
            queued: true,
            ..Default::default()
        })
        .await
        .expect("queued report");
    }
    assert_eq!(next(&mut s).await.seq, queued, "delivery 5");
    ack(&mut c, "behind", queued, false).await;
    assert!(
        letters(&mut c).await.is_empty(),
        "a queued event was dead-lettered for waits it never started"
    );
    // Not reported at all: charged as before (two expiries, dead-lettered).
    let silent = c.publish(work("silent")).await.unwrap().into_inner().seq;
    assert_eq!(next(&mut s).await.seq, silent);
    assert_eq!(next(&mut s).await.seq, silent);
    let l = wait_for_async("the dead letter", Duration::from_secs(30), || {
        let mut c = c.clone();
        async move { letters(&mut c).await.into_iter().next() }
    })
    .await;
    assert_eq!((l.seq, l.failures), (silent, 2));
}

super::on_both_logs!(
    an_ack_wait_that_runs_out_on_a_queued_event_is_no_failed_delivery,
    only_started_deliveries_count_when_a_session_ends,
    a_late_cumulative_ack_moves_the_floor_only_past_acked_events,
    a_late_single_ack_moves_the_floor_only_past_acked_events,
    unacked_delivery_is_redelivered_after_ack_wait_and_dead_lettered_at_max_deliver,
    in_progress_acks_keep_a_long_handling_from_being_redelivered,
    a_consumer_that_dies_holding_an_event_uses_up_deliveries_across_router_restarts,
    max_ack_pending_holds_back_new_events_until_acks_arrive,
    a_new_durable_consumer_without_a_start_begins_at_the_head,
    a_cumulative_ack_does_not_cover_a_redelivery_sent_after_it
);
