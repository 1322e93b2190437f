//! The score and pause rules, alerts per source, and the daemon in process with a
//! scripted membership: one PIPELINE_PAUSED when the coordinator dies (kept across a
//! restart), one PIPELINE_RESUMED when it is back, none while membership is unknown; a
//! rejoined node healthy again, ephemeral nodes weighing less, no pause for a leader not
//! known yet at start-up.

use super::*;
use handler_base::{HealthStatus, Recorded};
use std::collections::BTreeSet;

fn members(leader: &str, states: &[(&str, MemberState)]) -> Members {
    Members {
        this_node: "w1".into(),
        leader: leader.into(),
        states: states.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        ephemeral: BTreeSet::new(),
    }
}

const W: f64 = 0.25;
const LONG: Duration = Duration::from_secs(60);

fn event(source: &str, p: Payload) -> Event {
    let mut e = Event::new(p);
    e.source = source.into();
    e
}

fn status(node: &str) -> wire::NodeStatus {
    wire::NodeStatus {
        node: node.into(),
        reason: "r".into(),
    }
}

fn pressure(node: &str, res: &str, level: &str) -> Payload {
    Payload::ResourcePressure(wire::ResourcePressure {
        node: node.into(),
        resource: res.into(),
        percent: 97.0,
        level: level.into(),
    })
}

#[test]
fn score_and_pause_reasons() {
    let cfg = SystemConfig::default();
    let all = members(
        "c",
        &[
            ("c", MemberState::Alive),
            ("w1", MemberState::Alive),
            ("w2", MemberState::Alive),
        ],
    );
    let mut a = Alerts::default();
    assert_eq!(score(&all, &a, W).0, 1.0);
    assert!(pause_reasons(&cfg, Some(&all), &a, LONG).is_empty());
    // A warning lowers the score but does not pause; critical disk on a bystander
    // neither; on this node or the leader it does.
    a.apply(&event(
        "node_health_monitor@w2",
        pressure("w2", "disk", "critical"),
    ));
    a.apply(&event(
        "node_health_monitor@w1",
        pressure("w1", "memory", "warning"),
    ));
    assert!(pause_reasons(&cfg, Some(&all), &a, LONG).is_empty());
    assert!((score(&all, &a, W).0 - (1.0 + 0.75 + 0.5) / 3.0).abs() < 1e-9);
    a.apply(&event(
        "node_health_monitor@c",
        pressure("c", "disk", "critical"),
    ));
    assert_eq!(
        pause_reasons(&cfg, Some(&all), &a, LONG),
        ["disk critical on c (97.0%)"]
    );
    a.apply(&event("node_health_monitor@c", pressure("c", "disk", "ok")));
    assert!(pause_reasons(&cfg, Some(&all), &a, LONG).is_empty());

    let lost = members(
        "c",
        &[
            ("c", MemberState::Dead),
            ("w1", MemberState::Alive),
            ("w2", MemberState::Alive),
        ],
    );
    assert_eq!(
        pause_reasons(&cfg, Some(&lost), &Alerts::default(), LONG),
        ["coordinator c lost (dead)"]
    );
    let none = members("", &[("w1", MemberState::Alive)]);
    assert_eq!(
        pause_reasons(&cfg, Some(&none), &Alerts::default(), LONG),
        ["no coordinator (no leader known for 60 s)"]
    );
    let most_dead = members(
        "w1",
        &[
            ("c", MemberState::Dead),
            ("w1", MemberState::Alive),
            ("w2", MemberState::Dead),
        ],
    );
    let r = pause_reasons(&cfg, Some(&most_dead), &Alerts::default(), LONG);
    assert_eq!(r, ["health score 0.33 below 0.5"]);
    assert!(pause_reasons(&cfg, None, &Alerts::default(), LONG).is_empty());
}

#[test]
fn one_source_recovering_does_not_clear_another() {
    let mut a = Alerts::default();
    a.apply(&event(
        "p2p_backend@c",
        Payload::NodeUnhealthy(status("w2")),
    ));
    a.apply(&event(
        "node_health_monitor@w2",
        Payload::NodeUnhealthy(status("w2")),
    ));
    a.apply(&event(
        "node_health_monitor@w2",
        Payload::NodeRecovered(status("w2")),
    ));
    assert!(a.unhealthy.contains_key("w2"));
    a.apply(&event(
        "p2p_backend@c",
        Payload::NodeRecovered(status("w2")),
    ));
    assert!(a.unhealthy.is_empty());
    assert!(!a.apply(&Event::new(Payload::PipelineResumed(Default::default()))));
}

