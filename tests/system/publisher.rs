//! `handler_base::router_client::Publisher` against the real router: batches stay under
//! the router's 8 MiB message limit when events are near the 64 KiB event limit, an event
//! the router refuses as malformed is reported by id (and kept in the outbox's rejected
//! table) instead of blocking the ones behind it, and a refused token keeps every event
//! in the outbox until a daemon with the right token sends them.

use ringrift_proto::Event;
use ringrift_proto::wire::{self, event::Payload};
use ringrift_system_tests::{Home, router_log, router_log_with, wait_for, wait_for_async};
use std::collections::HashSet;
use std::time::Duration;

const TOKEN: &str = "tok-publisher-7d1e";

fn padded(id: &str, bytes: usize) -> Event {
    Event::new(Payload::Json(format!(
        "{{\"pad\": \"{}\"}}",
        "x".repeat(bytes)
    )))
    .with_id(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_near_64_kib_reach_the_router_in_batches_under_its_limit() {
    const N: usize = 300; // 300 × 60 KiB ≈ 18 MiB: one count-capped batch would be refused.
    let home = Home::new();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    router.kill9();
    let p = handler_base::router_client::Publisher::spawn(
        handler_base::router_client::connect_lazy(&addr).unwrap(),
        "publisher-test@local",
        1_000,
    );
    for i in 0..N {
        p.publish(padded(&format!("big:{i}"), 60 << 10)).unwrap();
    }
    // Too large for the router (over 64 KiB): refused alone, by id.
    let refused = tokio::spawn({
        let p = p.clone();
        async move { p.publish_acked(padded("too-big", 70 << 10)).await }
    });
    wait_for_async("all accepted", Duration::from_secs(10), || {
        let n = p.buffered();
        async move { (n == N + 1).then_some(()) }
    })
    .await;
    let (_router, addr) = home.start_router(&addr, &[]);
    let err = tokio::time::timeout(Duration::from_secs(60), refused)
        .await
        .expect("the oversized event is answered")
        .unwrap()
        .expect_err("the router refuses a 70 KiB event");
    assert!(err.to_string().contains("too-big"), "{err}");
    wait_for_async("the outbox drained", Duration::from_secs(60), || {
        let n = p.buffered();
        async move { (n == 0).then_some(()) }
    })
    .await;
    let ids: HashSet<String> = router_log(&addr)
        .await
        .into_iter()
        .filter(|e| e.r#type == wire::EventType::External as i32)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), N, "every event arrived once");
    assert!(!ids.contains("too-big"));
    assert_eq!(p.rejected(), 1, "the refused event is kept as rejected");
}

/// A wrong token is the sender's configuration, not the events' fault: nothing leaves
/// the outbox, and the publisher says why (issue 28, point 1; before, each event was
/// "refused" and deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_with_a_wrong_token_keeps_its_events_and_says_why() {
    const N: usize = 50;
    let home = Home::with_token(TOKEN, "");
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let bearer = handler_base::router_client::Bearer::new(Some("not-the-token")).unwrap();
    let p = handler_base::router_client::Publisher::spawn(
        handler_base::router_client::connect_lazy_with(&addr, bearer).unwrap(),
        "publisher-test@local",
        1_000,
    );
    for i in 0..N {
        p.publish(padded(&format!("kept:{i}"), 10)).unwrap();
    }
    let why = wait_for_async("the refusal", Duration::from_secs(30), || {
        let r = p.refused();
        async move { r }
    })
    .await;
    assert!(why.contains("Unauthenticated"), "{why}");
    assert_eq!(p.buffered(), N, "every event still waits in the outbox");
    assert_eq!(p.rejected(), 0, "none counted as malformed");
}

/// A daemon holding a wrong token accepts N events into its outbox file; after its token
/// is corrected and it restarts, all N reach the router (issue 28, point 1: before, 0 of
/// them did, with one "refused" log line per event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_a_wrong_token_sends_its_outbox_once_restarted_with_the_right_one() {
    const N: u64 = 300;
    let home = Home::with_token(TOKEN, "");
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let burst = format!("test_daemon.publish_burst={N}");
    let args = |token: Option<&'static str>| {
        let mut a = vec![
            "--router".to_owned(),
            addr.clone(),
            "--set".to_owned(),
            "test_daemon.instance=wrong-token".to_owned(),
            "--set".to_owned(),
            "test_daemon.cycle_interval_s=0.05".to_owned(),
            "--set".to_owned(),
            burst.clone(),
        ];
        if let Some(t) = token {
            a.extend(["--set".to_owned(), format!("auth.token={t}")]);
        }
        a
    };
    let spawn = |token| {
        let a = args(token);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        home.spawn("ringrift-test-daemon", &a)
    };
    let mut d = spawn(Some("the-previous-token"));
    let burst_file = home.path().join("run/wrong-token.burst");
    wait_for("the burst accepted", Duration::from_secs(60), || {
        let n: u64 = std::fs::read_to_string(&burst_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (n == N).then_some(())
    });
    wait_for("the refusal logged", Duration::from_secs(60), || {
        home.log("ringrift-test-daemon")
            .contains("the router refuses this publisher")
            .then_some(())
    });
    let st = d.term(Duration::from_secs(30));
    assert!(st.success(), "{st}");
    let log = home.log("ringrift-test-daemon");
    let lines = log
        .lines()
        // Error lines about a refusal (the start line's settings name `subscribe_refused_exit`).
        .filter(|l| l.contains("\"level\":\"ERROR\"") && l.contains("refuse"))
        .count();
    assert_eq!(
        lines, 1,
        "one line for the refusal, not one per event:\n{log}"
    );
    let bearer = || handler_base::router_client::Bearer::new(Some(TOKEN)).unwrap();
    let burst_ids = |events: Vec<wire::Event>| -> HashSet<String> {
        events
            .into_iter()
            .filter(|e| e.id.starts_with("burst:"))
            .map(|e| e.id)
            .collect()
    };
    assert!(
        burst_ids(router_log_with(&addr, bearer()).await).is_empty(),
        "nothing got through with the wrong token"
    );
    // Restarted with the right token (ringrift.toml's): the outbox file holds all N.
    let _d = spawn(None);
    let got = wait_for_async("every event at the router", Duration::from_secs(60), || {
        let (addr, burst_ids, bearer) = (addr.clone(), &burst_ids, &bearer);
        async move {
            let ids = burst_ids(router_log_with(&addr, bearer()).await);
            (ids.len() as u64 == N).then_some(ids)
        }
    })
    .await;
    assert_eq!(got.len() as u64, N);
}
