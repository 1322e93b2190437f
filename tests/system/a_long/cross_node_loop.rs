//! The loop across nodes, data moved by the sync daemons alone: three homes on loopback
//! sharing a nats-server (events and the work queue on JetStream). The coordinator n1
//! (roles coordinator + training) queues selfplay, exports, trains, evaluates and
//! promotes; the workers n2 and n3 claim and play selfplay, `auto_sync` pushes their
//! games to n1, `model_sync` brings each promoted model back. Nothing is copied by hand.

use ringrift_proto::wire::{self, event::Payload};
use ringrift_store::{ConfigKey, models};
use ringrift_system_tests::{Home, Nats, Proc, free_port, router_log, wait_for};
use std::time::{Duration, Instant};

fn key() -> ConfigKey {
    "hex8_2p".parse().unwrap()
}

fn node_home(name: &str, cluster: &str, daemons: &[&str]) -> Home {
    let home = Home::new();
    std::fs::write(home.path().join("cluster.toml"), cluster).unwrap();
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!(
            r#"node = "{name}"
heartbeat_interval_s = 1.0
[event_router]
listen = "127.0.0.1:0"
[queue_populator]
cycle_interval_s = 1
games_per_item = 10
low_watermark = 2
high_watermark = 4
[job_scheduler]
cycle_interval_s = 0.5
slots = 1
lease_s = 30
depth = 1
[auto_sync]
cycle_interval_s = 1
[model_sync]
cycle_interval_s = 1
[auto_export]
threshold = 30
[training_trigger]
cooldown_s = 0
[continuous_training_loop]
lease_s = 30
epochs = 2
[evaluation]
games_random = 12
games_heuristic = 12
games_canonical = 6
"#
        ),
    )
    .unwrap();
    home.write_profile("node", daemons);
    home
}

fn kind(e: &wire::Event) -> &'static str {
    match e.payload {
        Some(Payload::SelfplayCompleted(_)) => "selfplay",
        Some(Payload::NpzExportCompleted(_)) => "export",
        Some(Payload::TrainingCompleted(_)) => "trained",
        Some(Payload::EvaluationCompleted(_)) => "evaluated",
        Some(Payload::ModelPromoted(_)) => "promoted",
        Some(Payload::PromotionRejected(_)) => "rejected",
        _ => "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfplay_on_workers_training_and_promotion_on_the_coordinator() {
    let _heavy = ringrift_system_tests::heavy();
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let mut cluster = format!(
        "[cluster]\nname = \"loop\"\n[leader]\nmode = \"static\"\n[events]\nbackend = \"jetstream\"\nservers = [\"{}\"]\n",
        nats.servers[0]
    );
    for (name, roles) in [
        ("n1", "[\"coordinator\", \"training\"]"),
        ("n2", "[\"selfplay\"]"),
        ("n3", "[\"selfplay\"]"),
    ] {
        cluster += &format!(
            "\n[[node]]\nname = \"{name}\"\nroles = {roles}\naddress = \"127.0.0.1\"\nports = {{ p2p = {}, data = {} }}\n",
            free_port(),
            free_port()
        );
    }
    let coordinator = [
        "event_router",
        "data_server",
        "queue_populator",
        "auto_export",
        "training_trigger",
        "continuous_training_loop",
        "evaluation",
        "unified_promotion",
    ];
    let worker = [
        "event_router",
        "data_server",
        "job_scheduler",
        "auto_sync",
        "model_sync",
    ];
    let homes = [
        node_home("n1", &cluster, &coordinator),
        node_home("n2", &cluster, &worker),
        node_home("n3", &cluster, &worker),
    ];
    let running: Vec<(Proc, String)> = homes.iter().map(|h| h.launch_profile("node")).collect();

    let deadline = Instant::now() + Duration::from_secs(420);
    let events = loop {
        let events = router_log(&running[0].1).await;
        if events
            .iter()
            .any(|e| matches!(kind(e), "promoted" | "rejected"))
        {
            break events;
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = events
                .iter()
                .filter(|e| !kind(e).is_empty())
                .map(|e| format!("{} from {}", kind(e), e.source))
                .collect();
            panic!(
                "no promotion decision within 420 s; loop events seen: {seen:?}\nn1 launcher log:\n{}",
                homes[0]
                    .log("ringrift-launcher")
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let from = |k: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| kind(e) == k)
            .map(|e| e.source.clone())
            .collect()
    };
    // Selfplay ran on the workers; export, training, evaluation on the coordinator.
    let selfplay = from("selfplay");
    assert!(
        selfplay.iter().any(|s| s.ends_with("@n2")) || selfplay.iter().any(|s| s.ends_with("@n3")),
        "selfplay by {selfplay:?}"
    );
    for k in ["export", "trained", "evaluated"] {
        let by = from(k);
        assert!(
            !by.is_empty() && by.iter().all(|s| s.ends_with("@n1")),
            "{k} by {by:?}"
        );
    }
    // The coordinator trained on games the workers played: auto_sync moved them.
    let store = ringrift_store::games::GameStore::open(&ringrift_store::paths::game_db(
        homes[0].path(),
        key(),
    ))
    .unwrap();
    let sources: std::collections::BTreeSet<String> = store
        .games_since(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|g| g.game.source_node)
        .collect();
    assert!(
        sources.iter().any(|s| s == "n2" || s == "n3"),
        "games on the coordinator came from {sources:?}"
    );
    // A promoted model reaches both workers with the coordinator's file hash.
    if !from("promoted").is_empty() {
        let want = models::canonical(homes[0].path(), key())
            .unwrap()
            .expect("canonical on n1")
            .file_sha256;
        wait_for(
            "the promoted model on n2 and n3",
            Duration::from_secs(60),
            || {
                homes[1..]
                    .iter()
                    .all(|h| {
                        models::canonical(h.path(), key())
                            .ok()
                            .flatten()
                            .is_some_and(|c| c.file_sha256 == want)
                    })
                    .then_some(())
            },
        );
    }
    drop(running);
}
