//! `queue_populator`: keeps the work queue between a low and a high watermark of open
//! (pending + claimed) items with the configured mix — 60 % selfplay, 30 % training,
//! 10 % tournament by default.
//!
//! Training items are never invented here: when to train is training_trigger's decision
//! (fresh data, one at a time). Their 30 % share is left free for it. Selfplay items are
//! spread over the configs by curriculum weight (CURRICULUM_UPDATED) and capped per
//! config (`max_open_per_config`), so selfplay can never run away. PIPELINE_PAUSED stops
//! populating until PIPELINE_RESUMED; both are persisted.
//!
//! A leader-only duty: it populates only while this node leads (`[leader]` of
//! cluster.toml; static: the coordinator) and enqueues with the leader's fencing token,
//! so a deposed leader's items are refused by the queue (`fence_refused` in health).

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::Leadership;
use ringrift_contracts::payload::{SelfplayItem, TournamentItem};
use ringrift_contracts::wire::payload_json;
use ringrift_ledger::StateStore;
use ringrift_loop::alloc::SupplyState;
use ringrift_proto::{Event, EventType};
use ringrift_store::ConfigKey;
use ringrift_store::StoreError;
use ringrift_store::work_queue::{NewWork, WorkKind, WorkQueue};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "queue_populator",
    about: "Keep the work queue filled with the selfplay/training/tournament mix",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[queue_populator]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PopConfig {
    pub low_watermark: u64,
    pub high_watermark: u64,
    pub selfplay_share: f64,
    pub training_share: f64,
    pub tournament_share: f64,
    pub games_per_item: u64,
    pub max_open_per_config: u64,
}

impl Default for PopConfig {
    fn default() -> Self {
        PopConfig {
            low_watermark: 4,
            high_watermark: 10,
            selfplay_share: 0.6,
            training_share: 0.3,
            tournament_share: 0.1,
            games_per_item: 200,
            max_open_per_config: 6,
        }
    }
}

impl PopConfig {
    fn validate(&self) -> anyhow::Result<()> {
        handler_base::ensure_config!(
            self.high_watermark >= self.low_watermark && self.high_watermark > 0,
            "queue_populator: high_watermark must be >= low_watermark and > 0"
        );
        let sum = self.selfplay_share + self.training_share + self.tournament_share;
        handler_base::ensure_config!(
            (sum - 1.0).abs() < 1e-6
                && self.selfplay_share >= 0.0
                && self.training_share >= 0.0
                && self.tournament_share >= 0.0,
            "queue_populator shares must be >= 0 and sum to 1 (they sum to {sum})"
        );
        handler_base::ensure_config!(
            self.games_per_item > 0 && self.max_open_per_config > 0,
            "queue_populator: games_per_item, max_open_per_config must be > 0"
        );
        Ok(())
    }
}

/// What to add now: (kind, config) items.
pub fn plan(
    cfg: &PopConfig,
    open_total: u64,
    open_selfplay: &BTreeMap<ConfigKey, u64>,
    open_tournament: u64,
    configs: &[ConfigKey],
    weights: &BTreeMap<String, f64>,
) -> Vec<(WorkKind, Option<ConfigKey>)> {
    if open_total >= cfg.low_watermark {
        return Vec::new();
    }
    let room = cfg.high_watermark - open_total;
    let want_selfplay = ((cfg.high_watermark as f64) * cfg.selfplay_share).round() as u64;
    let want_tournament = ((cfg.high_watermark as f64) * cfg.tournament_share).round() as u64;
    let have_selfplay: u64 = open_selfplay.values().sum();
    let mut counts = open_selfplay.clone();
    let add_selfplay = want_selfplay.saturating_sub(have_selfplay).min(room);
    let mut out: Vec<(WorkKind, Option<ConfigKey>)> = ringrift_loop::alloc::pick_configs(
        configs,
        weights,
        &mut counts,
        cfg.max_open_per_config,
        add_selfplay,
    )
    .into_iter()
    .map(|c| (WorkKind::Selfplay, Some(c)))
    .collect();
    let room = room.saturating_sub(out.len() as u64);
    for _ in 0..want_tournament.saturating_sub(open_tournament).min(room) {
        out.push((WorkKind::Tournament, None));
    }
    out
}

pub struct Populator {
    pub cfg: PopConfig,
    pub configs: Vec<ConfigKey>,
    pub queue: Arc<dyn WorkQueue>,
    pub state: StateStore,
    pub leadership: Leadership,
    status: StatusLine,
    /// Enqueues the queue refused because a newer leader had written.
    fence_refused: std::sync::atomic::AtomicU64,
}

