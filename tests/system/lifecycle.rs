//! handler-base through real binaries: a failed handler runs again and a hopeless event is
//! dead-lettered and retried; a panicking loop ends the process with exit 1; exit 64 only
//! for bad configuration; events queued behind a long handler, or queued when the daemon
//! is restarted, are handled and never dead-lettered (both logs). (Publishes surviving a
//! router outage: `a_long/router_outage.rs`.)

use crate::router::Log;
use ringrift_proto::wire::{self, event::Payload};
use ringrift_system_tests::{Home, Proc, wait_for, wait_for_async};
use std::time::Duration;

type Client = handler_base::router_client::Client;

/// Starts the test daemon against `router` with `[test_daemon]` set to `toml` (a cycle
/// every 50 ms unless `toml` says otherwise).
pub(crate) fn test_daemon(home: &Home, router: &str, toml: &str, extra: &[&str]) -> Proc {
    let cfg = home.path().join("test_daemon.toml");
    let cycle = if toml.contains("cycle_interval_s") {
        ""
    } else {
        "cycle_interval_s = 0.05\n"
    };
    std::fs::write(&cfg, format!("[test_daemon]\n{cycle}{toml}\n")).unwrap();
    let mut args = vec!["--router", router, "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    home.spawn("ringrift-test-daemon", &args)
}

/// Handling attempts of event `id` recorded by the test daemon.
fn handles(home: &Home, id: &str) -> usize {
    std::fs::read_to_string(home.path().join("test_daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("handle ") && l.ends_with(&format!(" {id}")))
        .count()
}

fn external(id: &str) -> wire::Event {
    wire::Event {
        id: id.into(),
        r#type: wire::EventType::External as i32,
        payload: Some(Payload::Json("{}".into())),
        ..Default::default()
    }
}

async fn consumer(c: &Client, name: &str) -> Option<wire::ConsumerStats> {
    let s = c
        .clone()
        .stats(wire::StatsRequest {})
        .await
        .ok()?
        .into_inner();
    s.consumers.into_iter().find(|x| x.name == name)
}

fn wait_exit(home: &Home, p: &mut Proc, limit: Duration) -> Option<i32> {
    let st = wait_for(&format!("{} to exit", p.name), limit, || p.try_exit());
    eprintln!("{} exited with {st}; log:\n{}", p.name, home.log(&p.name));
    st.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handler_runs_again_and_a_hopeless_event_is_dead_lettered_then_retried() {
    let home = Home::new();
    let (_r, addr) = home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=3"]);
    let _d = test_daemon(
        &home,
        &addr,
        "subscribe = [\"EXTERNAL\"]\nreplay_history = true\nfail_first = 2\nalways_fail = [\"poison\"]",
        &[],
    );
    let mut c = handler_base::router_client::connect(&addr).await.unwrap();
    let flaky = c.publish(external("flaky")).await.unwrap().into_inner().seq;
    // Fails twice, succeeds the third time, and is then acked.
    wait_for_async("flaky handled and acked", Duration::from_secs(20), || {
        let c = c.clone();
        let home = &home;
        async move {
            let s = consumer(&c, "test_daemon").await?;
            (handles(home, "flaky") >= 3 && s.ack_floor >= flaky).then_some(())
        }
    })
    .await;
    assert_eq!(handles(&home, "flaky"), 3, "two failures and one success");

    let poison = c
        .publish(external("poison"))
        .await
        .unwrap()
        .into_inner()
        .seq;
    let letter = wait_for_async("poison dead-lettered", Duration::from_secs(20), || {
        let mut c = c.clone();
        async move {
            let req = wire::ListDeadLettersRequest::default();
            let ls = c.list_dead_letters(req).await.ok()?.into_inner().letters;
            ls.into_iter()
                .find(|l| l.seq == poison && l.consumer == "test_daemon")
        }
    })
    .await;
    assert_eq!(letter.failures, 3, "{letter:?}");
    assert_eq!(handles(&home, "poison"), 3, "handled once per delivery");
    // The dlq_retry daemon retries it with backoff (0.2 s · 2^n here) until it gives up
    // after its 5 retries; each retry is one more handling that fails.
    let _retry = home.spawn(
        "ringrift-dlq-retry",
        &[
            "--router",
            &addr,
            "--set",
            "dlq_retry.cycle_interval_s=0.2",
            "--set",
            "dlq_retry.base_delay_s=0.2",
        ],
    );
    let given_up = wait_for_async(
        "dlq_retry retried the letter 5 times, then gave up",
        Duration::from_secs(60),
        || {
            let mut c = c.clone();
            async move {
                let req = wire::ListDeadLettersRequest {
                    include_resolved: true,
                    ..Default::default()
                };
                let ls = c.list_dead_letters(req).await.ok()?.into_inner().letters;
                ls.into_iter()
                    .find(|l| l.id == letter.id && l.state == wire::DeadLetterState::GivenUp as i32)
            }
        },
    )
    .await;
    assert_eq!(given_up.retries, 5, "{given_up:?}");
    assert_eq!(
        handles(&home, "poison"),
        3 + 5,
        "handled once per retry of dlq_retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_cycle_or_a_handler_ends_the_daemon_with_exit_1() {
    let home = Home::new();
    let mut d = test_daemon(&home, "127.0.0.1:1", "panic_in = \"cycle\"", &[]);
    assert_eq!(wait_exit(&home, &mut d, Duration::from_secs(20)), Some(1));

    let home = Home::new();
    let (_r, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut d = test_daemon(
        &home,
        &addr,
        "subscribe = [\"EXTERNAL\"]\nreplay_history = true\npanic_in = \"event\"",
        &[],
    );
    let mut c = handler_base::router_client::connect(&addr).await.unwrap();
    c.publish(external("boom")).await.unwrap();
    assert_eq!(wait_exit(&home, &mut d, Duration::from_secs(20)), Some(1));
    assert_eq!(handles(&home, "boom"), 1);
}

#[test]
fn exit_64_is_bad_configuration_and_an_unusable_home_is_exit_1() {
    let exit = |home: &Home, bin: &str, args: &[&str]| {
        let mut all = vec!["--router", "127.0.0.1:1"];
        all.extend_from_slice(args);
        let mut p = home.spawn(bin, &all);
        wait_exit(home, &mut p, Duration::from_secs(20))
    };
    // `data` is a file: the work queue cannot be opened. An I/O failure, restartable.
    let home = Home::new();
    std::fs::write(home.path().join("data"), "not a folder").unwrap();
    assert_eq!(exit(&home, "ringrift-queue-monitor", &[]), Some(1));
    // Bad values: the daemon's own range check, a lifecycle setting, a wrong type.
    for set in [
        "queue_monitor.max_depth=0",
        "max_ack_pending=0",
        "queue_monitor.ack_wait_s=-1",
        "queue_monitor.max_depth=lots",
    ] {
        let home = Home::new();
        assert_eq!(
            exit(&home, "ringrift-queue-monitor", &["--set", set]),
            Some(64),
            "--set {set}"
        );
    }
}

/// `(what, unix_ms)` of every record line of the test daemon about event `id`.
fn records_of(home: &Home, id: &str) -> Vec<(String, i64)> {
    std::fs::read_to_string(home.path().join("test_daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(&format!(" {id}")))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.first()?.to_string(), f.get(3)?.parse().ok()?))
        })
        .collect()
}

/// Events queued behind a handler that takes 3 × ack_wait per event are kept alive by
/// in-progress acks while they wait: all 20 are handled once each, none is redelivered or
/// dead-lettered (the router starts each event's ack-wait clock when it sends it). On
/// both logs.
async fn events_queued_behind_a_long_handler_are_handled_not_dead_lettered(log: Log) {
    let home = log.home();
    let (_r, addr) = home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=2"]);
    let c = handler_base::router_client::connect(&addr).await.unwrap();
    let last = publish_20(&c, "q").await;
    let _d = test_daemon(
        &home,
        &addr,
        "subscribe = [\"EXTERNAL\"]\nreplay_history = true\nack_wait_s = 0.5\nhandle_s = 1.5",
        &[],
    );
    wait_acked(&c, last).await;
    for i in 0..20 {
        assert_eq!(handles(&home, &format!("q{i}")), 1, "q{i} handled once");
    }
    assert_eq!(dead_letters(&c).await, Vec::new(), "nothing dead-lettered");
}

/// Publishes EXTERNAL events `<prefix>0` .. `<prefix>19`; the last one's seq.
async fn publish_20(c: &Client, prefix: &str) -> u64 {
    let mut last = 0;
    for i in 0..20 {
        let ev = external(&format!("{prefix}{i}"));
        last = c.clone().publish(ev).await.unwrap().into_inner().seq;
    }
    last
}

/// Waits until the test daemon's consumer acked up to `last`.
async fn wait_acked(c: &Client, last: u64) {
    wait_for_async("all 20 handled and acked", Duration::from_secs(120), || {
        let c = c.clone();
        async move {
            let s = consumer(&c, "test_daemon").await?;
            (s.ack_floor >= last).then_some(())
        }
    })
    .await;
}

async fn dead_letters(c: &Client) -> Vec<wire::DeadLetter> {
    c.clone()
        .list_dead_letters(wire::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .letters
}

/// A daemon stopped (SIGTERM, as the launcher and systemd do) with events queued behind
/// the one in its handler, 4 times with `max_deliver` 2: the event in hand is finished
/// and acked each time, the queued ones were never started, so their deliveries do not
/// count; none is dead-lettered and all 20 are handled once. Before: every stop charged
/// each queued event a failed delivery, and the second dead-lettered them unhandled.
/// On both logs.
async fn a_daemon_restarted_more_than_max_deliver_times_dead_letters_no_queued_event(log: Log) {
    let home = log.home();
    let (_r, addr) = home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=2"]);
    let c = handler_base::router_client::connect(&addr).await.unwrap();
    let last = publish_20(&c, "r").await;
    let cfg = "subscribe = [\"EXTERNAL\"]\nreplay_history = true\nhandle_s = 0.5";
    let started = |home: &Home| {
        (0..20)
            .filter(|i| handles(home, &format!("r{i}")) > 0)
            .count()
    };
    for round in 1..=4 {
        let before = started(&home);
        let mut d = test_daemon(&home, &addr, cfg, &[]);
        // Stopped while it handles an event with the rest queued behind it.
        wait_for(
            &format!("round {round}: a new event in the handler"),
            Duration::from_secs(60),
            || (started(&home) > before).then_some(()),
        );
        let st = d.term(Duration::from_secs(60));
        assert!(st.success(), "round {round}: clean stop: {st}");
        assert_eq!(dead_letters(&c).await, Vec::new(), "after stop {round}");
    }
    assert!(
        started(&home) < 20,
        "some events were still queued at the last stop"
    );
    let _d = test_daemon(&home, &addr, cfg, &[]);
    wait_acked(&c, last).await;
    for i in 0..20 {
        assert_eq!(handles(&home, &format!("r{i}")), 1, "r{i} handled once");
    }
    assert_eq!(dead_letters(&c).await, Vec::new(), "nothing dead-lettered");
}

crate::router::on_both_logs!(
    events_queued_behind_a_long_handler_are_handled_not_dead_lettered,
    a_daemon_restarted_more_than_max_deliver_times_dead_letters_no_queued_event
);

/// With lanes, events of different config keys are handled side by side and events of
/// one key one after the other, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_different_lanes_are_handled_side_by_side() {
    let home = Home::new();
    let (_r, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut c = handler_base::router_client::connect(&addr).await.unwrap();
    for (id, key) in [("a", "hex8_2p"), ("b", "square8_2p"), ("c", "hex8_2p")] {
        let mut ev = external(id);
        ev.config_key = key.into();
        c.publish(ev).await.unwrap();
    }
    let _d = test_daemon(
        &home,
        &addr,
        "subscribe = [\"EXTERNAL\"]\nreplay_history = true\nhandle_s = 2\nlanes = true\nconcurrent = 2",
        &[],
    );
    let at = |id: &str, what: &str| {
        records_of(&home, id)
            .into_iter()
            .find(|(w, _)| w == what)
            .map(|(_, t)| t)
    };
    wait_for("a, b and c handled", Duration::from_secs(60), || {
        ["a", "b", "c"]
            .iter()
            .all(|id| at(id, "handled").is_some())
            .then_some(())
    });
    let (a0, a1) = (at("a", "handle").unwrap(), at("a", "handled").unwrap());
    let (b0, c0) = (at("b", "handle").unwrap(), at("c", "handle").unwrap());
    assert!(
        b0 < a1,
        "b (another lane) started while a ran: a {a0}..{a1}, b {b0}"
    );
    assert!(
        c0 >= a1,
        "c (a's lane) waited for a: a ended {a1}, c started {c0}"
    );
}
