//! The data plane on three nodes on loopback, each its own home and launcher running
//! `event_router`, `data_server`, `auto_sync`, `model_sync` and `elo_sync` (what the
//! cluster profiles add; cross-node events are not needed: model_sync also catches up
//! by generation each cycle). Games played by real selfplay jobs on two workers appear
//! on every node exactly once; a model promoted on the coordinator reaches every node
//! with the same file hash, and games played there next name that model's hash; the Elo
//! match history converges.

use ringrift_store::ConfigKey;
use ringrift_store::elo::{EloStore, MatchResult};
use ringrift_store::games::GameStore;
use ringrift_store::models;
use ringrift_system_tests::{Home, Proc, bin, free_port, wait_for};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NODES: [&str; 3] = ["n1", "n2", "n3"];

fn key() -> ConfigKey {
    "hex8_2p".parse().unwrap()
}

struct Node {
    home: Home,
    _launcher: Proc,
}

fn start(name: &str, cluster: &str) -> Node {
    let home = Home::new();
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!(
            "node = \"{name}\"\n[event_router]\nlisten = \"127.0.0.1:0\"\n\
             [auto_sync]\ncycle_interval_s = 1\n[model_sync]\ncycle_interval_s = 1\n\
             [elo_sync]\ncycle_interval_s = 1\n"
        ),
    )
    .unwrap();
    std::fs::write(home.path().join("cluster.toml"), cluster).unwrap();
    home.write_profile(
        "node",
        &[
            "event_router",
            "data_server",
            "auto_sync",
            "model_sync",
            "elo_sync",
        ],
    );
    let mut l = home.spawn(
        "ringrift-launcher",
        &["--profile", "node", "--control", "127.0.0.1:0"],
    );
    home.wait_addr("data_server", &mut l);
    Node { home, _launcher: l }
}