struct Script(Mutex<Result<Members, String>>);

#[async_trait::async_trait]
impl MembershipSource for Script {
    async fn members(&self, _ctx: &Context) -> Result<Members, String> {
        self.0.lock().unwrap().clone()
    }
}

fn controls(rec: &Recorded) -> Vec<String> {
    rec.events()
        .into_iter()
        .map(|e| match e.payload {
            Payload::PipelinePaused(p) => format!("paused: {}", p.reason),
            Payload::PipelineResumed(_) => "resumed".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn pauses_once_on_coordinator_loss_and_resumes_when_back() {
    let home = tempfile::tempdir().unwrap();
    let alive = members(
        "c",
        &[("c", MemberState::Alive), ("w1", MemberState::Alive)],
    );
    let dead = members("c", &[("c", MemberState::Dead), ("w1", MemberState::Alive)]);
    let script = Arc::new(Script(Mutex::new(Ok(alive.clone()))));
    let (ctx, rec) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build_with(&ctx, SystemConfig::default(), script.clone()).unwrap();
    h.on_start(&ctx).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert!(controls(&rec).is_empty());
    assert_eq!(h.health_check().status, HealthStatus::Running);

    *script.0.lock().unwrap() = Ok(dead);
    h.run_cycle(&ctx).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(
        controls(&rec),
        ["paused: system_health_monitor: coordinator c lost (dead)"]
    );
    assert_eq!(controls(&rec).len(), 1);
    assert_eq!(h.health_check().status, HealthStatus::Degraded);

    // A restarted monitor knows it paused: no second pause; no resume while membership is
    // unknown; one resume when the coordinator is back.
    let h = build_with(&ctx, SystemConfig::default(), script.clone()).unwrap();
    h.on_start(&ctx).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(controls(&rec).len(), 1);
    *script.0.lock().unwrap() = Err("local p2p_backend: refused".into());
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(controls(&rec).len(), 1);
    assert!(h.health_check().message.contains("no membership view"));
    *script.0.lock().unwrap() = Ok(alive);
    h.run_cycle(&ctx).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(controls(&rec)[1..], ["resumed".to_string()]);
}

#[tokio::test]
async fn alerts_arrive_as_events_and_bad_config_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let one = members("w1", &[("w1", MemberState::Alive)]);
    let script = Arc::new(Script(Mutex::new(Ok(one))));
    let (ctx, rec) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build_with(&ctx, SystemConfig::default(), script.clone()).unwrap();
    assert_eq!(
        h.subscriptions(),
        [
            EventType::NodeUnhealthy,
            EventType::NodeRecovered,
            EventType::ResourcePressure,
            EventType::HostJoined,
            EventType::LeaderChanged
        ]
    );
    h.handle_event(
        &ctx,
        &event("node_health_monitor@w1", pressure("w1", "disk", "critical")),
    )
    .await
    .unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(controls(&rec).len(), 1);
    assert!(
        controls(&rec)[0].contains("disk critical on w1"),
        "{:?}",
        controls(&rec)
    );
    h.handle_event(
        &ctx,
        &event("node_health_monitor@w1", pressure("w1", "disk", "ok")),
    )
    .await
    .unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(controls(&rec)[1], "resumed");

    let (ctx, _) = Context::for_test(
        INFO.name,
        home.path(),
        "[system_health_monitor]\npause_below_score = 2\n",
    )
    .unwrap();
    let err = build(&ctx).err().expect("score above 1").to_string();
    assert!(err.contains("pause_below_score = 2"), "{err}");
    // Refused with a message, not a panic in Duration::from_secs_f64.
    let (ctx, _) = Context::for_test(
        INFO.name,
        home.path(),
        "[system_health_monitor]\nrpc_timeout_s = nan\n",
    )
    .unwrap();
    let err = build(&ctx).err().expect("NaN timeout").to_string();
    assert!(err.contains("rpc_timeout_s = NaN"), "{err}");
}

fn joined(observer: &str, node: &str) -> Event {
    event(
        &format!("p2p_backend@{observer}"),
        Payload::HostJoined(wire::HostMembership {
            node: node.into(),
            observer: observer.into(),
            ..Default::default()
        }),
    )
}

fn three(states: [MemberState; 3]) -> Members {
    let mut m = members(
        "n1",
        &[("n1", states[0]), ("n2", states[1]), ("n3", states[2])],
    );
    m.this_node = "n1".into();
    m
}

#[test]
fn a_node_that_died_and_rejoined_is_healthy_again() {
    use MemberState::*;
    // n3 was cut off: both observers called it unhealthy, then dead; its own monitor
    // also raised an alert. It comes back with HOST_JOINED only (no NODE_RECOVERED).
    let mut a = Alerts::default();
    for src in ["p2p_backend@n1", "p2p_backend@n2"] {
        a.apply(&event(src, Payload::NodeUnhealthy(status("n3"))));
    }
    a.apply(&event(
        "node_health_monitor@n3",
        Payload::NodeUnhealthy(status("n3")),
    ));
    let back = three([Alive, Alive, Alive]);
    assert_eq!(score(&back, &a, W).0, 2.5 / 3.0);
    assert!(a.apply(&joined("n1", "n3")));
    // The membership alerts are answered; the node's own check alert is its own to clear.
    assert_eq!(
        a.unhealthy["n3"].keys().collect::<Vec<_>>(),
        ["node_health_monitor@n3"]
    );
    a.apply(&event(
        "node_health_monitor@n3",
        Payload::NodeRecovered(status("n3")),
    ));
    assert_eq!(score(&back, &a, W).0, 1.0);

    // After the link came back, n3's own p2p_backend's alerts about n1 and n2 arrive
    // (published during the cut): both are alive in this node's view (they heartbeat),
    // so the alerts go at once: 0.67 before, 1.00 after.
    let mut a = Alerts::default();
    for n in ["n1", "n2"] {
        a.apply(&event("p2p_backend@n3", Payload::NodeUnhealthy(status(n))));
    }
    assert!((score(&back, &a, W).0 - 2.0 / 3.0).abs() < 1e-9);
    assert!(a.alive_in(&back));
    assert_eq!(score(&back, &a, W).0, 1.0);
    assert!(a.unhealthy.is_empty());
    // Not alive in the view: the alert stays.
    let mut a = Alerts::default();
    a.apply(&event(
        "p2p_backend@n1",
        Payload::NodeUnhealthy(status("n3")),
    ));
    assert!(!a.alive_in(&three([Alive, Alive, Suspect])));
    assert!(a.unhealthy.contains_key("n3"));
}

#[test]
fn ephemeral_nodes_weigh_less() {
    use MemberState::*;
    let mut m = members(
        "c",
        &[
            ("c", Alive),
            ("w1", Alive),
            ("spot1", Dead),
            ("spot2", Dead),
        ],
    );
    m.ephemeral = ["spot1".to_owned(), "spot2".to_owned()].into();
    let a = Alerts::default();
    // Two durable nodes at 1 (weight 1 each), two spot nodes at 0 (weight 0.25 each).
    assert!((score(&m, &a, 0.25).0 - 2.0 / 2.5).abs() < 1e-9);
    assert_eq!(score(&m, &a, 1.0).0, 0.5);
    // Losing both spot nodes does not pause the pipeline (score 0.8 ≥ 0.5).
    let cfg = SystemConfig::default();
    assert!(pause_reasons(&cfg, Some(&m), &a, Duration::ZERO).is_empty());
    // Only spot nodes, weighing nothing: each counts alike.
    let mut only = members("spot1", &[("spot1", Alive), ("spot2", Dead)]);
    only.ephemeral = ["spot1".to_owned(), "spot2".to_owned()].into();
    assert_eq!(score(&only, &a, 0.0).0, 0.5);
}

#[test]
fn a_leader_not_known_yet_is_no_pause_within_the_grace() {
    let cfg = SystemConfig::default();
    let none = members("", &[("w1", MemberState::Alive)]);
    let a = Alerts::default();
    assert!(pause_reasons(&cfg, Some(&none), &a, Duration::ZERO).is_empty());
    assert!(pause_reasons(&cfg, Some(&none), &a, Duration::from_secs(29)).is_empty());
    assert_eq!(
        pause_reasons(&cfg, Some(&none), &a, Duration::from_secs(30)),
        ["no coordinator (no leader known for 30 s)"]
    );
}

#[tokio::test]
async fn start_up_before_the_leader_is_read_does_not_pause_and_leader_changed_resumes_at_once() {
    let home = tempfile::tempdir().unwrap();
    // The node's p2p_backend has not read the leader yet (etcd): no pause at start-up.
    let mut none = members(
        "",
        &[("test", MemberState::Alive), ("c", MemberState::Alive)],
    );
    none.this_node = "test".into();
    let script = Arc::new(Script(Mutex::new(Ok(none))));
    let (ctx, rec) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build_with(&ctx, SystemConfig::default(), script.clone()).unwrap();
    h.on_start(&ctx).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert!(controls(&rec).is_empty(), "{:?}", controls(&rec));

    // With no grace it pauses; this node's p2p_backend's LEADER_CHANGED resumes at once,
    // without waiting for the next cycle's view.
    let cfg = SystemConfig {
        no_leader_grace_s: 0.0,
        ..SystemConfig::default()
    };
    let home = tempfile::tempdir().unwrap();
    let (ctx, rec) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build_with(&ctx, cfg, script.clone()).unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(controls(&rec).len(), 1);
    assert!(
        controls(&rec)[0].contains("no leader known"),
        "{:?}",
        controls(&rec)
    );
    let leader = |src: &str| {
        event(
            src,
            Payload::LeaderChanged(wire::LeaderChanged {
                leader: "c".into(),
                previous: String::new(),
                term: 7,
            }),
        )
    };
    // Another node's view of the leader is not this node's view.
    h.handle_event(&ctx, &leader("p2p_backend@other"))
        .await
        .unwrap();
    assert_eq!(controls(&rec).len(), 1);
    h.handle_event(&ctx, &leader("p2p_backend@test"))
        .await
        .unwrap();
    assert_eq!(controls(&rec)[1..], ["resumed".to_string()]);
    assert!(
        h.health_check().message.contains("leader c"),
        "{:?}",
        h.health_check()
    );
}

#[tokio::test]
async fn the_score_is_back_to_one_as_soon_as_the_node_rejoins() {
    use MemberState::*;
    let home = tempfile::tempdir().unwrap();
    let mut cut = members("c", &[("test", Alive), ("c", Alive), ("w3", Dead)]);
    cut.this_node = "test".into();
    let script = Arc::new(Script(Mutex::new(Ok(cut.clone()))));
    let (ctx, _rec) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build_with(&ctx, SystemConfig::default(), script.clone()).unwrap();
    h.on_start(&ctx).await.unwrap();
    for src in ["p2p_backend@test", "p2p_backend@c"] {
        h.handle_event(&ctx, &event(src, Payload::NodeUnhealthy(status("w3"))))
            .await
            .unwrap();
    }
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(h.health_check().details["score"], "0.67");
    // This node's p2p_backend hears w3 again: HOST_JOINED, and the score is 1 at once.
    h.handle_event(&ctx, &joined("test", "w3")).await.unwrap();
    assert_eq!(h.health_check().details["score"], "1.00");
    // The next view agrees; the alerts stay gone, also across a restart.
    let mut back = cut.clone();
    back.states.insert("w3".into(), Alive);
    *script.0.lock().unwrap() = Ok(back);
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(h.health_check().details["score"], "1.00");
    let h = build_with(&ctx, SystemConfig::default(), script.clone()).unwrap();
    h.on_start(&ctx).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(h.health_check().details["score"], "1.00");

    // Rejoined by heartbeat alone (the HOST_JOINED went elsewhere): one cycle.
    let home = tempfile::tempdir().unwrap();
    let (ctx, _rec) = Context::for_test(INFO.name, home.path(), "").unwrap();
    *script.0.lock().unwrap() = Ok(cut.clone());
    let h = build_with(&ctx, SystemConfig::default(), script.clone()).unwrap();
    h.handle_event(
        &ctx,
        &event("p2p_backend@c", Payload::NodeUnhealthy(status("w3"))),
    )
    .await
    .unwrap();
    h.run_cycle(&ctx).await.unwrap();
    let mut back = cut;
    back.states.insert("w3".into(), Alive);
    *script.0.lock().unwrap() = Ok(back);
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(h.health_check().details["score"], "1.00");
}

#[tokio::test]
async fn bad_weights_and_graces_are_refused() {
    for (k, v) in [("ephemeral_weight", "1.5"), ("no_leader_grace_s", "-1")] {
        let home = tempfile::tempdir().unwrap();
        let (ctx, _) = Context::for_test(
            INFO.name,
            home.path(),
            &format!("[system_health_monitor]\n{k} = {v}\n"),
        )
        .unwrap();
        let err = build(&ctx).err().expect("refused").to_string();
        assert!(err.contains(&format!("{k} = {v}")), "{err}");
    }
}
