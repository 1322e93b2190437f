//! `auto_export`: when a config has at least `threshold` (500) games past its export
//! watermark, runs the export job and publishes NPZ_EXPORT_COMPLETED (path, rows,
//! SHA-256, watermark). Checks on NEW_GAMES_AVAILABLE / SELFPLAY_COMPLETED and every cycle.
//!
//! Restart safety: the watermark is persisted only after the event is acked; a crash in
//! between repeats the export of the same games, whose event carries the same id
//! (`npz:<config>:<watermark>`) and is deduplicated, and training_trigger refuses data
//! that is not newer than what it already queued.

use handler_base::StatusMap;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::ExportReport;
use ringrift_jobs::{JobKind, JobRequest, Jobs, RunnerJobs};
use ringrift_ledger::{Export, ExportWriter, Ledger, StateStore};
use ringrift_proto::{EventType, wire};
use ringrift_store::{ConfigKey, paths};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "auto_export",
    about: "Export NPZ when new games reach the threshold",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[auto_export]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    pub threshold: u64,
    pub timeout_s: f64,
    /// Weight of the search value in the exported value target (`{value_blend}` of the
    /// export template), 0..=1; the rest is the final outcome.
    pub value_blend: f64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            threshold: 500,
            timeout_s: 1800.0,
            value_blend: 0.5,
        }
    }
}

/// Counts games past a watermark (DI seam; the real one reads the game store).
#[async_trait::async_trait]
pub trait Games: Send + Sync {
    /// (games after `watermark`, highest seq).
    async fn since(&self, config: ConfigKey, watermark: i64) -> anyhow::Result<(u64, i64)>;
}

pub struct StoreGames(pub PathBuf);

#[async_trait::async_trait]
impl Games for StoreGames {
    async fn since(&self, config: ConfigKey, watermark: i64) -> anyhow::Result<(u64, i64)> {
        let db = paths::game_db(&self.0, config);
        Ok(
            tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, i64)> {
                if !db.exists() {
                    return Ok((0, watermark));
                }
                let s = ringrift_store::games::GameStore::open(&db)?;
                Ok((s.count_since(watermark)?, s.max_seq()?))
            })
            .await??,
        )
    }
}

/// Persisted per config.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportState {
    pub watermark: i64,
    pub exports: u64,
    pub last_npz: String,
    pub last_sha256: String,
    /// An export written and about to be announced: saved before its event, so a
    /// restart announces this same file again (same event id) instead of exporting
    /// over it with more games.
    #[serde(default)]
    pub pending: Option<Announce>,
}

/// What NPZ_EXPORT_COMPLETED says of one export.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Announce {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    pub games: u64,
    pub max_seq: i64,
}

pub struct Exporter {
    pub cfg: ExportConfig,
    pub configs: Vec<ConfigKey>,
    pub home: PathBuf,
    pub jobs: Arc<dyn Jobs>,
    pub games: Arc<dyn Games>,
    pub state: StateStore,
    /// The exports others read (their watermarks).
    ledger: ExportWriter,
    status: StatusMap,
    busy: tokio::sync::Mutex<()>,
}

