//! ONNX models from an external trainer, run through `tract` (pure Rust, no downloaded
//! binaries), and the player that evaluates positions with them.
//!
//! Contract (`docs/jobs.md`): one input `board`, f32 `[N, planes × cells]` in the NPZ's
//! feature encoding ([`crate::dataset::encode_features`]: plane 0 = stones of the player
//! to move, then the following seats); an output `value`, f32 `[N, 1]` in [-1, 1], the
//! expected outcome for the player to move; an optional `policy` output `[N, cells]` is
//! not used here (the graph is cut to `value`); metadata property `ringrift.config_key`
//! (required) and `ringrift.generation` (optional). The model is checked on load by
//! running it once, so a model of the wrong shape fails there, naming the file.

use crate::WorkloadError;
use crate::game::{Geometry, State};
use crate::players::Player;
use crate::rng::Rng;
use ringrift_store::ConfigKey;
use ringrift_store::models::ModelInfo;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;

/// The input and output names of the contract.
pub const INPUT: &str = "board";
pub const VALUE: &str = "value";

/// A loaded ONNX value network.
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    pub path: PathBuf,
    pub info: ModelInfo,
    pub planes: usize,
    pub cells: usize,
    /// The first inference failure during play (a player cannot return errors; the
    /// caller checks [`OnnxModel::failure`] after the games).
    failed: Mutex<Option<String>>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads, identifies (`ringrift_store::models::identify`), optimises for a batch of
    /// any size and checks the model with one run. Every failure names the file.
    pub fn load(path: &Path) -> Result<OnnxModel, WorkloadError> {
        let bytes = std::fs::read(path).map_err(|e| WorkloadError::io("read model", path, e))?;
        let info = ringrift_store::models::identify(path, &bytes)?;
        let geo = Geometry::new(info.config_key);
        let (planes, cells) = (geo.players(), geo.cells());
        let bad = |reason: String| WorkloadError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
        let tract = |what: &str, e: TractError| bad(format!("{what}: {e:#}"));
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| tract("not a loadable ONNX model", e))?;
        let inputs = model
            .input_outlets()
            .map_err(|e| tract("inputs", e))?
            .to_vec();
        // An input is named by its node, an output by its outlet label.
        let name = |m: &InferenceModel, o: OutletId| -> String {
            m.outlet_label(o)
                .unwrap_or(m.node(o.node).name.as_str())
                .to_owned()
        };
        let labels = |m: &InferenceModel, outlets: &[OutletId]| -> Vec<String> {
            outlets.iter().map(|o| name(m, *o)).collect()
        };
        if inputs.len() != 1 || name(&model, inputs[0]) != INPUT {
            return Err(bad(format!(
                "inputs {:?}, the contract is one input {INPUT:?} [N, {}]",
                labels(&model, &inputs),
                planes * cells
            )));
        }
        let outputs = model
            .output_outlets()
            .map_err(|e| tract("outputs", e))?
            .to_vec();
        let value = outputs
            .iter()
            .copied()
            .find(|o| name(&model, *o) == VALUE)
            .ok_or_else(|| {
                bad(format!(
                    "no output {VALUE:?} (outputs {:?})",
                    labels(&model, &outputs)
                ))
            })?;
        model
            .select_output_outlets(&[value])
            .map_err(|e| tract("select the value output", e))?;
        let n = model.sym("N");
        let plan = model
            .with_input_fact(0, f32::fact(dims!(n, planes * cells)).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                tract(
                    &format!("input {INPUT:?} as f32 [N, {}]", planes * cells),
                    e,
                )
            })?;
        let model = OnnxModel {
            plan,
            path: path.to_path_buf(),
            info,
            planes,
            cells,
            failed: Mutex::new(None),
        };
        // One run on two empty boards: shapes and values are checked before any game.
        let v = model
            .values(&vec![0.0; 2 * planes * cells], 2)
            .map_err(|reason| bad(reason))?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("value of the empty board is {v:?}")));
        }
        Ok(model)
    }

    pub fn config_key(&self) -> ConfigKey {
        self.info.config_key
    }

    /// The `value` of `n` boards (`boards` holds `n` feature rows).
    pub fn values(&self, boards: &[f32], n: usize) -> Result<Vec<f32>, String> {
        let input = Tensor::from_shape(&[n, self.planes * self.cells], boards)
            .map_err(|e| format!("input tensor: {e:#}"))?;
        let out = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| format!("inference: {e:#}"))?;
        let first = out.first().ok_or("no output")?;
        let view = first
            .to_plain_array_view::<f32>()
            .map_err(|e| format!("output {VALUE:?}: {e:#}"))?;
        if view.shape() != [n, 1] {
            return Err(format!(
                "output {VALUE:?} has shape {:?}, the contract is [N, 1]",
                view.shape()
            ));
        }
        Ok(view.iter().map(|v| v.clamp(-1.0, 1.0)).collect())
    }

    /// The first inference failure during play, as an error naming the file.
    pub fn failure(&self) -> Option<WorkloadError> {
        let f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        f.as_ref().map(|reason| WorkloadError::BadModel {
            path: self.path.clone(),
            reason: reason.clone(),
        })
    }

    fn fail(&self, reason: String) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(reason);
    }
}

/// A one-ply player over an [`OnnxModel`]: wins at once if it can, else blocks the next
/// seat's immediate win, else plays the move whose position is worst for the player to
/// move next (one batched inference over all moves); ties are broken at random.
#[derive(Debug, Clone)]
pub struct OnnxPlayer {
    name: String,
    model: Arc<OnnxModel>,
}

impl OnnxPlayer {
    pub fn new(name: impl Into<String>, model: Arc<OnnxModel>) -> Self {
        OnnxPlayer {
            name: name.into(),
            model,
        }
    }
}

impl Player for OnnxPlayer {
    fn name(&self) -> &str {
        &self.name
    }

    fn choose(&mut self, state: &State, rng: &mut Rng) -> usize {
        let moves = state.legal_moves();
        let me = state.to_move;
        let pick = |cands: &[u16], rng: &mut Rng| usize::from(cands[rng.below(cands.len())]);
        let wins: Vec<u16> = moves
            .iter()
            .copied()
            .filter(|&c| state.wins_at(usize::from(c), me))
            .collect();
        if !wins.is_empty() {
            return pick(&wins, rng);
        }
        let threats = state.winning_cells(state.next_player(me));
        if !threats.is_empty() {
            return pick(&threats, rng);
        }
        let row = self.model.planes * self.model.cells;
        let mut boards = vec![0.0f32; moves.len() * row];
        let mut child = state.clone();
        for (i, &c) in moves.iter().enumerate() {
            child.play_unchecked(usize::from(c));
            crate::dataset::encode_features(&child, &mut boards[i * row..(i + 1) * row]);
            child.undo();
        }
        let values = match self.model.values(&boards, moves.len()) {
            Ok(v) => v,
            Err(e) => {
                self.model.fail(e);
                return pick(&moves, rng);
            }
        };
        // The value is the next player's; ours is its negation.
        let best = values.iter().map(|v| -v).fold(f32::NEG_INFINITY, f32::max);
        let top: Vec<u16> = moves
            .iter()
            .zip(&values)
            .filter(|(_, v)| -**v >= best - 1e-6)
            .map(|(c, _)| *c)
            .collect();
        pick(&top, rng)
    }
}
