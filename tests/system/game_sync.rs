//! Games between real processes: `ringrift-ephemeral-sync` on a spot node pushing to a
//! durable node's `ringrift-data-server`. Under continuous game production, a kill -9 of
//! the sync daemon leaves every game older than its interval on the durable node; the
//! next start resumes from the acknowledged watermark (each game there once); a SIGTERM
//! pushes what the last cycle had not.

use ringrift_store::ConfigKey;
use ringrift_store::games::{GameRecord, GameStore};
use ringrift_system_tests::{Home, wait_for};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn key() -> ConfigKey {
    "hex8_2p".parse().unwrap()
}

fn game(i: u64) -> GameRecord {
    GameRecord {
        game_id: format!("spot-{i:06}"),
        config_key: key(),
        players: vec!["a".into(), "b".into()],
        // Four stones, no line: a draw so far (games are replayed at every hop).
        winner: None,
        moves: vec![1, 2, 3, 4],
        source_node: "spot".into(),
        quality_score: 0.5,
        created_at: ringrift_store::now_ms(),
        policy: None,
        search_values: None,
    }
}

fn store(home: &Home) -> GameStore {
    let p = ringrift_store::paths::game_db(home.path(), key());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    GameStore::open(&p).unwrap()
}

/// (game_id, created_at) of every game of a store.
fn games(home: &Home) -> Vec<(String, i64)> {
    store(home)
        .games_since(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|g| (g.game.game_id, g.game.created_at))
        .collect()
}

fn spot_home(durable_port: u16, interval_s: f64) -> Home {
    let spot = Home::new();
    std::fs::write(
        spot.path().join("cluster.toml"),
        format!(
            "[[node]]\nname = \"spot\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nephemeral = true\nports = {{ p2p = 17401, data = 1 }}\n\n\
             [[node]]\nname = \"durable\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = 17402, data = {durable_port} }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        spot.path().join("ringrift.toml"),
        format!(
            "node = \"spot\"\n[ephemeral_sync]\ncycle_interval_s = {interval_s}\ntimeout_s = 5\n"
        ),
    )
    .unwrap();
    spot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_sync_loses_nothing_older_than_its_interval_on_kill_9_and_pushes_on_sigterm() {
    let durable = Home::new();
    std::fs::write(
        durable.path().join("ringrift.toml"),
        "node = \"durable\"\n[data_server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut ds = durable.spawn("ringrift-data-server", &[]);
    let addr = durable.wait_addr("data_server", &mut ds);
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();

    let interval = 1.0;
    let spot = spot_home(port, interval);
    let (_router, router) = spot.start_router("127.0.0.1:0", &[]);
    let args = ["--router", router.as_str()];
    let mut sync = spot.spawn("ringrift-ephemeral-sync", &args);

    // Continuous production: a game every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, s) = (stop.clone(), store(&spot));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                s.insert_games(&[game(i)]).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            i
        })
    };
    // Let several cycles run, then kill -9 in the middle of production.
    wait_for("games on the durable node", Duration::from_secs(30), || {
        (games(&durable).len() >= 250).then_some(())
    });
    sync.kill9();
    let killed_at = ringrift_store::now_ms();
    stop.store(true, Ordering::Relaxed);
    let made = writer.join().unwrap();

    // Every game made more than the interval (plus a push's time) before the kill is on
    // the durable node.
    let on_durable: std::collections::HashSet<String> =
        games(&durable).into_iter().map(|g| g.0).collect();
    let horizon = killed_at - (interval * 1000.0) as i64 - 1500;
    let old: Vec<(String, i64)> = games(&spot)
        .into_iter()
        .filter(|g| g.1 <= horizon)
        .collect();
    assert!(
        old.len() >= 100,
        "only {} games old enough to check",
        old.len()
    );
    let missing: Vec<&String> = old
        .iter()
        .map(|g| &g.0)
        .filter(|id| !on_durable.contains(*id))
        .collect();
    assert!(missing.is_empty(), "lost after kill -9: {missing:?}");

    // The next start resumes: everything arrives, once.
    let mut sync = spot.spawn("ringrift-ephemeral-sync", &args);
    wait_for(
        "every game on the durable node",
        Duration::from_secs(30),
        || (games(&durable).len() as u64 == made).then_some(()),
    );
    assert_eq!(store(&durable).count().unwrap(), made);

    // SIGTERM: with the next cycle far away, only the final push can deliver these.
    sync.term(Duration::from_secs(15));
    std::fs::write(
        spot.path().join("ringrift.toml"),
        "node = \"spot\"\n[ephemeral_sync]\ncycle_interval_s = 3600\ntimeout_s = 5\n",
    )
    .unwrap();
    // One game for the first cycle (it runs at start): once it is on the durable node,
    // the next cycle is an hour away.
    let s = store(&spot);
    s.insert_games(&[game(made)]).unwrap();
    let mut sync = spot.spawn("ringrift-ephemeral-sync", &args);
    wait_for("the first cycle's game", Duration::from_secs(30), || {
        (store(&durable).count().unwrap() == made + 1).then_some(())
    });
    s.insert_games(&(made + 1..made + 6).map(game).collect::<Vec<_>>())
        .unwrap();
    let st = sync.term(Duration::from_secs(15));
    assert!(
        st.success(),
        "{st}: {}",
        spot.log("ringrift-ephemeral-sync")
    );
    assert_eq!(
        store(&durable).count().unwrap(),
        made + 6,
        "final push on SIGTERM; log: {}",
        spot.log("ringrift-ephemeral-sync")
    );
}

