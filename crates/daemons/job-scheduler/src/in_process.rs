//! In process through `Context::for_test`: `build` with a scripted selfplay job run by the
//! real job runner, WORK_QUEUED handled: the queued item is claimed, played and
//! completed, and SELFPLAY_COMPLETED / NEW_GAMES_AVAILABLE are published.

use super::*;
use ringrift_contracts::wire::payload_json;
use ringrift_store::work_queue::{NewWork, WorkStatus};

#[tokio::test]
async fn build_and_run_a_queued_selfplay_item() {
    let home = tempfile::tempdir().unwrap();
    let report = SelfplayReport {
        config_key: "hex8_2p".parse().unwrap(),
        games: 4,
        moves: 80,
        wins_by_seat: vec![3, 1],
        draws: 0,
        mean_length: 20.0,
        elapsed_s: 0.1,
        games_per_s: 40.0,
        moves_per_s: 800.0,
        threads: 1,
        db: home.path().join("data/games/hex8_2p.db"),
        model: None,
        model_sha256: None,
        max_seq: 4,
    };
    let jobs = ringrift_jobs::scripted_job(home.path(), JobKind::Selfplay, &report).unwrap();
    let (ctx, published) =
        Context::for_test(INFO.name, home.path(), &format!("[jobs]\n{jobs}")).unwrap();
    let h = build(&ctx).unwrap();
    let queue = ringrift_store::work_queue::open_home(home.path()).unwrap();
    let payload = payload_json(&SelfplayItem {
        games: Some(4),
        reason: None,
        device: None,
    })
    .unwrap();
    let id = queue
        .enqueue(&NewWork::new(
            WorkKind::Selfplay,
            Some("hex8_2p".parse().unwrap()),
            1,
            payload,
        ))
        .unwrap();
    let ev = ringrift_proto::Event::new(wire::event::Payload::WorkQueued(wire::WorkItem {
        work_id: id.clone(),
        kind: "selfplay".into(),
        ..Default::default()
    }));
    h.handle_event(&ctx, &ev).await.unwrap();
    // The item runs on a task of its own: poll for its completion.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while queue.get(&id).unwrap().map(|i| i.status) != Some(WorkStatus::Completed)
        || h.health_check().details["jobs_done"] != "1"
    {
        assert!(std::time::Instant::now() < deadline, "item not completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = published.payloads();
    assert!(
        p.iter()
            .any(|p| matches!(p, wire::event::Payload::SelfplayCompleted(s) if s.games == 4)),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| matches!(p, wire::event::Payload::NewGamesAvailable(n) if n.new_games == 4 && n.total_games == 4)),
        "{p:?}"
    );
}