impl Populator {
    pub async fn on_event(&self, ev: &Event) -> anyhow::Result<()> {
        let mut st: SupplyState = self.state.get("state").await?.unwrap_or_default();
        if st.apply(ev) {
            self.state.put("state", &st).await?;
        }
        Ok(())
    }

    /// Tops the queue up; returns how many items were added.
    pub async fn top_up(&self) -> anyhow::Result<usize> {
        let st: SupplyState = self.state.get("state").await?.unwrap_or_default();
        if let Some(why) = st.paused() {
            self.status.set(format!("paused: {why}"));
            return Ok(0);
        }
        let Some(leader) = self.leadership.mine().await? else {
            self.status
                .set("not the leader: nothing to populate".to_owned());
            return Ok(0);
        };
        let (q, configs) = (self.queue.clone(), self.configs.clone());
        let (total, per_config, tournament) = tokio::task::spawn_blocking(
            move || -> anyhow::Result<(u64, BTreeMap<ConfigKey, u64>, u64)> {
                let d = q.depth()?;
                let mut per = BTreeMap::new();
                for c in &configs {
                    per.insert(*c, q.open_items(WorkKind::Selfplay, Some(*c))?.len() as u64);
                }
                Ok((
                    d.pending + d.claimed,
                    per,
                    q.open_items(WorkKind::Tournament, None)?.len() as u64,
                ))
            },
        )
        .await??;
        let adds = plan(
            &self.cfg,
            total,
            &per_config,
            tournament,
            &self.configs,
            &st.weights,
        );
        let n = adds.len();
        if n > 0 {
            let (q, games, token) = (self.queue.clone(), self.cfg.games_per_item, leader.token);
            let added = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                for (kind, config) in adds {
                    let payload = if kind == WorkKind::Selfplay {
                        payload_json(&SelfplayItem {
                            games: Some(games),
                            reason: None,
                            device: None,
                        })?
                    } else {
                        payload_json(&TournamentItem {})?
                    };
                    q.enqueue_fenced(
                        &NewWork::new(
                            kind,
                            config,
                            if kind == WorkKind::Selfplay { 5 } else { 1 },
                            payload,
                        ),
                        token,
                    )?;
                }
                Ok(())
            })
            .await?;
            if let Err(e) = added {
                if let Some(StoreError::Fenced { .. }) = e.downcast_ref::<StoreError>() {
                    self.fence_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(token, error = %e, "deposed: the queue refused our fencing token");
                    self.status.set(format!("deposed: {e}"));
                }
                return Err(e);
            }
            tracing::info!(added = n, open_before = total, token, "queue topped up");
        }
        self.status.set(format!(
            "{} open items (low {}, high {}); added {n}",
            total + n as u64,
            self.cfg.low_watermark,
            self.cfg.high_watermark
        ));
        Ok(n)
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: PopConfig = ctx.settings.section("queue_populator")?;
    cfg.validate()?;
    let configs = ringrift_loop::configs(ctx)?;
    let queue = ringrift_nats::open_node_queue(ctx)?;
    let state = StateStore::open(&ctx.home, &INFO)?;
    let leadership = ringrift_cluster::duty::leadership(ctx)?;
    Ok(Arc::new(Populator {
        cfg,
        configs,
        queue,
        state,
        leadership,
        status: StatusLine::new("starting"),
        fence_refused: Default::default(),
    }))
}

