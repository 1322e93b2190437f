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
pub mod promote;
pub mod selfplay;
pub mod tournament;

pub use ringrift_engine::{WorkloadError, dataset, game, model, players, progress, rng, train};

/// This machine's name for `source_node` fields.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string())
}
