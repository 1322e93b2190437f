//! Work-item payloads: the JSON object a queued item carries, one type per work kind.
//! Our daemons produce them, so unknown fields are refused; an `Option` field may be
//! absent. [`crate::wire`] converts them to and from the queue's JSON.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A payload type and the work kind (as the queue names it) that carries it.
pub trait Payload: Serialize + DeserializeOwned {
    const KIND: &'static str;
}

/// A `selfplay` item: play games with the current model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfplayItem {
    /// Games to play; absent: the executor's `default_games`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub games: Option<u64>,
    /// Why the item was queued (for operators).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The device to play on (`gpu<N>`), when the item was queued for an idle one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl SelfplayItem {
    /// The GPU index of `device` (`gpu<N>`), if it names one.
    pub fn gpu(&self) -> Option<u32> {
        self.device.as_deref()?.strip_prefix("gpu")?.parse().ok()
    }
}

impl Payload for SelfplayItem {
    const KIND: &'static str = "selfplay";
}

/// A `training` item: train the next generation on a window of exports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingItem {
    /// The newest export, the one this item was queued for.
    pub npz_path: String,
    /// The window of recent exports (including `npz_path`), oldest first.
    pub npz_paths: Vec<String>,
    pub npz_sha256: String,
    pub rows: u64,
    /// Ingest watermark of `npz_path`: training refuses data not newer than it trained on.
    pub watermark: i64,
}

impl Payload for TrainingItem {
    const KIND: &'static str = "training";
}

/// A `tournament` item: run a round robin of the config's recent models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TournamentItem {}

impl Payload for TournamentItem {
    const KIND: &'static str = "tournament";
}
