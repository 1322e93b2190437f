//! `queue_monitor`: watches the work queue — depth (pending + claimed), the age of the
//! oldest pending item — and raises QUEUE_ALERT when it overflows (`max_depth`) or
//! starves (an item pending longer than `starvation_s`: nobody is consuming). Health is
//! DEGRADED while a condition holds; an alert is sent once per episode.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_proto::wire;
use ringrift_store::work_queue::{QueueDepth, WorkQueue};
use std::sync::{Arc, Mutex};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "queue_monitor",
    about: "Work queue depth, overflow and starvation alerts",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[queue_monitor]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub max_depth: u64,
    pub starvation_s: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            max_depth: 500,
            starvation_s: 1800.0,
        }
    }
}

/// The alerts a snapshot calls for: (kind, message).
pub fn assess(
    cfg: &MonitorConfig,
    depth: &QueueDepth,
    oldest_pending_age_s: Option<f64>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let open = depth.pending + depth.claimed;
    if open > cfg.max_depth {
        out.push((
            "overflow",
            format!("{open} open items > max_depth {}", cfg.max_depth),
        ));
    }
    if let Some(age) = oldest_pending_age_s.filter(|a| *a > cfg.starvation_s) {
        out.push((
            "starvation",
            format!(
                "oldest pending item waited {age:.0}s > {:.0}s: nothing is consuming the queue",
                cfg.starvation_s
            ),
        ));
    }
    out
}

#[derive(Default, Clone)]
struct View {
    depth: QueueDepth,
    oldest_s: Option<f64>,
    active: Vec<(&'static str, String)>,
}

pub struct Monitor {
    pub cfg: MonitorConfig,
    pub queue: Arc<dyn WorkQueue>,
    view: Mutex<View>,
}

impl Monitor {
    pub fn new(cfg: MonitorConfig, queue: Arc<dyn WorkQueue>) -> Self {
        Monitor {
            cfg,
            queue,
            view: Mutex::new(View::default()),
        }
    }

    pub async fn check(
        &self,
        emit: &dyn Publish,
        now_ms: i64,
    ) -> anyhow::Result<Vec<&'static str>> {
        let q = self.queue.clone();
        let (depth, oldest) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((q.depth()?, q.oldest_pending_ms()?))
        })
        .await??;
        let oldest_s = oldest.map(|t| (now_ms - t).max(0) as f64 / 1000.0);
        let alerts = assess(&self.cfg, &depth, oldest_s);
        let before: Vec<&'static str> = self
            .view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .active
            .iter()
            .map(|a| a.0)
            .collect();
        let mut sent = Vec::new();
        for (kind, msg) in &alerts {
            if before.contains(kind) {
                continue;
            }
            let p = wire::QueueAlert {
                kind: (*kind).into(),
                depth: depth.pending + depth.claimed,
                oldest_pending_s: oldest_s.unwrap_or(0.0),
                message: msg.clone(),
            };
            emit.publish_acked(event(
                wire::event::Payload::QueueAlert(p),
                format!("queue-alert:{kind}:{now_ms}"),
                "",
            ))
            .await?;
            tracing::warn!(kind, %msg, "QUEUE_ALERT");
            sent.push(*kind);
        }
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = View {
            depth,
            oldest_s,
            active: alerts,
        };
        Ok(sent)
    }

    pub fn health(&self) -> HealthCheckResult {
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let msg = format!(
            "{} pending, {} claimed, oldest pending {:.0}s",
            v.depth.pending,
            v.depth.claimed,
            v.oldest_s.unwrap_or(0.0)
        );
        let h = if v.active.is_empty() {
            HealthCheckResult::running(msg)
        } else {
            HealthCheckResult::degraded(format!(
                "{msg}; {}",
                v.active
                    .iter()
                    .map(|a| a.1.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        };
        h.detail("pending", v.depth.pending)
            .detail("claimed", v.depth.claimed)
            .detail("completed", v.depth.completed)
            .detail("failed", v.depth.failed)
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: MonitorConfig = ctx.settings.section("queue_monitor")?;
    handler_base::ensure_config!(
        cfg.max_depth > 0 && cfg.starvation_s > 0.0,
        "queue_monitor: max_depth, starvation_s must be > 0"
    );
    let queue = ringrift_nats::open_node_queue(ctx)?;
    Ok(Arc::new(Monitor::new(cfg, queue)))
}

#[async_trait::async_trait]
impl Handler for Monitor {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.check(&*ctx.publisher, ringrift_store::now_ms())
            .await
            .map(|_| ())
    }
    fn health_check(&self) -> HealthCheckResult {
        self.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use ringrift_store::work_queue::SqliteWorkQueue;
    use ringrift_store::work_queue::{NewWork, WorkKind};
    use std::time::Duration;

    #[test]
    fn overflow_and_starvation_are_named() {
        let cfg = MonitorConfig {
            max_depth: 10,
            starvation_s: 60.0,
            ..Default::default()
        };
        let d = QueueDepth {
            pending: 8,
            claimed: 3,
            ..Default::default()
        };
        let a = assess(&cfg, &d, Some(61.0));
        assert_eq!(
            a.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec!["overflow", "starvation"]
        );
        assert!(
            assess(
                &cfg,
                &QueueDepth {
                    pending: 1,
                    ..Default::default()
                },
                Some(5.0)
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn alerts_once_per_episode_and_degrades_health() {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&dir.path().join("wq.db")).unwrap());
        for _ in 0..3 {
            queue
                .enqueue(&NewWork::new(
                    WorkKind::Selfplay,
                    None,
                    1,
                    serde_json::json!({}),
                ))
                .unwrap();
        }
        let m = Monitor::new(
            MonitorConfig {
                max_depth: 2,
                starvation_s: 60.0,
                ..Default::default()
            },
            queue.clone(),
        );
        let rec = Recorded::default();
        let now = ringrift_store::now_ms();
        assert_eq!(m.check(&rec, now).await.unwrap(), vec!["overflow"]);
        assert!(
            m.check(&rec, now + 1000).await.unwrap().is_empty(),
            "same episode"
        );
        assert!(matches!(
            m.health().status,
            handler_base::HealthStatus::Degraded
        ));
        assert_eq!(
            m.check(&rec, now + 120_000).await.unwrap(),
            vec!["starvation"],
            "items pending for 2 min"
        );
        while let Some(i) = queue.claim("w", &[], Duration::from_secs(60)).unwrap() {
            queue
                .complete(&i.item_id, "w", &serde_json::json!({}))
                .unwrap();
        }
        assert!(m.check(&rec, now + 130_000).await.unwrap().is_empty());
        assert!(matches!(
            m.health().status,
            handler_base::HealthStatus::Running
        ));
        assert_eq!(rec.events().len(), 2);
    }
}

#[cfg(test)]
mod in_process;
