//! The data server's serving code (the `data_server` daemon's handler; the daemon crate
//! is a thin user of it, and tests start it in process through `ringrift-test-support`):
//! serves `$RINGRIFT_HOME/data` and `$RINGRIFT_HOME/models` over HTTP on 127.0.0.1:8766
//! (`run/data_server.addr`) to the node's peers.
//!
//! Routes: `GET /health` (open), `GET /manifest?root=data|models` (JSON: per path
//! relative to the root its SHA-256, size, mtime and, for `.rrm` models, generation;
//! its `files` read as `ringrift_store::manifest::Manifest`), `GET /files/{root}/{*path}`
//! (the file, streamed; one `Range` → 206 or 416; `ETag` = quoted SHA-256;
//! `If-None-Match` → 304), and the game routes of [`games`] (`GET /games`,
//! `GET /games/summary`, `POST /games`: game records with a SHA-256 header, merged by
//! `game_id`). Everything but `/health` needs the bearer token when one is
//! set (handler-base's `protect`); a non-loopback `listen` needs one.
//!
//! Safety: [`jail`] (no path outside the root, by lexical check, canonicalisation and a
//! kernel-checked open), [`snapshot`] (a database under `data/` is served as a
//! consistent copy, never its live file or side files), [`digest`] (hashes computed once
//! per file version, off the runtime), [`serve`] (bounded memory per response, the
//! per-peer `governor` bandwidth limit).
//!
//! Limits ([`listen`]): at most `max_connections` open connections (1024) and
//! `max_connections_per_ip` (256) per remote address, one over is closed at once; a
//! request's headers within `header_timeout_s` (10; an idle keep-alive connection is
//! closed then too), its body within `body_timeout_s` (120).
//!
//! `[data_server]`: `listen` (default: this node's `ports.data` in cluster.toml,
//! 127.0.0.1:8766 on one node), `bandwidth_bytes_per_s` (0 = unlimited; per remote IP),
//! `hash_cache_entries` (200 000), the limits above. Bad values exit 64 naming the key.

pub mod digest;
pub mod games;
pub mod jail;
pub mod listen;
pub mod serve;
pub mod snapshot;

use handler_base::auth::Token;
use handler_base::{Context, Handler, HealthCheckResult};
use serve::Files;
use std::net::SocketAddr;
use std::sync::Arc;

/// The daemon's name: its `[data_server]` section, `run/data_server.addr`, its registry
/// entry.
pub const NAME: &str = "data_server";

/// `[data_server]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataServerConfig {
    /// Default: this node's `ports.data` in cluster.toml (127.0.0.1:8766 on one node).
    pub listen: Option<String>,
    /// Per remote IP, bytes per second; 0 = unlimited.
    pub bandwidth_bytes_per_s: u64,
    /// Files whose SHA-256 is remembered (by inode, size and mtime).
    pub hash_cache_entries: usize,
    /// Open connections at most, in total and per remote IP.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's headers (and an idle connection to
    /// start its next request).
    pub header_timeout_s: f64,
    /// Seconds a client has to send a request's body.
    pub body_timeout_s: f64,
}

impl Default for DataServerConfig {
    fn default() -> Self {
        DataServerConfig {
            listen: None,
            bandwidth_bytes_per_s: 0,
            hash_cache_entries: 200_000,
            max_connections: 1024,
            max_connections_per_ip: 256,
            header_timeout_s: 10.0,
            body_timeout_s: 120.0,
        }
    }
}

