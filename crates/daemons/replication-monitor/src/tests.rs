//! In process: three data servers in temp homes on loopback; REPLICATION_ALERT counts
//! zero- and single-copy batches, the emergency sync copies a zero-copy batch of the
//! ephemeral node to one durable node at once, and the return to all-zero is alerted
//! once.

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
    let c = cluster().await;
    let (a, b, cc) = (c.homes[0].path(), c.homes[1].path(), c.homes[2].path());
    let eph: Vec<_> = (0..20)
        .map(|i| game(&format!("e{i}"), "a", 5 * HOUR + i))
        .collect();
    store(a).insert_games(&eph).unwrap();
    let old = [game("o1", "b", HOUR), game("o2", "b", HOUR + 1)];
    store(b).insert_games(&old).unwrap();
    store(cc).insert_games(&old).unwrap();

    let (mut ctx, rec) = Context::for_test(INFO.name, a, "").unwrap();
    ctx.node = "a".into();
    let d = build(&ctx).unwrap();
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(alerts(&rec), vec![(1, 1, 0)]);
    // Emergency: the ephemeral batch went to exactly one durable node (b: least loaded,
    // then name order), at once.
    assert_eq!(store(b).count().unwrap(), 22);
    assert_eq!(store(cc).count().unwrap(), 2);
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
    store(cc).insert_games(&eph).unwrap();
    store(a).insert_games(&old).unwrap();
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
        let (ctx, _) = Context::for_test(
            INFO.name,
            home.path(),
            &format!("[replication_monitor]\n{bad}\n"),
        )
        .unwrap();
        let err = build(&ctx).err().unwrap();
        assert!(handler_base::is_config_error(&err), "{bad}: {err:#}");
        assert!(err.to_string().contains("replication_monitor."), "{err:#}");
    }
}
