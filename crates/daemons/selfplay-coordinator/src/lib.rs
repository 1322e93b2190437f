//! `selfplay_coordinator`: keeps `target_open` selfplay items open across the configs,
//! split by curriculum weight (CURRICULUM_UPDATED) and ordered by per-config priority,
//! never more than `max_open_per_config` open (queued + running) items for one config,
//! so selfplay cannot run away. PIPELINE_PAUSED stops it until PIPELINE_RESUMED; weights
//! and the pause survive restarts.

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_contracts::payload::SelfplayItem;
use ringrift_contracts::wire::payload_json;
use ringrift_ledger::StateStore;
use ringrift_loop::alloc::SupplyState;
use ringrift_proto::{Event, EventType};
use ringrift_store::ConfigKey;
use ringrift_store::work_queue::{NewWork, WorkKind, WorkQueue};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "selfplay_coordinator",
    about: "Allocate selfplay by priority and curriculum weights",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[selfplay_coordinator]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordConfig {
    pub target_open: u64,
    pub max_open_per_config: u64,
    pub games_per_item: u64,
    /// Work-item priority per config key (default 5).
    pub priorities: BTreeMap<String, i64>,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            target_open: 4,
            max_open_per_config: 4,
            games_per_item: 200,
            priorities: BTreeMap::new(),
        }
    }
}

pub struct Coordinator {
    pub cfg: CoordConfig,
    pub configs: Vec<ConfigKey>,
    pub queue: Arc<dyn WorkQueue>,
    pub state: StateStore,
    status: StatusLine,
}

impl Coordinator {
    pub fn new(
        cfg: CoordConfig,
        mut configs: Vec<ConfigKey>,
        queue: Arc<dyn WorkQueue>,
        state: StateStore,
    ) -> Self {
        // Higher priority first: it wins ties in the allocation.
        configs.sort_by_key(|c| {
            std::cmp::Reverse(cfg.priorities.get(&c.to_string()).copied().unwrap_or(5))
        });
        Coordinator {
            cfg,
            configs,
            queue,
            state,
            status: StatusLine::new("starting"),
        }
    }

    pub async fn on_event(&self, ev: &Event) -> anyhow::Result<()> {
        let mut st: SupplyState = self.state.get("state").await?.unwrap_or_default();
        if st.apply(ev) {
            self.state.put("state", &st).await?;
        }
        Ok(())
    }

    pub async fn allocate(&self) -> anyhow::Result<Vec<ConfigKey>> {
        let st: SupplyState = self.state.get("state").await?.unwrap_or_default();
        if let Some(why) = st.paused() {
            self.status.set(format!("paused: {why}"));
            return Ok(Vec::new());
        }
        let (q, configs) = (self.queue.clone(), self.configs.clone());
        let mut open =
            tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeMap<ConfigKey, u64>> {
                configs
                    .into_iter()
                    .map(|c| Ok((c, q.open_items(WorkKind::Selfplay, Some(c))?.len() as u64)))
                    .collect()
            })
            .await??;
        let total: u64 = open.values().sum();
        let picks = ringrift_loop::alloc::pick_configs(
            &self.configs,
            &st.weights,
            &mut open,
            self.cfg.max_open_per_config,
            self.cfg.target_open.saturating_sub(total),
        );
        let (q, games, prio) = (
            self.queue.clone(),
            self.cfg.games_per_item,
            self.cfg.priorities.clone(),
        );
        let added = picks.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for c in picks {
                let p = prio.get(&c.to_string()).copied().unwrap_or(5);
                q.enqueue(&NewWork::new(
                    WorkKind::Selfplay,
                    Some(c),
                    p,
                    payload_json(&SelfplayItem {
                        games: Some(games),
                        reason: None,
                        device: None,
                    })?,
                ))?;
            }
            Ok(())
        })
        .await??;
        self.status
            .set(format!("open selfplay {open:?}; added {}", added.len()));
        Ok(added)
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: CoordConfig = ctx.settings.section("selfplay_coordinator")?;
    handler_base::ensure_config!(
        cfg.max_open_per_config > 0 && cfg.games_per_item > 0,
        "selfplay_coordinator: max_open_per_config, games_per_item must be > 0"
    );
    let configs = ringrift_loop::configs(ctx)?;
    for k in cfg.priorities.keys() {
        k.parse::<ConfigKey>().map_err(|e| {
            handler_base::ConfigError::Invalid(format!(
                "selfplay_coordinator.priorities: {k:?}: {e}"
            ))
        })?;
    }
    let queue = ringrift_nats::open_node_queue(ctx)?;
    let state = StateStore::open(&ctx.home, &INFO)?;
    Ok(Arc::new(Coordinator::new(cfg, configs, queue, state)))
}

#[async_trait::async_trait]
impl Handler for Coordinator {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![
            EventType::CurriculumUpdated,
            EventType::PipelinePaused,
            EventType::PipelineResumed,
        ]
    }
    /// Pause and curriculum are state carried by events: a first start must know the
    /// current ones, not wait for the next change.
    fn replay_history(&self) -> bool {
        true
    }
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.allocate().await.map(|_| ())
    }
    async fn handle_event(&self, _ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        self.on_event(ev).await
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.status.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_proto::wire;
    use ringrift_store::work_queue::SqliteWorkQueue;

    fn coord(dir: &std::path::Path) -> Coordinator {
        let queue: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&dir.join("wq.db")).unwrap());
        let cfg = CoordConfig {
            target_open: 6,
            max_open_per_config: 4,
            priorities: [("square8_2p".to_owned(), 9)].into_iter().collect(),
            ..Default::default()
        };
        Coordinator::new(
            cfg,
            vec!["hex8_2p".parse().unwrap(), "square8_2p".parse().unwrap()],
            queue,
            StateStore::open(dir, &INFO).unwrap(),
        )
    }

    #[tokio::test]
    async fn follows_curriculum_weights_and_never_exceeds_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let c = coord(dir.path());
        let w = wire::CurriculumUpdated {
            weights: [("hex8_2p".to_owned(), 2.0), ("square8_2p".to_owned(), 1.0)]
                .into_iter()
                .collect(),
            reason: "elo velocity".into(),
        };
        c.on_event(&Event::new(wire::event::Payload::CurriculumUpdated(w)))
            .await
            .unwrap();
        let added = c.allocate().await.unwrap();
        assert_eq!(added.len(), 6);
        assert_eq!(
            added.iter().filter(|k| k.to_string() == "hex8_2p").count(),
            4,
            "2:1 weights"
        );
        assert!(
            c.allocate().await.unwrap().is_empty(),
            "bounded: target reached"
        );
        let open = c
            .queue
            .open_items(WorkKind::Selfplay, Some("square8_2p".parse().unwrap()))
            .unwrap();
        assert!(open.iter().all(|i| i.priority == 9));
    }

    #[tokio::test]
    async fn pause_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        coord(dir.path())
            .on_event(&Event::new(wire::event::Payload::PipelinePaused(
                wire::PipelineControl {
                    reason: "disk 93%".into(),
                },
            )))
            .await
            .unwrap();
        let c = coord(dir.path());
        assert!(c.allocate().await.unwrap().is_empty());
        c.on_event(&Event::new(wire::event::Payload::PipelineResumed(
            Default::default(),
        )))
        .await
        .unwrap();
        assert_eq!(c.allocate().await.unwrap().len(), 6);
    }
}

#[cfg(test)]
mod in_process;
