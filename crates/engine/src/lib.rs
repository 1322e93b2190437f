//! The game engine of the embedded workload: the game ([`game`]), its players
//! ([`players`]), the network and its `.rrm` file ([`model`]), training rows and their
//! NPZ file ([`dataset`]), training ([`train`]), a seeded RNG ([`rng`]) and progress bars
//! ([`progress`]). The jobs and the `ringrift-job` CLI (`ringrift-workload`) are built on
//! it; daemons never link it.

pub mod dataset;
#[cfg(test)]
mod fuzz;
pub mod game;
pub mod model;
pub mod players;
pub mod progress;
pub mod rng;
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
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WorkloadError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
