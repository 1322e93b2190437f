//! Spreading selfplay over configs: by curriculum weight, never past a per-config cap of
//! open (pending + claimed) items, so selfplay cannot run away. Shared by
//! queue_populator, selfplay_coordinator and idle_resource.

use crate::pause::Pauses;
use ringrift_proto::{Event, wire::event::Payload};
use ringrift_store::ConfigKey;
use std::collections::BTreeMap;

/// What selfplay suppliers remember across restarts: the pauses (per source,
/// [`Pauses`]) and the curriculum weights (CURRICULUM_UPDATED).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "StoredSupply")]
pub struct SupplyState {
    pub pauses: Pauses,
    pub weights: BTreeMap<String, f64>,
}

/// [`SupplyState`] as stored, also in its older form (one `paused` reason).
#[derive(serde::Deserialize)]
struct StoredSupply {
    #[serde(default)]
    paused: Option<String>,
    #[serde(default)]
    pauses: Option<Pauses>,
    #[serde(default)]
    weights: BTreeMap<String, f64>,
}

impl From<StoredSupply> for SupplyState {
    fn from(s: StoredSupply) -> SupplyState {
        SupplyState {
            pauses: s.pauses.unwrap_or_else(|| Pauses::from_legacy(s.paused)),
            weights: s.weights,
        }
    }
}

impl SupplyState {
    /// Why selfplay is paused (every source holding a pause), `None` when it may run.
    pub fn paused(&self) -> Option<String> {
        self.pauses.reason()
    }

    /// Applies a pause, resume or curriculum event; false for any other event.
    pub fn apply(&mut self, ev: &Event) -> bool {
        match &ev.payload {
            Payload::PipelinePaused(_) | Payload::PipelineResumed(_) => {
                self.pauses.apply(ev);
            }
            Payload::CurriculumUpdated(c) => {
                self.weights = c.weights.iter().map(|(k, v)| (k.clone(), *v)).collect();
                tracing::info!(weights = ?self.weights, reason = %c.reason, "curriculum weights updated");
            }
            _ => return false,
        }
        true
    }
}

/// Picks up to `n` configs for new selfplay items. Each pick goes to the config furthest
/// below its weighted share (weight default 1.0; weight ≤ 0 means none) that is still
/// under `cap` open items. `open` is updated with the picks.
pub fn pick_configs(
    configs: &[ConfigKey],
    weights: &BTreeMap<String, f64>,
    open: &mut BTreeMap<ConfigKey, u64>,
    cap: u64,
    n: u64,
) -> Vec<ConfigKey> {
    let w = |c: &ConfigKey| weights.get(&c.to_string()).copied().unwrap_or(1.0);
    let total: f64 = configs.iter().map(|c| w(c).max(0.0)).sum::<f64>().max(1e-9);
    let mut out = Vec::new();
    for _ in 0..n {
        let pick = configs
            .iter()
            .filter(|c| w(c) > 0.0 && open.get(c).copied().unwrap_or(0) < cap)
            .min_by(|a, b| {
                let share =
                    |c: &ConfigKey| open.get(c).copied().unwrap_or(0) as f64 / (w(c) / total);
                share(a).total_cmp(&share(b))
            })
            .copied();
        let Some(c) = pick else { break };
        *open.entry(c).or_insert(0) += 1;
        out.push(c);
    }
    out
}

/// The selfplay suppliers' shared pause contract, for their in-process tests: the daemon
/// `name` built by `build` in `home` queues no selfplay while PIPELINE_PAUSED holds
/// (its health says paused) and queues again after PIPELINE_RESUMED.
pub async fn check_pause_and_resume(
    name: &'static str,
    build: handler_base::Factory,
    home: &std::path::Path,
) -> anyhow::Result<()> {
    use ringrift_proto::wire::{self, PipelineControl};
    let (ctx, _published) = handler_base::Context::for_test(name, home, "")?;
    let h = build(&ctx)?;
    let queue = ringrift_store::work_queue::open_home(home)?;
    h.handle_event(
        &ctx,
        &Event::new(Payload::PipelinePaused(PipelineControl {
            reason: "disk".into(),
        })),
    )
    .await?;
    h.run_cycle(&ctx).await?;
    anyhow::ensure!(
        queue.depth()?.pending == 0,
        "{name} queued selfplay while paused"
    );
    let health = h.health_check();
    anyhow::ensure!(
        health.message.contains("paused"),
        "{name} health while paused: {health:?}"
    );
    h.handle_event(
        &ctx,
        &Event::new(Payload::PipelineResumed(wire::PipelineControl::default())),
    )
    .await?;
    h.run_cycle(&ctx).await?;
    anyhow::ensure!(
        queue.depth()?.pending > 0,
        "{name} queued nothing after the resume"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> ConfigKey {
        s.parse().unwrap()
    }

    #[test]
    fn supply_state_reads_the_older_single_pause() {
        let old: SupplyState =
            serde_json::from_str(r#"{"paused":"disk","weights":{"hex8_2p":2.0}}"#).unwrap();
        assert_eq!(old.paused().as_deref(), Some("disk"));
        assert_eq!(old.weights.get("hex8_2p"), Some(&2.0));
        let new: SupplyState = serde_json::from_str(&serde_json::to_string(&old).unwrap()).unwrap();
        assert_eq!(new, old);
        let none: SupplyState = serde_json::from_str(r#"{"paused":null,"weights":{}}"#).unwrap();
        assert_eq!(none.paused(), None);
    }

    #[test]
    fn follows_weights_and_respects_the_cap() {
        let configs = [k("hex8_2p"), k("square8_2p")];
        let weights: BTreeMap<String, f64> = [("hex8_2p".to_owned(), 3.0)].into_iter().collect();
        let mut open = BTreeMap::new();
        let picks = pick_configs(&configs, &weights, &mut open, 100, 8);
        assert_eq!(
            picks.iter().filter(|c| **c == k("hex8_2p")).count(),
            6,
            "3:1 weights"
        );
        let mut open = BTreeMap::new();
        let picks = pick_configs(&configs, &weights, &mut open, 2, 8);
        assert_eq!(picks.len(), 4, "2 per config at most");
        let zero: BTreeMap<String, f64> = [("square8_2p".to_owned(), 0.0)].into_iter().collect();
        let picks = pick_configs(&configs, &zero, &mut BTreeMap::new(), 10, 3);
        assert!(picks.iter().all(|c| *c == k("hex8_2p")));
    }
}
