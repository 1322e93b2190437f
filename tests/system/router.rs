//! The event router's acceptance tests: throughput in order, crash durability, durable
//! consumer resume, dedup, dead letters, slow consumers, malformed input, reflection.

use ringrift_proto::wire::{self, EventType, event::Payload, subscribe_request::Start};
use ringrift_system_tests::{Home, Nats, wait_for_async};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tonic::Code;

type Client = handler_base::router_client::Client;

mod delivery;

/// The event log a test's router runs on: the same tests run on both backends.
pub(crate) enum Log {
    Sqlite,
    /// A one-node nats-server with JetStream, alive as long as the test.
    Jetstream(Nats),
}

impl Log {
    /// A JetStream log, or `None` when nats-server is missing (the test then skips;
    /// under CI=true it fails, see `require_tool`).
    pub(crate) fn jetstream() -> Option<Log> {
        Nats::start(1).map(Log::Jetstream)
    }

    /// A temp home whose router uses this log.
    pub(crate) fn home(&self) -> Home {
        let home = Home::new();
        if let Log::Jetstream(nats) = self {
            nats.configure(&home);
        }
        home
    }
}

/// For each `name`, a module `name` with tests `sqlite` and `jetstream` running
/// `async fn name(log: Log)` against that backend.
macro_rules! on_both_logs {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Log::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn jetstream() {
                if let Some(log) = super::Log::jetstream() {
                    super::$name(log).await;
                }
            }
        }
    )*};
}
pub(crate) use on_both_logs;

on_both_logs!(
    ten_thousand_events_from_four_publishers_arrive_in_publisher_order,
    sigkill_of_router_loses_no_acked_event,
    durable_consumer_resumes_exactly_after_its_last_ack,
    duplicate_publish_within_window_is_acked_not_stored,
    dedup_window_survives_router_restart,
    nacked_five_times_goes_to_dlq_and_dlq_retry_redelivers_it,
    dlq_retry_gives_up_after_max_retries_and_keeps_the_letter,
    malformed_events_are_rejected_clearly_and_nothing_is_stored,
    publish_stream_acks_every_event_in_order_and_only_once_durable
);

