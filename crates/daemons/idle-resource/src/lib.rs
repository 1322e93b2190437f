//! `idle_resource` (also serves the `utilization_optimizer` alias): finds accelerators
//! below 10 % utilisation — GPUs through `nvidia-smi` when present, otherwise CPU cores
//! from `/proc/stat`, behind one [`Probe`] trait — and queues selfplay for them, one
//! item per idle slot not already covered by a pending item, within the per-config caps;
//! an item for an idle GPU is pinned to it (`device = "gpu<N>"`), so the job scheduler
//! runs it on that device.

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::payload::SelfplayItem;
use ringrift_contracts::wire::{parse_payload, payload_json};
use ringrift_proto::wire;
use ringrift_store::ConfigKey;
use ringrift_store::work_queue::{NewWork, WorkKind, WorkQueue, WorkStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "idle_resource",
    about: "Queue selfplay for idle GPUs or CPU cores",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

// The utilisation probes live in the cluster library (shared with p2p_backend).
pub use ringrift_cluster::resources::{AutoProbe, CpuStat, NvidiaSmi, Probe, ProbeError, Slot};

/// `[idle_resource]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleConfig {
    pub idle_below_percent: f64,
    pub games_per_item: u64,
    pub max_open_per_config: u64,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            idle_below_percent: 10.0,
            games_per_item: 200,
            max_open_per_config: 6,
        }
    }
}

pub struct Idle {
    pub cfg: IdleConfig,
    pub configs: Vec<ConfigKey>,
    pub node: String,
    pub queue: Arc<dyn WorkQueue>,
    pub probe: Arc<dyn Probe>,
    status: StatusLine,
}

impl Idle {
    pub fn new(
        cfg: IdleConfig,
        configs: Vec<ConfigKey>,
        node: String,
        queue: Arc<dyn WorkQueue>,
        probe: Arc<dyn Probe>,
    ) -> Self {
        Idle {
            cfg,
            configs,
            node,
            queue,
            probe,
            status: StatusLine::new("first sample pending"),
        }
    }

    /// One probe; returns how many selfplay items were queued.
    pub async fn check(&self, emit: &dyn Publish) -> anyhow::Result<usize> {
        let probe = self.probe.clone();
        let slots = tokio::task::spawn_blocking(move || probe.sample()).await??;
        let idle: Vec<&Slot> = slots
            .iter()
            .filter(|s| s.utilization < self.cfg.idle_below_percent)
            .collect();
        let (q, configs) = (self.queue.clone(), self.configs.clone());
        // Pending items pinned to a device cover that device; unpinned ones cover any.
        let (pinned, unpinned, mut open) = tokio::task::spawn_blocking(
            move || -> anyhow::Result<(BTreeSet<String>, u64, BTreeMap<ConfigKey, u64>)> {
                let (mut pinned, mut unpinned) = (BTreeSet::new(), 0);
                let mut open = BTreeMap::new();
                for c in configs {
                    let items = q.open_items(WorkKind::Selfplay, Some(c))?;
                    for i in items.iter().filter(|i| i.status == WorkStatus::Pending) {
                        match parse_payload::<SelfplayItem>(&i.item_id, &i.payload)?.device {
                            Some(d) => {
                                pinned.insert(d);
                            }
                            None => unpinned += 1,
                        }
                    }
                    open.insert(c, items.len() as u64);
                }
                Ok((pinned, unpinned, open))
            },
        )
        .await??;
        let uncovered: Vec<&Slot> = idle
            .iter()
            .copied()
            .filter(|s| !pinned.contains(&s.id))
            .collect();
        let pending = pinned.len() as u64 + unpinned;
        let want = (uncovered.len() as u64).saturating_sub(unpinned);
        let picks = ringrift_loop::alloc::pick_configs(
            &self.configs,
            &BTreeMap::new(),
            &mut open,
            self.cfg.max_open_per_config,
            want,
        );
        // Each item goes to one idle device; a GPU item is pinned to the GPU found idle.
        let devices: Vec<Option<String>> = uncovered
            .iter()
            .skip(unpinned as usize)
            .map(|s| s.gpu_index().map(|_| s.id.clone()))
            .collect();
        let n = picks.len();
        if n > 0 {
            let (q, games) = (self.queue.clone(), self.cfg.games_per_item);
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                for (c, device) in picks.into_iter().zip(devices) {
                    q.enqueue(&NewWork::new(
                        WorkKind::Selfplay,
                        Some(c),
                        3,
                        payload_json(&SelfplayItem {
                            games: Some(games),
                            reason: Some("idle resource".into()),
                            device,
                        })?,
                    ))?;
                }
                Ok(())
            })
            .await??;
            let mean = idle.iter().map(|s| s.utilization).sum::<f64>() / idle.len().max(1) as f64;
            let p = wire::IdleResourceDetected {
                node: self.node.clone(),
                resource: idle.first().map(|s| s.kind).unwrap_or("cpu").into(),
                utilization: mean,
                slots: idle.len() as u32,
            };
            emit.publish_acked(event(
                wire::event::Payload::IdleResourceDetected(p),
                format!("idle:{}:{}", self.node, ringrift_store::now_ms()),
                "",
            ))
            .await?;
            tracing::info!(
                idle = idle.len(),
                queued = n,
                "idle slots found; selfplay queued"
            );
        }
        self.status.set(format!(
            "{} of {} slots idle, {pending} selfplay items pending, queued {n}",
            idle.len(),
            slots.len()
        ));
        Ok(n)
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: IdleConfig = ctx.settings.section("idle_resource")?;
    handler_base::ensure_config!(
        (0.0..=100.0).contains(&cfg.idle_below_percent),
        "idle_resource.idle_below_percent must be within 0..=100"
    );
    handler_base::ensure_config!(
        cfg.games_per_item > 0 && cfg.max_open_per_config > 0,
        "idle_resource: games_per_item, max_open_per_config must be > 0"
    );
    let configs = ringrift_loop::configs(ctx)?;
    let queue = ringrift_nats::open_node_queue(ctx)?;
    Ok(Arc::new(Idle::new(
        cfg,
        configs,
        ctx.node.clone(),
        queue,
        Arc::new(AutoProbe::new(NvidiaSmi::from_settings(&ctx.settings)?)),
    )))
}

