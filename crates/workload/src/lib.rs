//! The embedded default workload: a small real game, selfplay into the game store, NPZ
//! export, a policy/value model trained in Rust, a gauntlet recorded in the Elo store,
//! and promotion of models that pass the gate.
//!
//! Each job is a library function taking typed arguments and returning a serialisable
//! report ([`selfplay::selfplay`], [`export::export`], [`train::train`],
//! [`evaluate::evaluate`], [`train::distill`], [`promote::promote`]); the `ringrift-job`
//! binary ([`cli`]) is a thin shell over them that writes the report as the JSON result
//! file the job runner reads. On a GPU cluster the same command templates point at the
//! Python trainers instead; nothing here is required there.

pub mod cli;
pub mod evaluate;
pub mod export;
pub mod game;
pub mod model;
pub mod players;
pub mod progress;
pub mod promote;
pub mod rng;
pub mod selfplay;
pub mod tournament;
pub mod train;

use ringrift_store::StoreError;
use std::path::PathBuf;

/// Errors of the workload library.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad model file {path}: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("bad training data {path}: {reason}")]
    BadData { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl WorkloadError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        WorkloadError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// This machine's name for `source_node` fields.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string())
}
