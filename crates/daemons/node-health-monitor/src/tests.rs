//! Thresholds, the debounce (a flapping check raises one alert), and the daemon in process
//! with a scripted sampler: one NODE_UNHEALTHY for a full disk, none repeated after a
//! restart, NODE_RECOVERED once it clears; bad thresholds refused.

use super::*;
use handler_base::{HealthStatus, Recorded};
use ringrift_proto::EventType;

const GIB: u64 = 1 << 30;

fn sample(disk_used_pct: u64, router_ok: bool) -> Sample {
    Sample {
        resources: Resources {
            cpu_count: 2,
            memory_total_bytes: 10 * GIB,
            memory_available_bytes: 5 * GIB,
            disk_total_bytes: 100 * GIB,
            disk_free_bytes: (100 - disk_used_pct) * GIB,
            gpu_note: "no GPU found".into(),
            ..Default::default()
        },
        router: if router_ok {
            Ok(())
        } else {
            Err("connection refused".into())
        },
        peers: None,
    }
}

#[test]
fn thresholds_name_their_level() {
    let cfg = HealthConfig::default();
    let r = judge(&cfg, &sample(50, true), 0);
    assert_eq!(r[&Check::Disk].level, Level::Ok);
    assert_eq!(r[&Check::Memory].level, Level::Ok);
    assert_eq!(r[&Check::Router].level, Level::Ok);
    assert!(
        !r.contains_key(&Check::Peers),
        "one-node cluster: no peer check"
    );
    let r = judge(&cfg, &sample(90, false), 0);
    assert_eq!(r[&Check::Disk].level, Level::Warning);
    assert!(
        r[&Check::Disk]
            .reason
            .contains("90.0% used (warning at 85%)"),
        "{:?}",
        r[&Check::Disk]
    );
    assert_eq!(r[&Check::Router].level, Level::Critical);
    assert_eq!(
        judge(&cfg, &sample(96, true), 0)[&Check::Disk].level,
        Level::Critical
    );
    // Two GPUs seen before, none now: the GPUs were lost.
    let gpu = &judge(&cfg, &sample(50, true), 2)[&Check::Gpu];
    assert_eq!(gpu.level, Level::Critical);
    assert!(gpu.reason.contains("0 of 2 GPUs"), "{gpu:?}");
    let mut s = sample(50, true);
    s.peers = Some(Ok(vec!["b".into()]));
    assert_eq!(judge(&cfg, &s, 0)[&Check::Peers].level, Level::Warning);
    s.peers = Some(Err("refused".into()));
    assert_eq!(judge(&cfg, &s, 0)[&Check::Peers].level, Level::Critical);
}

#[test]
fn a_flapping_check_raises_one_alert() {
    let cfg = HealthConfig::default();
    let mut raised = Raised::default();
    let mut events = Vec::new();
    // The disk (a measured resource) alternating never rises; three in a row does;
    // alternating afterwards never clears.
    let pattern = [
        false, true, false, true, false, false, false, true, false, true, false, true, false,
    ];
    let disk = |ok: bool| if ok { 50 } else { 99 };
    for ok in pattern {
        let r = judge(&cfg, &sample(disk(ok), true), 0);
        events.extend(step(&cfg, &mut raised, "n1", &r));
    }
    let kinds = |events: &[Payload]| -> Vec<&'static str> {
        events
            .iter()
            .filter_map(|p| match p {
                Payload::NodeUnhealthy(_) => Some("unhealthy"),
                Payload::NodeRecovered(_) => Some("recovered"),
                _ => None,
            })
            .collect()
    };
    assert_eq!(kinds(&events), ["unhealthy"]);
    for _ in 0..3 {
        let r = judge(&cfg, &sample(50, true), 0);
        events.extend(step(&cfg, &mut raised, "n1", &r));
    }
    assert_eq!(kinds(&events), ["unhealthy", "recovered"], "{events:?}");
}

