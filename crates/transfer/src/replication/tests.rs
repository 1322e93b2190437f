//! The replication planner and rate limit with a fake clock: classification, repair
//! order and targets, a zero-copy batch brought to its target count, and the limits
//! (500 per sliding hour, 3 at once) holding over hours of simulated cycles.

use super::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

fn key(source: &str, hour: i64) -> BatchKey {
    BatchKey {
        config: "hex8_2p".parse().unwrap(),
        source_node: source.into(),
        hour,
    }
}

fn node(name: &str, ephemeral: bool, excluded: bool) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        ephemeral,
        exclude_from_sync: excluded,
    }
}

#[test]
fn classifies_zero_single_under_and_a_gone_source() {
    let mut h = Holdings::default();
    for n in ["a", "b", "c", "d"] {
        h.answered(n);
    }
    h.add("a", key("a", 1), 10); // zero: only the source
    h.add("a", key("a", 2), 10); // single: b has it all
    h.add("b", key("a", 2), 10);
    h.add("a", key("a", 3), 10); // zero: b has only part of it
    h.add("b", key("a", 3), 9);
    h.add("b", key("gone", 4), 7); // source not answering: b and c hold the max
    h.add("c", key("gone", 4), 7);
    h.add("a", key("a", 5), 5); // enough: three copies
    for n in ["b", "c", "d"] {
        h.add(n, key("a", 5), 5);
    }
    let s = classify(&h, 5, 3);
    let level = |k: &BatchKey| s.iter().find(|x| &x.batch == k).unwrap().level;
    assert_eq!(level(&key("a", 1)), Some(Level::ZeroCopy));
    assert_eq!(level(&key("a", 2)), Some(Level::SingleCopy));
    assert_eq!(level(&key("a", 3)), Some(Level::ZeroCopy));
    assert_eq!(level(&key("gone", 4)), Some(Level::UnderReplicated));
    assert_eq!(level(&key("a", 5)), None);
    assert_eq!(
        counts(&s),
        Counts {
            zero_copy: 2,
            single_copy: 1,
            under_replicated: 1
        }
    );
    // Target capped at nodes - 1: on two nodes one copy is enough.
    let mut two = Holdings::default();
    two.add("a", key("a", 1), 3);
    two.add("b", key("a", 1), 3);
    assert_eq!(classify(&two, 2, 2)[0].level, None);
    assert_eq!(classify(&two, 2, 2)[0].target, 1);
}

#[test]
fn plan_orders_by_urgency_and_picks_durable_eligible_targets() {
    let nodes = [
        node("src", true, false),
        node("coord", false, true),
        node("spot", true, false),
        node("w1", false, false),
        node("w2", false, false),
    ];
    let mut h = Holdings::default();
    for n in &nodes {
        h.answered(&n.name);
    }
    h.add("src", key("src", 9), 4); // zero
    h.add("src", key("src", 1), 4); // single (w1)
    h.add("w1", key("src", 1), 4);
    let s = classify(&h, nodes.len(), 2);
    let p = plan(&s, &h, &nodes, |_| true);
    let got: Vec<(i64, &str, &str, Level)> = p
        .iter()
        .map(|r| (r.batch.hour, r.from.as_str(), r.to.as_str(), r.level))
        .collect();
    // Zero-copy first (two copies, to durable nodes, never the excluded coordinator),
    // then the single-copy batch gets one more, on the least loaded durable node.
    assert_eq!(
        got,
        vec![
            (9, "src", "w1", Level::ZeroCopy),
            (9, "src", "w2", Level::ZeroCopy),
            (1, "src", "w2", Level::SingleCopy),
        ]
    );
    // The emergency filter: zero-copy only.
    let p = plan(&s, &h, &nodes, |b| b.level == Some(Level::ZeroCopy));
    assert_eq!(p.len(), 2);
}

#[test]
fn rate_window_slides() {
    let t0 = Instant::now();
    let mut w = RateWindow::new(2, Duration::from_secs(3600));
    assert!(w.try_take(t0));
    assert!(w.try_take(t0 + Duration::from_secs(10)));
    assert!(!w.try_take(t0 + Duration::from_secs(3599)));
    assert_eq!(
        w.next_free(t0 + Duration::from_secs(100)),
        Some(t0 + Duration::from_secs(3600))
    );
    assert!(w.try_take(t0 + Duration::from_secs(3600)));
    assert!(!w.try_take(t0 + Duration::from_secs(3605)));
    assert!(w.try_take(t0 + Duration::from_secs(3610)));
}

/// A fake cluster: holdings change as repairs run; the clock only moves when told.
struct Sim {
    holdings: Mutex<Holdings>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    starts: Mutex<Vec<Instant>>,
}

