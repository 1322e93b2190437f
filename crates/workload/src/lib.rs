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
pub mod model_file;
pub mod onnx;
pub mod promote;
pub mod selfplay;
pub mod tournament;

pub use ringrift_engine::{WorkloadError, dataset, game, model, players, progress, rng, train};

/// This node's name for `source_node` fields: `RINGRIFT_NODE` (the daemons that run jobs
/// set it to the node's name in cluster.toml), else the hostname.
pub fn node_name() -> String {
    if let Ok(n) = std::env::var("RINGRIFT_NODE")
        && !n.trim().is_empty()
    {
        return n.trim().to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string())
}