#[test]
fn a_router_that_answers_again_clears_on_the_first_good_sample() {
    let cfg = HealthConfig::default();
    let mut raised = Raised::default();
    let mut events = Vec::new();
    // A partition: the router unreachable for three samples raises the node; the first
    // sample after the heal clears it (not `recovered_after` samples later).
    for ok in [false, false, false, true] {
        let r = judge(&cfg, &sample(50, ok), 0);
        events.extend(step(&cfg, &mut raised, "n1", &r));
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|p| match p {
            Payload::NodeUnhealthy(_) => "unhealthy",
            Payload::NodeRecovered(_) => "recovered",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["unhealthy", "recovered"]);
}

/// Hands out the scripted sample (the same one until changed).
struct Script(Mutex<Sample>);

#[async_trait::async_trait]
impl Sampler for Script {
    async fn sample(&self, _ctx: &Context) -> Sample {
        self.0.lock().unwrap().clone()
    }
}

fn kinds(rec: &Recorded) -> Vec<(EventType, String)> {
    rec.events()
        .into_iter()
        .map(|e| {
            let what = match e.payload {
                Payload::ResourcePressure(p) => format!("{} {}", p.resource, p.level),
                Payload::NodeUnhealthy(s) | Payload::NodeRecovered(s) => s.reason,
                other => format!("{other:?}"),
            };
            (e.kind, what)
        })
        .collect()
}

#[tokio::test]
async fn full_disk_alerts_once_across_a_restart_and_clears() {
    let home = tempfile::tempdir().unwrap();
    let script = Arc::new(Script(Mutex::new(sample(97, true))));
    let (ctx, rec) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let cfg = HealthConfig::default();
    let h = build_with(&ctx, cfg.clone(), script.clone()).unwrap();
    h.on_start(&ctx).await.unwrap();
    for _ in 0..3 {
        h.run_cycle(&ctx).await.unwrap();
    }
    let seen = kinds(&rec);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0],
        (EventType::ResourcePressure, "disk critical".into())
    );
    assert_eq!(seen[1].0, EventType::NodeUnhealthy);
    assert!(
        seen[1].1.contains("disk 97.0% used (critical at 95%)"),
        "{seen:?}"
    );
    assert_eq!(
        h.health_check().status,
        HealthStatus::Degraded,
        "{:?}",
        h.health_check()
    );

    // A restarted monitor remembers: the still-full disk is not announced again.
    let h = build_with(&ctx, cfg.clone(), script.clone()).unwrap();
    h.on_start(&ctx).await.unwrap();
    for _ in 0..3 {
        h.run_cycle(&ctx).await.unwrap();
    }
    assert_eq!(kinds(&rec).len(), 2, "{:?}", kinds(&rec));

    *script.0.lock().unwrap() = sample(40, true);
    for _ in 0..3 {
        h.run_cycle(&ctx).await.unwrap();
    }
    let seen = kinds(&rec);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[2], (EventType::ResourcePressure, "disk ok".into()));
    assert_eq!(seen[3].0, EventType::NodeRecovered);
    assert_eq!(h.health_check().status, HealthStatus::Running);
}

#[tokio::test]
async fn the_live_sampler_sees_a_missing_router_and_bad_thresholds_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let (h, ctx, _rec) = ringrift_test_support::daemon(
        INFO.name,
        build,
        home.path(),
        "test",
        "[node_health_monitor]\nrpc_timeout_s = 1\nunhealthy_after = 1\n",
    );
    h.run_cycle(&ctx).await.unwrap();
    let health = h.health_check();
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(health.message.contains("router unreachable"), "{health:?}");

    let (ctx, _) = Context::for_test(
        INFO.name,
        home.path(),
        "[node_health_monitor]\ndisk_warn_percent = 99\ndisk_critical_percent = 90\n",
    )
    .unwrap();
    let err = build(&ctx).err().expect("warn above critical").to_string();
    assert!(err.contains("disk_warn_percent = 99"), "{err}");
}
