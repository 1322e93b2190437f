//! The JetStream acceptance test: three nats-servers in one JetStream cluster (R3 stream)
//! and a router per node, each preferring its own node's server; 20,000 events published through the routers while one
//! nats-server and one router are SIGKILLed. Every acked event reaches every node's
//! durable consumer, and no event id is stored twice (one seq per id).

use crate::router::{work, work_id};
use ringrift_proto::wire::{self, EventType, subscribe_request::Start};
use ringrift_system_tests::{Home, Nats, wait_for_async};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EVENTS: usize = 20_000;
const PUBLISHERS: usize = 4;
const BATCH: usize = 100;

/// What one durable consumer received: event id -> the seqs it came with.
type Received = Arc<Mutex<HashMap<String, HashSet<u64>>>>;

/// A durable consumer that prefers router `first` and fails over to the others, acking
/// cumulatively; runs until `stop`.
async fn consume(
    name: String,
    routers: Arc<Vec<String>>,
    first: usize,
    got: Received,
    stop: Arc<AtomicBool>,
) {
    let mut attempt = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let addr = &routers[(first + attempt) % routers.len()];
        attempt += 1;
        let Ok(mut c) = handler_base::router_client::connect(addr).await else {
            continue;
        };
        let req = wire::SubscribeRequest {
            consumer: name.clone(),
            types: vec![EventType::WorkQueued as i32],
            start: Some(Start::FromSeq(1)),
            ack_wait_ms: 10_000,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let Ok(s) = c.subscribe(req).await else {
            continue;
        };
        let mut s = s.into_inner();
        let mut unacked = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let m = tokio::time::timeout(Duration::from_millis(200), s.message()).await;
            let ack_now = match m {
                Ok(Ok(Some(ev))) => {
                    got.lock()
                        .unwrap()
                        .entry(work_id(&ev))
                        .or_default()
                        .insert(ev.seq);
                    unacked = Some(ev.seq);
                    ev.seq % 20 == 0
                }
                Err(_) => true, // idle: ack what we have
                _ => break,     // the router went away: fail over
            };
            if let (true, Some(seq)) = (ack_now, unacked) {
                let req = wire::AckRequest {
                    consumer: name.clone(),
                    seq,
                    cumulative: true,
                    ..Default::default()
                };
                if c.ack(req).await.is_err() {
                    break;
                }
                unacked = None;
            }
        }
    }
}

/// Publishes events `e-{p}-{k}` in batches, retrying a batch (same ids) on the next
/// router until it is acked; returns the acked ids.
async fn publish(
    p: usize,
    routers: Arc<Vec<String>>,
    n: usize,
    acked: Arc<Mutex<HashSet<String>>>,
) {
    let mut r = p;
    let mut clients: HashMap<usize, handler_base::router_client::Client> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for start in (0..n).step_by(BATCH) {
        let events: Vec<wire::Event> = (start..(start + BATCH).min(n))
            .map(|k| {
                let id = format!("e-{p}-{k}");
                let mut ev = work(&id);
                ev.id = id;
                ev
            })
            .collect();
        loop {
            assert!(
                Instant::now() < deadline,
                "publisher {p} could not publish in 90 s"
            );
            let i = r % routers.len();
            let c = match clients.get_mut(&i) {
                Some(c) => c,
                None => match handler_base::router_client::connect_lazy(&routers[i]) {
                    Ok(c) => clients.entry(i).or_insert(c),
                    Err(_) => {
                        r += 1;
                        continue;
                    }
                },
            };
            let req = wire::PublishBatchRequest {
                events: events.clone(),
            };
            match tokio::time::timeout(Duration::from_secs(10), c.publish_batch(req)).await {
                Ok(Ok(resp)) => {
                    let mut a = acked.lock().unwrap();
                    for ack in resp.into_inner().acks {
                        a.insert(ack.id);
                    }
                    break;
                }
                _ => {
                    clients.remove(&i);
                    r += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_cluster_loses_and_duplicates_nothing_when_a_server_and_a_router_die() {
    let _heavy = ringrift_system_tests::heavy();
    let Some(mut nats) = Nats::start(3) else {
        return;
    };
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect();
    let mut routers = Vec::new();
    let mut addrs = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        let node = format!("node{i}");
        std::fs::write(
            home.path().join("cluster.toml"),
            nats.cluster_toml(&node, i),
        )
        .unwrap();
        std::fs::write(
            home.path().join("ringrift.toml"),
            format!("node = \"{node}\"\n"),
        )
        .unwrap();
        let (proc_, addr) = home.start_router("127.0.0.1:0", &[]);
        routers.push(Some(proc_));
        addrs.push(addr);
    }
    let addrs = Arc::new(addrs);
    let stop = Arc::new(AtomicBool::new(false));
    let received: Vec<Received> = (0..3).map(|_| Received::default()).collect();
    let mut consumers = Vec::new();
    for (i, got) in received.iter().enumerate() {
        let t = consume(
            format!("durable-node{i}"),
            addrs.clone(),
            i,
            got.clone(),
            stop.clone(),
        );
        consumers.push(tokio::spawn(t));
    }
    // The consumers exist before the load (they start from seq 1 anyway).
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            tokio::spawn(publish(
                p,
                addrs.clone(),
                EVENTS / PUBLISHERS,
                acked.clone(),
            ))
        })
        .collect();
    wait_for_async(
        "5,000 acked events before the kills",
        Duration::from_secs(60),
        || async { (acked.lock().unwrap().len() >= 5_000).then_some(()) },
    )
    .await;
    // Router 2's own server (it must fail over) and router 1 itself.
    nats.kill9(2);
    if let Some(mut r) = routers[1].take() {
        r.kill9();
    }
    let at_kill = acked.lock().unwrap().len();
    for p in publishers {
        p.await.unwrap();
    }
    let want = acked.lock().unwrap().clone();
    assert_eq!(want.len(), EVENTS, "every event was acked in the end");
    assert!(at_kill < EVENTS, "the kills happened during the load");
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, got) in received.iter().enumerate() {
        loop {
            let missing: Vec<String> = {
                let g = got.lock().unwrap();
                want.iter()
                    .filter(|id| !g.contains_key(*id))
                    .cloned()
                    .collect()
            };
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let c = handler_base::router_client::connect(&addrs[0]).await;
                let letters = match c {
                    Ok(mut c) => c
                        .list_dead_letters(wire::ListDeadLettersRequest::default())
                        .await
                        .map(|r| r.into_inner().letters.len())
                        .unwrap_or(0),
                    Err(_) => 0,
                };
                eprintln!("dead letters: {letters}");
            }
            assert!(
                Instant::now() < deadline,
                "durable-node{i} misses {} acked events after 60 s, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    for (i, got) in received.iter().enumerate() {
        let g = got.lock().unwrap();
        let twice: Vec<_> = g
            .iter()
            .filter(|(_, seqs)| seqs.len() > 1)
            .take(3)
            .collect();
        assert!(
            twice.is_empty(),
            "durable-node{i}: ids stored twice: {twice:?}"
        );
        let extra = g.keys().filter(|id| !want.contains(*id)).count();
        assert_eq!(extra, 0, "durable-node{i} received ids nobody published");
    }
}
