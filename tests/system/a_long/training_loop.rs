//! The training loop as daemons under the launcher, observed only through events:
//! games → NPZ_EXPORT_COMPLETED → TRAINING_COMPLETED → EVALUATION_COMPLETED →
//! MODEL_PROMOTED or PROMOTION_REJECTED, with no manual step; and the same run surviving
//! a SIGKILL of each loop daemon in turn without duplicate training or a lost stage.

use handler_base::status_body::DaemonState;
use ringrift_proto::wire::{self, event::Payload};
use ringrift_system_tests::{Home, Proc, router_log, wait_for};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

const LOOP_DAEMONS: &[&str] = &[
    "job_scheduler",
    "queue_populator",
    "auto_export",
    "training_trigger",
    "continuous_training_loop",
    "evaluation",
    "unified_promotion",
    "data_pipeline",
];

/// The loop daemons run at their registry intervals (what the launcher passed before
/// a user's `ringrift.toml` could set them; faster ones flood 2 cores with trainings).
fn loop_home() -> Home {
    loop_home_with("")
}

/// [`loop_home`] with `extra` TOML appended to its `ringrift.toml` (e.g. a `[jobs]` table).
pub(super) fn loop_home_with(extra: &str) -> Home {
    let home = Home::new();
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!(
            r#"heartbeat_interval_s = 1.0
[event_router]
listen = "127.0.0.1:0"
[auto_export]
threshold = 30
[queue_populator]
games_per_item = 15
[job_scheduler]
lease_s = 20
[training_trigger]
cooldown_s = 0
[continuous_training_loop]
lease_s = 20
epochs = 2
[evaluation]
games_random = 12
games_heuristic = 12
games_canonical = 6
[data_pipeline]
{extra}"#
        ),
    )
    .unwrap();
    let daemons: Vec<&str> = std::iter::once("event_router")
        .chain(LOOP_DAEMONS.iter().copied())
        .collect();
    home.write_profile("looptest", &daemons);
    home
}

pub(super) fn start(home: &Home) -> Proc {
    home.launch_profile("looptest").0
}

/// Every event in the router's log, read from seq 1 (only events, no files).
pub(super) async fn all_events(home: &Home) -> Vec<wire::Event> {
    let addr = std::fs::read_to_string(home.path().join("run/event_router.addr")).unwrap();
    router_log(&addr).await
}

pub(super) fn decided(events: &[wire::Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e.payload,
            Some(Payload::ModelPromoted(_)) | Some(Payload::PromotionRejected(_))
        )
    })
}

pub(super) fn counts(events: &[wire::Event]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(
            wire::EventType::try_from(e.r#type)
                .map(|t| t.as_str_name().to_owned())
                .unwrap_or_default(),
        )
        .or_insert(0) += 1;
    }
    m
}

/// Each piece of data is trained on once: no two TRAINING_COMPLETED for one NPZ, no two
/// trainings started for one work item.
pub(super) fn assert_no_duplicate_training(events: &[wire::Event]) {
    let mut npz = HashSet::new();
    let mut runs = HashSet::new();
    for e in events {
        if let Some(Payload::TrainingCompleted(t)) = &e.payload {
            assert!(
                npz.insert(t.npz_sha256.clone()),
                "data {} trained twice",
                t.npz_sha256
            );
            assert!(
                runs.insert(t.run_id.clone()),
                "work item {} completed twice",
                t.run_id
            );
        }
    }
}

/// Trainings per data watermark from the job runner's own records (which the router's
/// dedup cannot hide): no watermark is trained by two jobs that succeeded (or run).
/// Returns how many training jobs succeeded.
pub(super) fn assert_no_duplicate_training_jobs(home: &std::path::Path) -> usize {
    let db = home.join("data/jobs.db");
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut st = c
        .prepare("SELECT argv, status FROM jobs WHERE kind = 'train' AND status IN ('succeeded', 'running')")
        .expect("query jobs");
    let rows: Vec<(String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("jobs")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut per_watermark: HashMap<String, usize> = HashMap::new();
    let mut succeeded = 0;
    for (argv, status) in &rows {
        let argv: Vec<String> = serde_json::from_str(argv).expect("argv is a JSON list");
        // The output model is named gen<G>_w<watermark>.rrm.
        let wm = argv
            .iter()
            .find_map(|a| {
                let path = std::path::Path::new(a);
                ringrift_store::models::ModelFormat::of(path)?;
                let (_, w) = path.file_stem()?.to_str()?.rsplit_once("_w")?;
                w.parse::<i64>().ok().map(|w| w.to_string())
            })
            .unwrap_or_else(|| {
                panic!("training job without a gen*_w<watermark>.rrm output: {argv:?}")
            });
        *per_watermark.entry(wm).or_default() += 1;
        succeeded += usize::from(status == "succeeded");
    }
    let twice: Vec<_> = per_watermark.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "data watermarks trained by more than one job: {twice:?}"
    );
    succeeded
}