/// A `ringrift-job` run in `home` as node `node`; panics with its output on failure.
fn job(home: &Path, node: &str, args: &[&str]) {
    let out = Command::new(bin("ringrift-job"))
        .arg("--home")
        .arg(home)
        .args(["--quiet", "--seed", "7"])
        .args(args)
        .env("RINGRIFT_NODE", node)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ringrift-job {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn store(home: &Path) -> GameStore {
    let p = ringrift_store::paths::game_db(home, key());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    GameStore::open(&p).unwrap()
}

/// Every game of `home`'s store: (game_id, players).
fn games(home: &Path) -> Vec<(String, Vec<String>)> {
    store(home)
        .games_since(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|g| (g.game.game_id, g.game.players))
        .collect()
}

fn matches(home: &Path) -> u64 {
    EloStore::open(&ringrift_store::paths::elo_db(home))
        .unwrap()
        .match_count()
        .unwrap()
}

#[test]
fn three_nodes_share_games_once_models_by_hash_and_elo_history() {
    let mut cluster = String::new();
    for (i, n) in NODES.iter().enumerate() {
        let role = if i == 0 {
            "[\"coordinator\", \"training\"]"
        } else {
            "[\"selfplay\"]"
        };
        cluster.push_str(&format!(
            "[[node]]\nname = \"{n}\"\nroles = {role}\naddress = \"127.0.0.1\"\nports = {{ p2p = {}, data = {} }}\n\n",
            free_port(),
            free_port()
        ));
    }
    let nodes: Vec<Node> = NODES.iter().map(|n| start(n, &cluster)).collect();
    let home = |i: usize| nodes[i].home.path();

    // Games generated on the two workers by real selfplay jobs.
    job(
        home(1),
        "n2",
        &[
            "selfplay", "--config", "hex8_2p", "--games", "6", "--depth", "1",
        ],
    );
    job(
        home(2),
        "n3",
        &[
            "selfplay", "--config", "hex8_2p", "--games", "4", "--depth", "1",
        ],
    );
    let all: std::collections::BTreeSet<String> = (1..3)
        .flat_map(|i| games(home(i)))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(all.len(), 10);
    wait_for("every game on every node", Duration::from_secs(90), || {
        (0..3)
            .all(|i| {
                let g = games(home(i));
                g.len() == all.len() && g.iter().all(|(id, _)| all.contains(id))
            })
            .then_some(())
    });
    // Exactly once each (game_id is the store's key; the count above equals the ids).
    for i in 0..3 {
        assert_eq!(games(home(i)).len(), 10, "node {} has duplicates", NODES[i]);
        let src: std::collections::BTreeSet<String> = store(home(i))
            .games_since(0, 100)
            .unwrap()
            .into_iter()
            .map(|g| g.game.source_node)
            .collect();
        assert_eq!(src, ["n2".to_owned(), "n3".to_owned()].into());
    }

    // A model trained and promoted on the coordinator.
    let npz = home(0).join("data/training/hex8_2p_test.npz");
    job(
        home(0),
        "n1",
        &[
            "export",
            "--config",
            "hex8_2p",
            "--output",
            npz.to_str().unwrap(),
        ],
    );
    let cand = home(0).join("models/cand.rrm");
    job(
        home(0),
        "n1",
        &[
            "train",
            "--config",
            "hex8_2p",
            "--data",
            npz.to_str().unwrap(),
            "--output",
            cand.to_str().unwrap(),
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--generation",
            "1",
        ],
    );
    let header = models::read_header_file(&cand).unwrap();
    models::promote(
        home(0),
        key(),
        &cand,
        "cand",
        &header.payload_sha256,
        None,
        None,
        models::Fence::Leader(1),
    )
    .unwrap();
    let file_sha = models::canonical(home(0), key())
        .unwrap()
        .unwrap()
        .file_sha256;
    wait_for(
        "the promoted model on every node",
        Duration::from_secs(60),
        || {
            (1..3)
                .all(|i| {
                    models::canonical(home(i), key())
                        .ok()
                        .flatten()
                        .is_some_and(|c| c.file_sha256 == file_sha)
                        // The install writes the sidecar, then the ringrift_best link:
                        // a poll between the two saw no link (full suite, once).
                        && models::best_link(home(i), key()).exists()
                })
                .then_some(())
        },
    );
    for i in 1..3 {
        let link = models::best_link(home(i), key());
        let (sha, _) = ringrift_store::manifest::hash_file(&link).unwrap();
        assert_eq!(sha, file_sha, "{}'s ringrift_best link", NODES[i]);
    }
    // The next games on a worker are played by that model, and say so.
    let best = models::best_link(home(1), key());
    job(
        home(1),
        "n2",
        &[
            "selfplay",
            "--config",
            "hex8_2p",
            "--games",
            "2",
            "--depth",
            "1",
            "--model",
            best.to_str().unwrap(),
        ],
    );
    let tag = format!("@{}", &header.payload_sha256[..16]);
    let played: Vec<_> = games(home(1))
        .into_iter()
        .filter(|(_, p)| p.iter().any(|n| n.ends_with(&tag)))
        .collect();
    assert_eq!(played.len(), 2, "games naming {tag}");
    wait_for(
        "the new games on the coordinator",
        Duration::from_secs(60),
        || {
            let g = games(home(0));
            played
                .iter()
                .all(|(id, _)| g.iter().any(|(x, _)| x == id))
                .then_some(())
        },
    );

    // Elo matches recorded on two nodes converge on all three.
    for (i, n) in [(0usize, "n1"), (2, "n3")] {
        let elo = EloStore::open(&ringrift_store::paths::elo_db(home(i))).unwrap();
        for m in 0..3 {
            elo.record_match(&MatchResult {
                match_id: format!("{n}-m{m}"),
                config_key: key(),
                participant_a: format!("{n}-model"),
                participant_b: "random".into(),
                score_a: 1.0,
                played_at: m,
                source_node: n.into(),
            })
            .unwrap();
        }
    }
    wait_for("6 matches on every node", Duration::from_secs(60), || {
        (0..3).all(|i| matches(home(i)) == 6).then_some(())
    });
}