#[async_trait::async_trait]
impl Handler for Idle {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.check(&*ctx.publisher).await.map(|_| ())
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.status.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use ringrift_store::work_queue::SqliteWorkQueue;

    struct Fixed(Vec<f64>);
    impl Probe for Fixed {
        fn sample(&self) -> Result<Vec<Slot>, ProbeError> {
            Ok(self
                .0
                .iter()
                .enumerate()
                .map(|(i, u)| Slot {
                    id: format!("gpu{i}"),
                    kind: "gpu",
                    utilization: *u,
                })
                .collect())
        }
    }

    #[test]
    fn parses_nvidia_smi_and_proc_stat() {
        let g = NvidiaSmi::parse("0, 3\n1, 97\n").unwrap();
        assert_eq!(
            g,
            vec![
                Slot {
                    id: "gpu0".into(),
                    kind: "gpu",
                    utilization: 3.0
                },
                Slot {
                    id: "gpu1".into(),
                    kind: "gpu",
                    utilization: 97.0
                }
            ]
        );
        assert!(NvidiaSmi::parse("garbage\n").is_err());
        let cpu = CpuStat::default();
        assert!(
            cpu.utilization(CpuStat::parse(
                "cpu  1 1 1 1\ncpu0 10 0 0 90 0\ncpu1 50 0 0 50 0\n"
            ))
            .is_empty(),
            "first sample has no delta"
        );
        let s = cpu.utilization(CpuStat::parse("cpu0 11 0 0 189 0\ncpu1 150 0 0 50 0\n"));
        assert_eq!(
            s.iter()
                .map(|x| x.utilization.round() as i64)
                .collect::<Vec<_>>(),
            vec![1, 100]
        );
    }

    #[tokio::test]
    async fn queues_one_item_per_uncovered_idle_slot_within_caps() {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&dir.path().join("wq.db")).unwrap());
        let cfg = IdleConfig {
            max_open_per_config: 3,
            ..Default::default()
        };
        let idle = Idle::new(
            cfg,
            vec!["hex8_2p".parse().unwrap()],
            "n1".into(),
            queue.clone(),
            Arc::new(Fixed(vec![2.0, 5.0, 50.0])),
        );
        let rec = Recorded::default();
        assert_eq!(idle.check(&rec).await.unwrap(), 2, "two GPUs below 10 %");
        assert_eq!(
            idle.check(&rec).await.unwrap(),
            0,
            "already covered by pending items"
        );
        let busy = Idle::new(
            IdleConfig::default(),
            vec!["hex8_2p".parse().unwrap()],
            "n1".into(),
            queue.clone(),
            Arc::new(Fixed(vec![2.0; 8])),
        );
        assert_eq!(
            busy.check(&rec).await.unwrap(),
            4,
            "capped at 6 open items for the config"
        );
        assert!(
            matches!(&rec.payloads()[0], wire::event::Payload::IdleResourceDetected(p) if p.slots == 2)
        );
        // Every item is pinned to an idle GPU, each GPU once; the busy gpu2 of the
        // first probe got none.
        let mut devices: Vec<String> = queue
            .open_items(WorkKind::Selfplay, None)
            .unwrap()
            .iter()
            .map(|i| {
                parse_payload::<SelfplayItem>(&i.item_id, &i.payload)
                    .unwrap()
                    .device
                    .expect("pinned")
            })
            .collect();
        devices.sort();
        assert_eq!(devices, ["gpu0", "gpu1", "gpu2", "gpu3", "gpu4", "gpu5"]);
    }
}

#[cfg(test)]
mod in_process;