/// Every event once the loop in `home` has decided on a model (polled, at most 240 s).
pub(super) async fn wait_decided(home: &Home) -> Vec<wire::Event> {
    let t0 = Instant::now();
    let mut events = Vec::new();
    while t0.elapsed() < Duration::from_secs(240) {
        events = all_events(home).await;
        if decided(&events) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let c = counts(&events);
    eprintln!("decision after {:?}; events: {c:?}", t0.elapsed());
    assert!(
        decided(&events),
        "no promotion decision within 240 s; events so far: {c:?}\nlogs in {}",
        home.path().display()
    );
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_runs_from_games_to_a_promotion_decision_by_events_alone() {
    let _heavy = ringrift_system_tests::heavy();
    let home = loop_home();
    let _l = start(&home);
    let events = wait_decided(&home).await;
    // The chain, in causal order.
    let first = |f: &dyn Fn(&Payload) -> bool| {
        events
            .iter()
            .find(|e| e.payload.as_ref().is_some_and(f))
            .map(|e| e.seq)
            .unwrap_or(u64::MAX)
    };
    let games = first(&|p| matches!(p, Payload::NewGamesAvailable(_)));
    let npz = first(&|p| matches!(p, Payload::NpzExportCompleted(_)));
    let trained = first(&|p| matches!(p, Payload::TrainingCompleted(_)));
    let evaluated = first(&|p| matches!(p, Payload::EvaluationCompleted(_)));
    let decision =
        first(&|p| matches!(p, Payload::ModelPromoted(_) | Payload::PromotionRejected(_)));
    assert!(
        games < npz && npz < trained && trained < evaluated && evaluated < decision,
        "out of order: {games} {npz} {trained} {evaluated} {decision}"
    );
    for e in &events {
        if let Some(Payload::PromotionRejected(r)) = &e.payload {
            assert!(!r.reason.is_empty(), "a rejection says why");
        }
    }
    assert_no_duplicate_training(&events);
    assert!(
        assert_no_duplicate_training_jobs(home.path()) >= 1,
        "a decision without a succeeded training job"
    );
    // The stage machine is visible in --status.
    let s = ringrift_system_tests::launcher_status(&home).expect("the launcher answers --status");
    let dp = s
        .daemon("data_pipeline")
        .expect("data_pipeline in --status");
    assert!(
        dp.health
            .as_ref()
            .is_some_and(|h| h.message.contains("hex8_2p:")),
        "{dp:?}"
    );
}

type Trigger = fn(&Payload) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_each_loop_daemon_in_turn_loses_no_stage_and_trains_nothing_twice() {
    let _heavy = ringrift_system_tests::heavy();
    let home = loop_home();
    let _l = start(&home);
    let t0 = Instant::now();
    // Each daemon is killed right when it has work in hand: after the event it reacts to.
    let plan: &[(&str, Trigger)] = &[
        ("queue_populator", |_| true),
        ("job_scheduler", |p| {
            matches!(p, Payload::SelfplayCompleted(_))
        }),
        ("auto_export", |p| {
            matches!(p, Payload::NewGamesAvailable(_))
        }),
        ("data_pipeline", |p| {
            matches!(p, Payload::NewGamesAvailable(_))
        }),
        ("training_trigger", |p| {
            matches!(p, Payload::NpzExportCompleted(_))
        }),
        ("continuous_training_loop", |p| {
            matches!(p, Payload::TrainingStarted(_))
        }),
        ("evaluation", |p| matches!(p, Payload::TrainingCompleted(_))),
        ("unified_promotion", |p| {
            matches!(p, Payload::EvaluationCompleted(_))
        }),
    ];
    let mut last_kill_seq = 0;
    for (name, trigger) in plan {
        let deadline = Instant::now() + Duration::from_secs(240);
        let seen = loop {
            let evs = all_events(&home).await;
            if let Some(e) = evs.iter().find(|e| e.payload.as_ref().is_some_and(trigger)) {
                break e.seq;
            }
            assert!(
                Instant::now() < deadline,
                "no trigger event for killing {name}; {:?}",
                counts(&evs)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let pid = wait_for(&format!("{name} READY"), Duration::from_secs(60), || {
            let s = ringrift_system_tests::launcher_status(&home)?;
            s.daemon(name)
                .filter(|d| d.state == DaemonState::Ready)
                .map(|d| d.pid)
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        eprintln!(
            "{:>6.1}s killed {name} (pid {pid}) after event #{seen}",
            t0.elapsed().as_secs_f64()
        );
        last_kill_seq = last_kill_seq.max(seen);
        wait_for(
            &format!("{name} restarted"),
            Duration::from_secs(30),
            || {
                let s = ringrift_system_tests::launcher_status(&home)?;
                s.daemon(name)
                    .filter(|d| d.state == DaemonState::Ready && d.pid != pid)
                    .map(|_| ())
            },
        );
    }
    // The loop still completes: a promotion decision after the last kill.
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        events = all_events(&home).await;
        if events
            .iter()
            .any(|e| e.seq > last_kill_seq && decided(std::slice::from_ref(e)))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let c = counts(&events);
    eprintln!("{:>6.1}s events: {c:?}", t0.elapsed().as_secs_f64());
    assert!(
        events
            .iter()
            .any(|e| e.seq > last_kill_seq && decided(std::slice::from_ref(e))),
        "no decision after the kills; {c:?}; logs in {}",
        home.path().display()
    );
    assert_no_duplicate_training(&events);
    assert!(
        assert_no_duplicate_training_jobs(home.path()) >= 1,
        "a decision without a succeeded training job"
    );
    // Every training that started completed or failed visibly: no lost stage.
    let started: HashSet<String> = events
        .iter()
        .filter_map(|e| {
            if let Some(Payload::TrainingStarted(t)) = &e.payload {
                Some(t.run_id.clone())
            } else {
                None
            }
        })
        .collect();
    let ended: HashSet<String> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::TrainingCompleted(t)) => Some(t.run_id.clone()),
            Some(Payload::TrainingFailed(t)) => Some(t.run_id.clone()),
            _ => None,
        })
        .collect();
    let open: Vec<_> = started.difference(&ended).collect();
    assert!(
        open.len() <= 1,
        "trainings started and never finished (at most the one running now): {open:?}"
    );
}