pub struct DataServer {
    cfg: DataServerConfig,
    listen: String,
    token: Option<Token>,
    tls: handler_base::tls::Tls,
    files: Arc<Files>,
    games: Arc<games::Games>,
    admission: Arc<listen::Admission>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: DataServerConfig = ctx.settings.section(NAME)?;
    let cluster = ringrift_cluster::ClusterConfig::load(&ctx.home, &ctx.node)
        .map_err(handler_base::ConfigError::from)?;
    let listen = match &cfg.listen {
        Some(l) => l.clone(),
        None => cluster.this_node().data_listen(),
    };
    let exclude_from_sync = cluster.node(&ctx.node).is_some_and(|n| n.exclude_from_sync);
    handler_base::ensure_config!(
        listen.parse::<SocketAddr>().is_ok(),
        "data_server.listen = {listen:?} is not host:port"
    );
    let rate = u32::try_from(cfg.bandwidth_bytes_per_s).map_err(|_| {
        handler_base::ConfigError::Invalid(format!(
            "data_server.bandwidth_bytes_per_s = {} is over {} (0 = unlimited)",
            cfg.bandwidth_bytes_per_s,
            u32::MAX
        ))
    })?;
    handler_base::ensure_config!(
        cfg.hash_cache_entries >= 1,
        "data_server.hash_cache_entries = {} must be at least 1",
        cfg.hash_cache_entries
    );
    handler_base::ensure_config!(
        cfg.max_connections >= 1 && cfg.max_connections_per_ip >= 1,
        "data_server.max_connections = {} and max_connections_per_ip = {} must be at least 1",
        cfg.max_connections,
        cfg.max_connections_per_ip
    );
    handler_base::ensure_config!(
        [cfg.header_timeout_s, cfg.body_timeout_s]
            .iter()
            .all(|t| t.is_finite() && (0.1..=86_400.0).contains(t)),
        "data_server.header_timeout_s = {} and body_timeout_s = {} must be seconds in 0.1..=86400",
        cfg.header_timeout_s,
        cfg.body_timeout_s
    );
    let token = handler_base::auth::load(&ctx.settings)?;
    let tls = handler_base::tls::Tls::load(&ctx.settings)?;
    handler_base::auth::check_listen("data_server.listen", &listen, token.as_ref(), &tls)?;
    let open = |name: &'static str, dir: std::path::PathBuf| {
        jail::Root::open(name, &dir)
            .map_err(|e| anyhow::anyhow!("data_server root {}: {e}", dir.display()))
    };
    let files = Files {
        data: open("data", ctx.home.join("data"))?,
        models: open("models", ringrift_store::paths::models_dir(&ctx.home))?,
        digests: digest::DigestCache::new(cfg.hash_cache_entries),
        snapshots: snapshot::Snapshots::new(
            ringrift_store::paths::run_dir(&ctx.home)
                .join("data_server")
                .join("snapshots"),
        )
        .map_err(|e| anyhow::anyhow!("data_server snapshot directory: {e}"))?,
        limiter: serve::limiter(rate),
    };
    Ok(Arc::new(DataServer {
        cfg,
        listen,
        token,
        tls,
        files: Arc::new(files),
        games: Arc::new(games::Games::new(
            ctx.home.clone(),
            ctx.node.clone(),
            exclude_from_sync,
        )),
        admission: Arc::default(),
    }))
}

/// The routes, before `protect` (tests and `on_start` share it).
pub fn app(files: Arc<Files>, games: Arc<games::Games>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/manifest", get(serve::manifest_route))
        .route("/files/{root}/{*path}", get(serve::file_route))
        .with_state(files)
        .merge(games::routes(games))
}

#[async_trait::async_trait]
impl Handler for DataServer {
    async fn on_start(&self, ctx: &Context) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.listen)
            .await
            .map_err(|e| anyhow::anyhow!("bind data_server.listen {}: {e}", self.listen))?;
        let listener = self.tls.incoming(listener)?;
        let addr = listener.local();
        // handler-base's `serve_http` without connect info; the bandwidth limit is per
        // remote IP, so this server is started here, behind the same `protect`.
        let app = handler_base::auth::protect(
            app(self.files.clone(), self.games.clone()),
            self.token.clone(),
        )
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs_f64(self.cfg.body_timeout_s),
        ));
        let limits = listen::Limits {
            max_connections: self.cfg.max_connections,
            max_connections_per_ip: self.cfg.max_connections_per_ip,
            header_timeout: std::time::Duration::from_secs_f64(self.cfg.header_timeout_s),
        };
        tokio::spawn(listen::serve(
            listener,
            app,
            limits,
            self.admission.clone(),
            ctx.shutdown.clone(),
        ));
        handler_base::write_addr_file(&ctx.home, NAME, &addr.to_string())?;
        tracing::info!(%addr, bandwidth_bytes_per_s = self.cfg.bandwidth_bytes_per_s, "data server listening");
        Ok(())
    }

    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        if let Some(l) = &self.files.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running("serving data/, models/ and games")
            .detail("files_hashed", self.files.digests.computed())
            .detail("hash_cache_entries", self.files.digests.len())
            .detail("snapshotted_databases", self.files.snapshots.len())
            .detail("snapshot_bytes", self.files.snapshots.bytes())
            .detail("exclude_from_sync", self.games.exclude_from_sync)
            .detail("connections_open", self.admission.open())
            .detail("connections_refused", self.admission.refused())
    }
}