impl Exporter {
    pub fn new(
        cfg: ExportConfig,
        configs: Vec<ConfigKey>,
        home: PathBuf,
        jobs: Arc<dyn Jobs>,
        games: Arc<dyn Games>,
        state: StateStore,
        ledger: ExportWriter,
    ) -> Self {
        Exporter {
            cfg,
            configs,
            home,
            jobs,
            games,
            state,
            ledger,
            status: StatusMap::default(),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    fn note(&self, config: ConfigKey, s: String) {
        self.status.set(config.to_string(), s);
    }

    /// Checks every config; exports those past the threshold.
    pub async fn check_all(&self, emit: &dyn Publish) -> anyhow::Result<()> {
        let _one_at_a_time = self.busy.lock().await;
        for &c in &self.configs {
            self.check(c, emit).await?;
        }
        Ok(())
    }

    async fn check(&self, config: ConfigKey, emit: &dyn Publish) -> anyhow::Result<()> {
        let key = config.to_string();
        let mut st: ExportState = self.state.get(&key).await?.unwrap_or_default();
        if let Some(a) = st.pending.clone() {
            tracing::info!(%config, npz = %a.path, "announcing the export written before a restart");
            return self.announce(config, &mut st, a, emit).await;
        }
        let (n, _) = self.games.since(config, st.watermark).await?;
        if n < self.cfg.threshold {
            self.note(
                config,
                format!(
                    "{n}/{} new games since watermark {}",
                    self.cfg.threshold, st.watermark
                ),
            );
            return Ok(());
        }
        let output =
            paths::training_dir(&self.home).join(format!("{config}_after{}.npz", st.watermark));
        tracing::info!(%config, new_games = n, watermark = st.watermark, "exporting: new games reached the threshold");
        let req = JobRequest::new(
            JobKind::Export,
            format!("export:{config}"),
            Duration::from_secs_f64(self.cfg.timeout_s),
        )
        .var("config_key", config)
        .var("since", st.watermark)
        .var("output", output.display())
        .var("value_blend", self.cfg.value_blend);
        let r: ExportReport = self.jobs.run(req).await?;
        let (rows, games, max_seq, path) = (r.rows as u64, r.games as u64, r.max_seq, r.output);
        if rows == 0 || max_seq <= st.watermark {
            self.note(
                config,
                format!("export after {} produced no rows", st.watermark),
            );
            return Ok(());
        }
        let p2 = path.clone();
        let (sha, _) =
            tokio::task::spawn_blocking(move || ringrift_store::manifest::hash_file(&p2)).await??;
        let a = Announce {
            path: path.display().to_string(),
            sha256: sha,
            rows,
            games,
            max_seq,
        };
        st.pending = Some(a.clone());
        self.state.put(&key, &st).await?;
        self.announce(config, &mut st, a, emit).await
    }

    /// Publishes NPZ_EXPORT_COMPLETED for `a` (its id follows from the data, so a repeat
    /// is deduplicated), then moves the watermark past it.
    async fn announce(
        &self,
        config: ConfigKey,
        st: &mut ExportState,
        a: Announce,
        emit: &dyn Publish,
    ) -> anyhow::Result<()> {
        let key = config.to_string();
        let payload = wire::NpzExportCompleted {
            path: a.path.clone(),
            rows: a.rows,
            sha256: a.sha256.clone(),
            games: a.games,
            watermark: a.max_seq,
        };
        emit.publish_acked(event(
            wire::event::Payload::NpzExportCompleted(payload),
            format!("npz:{config}:{}", a.max_seq),
            &key,
        ))
        .await?;
        st.watermark = a.max_seq;
        st.exports += 1;
        st.last_npz = a.path;
        st.last_sha256 = a.sha256;
        st.pending = None;
        self.state.put(&key, st).await?;
        self.ledger
            .record(&Export {
                config,
                watermark: a.max_seq,
                npz: st.last_npz.clone(),
                sha256: st.last_sha256.clone(),
                rows: a.rows,
                at_ms: ringrift_store::now_ms(),
            })
            .await?;
        tracing::info!(%config, rows = a.rows, games = a.games, watermark = a.max_seq, npz = %st.last_npz, "NPZ_EXPORT_COMPLETED");
        self.note(
            config,
            format!("exported {} rows up to {}", a.rows, a.max_seq),
        );
        Ok(())
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: ExportConfig = ctx.settings.section("auto_export")?;
    handler_base::ensure_config!(cfg.threshold > 0, "auto_export.threshold must be > 0");
    handler_base::ensure_config!(cfg.timeout_s > 0.0, "auto_export timeouts must be > 0");
    handler_base::ensure_config!(
        (0.0..=1.0).contains(&cfg.value_blend),
        "auto_export.value_blend must be between 0 and 1, not {}",
        cfg.value_blend
    );
    let configs = ringrift_loop::configs(ctx)?;
    let jobs = Arc::new(RunnerJobs::from_ctx(ctx)?);
    let state = StateStore::open(&ctx.home, &INFO)?;
    let ledger = Ledger::open(&ctx.home)?.exporter(&INFO)?;
    let games = Arc::new(StoreGames(ctx.home.clone()));
    Ok(Arc::new(Exporter::new(
        cfg,
        configs,
        ctx.home.clone(),
        jobs,
        games,
        state,
        ledger,
    )))
}

#[async_trait::async_trait]
impl Handler for Exporter {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::NewGamesAvailable, EventType::SelfplayCompleted]
    }
    /// One call runs a job, bounded by its timeout.
    fn longest_call(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.cfg.timeout_s)
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.check_all(&*ctx.publisher).await
    }
    async fn handle_event(&self, ctx: &Context, _ev: &ringrift_proto::Event) -> anyhow::Result<()> {
        self.check_all(&*ctx.publisher).await
    }
    fn health_check(&self) -> HealthCheckResult {
        self.status.details(HealthCheckResult::running(format!(
            "threshold {} games",
            self.cfg.threshold
        )))
    }
}

#[cfg(test)]
mod in_process;
#[cfg(test)]
mod tests;
