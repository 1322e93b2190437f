//! A model file of either format, ready to play: `.rrm` through the engine's search
//! (unchanged, the hot path), `.onnx` through [`crate::onnx`]. Evaluation and
//! tournaments load models through [`AnyModel::load`], so an externally trained model is
//! evaluated, gated and promoted like ours.

use crate::WorkloadError;
use crate::model::Model;
use crate::onnx::{OnnxModel, OnnxPlayer};
use crate::players::{ModelPlayer, Player, SearchConfig};
use ringrift_store::ConfigKey;
use ringrift_store::models::{ModelFormat, ModelInfo};
use std::path::Path;
use std::sync::Arc;

/// Refuses an ONNX model where `ringrift-job` needs our weights (selfplay, `train
/// --init`, `distill --teacher`): the error names the file and says why (`reason`).
pub fn rrm_only(path: &Path, reason: &str) -> Result<(), WorkloadError> {
    if ModelFormat::of(path) == Some(ModelFormat::Onnx) {
        return Err(WorkloadError::BadModel {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        });
    }
    Ok(())
}

/// A loaded model of either format.
#[derive(Debug, Clone)]
pub enum AnyModel {
    Rrm(Arc<Model>),
    Onnx(Arc<OnnxModel>),
}

impl AnyModel {
    /// Loads `path` by its extension and checks it is a model of `config`; returns the
    /// model and its identity (payload SHA-256, generation).
    pub fn load(path: &Path, config: ConfigKey) -> Result<(AnyModel, ModelInfo), WorkloadError> {
        let (model, info) = match ModelFormat::of_file(path)? {
            ModelFormat::Rrm => {
                let (m, h) = Model::load(path)?;
                let info = ModelInfo {
                    format: ModelFormat::Rrm,
                    config_key: m.config_key,
                    generation: h.generation,
                    payload_sha256: h.payload_sha256,
                };
                (AnyModel::Rrm(Arc::new(m)), info)
            }
            ModelFormat::Onnx => {
                let m = OnnxModel::load(path)?;
                let info = m.info.clone();
                (AnyModel::Onnx(Arc::new(m)), info)
            }
        };
        if info.config_key != config {
            return Err(WorkloadError::BadModel {
                path: path.to_path_buf(),
                reason: format!("model is for {}, playing {config}", info.config_key),
            });
        }
        Ok((model, info))
    }

    /// A player over this model: the engine's `search` for `.rrm`, the one-ply
    /// [`OnnxPlayer`] for ONNX.
    pub fn player(&self, name: &str, search: SearchConfig) -> Box<dyn Player> {
        match self {
            AnyModel::Rrm(m) => Box::new(ModelPlayer::new(name.to_owned(), m.clone(), search)),
            AnyModel::Onnx(m) => Box::new(OnnxPlayer::new(name, m.clone())),
        }
    }

    /// An inference failure during play (ONNX only), as an error naming the file.
    pub fn failure(&self) -> Result<(), WorkloadError> {
        match self {
            AnyModel::Onnx(m) => m.failure().map_or(Ok(()), Err),
            AnyModel::Rrm(_) => Ok(()),
        }
    }
}
