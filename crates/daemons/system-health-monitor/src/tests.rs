//! The score and pause rules, alerts per source, and the daemon in process with a
//! scripted membership: one PIPELINE_PAUSED when the coordinator dies (kept across a
//! restart), one PIPELINE_RESUMED when it is back, none while membership is unknown.

use super::*;
use handler_base::{HealthStatus, Recorded};

fn members(leader: &str, states: &[(&str, MemberState)]) -> Members {
    Members {
        this_node: "w1".into(),
        leader: leader.into(),
        states: states.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
    }
}

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
    assert_eq!(score(&all, &a).0, 1.0);
    assert!(pause_reasons(&cfg, Some(&all), &a).is_empty());
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
    assert!(pause_reasons(&cfg, Some(&all), &a).is_empty());
    assert!((score(&all, &a).0 - (1.0 + 0.75 + 0.5) / 3.0).abs() < 1e-9);
    a.apply(&event(
        "node_health_monitor@c",
        pressure("c", "disk", "critical"),
    ));
    assert_eq!(
        pause_reasons(&cfg, Some(&all), &a),
        ["disk critical on c (97.0%)"]
    );
    a.apply(&event("node_health_monitor@c", pressure("c", "disk", "ok")));
    assert!(pause_reasons(&cfg, Some(&all), &a).is_empty());

    let lost = members(
        "c",
        &[
            ("c", MemberState::Dead),
            ("w1", MemberState::Alive),
            ("w2", MemberState::Alive),
        ],
    );
    assert_eq!(
        pause_reasons(&cfg, Some(&lost), &Alerts::default()),
        ["coordinator c lost (dead)"]
    );
    let none = members("", &[("w1", MemberState::Alive)]);
    assert_eq!(
        pause_reasons(&cfg, Some(&none), &Alerts::default()),
        ["no coordinator (no leader known)"]
    );
    let most_dead = members(
        "w1",
        &[
            ("c", MemberState::Dead),
            ("w1", MemberState::Alive),
            ("w2", MemberState::Dead),
        ],
    );
    let r = pause_reasons(&cfg, Some(&most_dead), &Alerts::default());
    assert_eq!(r, ["health score 0.33 below 0.5"]);
    assert!(pause_reasons(&cfg, None, &Alerts::default()).is_empty());
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
            EventType::ResourcePressure
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
