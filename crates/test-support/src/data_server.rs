//! Data servers in tests: `ringrift_transfer::server` started in process on 127.0.0.1:0
//! in a home ([`start`]) or in a temp home of its own, stopped when dropped ([`server`]),
//! and the fixtures of the daemons that talk to data servers (the sync, replication and
//! model/NPZ/Elo daemons, and the data server's own tests): game records, a home's game
//! store, a promoted example model, cluster.toml text.

use handler_base::{Context, Handler};
use ringrift_store::ConfigKey;
use ringrift_store::games::{GameRecord, GameStore};
use ringrift_transfer::Peer;
use std::path::Path;
use std::sync::Arc;

/// An hour in ms (game batches are per config, source node and hour of `created_at`).
pub const HOUR: i64 = 3_600_000;

/// A game of `config` made on `node`: players `a` and `b`, three moves, no winner,
/// quality 0.5, created at 1 700 000 000 000 ms. Other values by struct update:
/// `GameRecord { quality_score: 0.9, ..game(id, node, key) }`.
pub fn game(id: &str, node: &str, config: ConfigKey) -> GameRecord {
    GameRecord {
        game_id: id.to_owned(),
        config_key: config,
        players: vec!["a".into(), "b".into()],
        winner: None,
        moves: vec![0, 9, 18],
        source_node: node.to_owned(),
        quality_score: 0.5,
        created_at: 1_700_000_000_000,
        policy: None,
        search_values: None,
    }
}

/// The game store of `config` in `home`, its directory created.
pub fn store(home: &Path, config: ConfigKey) -> GameStore {
    let p = ringrift_store::paths::game_db(home, config);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
    GameStore::open(&p).expect("store")
}

/// The ids of the games of `config` in `home`, sorted.
pub fn ids(home: &Path, config: ConfigKey) -> Vec<String> {
    let mut v: Vec<String> = store(home, config)
        .games_since(0, 10_000)
        .expect("read")
        .into_iter()
        .map(|g| g.game.game_id)
        .collect();
    v.sort();
    v
}

/// cluster.toml text, a `[[node]]` per `(name, roles, data port, exclude_from_sync)`
/// (`roles` as written inside the brackets, e.g. `"\"selfplay\""`), on 127.0.0.1.
pub fn cluster(nodes: &[(&str, &str, u16, bool)]) -> String {
    let mut s = String::new();
    for (i, (name, roles, data, excl)) in nodes.iter().enumerate() {
        s.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nroles = [{roles}]\naddress = \"127.0.0.1\"\n\
             ports = {{ p2p = {}, data = {data} }}\nexclude_from_sync = {excl}\n\n",
            17100 + i
        ));
    }
    s
}

/// Promotes an example model of `config` and `generation` (payload `payload_len` bytes of
/// `fill`, written as `models/gen{generation}.rrm`) to the canonical model of `home`,
/// over whatever was canonical; returns its payload SHA-256.
pub fn promote_example(
    home: &Path,
    config: ConfigKey,
    generation: u32,
    fill: u8,
    payload_len: usize,
) -> String {
    promote_example_as(home, config, generation, fill, payload_len, 1)
}

/// [`promote_example`] by the leader holding fencing `token`; panics if the store
/// refuses it.
pub fn promote_example_as(
    home: &Path,
    config: ConfigKey,
    generation: u32,
    fill: u8,
    payload_len: usize,
    token: u64,
) -> String {
    use ringrift_store::models;
    let (h, bytes) =
        models::example(config, generation, &vec![fill; payload_len]).expect("example model");
    let dir = ringrift_store::paths::models_dir(home);
    std::fs::create_dir_all(&dir).expect("models dir");
    let p = dir.join(format!("gen{generation}.rrm"));
    std::fs::write(&p, bytes).expect("model file");
    let current = models::canonical(home, config)
        .expect("canonical")
        .map(|c| c.sha256);
    models::promote(
        home,
        config,
        &p,
        "g",
        &h.payload_sha256,
        current.as_deref(),
        None,
        models::Fence::Leader(token),
    )
    .expect("promote");
    h.payload_sha256
}

/// A data server started in process on 127.0.0.1:0 over `home`: `(handler, context,
/// url)`. Stops with `context.shutdown.cancel()`. `node` names it (its summary's
/// `node`); `toml` is settings over the defaults (e.g. `[auth] token`).
pub async fn start(
    home: &Path,
    node: &str,
    toml: &str,
) -> anyhow::Result<(Arc<dyn Handler>, Context, String)> {
    use ringrift_transfer::server::{NAME, build};
    let (mut ctx, _) = Context::for_test(
        NAME,
        home,
        &format!("[data_server]\nlisten = \"127.0.0.1:0\"\n{toml}"),
    )?;
    ctx.node = node.to_owned();
    let handler = build(&ctx)?;
    let _ = std::fs::remove_file(home.join(format!("run/{NAME}.addr")));
    handler.on_start(&ctx).await?;
    let addr = handler_base::read_addr_file(home, NAME)
        .ok_or_else(|| anyhow::anyhow!("{NAME} wrote no run/{NAME}.addr"))?;
    Ok((handler, ctx, format!("http://{addr}")))
}

/// A data server started in process in its own temp home; stops when dropped.
pub struct Server {
    pub name: String,
    pub home: tempfile::TempDir,
    pub ctx: Context,
    /// `http://127.0.0.1:{port}`.
    pub url: String,
    pub port: u16,
}

impl Server {
    /// This server as a transfer peer named as it was started.
    pub fn peer(&self) -> Peer {
        Peer::at(&self.name, &self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

/// A data server named `name` with default settings.
pub async fn server(name: &str) -> Server {
    server_with(name, "").await
}

/// A data server named `name`; `toml` is settings over the defaults (e.g. `[auth]`).
pub async fn server_with(name: &str, toml: &str) -> Server {
    let home = tempfile::tempdir().expect("home");
    let (_, ctx, url) = start(home.path(), name, toml).await.expect("data server");
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    Server {
        name: name.to_owned(),
        home,
        ctx,
        url,
        port,
    }
}

/// Data servers `a` (selfplay, `ephemeral = true`), `b` (coordinator) and `c` (selfplay),
/// with their cluster.toml in `a`'s home.
pub async fn ephemeral_and_two_durable() -> Vec<Server> {
    let s = vec![server("a").await, server("b").await, server("c").await];
    let toml = cluster(&[
        ("a", "\"selfplay\"", s[0].port, false),
        ("b", "\"coordinator\"", s[1].port, false),
        ("c", "\"selfplay\"", s[2].port, false),
    ])
    .replacen("\n\n", "\nephemeral = true\n\n", 1);
    std::fs::write(s[0].home.path().join("cluster.toml"), toml).expect("cluster.toml");
    s
}