/// Three nodes on loopback, each with its data server, router and auto_sync (and
/// cluster_data_sync on C): games made on A and B reach every node exactly once, also
/// those that C missed while its data server was down (its pull catches them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_end_with_every_game_once() {
    let names = ["a", "b", "c"];
    let ports: Vec<u16> = names
        .iter()
        .map(|_| ringrift_system_tests::free_port())
        .collect();
    let mut cluster = String::new();
    for (i, n) in names.iter().enumerate() {
        cluster.push_str(&format!(
            "[[node]]\nname = \"{n}\"\nroles = [\"{}\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = {}, data = {} }}\n\n",
            if i == 0 { "coordinator\", \"training" } else { "selfplay" },
            17410 + i,
            ports[i]
        ));
    }
    let homes: Vec<Home> = names.iter().map(|_| Home::new()).collect();
    let mut procs = Vec::new();
    let mut data_servers = Vec::new();
    for (home, n) in homes.iter().zip(names) {
        std::fs::write(home.path().join("cluster.toml"), &cluster).unwrap();
        std::fs::write(
            home.path().join("ringrift.toml"),
            format!(
                "node = \"{n}\"\n[auto_sync]\ncycle_interval_s = 0.5\ntimeout_s = 5\n\
                 [cluster_data_sync]\ncycle_interval_s = 0.5\ntimeout_s = 5\n"
            ),
        )
        .unwrap();
        let (router, raddr) = home.start_router("127.0.0.1:0", &[]);
        procs.push(router);
        let mut ds = home.spawn("ringrift-data-server", &["--router", &raddr]);
        home.wait_addr("data_server", &mut ds);
        data_servers.push(Some(ds));
        procs.push(home.spawn("ringrift-auto-sync", &["--router", &raddr]));
        if n == "c" {
            procs.push(home.spawn("ringrift-cluster-data-sync", &["--router", &raddr]));
        }
    }
    let made_on = |home: &Home, node: &str, range: std::ops::Range<u64>| {
        let games: Vec<GameRecord> = range
            .map(|i| GameRecord {
                game_id: format!("{node}-{i}"),
                source_node: node.into(),
                ..game(i)
            })
            .collect();
        store(home).insert_games(&games).unwrap();
    };
    made_on(&homes[0], "a", 0..40);
    made_on(&homes[1], "b", 0..25);
    let everywhere = |want: usize| {
        wait_for(
            &format!("{want} games on every node"),
            Duration::from_secs(60),
            || homes.iter().all(|h| games(h).len() == want).then_some(()),
        )
    };
    everywhere(65);

    // C's data server goes down: pushes to C fail; A makes more; C comes back and has
    // them through the pushes' retries or its own pull.
    if let Some(mut ds) = data_servers[2].take() {
        ds.kill9();
    }
    made_on(&homes[0], "a", 40..60);
    wait_for("b has a's new games", Duration::from_secs(60), || {
        (games(&homes[1]).len() == 85).then_some(())
    });
    let _ = std::fs::remove_file(homes[2].path().join("run/data_server.addr"));
    let mut ds = homes[2].spawn("ringrift-data-server", &[]);
    homes[2].wait_addr("data_server", &mut ds);
    everywhere(85);
    for h in &homes {
        let mut ids: Vec<String> = games(h).into_iter().map(|g| g.0).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "a game twice");
    }
}