pub(crate) fn work(id: &str) -> wire::Event {
    wire::Event {
        r#type: EventType::WorkQueued as i32,
        payload: Some(Payload::WorkQueued(wire::WorkItem {
            work_id: id.into(),
            kind: "selfplay".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub(crate) fn work_id(ev: &wire::Event) -> String {
    match &ev.payload {
        Some(Payload::WorkQueued(w)) => w.work_id.clone(),
        other => panic!("unexpected payload {other:?}"),
    }
}

/// Subscribes durable consumer `name` from `from`, to WORK_QUEUED only (daemons started
/// by a test publish heartbeats too), with no practical limit on unacked deliveries
/// (tests of that limit build their own request).
pub(crate) async fn subscribe_durable(
    c: &mut Client,
    name: &str,
    from: u64,
) -> tonic::Streaming<wire::Event> {
    c.subscribe(wire::SubscribeRequest {
        consumer: name.into(),
        types: vec![EventType::WorkQueued as i32],
        prefixes: vec![],
        start: Some(Start::FromSeq(from)),
        max_ack_pending: u32::MAX,
        ..Default::default()
    })
    .await
    .expect("subscribe")
    .into_inner()
}

pub(crate) async fn client(addr: &str) -> Client {
    handler_base::router_client::connect(addr)
        .await
        .expect("connect router")
}

pub(crate) async fn next(s: &mut tonic::Streaming<wire::Event>) -> wire::Event {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("event within 20 s")
        .expect("stream ok")
        .expect("stream open")
}

pub(crate) async fn stats(c: &mut Client) -> wire::StatsResponse {
    c.stats(wire::StatsRequest {})
        .await
        .expect("stats")
        .into_inner()
}

/// Polls (with a deadline) until a dead letter reaches `state`. Alone this takes under
/// a second; the JetStream variant once ran out of 10 s in a full CI run (cause not
/// found), so the bound is 30 s.
async fn wait_for_letter(c: &Client, state: wire::DeadLetterState) -> wire::DeadLetter {
    wait_for_async(
        &format!("a dead letter in state {}", state.as_str_name()),
        Duration::from_secs(30),
        || {
            let mut c = c.clone();
            async move {
                let req = wire::ListDeadLettersRequest {
                    consumer: String::new(),
                    include_resolved: true,
                };
                let ls = c.list_dead_letters(req).await.ok()?.into_inner().letters;
                ls.into_iter().find(|l| l.state == state as i32)
            }
        },
    )
    .await
}

async fn ten_thousand_events_from_four_publishers_arrive_in_publisher_order(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut pubs = Vec::new();
    for p in 0..4 {
        let mut c = client(&addr).await;
        pubs.push(tokio::spawn(async move {
            for chunk in 0..50 {
                let events = (0..50)
                    .map(|k| work(&format!("p{p}-{}", chunk * 50 + k)))
                    .collect();
                c.publish_batch(wire::PublishBatchRequest { events })
                    .await
                    .expect("publish");
            }
        }));
    }
    let mut c = client(&addr).await;
    let mut s = subscribe_durable(&mut c, "order-check", 1).await;
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut n = 0;
    while n < 10_000 {
        let ev = next(&mut s).await;
        let id = work_id(&ev);
        let (p, k) = id.split_once('-').unwrap();
        let k: i64 = k.parse().unwrap();
        let prev = last.insert(p.to_owned(), k).unwrap_or(-1);
        assert_eq!(k, prev + 1, "publisher {p}: got {k} after {prev}");
        n += 1;
        if n % 500 == 0 {
            c.ack(wire::AckRequest {
                consumer: "order-check".into(),
                seq: ev.seq,
                cumulative: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    for p in pubs {
        p.await.unwrap();
    }
    assert_eq!(last.len(), 4);
    let st = stats(&mut c).await;
    assert_eq!(st.head_seq, 10_000);
    let cs = st
        .consumers
        .iter()
        .find(|c| c.name == "order-check")
        .unwrap();
    assert_eq!(cs.ack_floor, 10_000);
}

async fn sigkill_of_router_loses_no_acked_event(log: Log) {
    let home = log.home();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..3 {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = handler_base::router_client::connect_lazy(&addr).unwrap();
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && k < 20_000 {
                let id = format!("p{p}-{k}");
                if c.publish(work(&id)).await.is_ok() {
                    acked.lock().unwrap().insert(id);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                k += 1;
            }
        }));
    }
    wait_for_async(
        "300 acks before the kill",
        Duration::from_secs(30),
        || async { (acked.lock().unwrap().len() >= 300).then_some(()) },
    )
    .await;
    router.kill9();
    let acked_at_kill = acked.lock().unwrap().len();
    let (_router2, addr2) = home.start_router(&addr, &[]);
    assert_eq!(addr2, addr);
    wait_for_async(
        "100 more acks after restart",
        Duration::from_secs(30),
        || async { (acked.lock().unwrap().len() >= acked_at_kill + 100).then_some(()) },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let want = acked.lock().unwrap().clone();
    let mut c = client(&addr).await;
    let head = stats(&mut c).await.head_seq;
    let mut s = subscribe_durable(&mut c, "after-crash", 1).await;
    let mut got = HashSet::new();
    loop {
        let ev = next(&mut s).await;
        got.insert(work_id(&ev));
        if ev.seq == head {
            break;
        }
    }
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acked events lost, e.g. {missing:?}",
        want.difference(&got).count()
    );
}

async fn durable_consumer_resumes_exactly_after_its_last_ack(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let events = (0..100).map(|k| work(&format!("a-{k}"))).collect();
    c.publish_batch(wire::PublishBatchRequest { events })
        .await
        .unwrap();
    {
        let mut s = subscribe_durable(&mut c, "resumer", 1).await;
        for k in 0..40 {
            let ev = next(&mut s).await;
            assert_eq!(work_id(&ev), format!("a-{k}"));
            c.ack(wire::AckRequest {
                consumer: "resumer".into(),
                seq: ev.seq,
                cumulative: false,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        // Read (but do not ack) five more: they must come again.
        for _ in 0..5 {
            next(&mut s).await;
        }
    }
    let events = (100..120).map(|k| work(&format!("a-{k}"))).collect();
    c.publish_batch(wire::PublishBatchRequest { events })
        .await
        .unwrap();
    let mut s = subscribe_durable(&mut c, "resumer", 1).await;
    for k in 40..120 {
        let ev = next(&mut s).await;
        assert_eq!(
            work_id(&ev),
            format!("a-{k}"),
            "resume must start right after the last ack"
        );
    }
    c.publish(work("marker")).await.unwrap();
    assert_eq!(
        work_id(&next(&mut s).await),
        "marker",
        "nothing extra before the marker"
    );
}

async fn duplicate_publish_within_window_is_acked_not_stored(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let mut ev = work("dup");
    ev.id = "fixed-id-1".into();
    let a = c.publish(ev.clone()).await.unwrap().into_inner();
    let b = c.publish(ev).await.unwrap().into_inner();
    assert!(!a.duplicate && b.duplicate);
    assert_eq!(a.seq, b.seq);
    // Without an id, the content hash is the id.
    let x = c.publish(work("same-content")).await.unwrap().into_inner();
    let y = c.publish(work("same-content")).await.unwrap().into_inner();
    assert!(!x.duplicate && y.duplicate, "{x:?} {y:?}");
    let st = stats(&mut c).await;
    assert_eq!((st.head_seq, st.published, st.duplicates), (2, 2, 2));
}

async fn dedup_window_survives_router_restart(log: Log) {
    let home = log.home();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let mut ev = work("x");
    ev.id = "survives".into();
    c.publish(ev.clone()).await.unwrap();
    router.term(Duration::from_secs(10));
    let (_r2, addr) = home.start_router(&addr, &[]);
    let mut c = client(&addr).await;
    assert!(c.publish(ev).await.unwrap().into_inner().duplicate);
}

async fn nacked_five_times_goes_to_dlq_and_dlq_retry_redelivers_it(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let mut s = subscribe_durable(&mut c, "flaky", 1).await;
    let seq = c.publish(work("poison")).await.unwrap().into_inner().seq;
    for attempt in 1..=5u32 {
        let ev = next(&mut s).await;
        assert_eq!(work_id(&ev), "poison", "attempt {attempt}");
        let r = c
            .nack(wire::NackRequest {
                consumer: "flaky".into(),
                seq,
                reason: format!("boom {attempt}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.dead_lettered, attempt == 5, "attempt {attempt}: {r:?}");
    }
    // The consumer moves on.
    c.publish(work("after")).await.unwrap();
    let ev = next(&mut s).await;
    assert_eq!(work_id(&ev), "after");
    c.ack(wire::AckRequest {
        consumer: "flaky".into(),
        seq: ev.seq,
        cumulative: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let letters = c
        .list_dead_letters(wire::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].seq,
            letters[0].failures,
            letters[0].reason.as_str()
        ),
        (seq, 5, "boom 5")
    );

    let mut retry = home.spawn(
        "ringrift-dlq-retry",
        &[
            "--router",
            &addr,
            "--set",
            "dlq_retry.base_delay_s=0.2",
            "--set",
            "dlq_retry.cycle_interval_s=0.1",
        ],
    );
    let ev = next(&mut s).await;
    assert_eq!(
        (work_id(&ev), ev.seq),
        ("poison".to_owned(), seq),
        "redelivered by dlq_retry"
    );
    c.ack(wire::AckRequest {
        consumer: "flaky".into(),
        seq,
        cumulative: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let l = wait_for_letter(&c, wire::DeadLetterState::Delivered).await;
    assert_eq!(l.retries, 1);
    assert!(retry.try_exit().is_none(), "dlq_retry still running");
}

async fn dlq_retry_gives_up_after_max_retries_and_keeps_the_letter(log: Log) {
    let home = log.home();
    let (_router, addr) =
        home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=1"]);
    let mut c = client(&addr).await;
    let mut s = subscribe_durable(&mut c, "always-fails", 1).await;
    let seq = c.publish(work("never")).await.unwrap().into_inner().seq;
    let _retry = home.spawn(
        "ringrift-dlq-retry",
        &[
            "--router",
            &addr,
            "--set",
            "dlq_retry.base_delay_s=0.05",
            "--set",
            "dlq_retry.max_delay_s=0.1",
            "--set",
            "dlq_retry.cycle_interval_s=0.05",
            "--set",
            "dlq_retry.max_retries=3",
        ],
    );
    // First delivery + 3 retries, each nacked once (max_deliver = 1).
    for _ in 0..4 {
        let ev = next(&mut s).await;
        assert_eq!(ev.seq, seq);
        c.nack(wire::NackRequest {
            consumer: "always-fails".into(),
            seq,
            reason: "still broken".into(),
        })
        .await
        .unwrap();
    }
    let l = wait_for_letter(&c, wire::DeadLetterState::GivenUp).await;
    assert_eq!((l.seq, l.retries), (seq, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_consumer_slows_neither_publishers_nor_other_consumers() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    const N: usize = 20_000;
    let publish_all = |c: Client, tag: &'static str| async move {
        let mut c = c;
        let t = Instant::now();
        for chunk in 0..(N / 500) {
            let events = (0..500)
                .map(|k| work(&format!("{tag}-{}", chunk * 500 + k)))
                .collect();
            c.publish_batch(wire::PublishBatchRequest { events })
                .await
                .unwrap();
        }
        t.elapsed()
    };
    let baseline = publish_all(c.clone(), "base").await;
    // The stalled consumer subscribes and never reads its stream.
    let _stalled = subscribe_durable(&mut c, "stalled", 1).await;
    let mut live = subscribe_durable(&mut c, "live", (N + 1) as u64).await;
    let reader = tokio::spawn(async move {
        let t = Instant::now();
        for _ in 0..N {
            next(&mut live).await;
        }
        t.elapsed()
    });
    let with_stall = publish_all(c.clone(), "load").await;
    let read = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("live consumer finished")
        .unwrap();
    eprintln!(
        "publish {N}: baseline {baseline:?}, with stalled consumer {with_stall:?}; live consumer read all in {read:?}"
    );
    assert!(
        with_stall < baseline * 3 + Duration::from_secs(1),
        "publishers slowed: {with_stall:?} vs {baseline:?}"
    );
    let st = stats(&mut c).await;
    let stalled = st.consumers.iter().find(|c| c.name == "stalled").unwrap();
    // It holds only what fits in its channel and the HTTP/2 window, not the whole log.
    assert!(
        stalled.pending < (2 * N) as u64,
        "stalled consumer was handed everything ({})",
        stalled.pending
    );
}

async fn malformed_events_are_rejected_clearly_and_nothing_is_stored(log: Log) {
    let home = log.home();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let cases: Vec<(&str, wire::Event, &str)> = vec![
        (
            "unknown type",
            wire::Event {
                r#type: 9999,
                payload: Some(Payload::Json("{}".into())),
                ..Default::default()
            },
            "unknown event type 9999",
        ),
        (
            "unspecified type",
            wire::Event {
                r#type: 0,
                payload: Some(Payload::Json("{}".into())),
                ..Default::default()
            },
            "unspecified",
        ),
        (
            "no payload",
            wire::Event {
                r#type: EventType::ModelPromoted as i32,
                ..Default::default()
            },
            "no payload",
        ),
        (
            "mismatched payload",
            wire::Event {
                r#type: EventType::ModelPromoted as i32,
                payload: Some(Payload::WorkQueued(wire::WorkItem::default())),
                ..Default::default()
            },
            "WORK_QUEUED",
        ),
        (
            "bad json",
            wire::Event {
                r#type: EventType::ModelPromoted as i32,
                payload: Some(Payload::Json("{\"elo\": \"high\"}".into())),
                ..Default::default()
            },
            "JSON payload for MODEL_PROMOTED",
        ),
        (
            "oversized",
            wire::Event {
                r#type: EventType::PromotionRejected as i32,
                payload: Some(Payload::PromotionRejected(wire::PromotionRejected {
                    reason: "x".repeat(100_000),
                    ..Default::default()
                })),
                ..Default::default()
            },
            "byte limit",
        ),
    ];
    for (what, ev, needle) in cases {
        let err = c.publish(ev).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: {:?} lacks {needle:?}",
            err.message()
        );
    }
    let err = c
        .publish_batch(wire::PublishBatchRequest {
            events: vec![
                work("good"),
                wire::Event {
                    r#type: 4242,
                    ..Default::default()
                },
            ],
        })
        .await
        .expect_err("batch with a bad event");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("event 1:"), "{}", err.message());
    let huge = wire::Event {
        r#type: EventType::External as i32,
        payload: Some(Payload::Json(format!(
            "{{\"x\": \"{}\"}}",
            "y".repeat(9 << 20)
        ))),
        ..Default::default()
    };
    let err = c.publish(huge).await.expect_err("9 MiB event");
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{err:?}"
    );
    let bad_sub = c
        .subscribe(wire::SubscribeRequest {
            prefixes: vec!["NOPE_".into()],
            ..Default::default()
        })
        .await
        .expect_err("bad prefix");
    assert_eq!(bad_sub.code(), Code::InvalidArgument);
    let st = stats(&mut c).await;
    assert_eq!((st.head_seq, st.published), (0, 0), "nothing stored");
}

#[test]
fn a_bad_event_backend_in_cluster_toml_exits_64_naming_the_key() {
    let home = Home::new();
    std::fs::write(
        home.path().join("cluster.toml"),
        "[events]\nbackend = \"jetstream\"\nservers = [\"nats://127.0.0.1:4222\"]\nreplicas = 7\n\n[[node]]\nname = \"n\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    let mut p = home.spawn(
        "ringrift-event-router",
        &[
            "--set",
            "node=n",
            "--set",
            "event_router.listen=127.0.0.1:0",
        ],
    );
    let st = ringrift_system_tests::wait_for("the router to exit", Duration::from_secs(20), || {
        p.try_exit()
    });
    assert_eq!(st.code(), Some(64), "{}", home.log("ringrift-event-router"));
    assert!(
        home.log("ringrift-event-router")
            .contains("events.replicas"),
        "{}",
        home.log("ringrift-event-router")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_event_router_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let ch = handler_base::router_client::endpoint(&addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rc = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = rc
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected {msg:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"ringrift.v1.EventRouter"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_events() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    c.publish(work("m1")).await.unwrap();
    c.publish(work("m1")).await.unwrap();
    let body = http_get(&addr, "/metrics").await;
    assert!(
        body.contains("ringrift_router_events_published_total 1"),
        "{body}"
    );
    assert!(
        body.contains("ringrift_router_events_duplicate_total 1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_durability_runs_the_writer_with_synchronous_full() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let body = http_get(&addr, "/metrics").await;
    // 2 = FULL: the writer fsyncs each commit before its acks go out.
    assert!(body.contains("ringrift_router_synchronous 2\n"), "{body}");
    let relaxed_home = Home::new();
    let (_relaxed, addr) =
        relaxed_home.start_router("127.0.0.1:0", &["--set", "event_router.durability=relaxed"]);
    let body = http_get(&addr, "/metrics").await;
    assert!(body.contains("ringrift_router_synchronous 1\n"), "{body}");
}

/// Minimal HTTP/1.1 GET over a TCP socket (no client crate needed for one call).
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a PublishStream fed from a channel; the channel holds up to `cap` unsent events.
async fn publish_stream(
    c: &mut Client,
    cap: usize,
) -> (
    tokio::sync::mpsc::Sender<wire::Event>,
    tonic::Streaming<wire::PublishAck>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap);
    let acks = c
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open PublishStream")
        .into_inner();
    (tx, acks)
}

async fn next_ack(
    s: &mut tonic::Streaming<wire::PublishAck>,
) -> Result<Option<wire::PublishAck>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("ack within 20 s")
}

/// Every acked (id, seq) must be stored under that seq after a restart.
async fn assert_stored(addr: &str, acked: &[(String, u64)]) {
    let mut c = client(addr).await;
    let head = stats(&mut c).await.head_seq;
    let mut s = subscribe_durable(&mut c, "verify", 1).await;
    let mut got: HashMap<String, u64> = HashMap::new();
    while got.len() < head as usize {
        let ev = next(&mut s).await;
        got.insert(work_id(&ev), ev.seq);
        if ev.seq == head {
            break;
        }
    }
    for (id, seq) in acked {
        assert_eq!(
            got.get(id),
            Some(seq),
            "acked event {id} (seq {seq}) is not in the log after the restart"
        );
    }
}

async fn publish_stream_acks_every_event_in_order_and_only_once_durable(log: Log) {
    let home = log.home();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let mut acked: Vec<(String, u64)> = Vec::new();

    // 1,000 events, all sent at once: one ack each, in order, then a clean end.
    let (tx, mut acks) = publish_stream(&mut c, 1_000).await;
    for k in 0..1_000 {
        tx.send(work(&format!("s-{k}"))).await.unwrap();
    }
    drop(tx);
    for k in 0..1_000u64 {
        let a = next_ack(&mut acks)
            .await
            .expect("ack stream ok")
            .expect("an ack per event");
        assert!(a.error.is_empty() && !a.duplicate, "{a:?}");
        assert_eq!(a.seq, k + 1, "acks come in the order the events were sent");
        let id = format!("s-{k}");
        assert_eq!(a.id, ringrift_proto::Event::try_from(work(&id)).unwrap().id);
        acked.push((id, a.seq));
    }
    assert!(
        next_ack(&mut acks).await.expect("clean end").is_none(),
        "no ack beyond the last event"
    );

    // 3,000 more in one stream; SIGKILL the router while it is still acking them.
    let (tx, mut acks) = publish_stream(&mut c, 3_000).await;
    for k in 0..3_000 {
        tx.send(work(&format!("t-{k}"))).await.unwrap();
    }
    let mut k = 0u64;
    loop {
        match next_ack(&mut acks).await {
            Ok(Some(a)) => {
                assert!(a.error.is_empty() && !a.duplicate, "{a:?}");
                assert_eq!(a.seq, 1_001 + k, "acks in order");
                acked.push((format!("t-{k}"), a.seq));
                k += 1;
                if k == 500 {
                    router.kill9();
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(tx);
    assert!(k >= 500, "only {k} acks before the kill");
    let (_router2, addr2) = home.start_router(&addr, &[]);
    assert_eq!(addr2, addr);
    assert_stored(&addr, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stream_rejects_an_invalid_event_alone_and_stays_open() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = client(&addr).await;
    let (tx, mut acks) = publish_stream(&mut c, 16).await;
    let bad_type = wire::Event {
        id: "bad-type".into(),
        r#type: 4242,
        payload: Some(Payload::Json("{}".into())),
        ..Default::default()
    };
    let no_payload = wire::Event {
        id: "no-payload".into(),
        r#type: EventType::ModelPromoted as i32,
        ..Default::default()
    };
    for ev in [work("g-0"), bad_type, work("g-1"), no_payload, work("g-2")] {
        tx.send(ev).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(
            next_ack(&mut acks)
                .await
                .expect("stream stays open")
                .expect("an ack per event"),
        );
    }
    let seqs: Vec<u64> = got.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, vec![1, 0, 2, 0, 3], "{got:?}");
    assert!(
        got[1].error.contains("unknown event type 4242") && got[1].id == "bad-type",
        "{:?}",
        got[1]
    );
    assert!(
        got[3].error.contains("no payload") && got[3].id == "no-payload",
        "{:?}",
        got[3]
    );
    assert!(got[0].error.is_empty() && got[2].error.is_empty() && got[4].error.is_empty());
    // The stream is still usable after the rejections.
    tx.send(work("g-3")).await.unwrap();
    let a = next_ack(&mut acks).await.unwrap().unwrap();
    assert_eq!((a.seq, a.error.as_str()), (4, ""));
    drop(tx);
    assert!(next_ack(&mut acks).await.expect("clean end").is_none());
    let st = stats(&mut c).await;
    assert_eq!(
        (st.head_seq, st.published),
        (4, 4),
        "only the valid events are stored"
    );
    let mut s = subscribe_durable(&mut c, "neighbours", 1).await;
    for k in 0..4 {
        assert_eq!(work_id(&next(&mut s).await), format!("g-{k}"));
    }
}
