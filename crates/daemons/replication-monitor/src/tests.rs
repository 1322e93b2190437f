//! In process: three data servers in temp homes on loopback; REPLICATION_ALERT counts
//! zero- and single-copy batches, the emergency sync copies a zero-copy batch of the
//! ephemeral node to one durable node at once, and the return to all-zero is alerted
//! once.

use super::*;
use ringrift_store::ConfigKey;
use ringrift_store::games::GameRecord;
use ringrift_test_support::data_server::{self as testing, HOUR, ephemeral_and_two_durable, store};

fn key() -> ConfigKey {
    "hex8_2p".parse().unwrap()
}

fn game(id: &str, node: &str, created_at: i64) -> GameRecord {
    GameRecord {
        created_at,
        ..testing::game(id, node, key())
    }
}

fn alerts(rec: &handler_base::Recorded) -> Vec<(u64, u64, u64)> {
    rec.payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::ReplicationAlert(a) => {
                Some((a.zero_copy, a.single_copy, a.under_replicated))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn alerts_and_emergency_sync_of_an_ephemeral_zero_copy_batch() {
    let c = ephemeral_and_two_durable().await;
    let (a, b, cc) = (c[0].home.path(), c[1].home.path(), c[2].home.path());
    let eph: Vec<_> = (0..20)
        .map(|i| game(&format!("e{i}"), "a", 5 * HOUR + i))
        .collect();
    store(a, key()).insert_games(&eph).unwrap();
    let old = [game("o1", "b", HOUR), game("o2", "b", HOUR + 1)];
    store(b, key()).insert_games(&old).unwrap();
    store(cc, key()).insert_games(&old).unwrap();

    let (d, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, a, "a", "");
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(alerts(&rec), vec![(1, 1, 0)]);
    // Emergency: the ephemeral batch went to exactly one durable node (b: least loaded,
    // then name order), at once.
    assert_eq!(store(b, key()).count().unwrap(), 22);
    assert_eq!(store(cc, key()).count().unwrap(), 2);
    let h = d.health_check();
    assert_eq!(h.details["emergency_copies"], "1");
    assert_eq!(h.details["zero_copy"], "1");
    assert!(
        rec.payloads()
            .iter()
            .any(|p| matches!(p, wire::event::Payload::DataSyncCompleted(s) if s.source_node == "a" && s.target_node == "b" && s.files == 20))
    );

    // Now both batches have one copy: still alerting (non-zero), no more emergency.
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(alerts(&rec), vec![(1, 1, 0), (0, 2, 0)]);
    assert_eq!(d.health_check().details["emergency_copies"], "1");

    // Fully replicated: one all-zero alert, then silence.
    store(cc, key()).insert_games(&eph).unwrap();
    store(a, key()).insert_games(&old).unwrap();
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(alerts(&rec).last(), Some(&(0, 0, 0)));
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(alerts(&rec).len(), 3);
    let h = d.health_check();
    assert_eq!(h.status, handler_base::HealthStatus::Running);
    assert_eq!(h.details["batches"], "2");
}

#[tokio::test]
async fn bad_settings_are_config_errors() {
    let home = tempfile::tempdir().unwrap();
    for bad in ["target_copies = 0", "max_concurrent = 100", "timeout_s = 0"] {
        let err = ringrift_test_support::refused(
            INFO.name,
            build,
            home.path(),
            &format!("[replication_monitor]\n{bad}\n"),
        );
        assert!(err.to_string().contains("replication_monitor."), "{err:#}");
    }
}

/// The running hour's batch is not judged: it grows with every game, so its copies
/// always lag; it is reported as open, neither alerted nor emergency-copied. An old
/// zero-copy batch next to it is.
#[tokio::test]
async fn the_running_hour_is_open_not_alerted() {
    let c = ephemeral_and_two_durable().await;
    let (a, b) = (c[0].home.path(), c[1].home.path());
    let now = ringrift_store::now_ms();
    let running: Vec<_> = (0..5)
        .map(|i| game(&format!("r{i}"), "a", now - i))
        .collect();
    store(a, key()).insert_games(&running).unwrap();
    store(a, key())
        .insert_games(&[game("old", "a", HOUR)])
        .unwrap();
    let (d, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, a, "a", "");
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(alerts(&rec), vec![(1, 0, 0)], "only the old batch counts");
    let h = d.health_check();
    assert_eq!(h.details["open_batches"], "1");
    assert_eq!(h.details["batches"], "1");
    // The emergency copy took the old batch only.
    assert_eq!(store(b, key()).count().unwrap(), 1);
}
