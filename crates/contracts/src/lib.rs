//! The typed contracts at the process boundaries of the training loop: what a job writes
//! to its result file ([`report`]), what a work item carries ([`payload`]), the promotion
//! gate ([`gate`]) and config keys ([`config_key`]). [`wire`] is the one module that turns
//! these into JSON and back; a missing or mistyped field is a [`wire::ContractError`]
//! naming the field, never a default.
//!
//! This crate depends only on serde: daemons that read job results link it instead of the
//! workload, and an external (e.g. Python) trainer writes the JSON documented in
//! `docs/jobs.md`.

pub mod config_key;
pub mod example;
#[cfg(test)]
mod fuzz;
pub mod gate;
#[cfg(test)]
mod gate_tests;
pub mod payload;
pub mod report;
pub mod sprt;
pub mod wire;

pub use config_key::{Board, ConfigKey, InvalidConfigKey};
pub use gate::{CanonicalTest, Gate, GateDecision, check_gate};
pub use report::{
    EvaluateReport, ExportReport, JobKind, OpponentResult, PairResult, PromotionReport,
    SelfplayReport, Standing, TournamentReport, TrainReport,
};
pub use sprt::{Sprt, SprtState, Verdict};
pub use wire::ContractError;