impl Sim {
    async fn repair(&self, r: Repair, now: Instant) -> Result<(), String> {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        self.starts.lock().unwrap().push(now);
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        if r.to == "broken" {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err("connection refused".into());
        }
        self.holdings
            .lock()
            .unwrap()
            .add(&r.to, r.batch.clone(), r.games);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn cycle(
    sim: &Sim,
    nodes: &[NodeInfo],
    window: &Mutex<RateWindow>,
    clock: &(dyn Fn() -> Instant + Sync),
) -> Executed {
    let h = sim.holdings.lock().unwrap().clone();
    let s = classify(&h, nodes.len(), 2);
    let p = plan(&s, &h, nodes, |_| true);
    let now = clock();
    execute(p, window, clock, 3, |r| sim.repair(r, now)).await
}

#[tokio::test]
async fn a_zero_copy_batch_reaches_its_target_within_the_limits() {
    let nodes = [
        node("eph", true, false),
        node("w1", false, false),
        node("w2", false, false),
    ];
    let mut h = Holdings::default();
    for n in &nodes {
        h.answered(&n.name);
    }
    h.add("eph", key("eph", 100), 50);
    let sim = Sim {
        holdings: Mutex::new(h),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        starts: Mutex::new(Vec::new()),
    };
    let t0 = Instant::now();
    let clock = move || t0;
    let window = Mutex::new(RateWindow::new(500, Duration::from_secs(3600)));
    let e = cycle(&sim, &nodes, &window, &clock).await;
    assert_eq!((e.repaired, e.failed, e.deferred), (2, 0, 0));
    let h = sim.holdings.lock().unwrap().clone();
    let s = classify(&h, 3, 2);
    assert_eq!(s[0].copies, vec!["w1".to_owned(), "w2".to_owned()]);
    assert_eq!(s[0].level, None);
    assert_eq!(counts(&s), Counts::default());
    // Nothing more to do.
    let e = cycle(&sim, &nodes, &window, &clock).await;
    assert_eq!(e, Executed::default());
}

#[tokio::test]
async fn limits_hold_over_hours_the_501st_repair_waits() {
    let nodes = [
        node("eph", true, false),
        node("w1", false, false),
        node("w2", false, false),
    ];
    let mut h = Holdings::default();
    for n in &nodes {
        h.answered(&n.name);
    }
    // 600 zero-copy batches: 1200 repairs to reach two copies each.
    for hour in 0..600 {
        h.add("eph", key("eph", hour), 3);
    }
    let sim = Sim {
        holdings: Mutex::new(h),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        starts: Mutex::new(Vec::new()),
    };
    let t0 = Instant::now();
    let offset = Mutex::new(Duration::ZERO);
    let clock = || t0 + *offset.lock().unwrap();
    let window = Mutex::new(RateWindow::new(500, Duration::from_secs(3600)));
    let mut per_cycle = Vec::new();
    // Cycles every 60 s for three hours of fake time.
    for i in 0..=180u64 {
        *offset.lock().unwrap() = Duration::from_secs(60 * i);
        let e = cycle(&sim, &nodes, &window, &clock).await;
        assert_eq!(e.failed, 0);
        per_cycle.push(e.repaired);
    }
    assert_eq!(per_cycle[0], 500, "first cycle: the hour's allowance");
    assert!(
        per_cycle[1..60].iter().all(|&n| n == 0),
        "the 501st waits for the window"
    );
    assert_eq!(per_cycle[60], 500, "one hour later");
    assert_eq!(per_cycle[120], 200, "the rest");
    assert_eq!(per_cycle.iter().sum::<u64>(), 1200);
    let starts = sim.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 1200);
    assert!(starts[500] >= starts[0] + Duration::from_secs(3600));
    // No sliding hour holds more than 500 starts.
    for (i, &s) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .filter(|&&t| t < s + Duration::from_secs(3600))
            .count();
        assert!(within <= 500, "{within} repairs in the hour from start {i}");
    }
    assert_eq!(
        sim.max_in_flight.load(Ordering::SeqCst),
        3,
        "at most 3 at once, and 3 used"
    );
    let h = sim.holdings.lock().unwrap().clone();
    assert_eq!(
        counts(&classify(&h, 3, 2)),
        Counts::default(),
        "every batch at its target"
    );
}

#[tokio::test]
async fn failures_are_counted_and_use_their_slot() {
    let nodes = [node("src", false, false), node("broken", false, false)];
    let mut h = Holdings::default();
    h.answered("broken");
    h.add("src", key("src", 1), 2);
    let sim = Sim {
        holdings: Mutex::new(h),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        starts: Mutex::new(Vec::new()),
    };
    let t0 = Instant::now();
    let clock = move || t0;
    let window = Mutex::new(RateWindow::new(1, Duration::from_secs(3600)));
    let e = cycle(&sim, &nodes, &window, &clock).await;
    assert_eq!((e.repaired, e.failed), (0, 1));
    assert!(e.errors[0].contains("connection refused"), "{:?}", e.errors);
    let e = cycle(&sim, &nodes, &window, &clock).await;
    assert_eq!((e.repaired, e.failed, e.deferred), (0, 0, 1));
}

#[test]
fn a_batch_is_settled_once_its_hour_ended_settle_ago() {
    let batch = |hour| key("a", hour);
    let h = ringrift_store::games::MS_PER_HOUR;
    // Hour 2 ends at 3h.
    assert!(!settled(&batch(2), 3 * h - 1, 0), "running hour");
    assert!(settled(&batch(2), 3 * h, 0));
    assert!(!settled(&batch(2), 3 * h + 599_999, 600_000));
    assert!(settled(&batch(2), 3 * h + 600_000, 600_000));
    assert!(settled(&batch(1), 3 * h, 600_000));
}