#[async_trait::async_trait]
impl Handler for Populator {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![
            EventType::PipelinePaused,
            EventType::PipelineResumed,
            EventType::CurriculumUpdated,
        ]
    }
    /// Pause and curriculum are state carried by events: a first start must know the
    /// current ones, not wait for the next change.
    fn replay_history(&self) -> bool {
        true
    }
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.top_up().await.map(|_| ())
    }
    async fn handle_event(&self, _ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        self.on_event(ev).await
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.status.get()).detail(
            "fence_refused",
            self.fence_refused
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_proto::wire;
    use ringrift_store::work_queue::SqliteWorkQueue;

    fn cfgs() -> Vec<ConfigKey> {
        vec!["hex8_2p".parse().unwrap(), "square8_2p".parse().unwrap()]
    }

    fn leader(token: u64) -> ringrift_cluster::Leader {
        ringrift_cluster::Leader {
            node: "me".into(),
            token,
        }
    }

    #[tokio::test]
    async fn only_the_leader_populates_and_a_deposed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sq = SqliteWorkQueue::open(&dir.path().join("wq.db")).unwrap();
        let queue: Arc<dyn WorkQueue> = Arc::new(sq.clone());
        let populator = |leadership: Leadership| Populator {
            cfg: PopConfig::default(),
            configs: cfgs(),
            queue: queue.clone(),
            state: StateStore::open(dir.path(), &INFO).unwrap(),
            leadership,
            status: StatusLine::new(""),
            fence_refused: Default::default(),
        };
        let follower = populator(Leadership::fixed(
            "me",
            Some(ringrift_cluster::Leader {
                node: "other".into(),
                token: 3,
            }),
        ));
        assert_eq!(follower.top_up().await.unwrap(), 0, "not the leader");
        assert_eq!(sq.depth().unwrap().pending, 0);
        // A newer leader has written to the queue; then this node believes it leads
        // with an older token (a deposed leader that has not noticed yet).
        sq.enqueue_fenced(
            &NewWork::new(WorkKind::Tournament, None, 1, serde_json::json!({})),
            9,
        )
        .unwrap();
        let zombie = populator(Leadership::fixed("me", Some(leader(7))));
        let err = zombie.top_up().await.expect_err("stale token");
        assert!(err.to_string().contains("fencing token 7 refused"), "{err}");
        assert_eq!(
            zombie
                .health_check()
                .details
                .get("fence_refused")
                .map(String::as_str),
            Some("1")
        );
        assert_eq!(
            sq.depth().unwrap().pending,
            1,
            "nothing added by the deposed leader"
        );
        let current = populator(Leadership::fixed("me", Some(leader(9))));
        assert!(
            current.top_up().await.unwrap() > 0,
            "the current leader populates"
        );
    }

    #[test]
    fn nothing_added_at_or_above_the_low_watermark() {
        let cfg = PopConfig::default();
        assert!(plan(&cfg, 4, &BTreeMap::new(), 0, &cfgs(), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn fills_to_the_mix_leaving_the_training_share_free() {
        let cfg = PopConfig::default();
        let p = plan(&cfg, 0, &BTreeMap::new(), 0, &cfgs(), &BTreeMap::new());
        let selfplay = p.iter().filter(|x| x.0 == WorkKind::Selfplay).count();
        let tournament = p.iter().filter(|x| x.0 == WorkKind::Tournament).count();
        assert_eq!(
            (selfplay, tournament),
            (6, 1),
            "60 % and 10 % of 10; 3 left for training_trigger"
        );
        assert!(p.iter().all(|x| x.0 != WorkKind::Training));
        let per: Vec<usize> = cfgs()
            .iter()
            .map(|c| p.iter().filter(|x| x.1 == Some(*c)).count())
            .collect();
        assert_eq!(per, vec![3, 3], "equal weights, equal shares");
    }

    #[test]
    fn curriculum_weights_and_per_config_caps_bound_selfplay() {
        let cfg = PopConfig {
            max_open_per_config: 2,
            ..Default::default()
        };
        let weights: BTreeMap<String, f64> =
            [("hex8_2p".to_owned(), 3.0), ("square8_2p".to_owned(), 0.0)]
                .into_iter()
                .collect();
        let p = plan(&cfg, 0, &BTreeMap::new(), 0, &cfgs(), &weights);
        let hex = p
            .iter()
            .filter(|x| x.1 == Some("hex8_2p".parse().unwrap()))
            .count();
        assert_eq!(hex, 2, "capped at 2 open items");
        assert!(
            p.iter().all(|x| x.1 != Some("square8_2p".parse().unwrap())),
            "weight 0: no selfplay"
        );
    }

    #[tokio::test]
    async fn paused_pipeline_adds_nothing_until_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&dir.path().join("wq.db")).unwrap());
        let p = Populator {
            cfg: PopConfig::default(),
            configs: cfgs(),
            queue,
            state: StateStore::open(dir.path(), &INFO).unwrap(),
            leadership: Leadership::fixed("me", Some(leader(7))),
            status: StatusLine::new(""),
            fence_refused: Default::default(),
        };
        p.on_event(&Event::new(wire::event::Payload::PipelinePaused(
            wire::PipelineControl {
                reason: "disk".into(),
            },
        )))
        .await
        .unwrap();
        assert_eq!(p.top_up().await.unwrap(), 0);
        p.on_event(&Event::new(wire::event::Payload::PipelineResumed(
            wire::PipelineControl::default(),
        )))
        .await
        .unwrap();
        assert_eq!(p.top_up().await.unwrap(), 7);
        assert_eq!(p.top_up().await.unwrap(), 0, "above the low watermark now");
    }
}

#[cfg(test)]
mod in_process;
