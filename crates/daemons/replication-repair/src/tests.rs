//! In process: three data servers in temp homes on loopback; a batch only its ephemeral
//! source holds is copied to both durable nodes (REPAIR_COMPLETED, DATA_SYNC_*), a
//! second cycle has nothing to do, and `max_per_hour` defers what is over the limit.

use super::*;
use ringrift_store::ConfigKey;
use ringrift_store::games::{GameRecord, GameStore};

const HOUR: i64 = 3_600_000;

fn key() -> ConfigKey {
    "hex8_2p".parse().unwrap()
}

fn game(id: &str, node: &str, created_at: i64) -> GameRecord {
    GameRecord {
        game_id: id.into(),
        config_key: key(),
        players: vec!["a".into(), "b".into()],
        winner: Some(0),
        moves: vec![1, 2, 3],
        source_node: node.into(),
        quality_score: 0.5,
        created_at,
        policy: None,
    }
}

fn store(home: &std::path::Path) -> GameStore {
    GameStore::open(&ringrift_store::paths::game_db(home, key())).unwrap()
}

struct Cluster {
    homes: Vec<tempfile::TempDir>,
    servers: Vec<Context>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &self.servers {
            c.shutdown.cancel();
        }
    }
}

/// Nodes `a` (ephemeral), `b`, `c`, each with a data server; cluster.toml in `a`'s home.
async fn cluster() -> Cluster {
    let mut homes = Vec::new();
    let mut servers = Vec::new();
    let mut nodes = String::new();
    for (i, (name, ephemeral)) in [("a", true), ("b", false), ("c", false)]
        .into_iter()
        .enumerate()
    {
        let home = tempfile::tempdir().unwrap();
        let (_, ctx, url) = ringrift_data_server::start_in_process(home.path(), name, "")
            .await
            .unwrap();
        let port = url.rsplit(':').next().unwrap().to_owned();
        nodes.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nroles = [{}]\naddress = \"127.0.0.1\"\nports = {{ data = {port}, p2p = {} }}\nephemeral = {ephemeral}\n\n",
            if i == 1 { "\"coordinator\"" } else { "\"selfplay\"" },
            19100 + i
        ));
        homes.push(home);
        servers.push(ctx);
    }
    std::fs::write(homes[0].path().join("cluster.toml"), nodes).unwrap();
    Cluster { homes, servers }
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
    let c = cluster().await;
    let a = c.homes[0].path();
    let games: Vec<_> = (0..30)
        .map(|i| game(&format!("g{i}"), "a", 5 * HOUR + i))
        .collect();
    store(a).insert_games(&games).unwrap();
    // An older batch made on b, which only b holds: zero-copy too.
    store(c.homes[1].path())
        .insert_games(&[game("old", "b", HOUR)])
        .unwrap();

    let (mut ctx, rec) = Context::for_test(INFO.name, a, "").unwrap();
    ctx.node = "a".into();
    let d = build(&ctx).unwrap();
    d.run_cycle(&ctx).await.unwrap();

    assert_eq!(store(c.homes[1].path()).count().unwrap(), 31);
    assert_eq!(
        store(c.homes[2].path()).count().unwrap(),
        31,
        "both batches"
    );
    // Batch b/1 (older, first): to c, then a (ephemeral, but eligible); a/5: to b and c.
    assert_eq!(store(a).count().unwrap(), 31);
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
    let c = cluster().await;
    let a = c.homes[0].path();
    store(a)
        .insert_games(&[game("x", "a", 7 * HOUR), game("y", "a", 8 * HOUR)])
        .unwrap();
    let (mut ctx, rec) =
        Context::for_test(INFO.name, a, "[replication_repair]\nmax_per_hour = 3\n").unwrap();
    ctx.node = "a".into();
    let d = build(&ctx).unwrap();
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(completed(&rec), vec![(3, 0)]);
    assert_eq!(d.health_check().details["deferred"], "1");
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(
        completed(&rec).len(),
        1,
        "the 4th repair waits for the window"
    );
    let n = store(c.homes[1].path()).count().unwrap() + store(c.homes[2].path()).count().unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn bad_limits_are_config_errors() {
    let home = tempfile::tempdir().unwrap();
    for bad in ["max_concurrent = 0", "max_per_hour = 0", "timeout_s = -1"] {
        let (ctx, _) = Context::for_test(
            INFO.name,
            home.path(),
            &format!("[replication_repair]\n{bad}\n"),
        )
        .unwrap();
        let err = build(&ctx).err().unwrap();
        assert!(handler_base::is_config_error(&err), "{bad}: {err:#}");
        assert!(err.to_string().contains("replication_repair."), "{err:#}");
    }
}
