//! In process through `Context::for_test`: `build` with a scripted tournament job run by
//! the real job runner, TRAINING_COMPLETED handled: the recent generations play a round
//! and each standing becomes an ELO_UPDATED, once per trained model; on a node that does
//! not lead, nothing is played.

use super::*;
use ringrift_contracts::example;
use ringrift_store::paths;

#[tokio::test]
async fn build_and_play_a_round_after_training() {
    let home = tempfile::tempdir().unwrap();
    let dir = paths::models_dir(home.path()).join("hex8_2p");
    std::fs::create_dir_all(&dir).unwrap();
    for g in ["gen0001_w1.rrm", "gen0002_w2.rrm"] {
        std::fs::write(dir.join(g), g).unwrap();
    }
    let report = example::tournament(
        "hex8_2p".parse().unwrap(),
        &[("gen0001_w1", 1490.0), ("gen0002_w2", 1510.0)],
    );
    let jobs = ringrift_jobs::scripted_job(home.path(), JobKind::Tournament, &report).unwrap();
    let (ctx, published) =
        Context::for_test(INFO.name, home.path(), &format!("[jobs]\n{jobs}")).unwrap();
    let h = build(&ctx).unwrap();
    let trained = Event::new(wire::event::Payload::TrainingCompleted(
        wire::TrainingCompleted {
            model_sha256: "s2".into(),
            generation: 2,
            ..Default::default()
        },
    ))
    .with_config("hex8_2p");
    h.handle_event(&ctx, &trained).await.unwrap();
    h.handle_event(&ctx, &trained).await.unwrap();
    let elo: Vec<(String, f64)> = published
        .payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::EloUpdated(e) => Some((e.participant, e.elo)),
            _ => None,
        })
        .collect();
    assert_eq!(
        elo,
        [
            ("gen0001_w1".to_owned(), 1490.0),
            ("gen0002_w2".to_owned(), 1510.0)
        ],
        "one round per trained model"
    );
}

/// cluster.toml names another coordinator: this node plays no tournament, and a
/// TRAINING_COMPLETED is nacked (SQLite event log: the only copy is this node's).
#[tokio::test]
async fn a_node_that_does_not_lead_plays_nothing() {
    let home = tempfile::tempdir().unwrap();
    let dir = paths::models_dir(home.path()).join("hex8_2p");
    std::fs::create_dir_all(&dir).unwrap();
    for g in ["gen0001_w1.rrm", "gen0002_w2.rrm"] {
        std::fs::write(dir.join(g), g).unwrap();
    }
    std::fs::write(
        home.path().join("cluster.toml"),
        "[[node]]\nname = \"coord\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\n\
         [[node]]\nname = \"test\"\nroles = [\"training\"]\naddress = \"127.0.0.1\"\nports = { p2p = 8790 }\n",
    )
    .unwrap();
    let report = example::tournament("hex8_2p".parse().unwrap(), &[("gen0001_w1", 1490.0)]);
    let jobs = ringrift_jobs::scripted_job(home.path(), JobKind::Tournament, &report).unwrap();
    let (ctx, published) =
        Context::for_test(INFO.name, home.path(), &format!("[jobs]\n{jobs}")).unwrap();
    let h = build(&ctx).unwrap();
    let trained = Event::new(wire::event::Payload::TrainingCompleted(
        wire::TrainingCompleted {
            model_sha256: "s2".into(),
            ..Default::default()
        },
    ))
    .with_config("hex8_2p");
    let err = h.handle_event(&ctx, &trained).await.expect_err("nacked");
    assert!(err.to_string().contains("(test) does not lead"), "{err}");
    h.run_cycle(&ctx).await.unwrap();
    assert!(published.payloads().is_empty());
    assert!(h.health_check().message.contains("not the leader"));
}
