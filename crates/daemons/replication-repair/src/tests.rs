//! In process: three data servers in temp homes on loopback; a batch only its ephemeral
//! source holds is copied to both durable nodes (REPAIR_COMPLETED, DATA_SYNC_*), a
//! second cycle has nothing to do, and `max_per_hour` defers what is over the limit.

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

fn completed(rec: &handler_base::Recorded) -> Vec<(u64, u64)> {
    rec.payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::RepairCompleted(r) => Some((r.repaired, r.failed)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn zero_copy_batch_reaches_the_target_on_durable_nodes() {
    let c = ephemeral_and_two_durable().await;
    let a = c[0].home.path();
    let games: Vec<_> = (0..30)
        .map(|i| game(&format!("g{i}"), "a", 5 * HOUR + i))
        .collect();
    store(a, key()).insert_games(&games).unwrap();
    // An older batch made on b, which only b holds: zero-copy too.
    store(c[1].home.path(), key())
        .insert_games(&[game("old", "b", HOUR)])
        .unwrap();

    let (d, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, a, "a", "");
    d.run_cycle(&ctx).await.unwrap();

    assert_eq!(store(c[1].home.path(), key()).count().unwrap(), 31);
    assert_eq!(
        store(c[2].home.path(), key()).count().unwrap(),
        31,
        "both batches"
    );
    // Batch b/1 (older, first): to c, then a (ephemeral, but eligible); a/5: to b and c.
    assert_eq!(store(a, key()).count().unwrap(), 31);
    assert_eq!(completed(&rec), vec![(4, 0)]);
    let syncs = rec
        .payloads()
        .into_iter()
        .filter(|p| matches!(p, wire::event::Payload::DataSyncCompleted(_)))
        .count();
    assert_eq!(syncs, 4);
    let h = d.health_check();
    assert_eq!(h.details["repaired_total"], "4");
    assert_eq!(
        h.details["zero_copy"], "2",
        "as classified before the repairs"
    );

    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(completed(&rec).len(), 1, "nothing left to repair");
    let h = d.health_check();
    assert_eq!(h.details["zero_copy"], "0");
    assert_eq!(h.details["single_copy"], "0");
}

#[tokio::test]
async fn the_hourly_limit_defers_repairs() {
    let c = ephemeral_and_two_durable().await;
    let a = c[0].home.path();
    store(a, key())
        .insert_games(&[game("x", "a", 7 * HOUR), game("y", "a", 8 * HOUR)])
        .unwrap();
    let (d, ctx, rec) = ringrift_test_support::daemon(
        INFO.name,
        build,
        a,
        "a",
        "[replication_repair]\nmax_per_hour = 3\n",
    );
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(completed(&rec), vec![(3, 0)]);
    assert_eq!(d.health_check().details["deferred"], "1");
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(
        completed(&rec).len(),
        1,
        "the 4th repair waits for the window"
    );
    let n = store(c[1].home.path(), key()).count().unwrap()
        + store(c[2].home.path(), key()).count().unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn bad_limits_are_config_errors() {
    let home = tempfile::tempdir().unwrap();
    for bad in ["max_concurrent = 0", "max_per_hour = 0", "timeout_s = -1"] {
        let err = ringrift_test_support::refused(
            INFO.name,
            build,
            home.path(),
            &format!("[replication_repair]\n{bad}\n"),
        );
        assert!(err.to_string().contains("replication_repair."), "{err:#}");
    }
}
