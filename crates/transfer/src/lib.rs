//! The data plane: the transfer engine under every sync, distribution and replication
//! daemon, and the data server at the other end of it.
//!
//! * [`peers`]: who the other nodes are (cluster.toml) and an HTTP client of their
//!   `data_server` that sends the cluster token;
//! * [`files`]: files (models, NPZ, databases) planned from a peer's manifest, fetched
//!   with HTTP ranges and resumed after a crash, SHA-256-verified, installed by atomic
//!   rename, quarantined on mismatch, under per-host concurrency and bandwidth limits;
//! * [`model_fetch`]: a model file of a peer's `models` root fetched into this home's
//!   `models/.incoming/` and identified (model_sync, unified_promotion);
//! * [`games`]: games moved as batches of records (pushed to or pulled from a peer's
//!   `data_server`), merged by `game_id`, with per-peer watermarks so each game crosses
//!   each link once;
//! * [`sync`]: what every game-sync daemon shares (cluster, client, its watermark file,
//!   DATA_SYNC_* reporting, per-peer statistics);
//! * [`replication`]: copies of game batches across nodes, the repair plan and its
//!   hourly limit (pure code, injected clock);
//! * [`server`]: the other end, the `data_server` daemon's handler (manifests, ranges,
//!   SHA-256 ETags, database snapshots, game routes, per-peer bandwidth), so tests start
//!   it in process without depending on the daemon crate.

pub mod cli;
pub mod events;
pub mod files;
pub mod games;
pub mod model_fetch;
pub mod peers;
pub mod replication;
pub mod server;
pub mod setup;
pub mod sync;

pub use peers::{DataClient, Peer, node_of};
pub use setup::{Setup, TransferSettings};

/// Why a transfer failed. Every variant names the peer or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: bad answer: {why}")]
    BadAnswer { url: String, why: String },
    /// The bytes did not match the SHA-256 (or size) they were announced with; the file
    /// is in quarantine at `quarantined`.
    #[error("{what}: {why} (quarantined at {})", quarantined.display())]
    Corrupt {
        what: String,
        why: String,
        quarantined: std::path::PathBuf,
    },
    #[error(transparent)]
    Store(#[from] ringrift_store::StoreError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// Bad settings or cluster.toml (a daemon exits 64).
    #[error("{0}")]
    Config(#[source] handler_base::ConfigError),
}

impl From<handler_base::ConfigError> for TransferError {
    fn from(e: handler_base::ConfigError) -> Self {
        TransferError::Config(e)
    }
}

impl TransferError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        TransferError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
