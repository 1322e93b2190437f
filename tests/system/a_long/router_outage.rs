//! A 60 s router outage: 20,000 events published through the outbox while the router is
//! down, the publisher SIGKILLed mid-burst, all of them in the router after it returns.

use crate::lifecycle::test_daemon;
use ringrift_system_tests::{Home, router_log, wait_for};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Distinct `burst:` ids in the router's log.
async fn burst_ids(addr: &str) -> HashSet<String> {
    router_log(addr)
        .await
        .into_iter()
        .filter(|e| e.id.starts_with("burst:"))
        .map(|e| e.id)
        .collect()
}

fn burst_count(home: &Home) -> u64 {
    std::fs::read_to_string(home.path().join("run/test.burst"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_events_survive_a_router_outage_and_a_sigkill_of_the_publisher() {
    const N: u64 = 20_000;
    // The router is away at least this long (the whole burst, the kill and the restart
    // happen inside it).
    const OUTAGE: Duration = Duration::from_secs(60);
    let home = Home::new();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    router.kill9();
    let down = Instant::now();
    let cfg = format!("publish_burst = {N}\ncycle_interval_s = 0.05");
    let mut d = test_daemon(&home, &addr, &cfg, &[]);
    let at_kill = wait_for(
        "part of the burst accepted",
        Duration::from_secs(60),
        || {
            let n = burst_count(&home);
            (n >= 2_000).then_some(n)
        },
    );
    d.kill9();
    assert!(at_kill < N, "killed mid-burst ({at_kill} accepted)");
    let _d = test_daemon(&home, &addr, &cfg, &[]);
    wait_for(
        "the rest of the burst accepted",
        Duration::from_secs(120),
        || (burst_count(&home) == N).then_some(()),
    );
    if let Some(rest) = OUTAGE.checked_sub(down.elapsed()) {
        // The scenario (an outage of OUTAGE), not synchronisation.
        std::thread::sleep(rest);
    }
    eprintln!(
        "router down for {:.1} s; {at_kill} events accepted by the killed daemon",
        down.elapsed().as_secs_f64()
    );
    let (_router, addr) = home.start_router(&addr, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = burst_ids(&addr).await.len() as u64;
        if got == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {N} burst events reached the router; logs in {}",
            home.path().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
