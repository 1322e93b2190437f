//! `tournament_daemon`: round-robin tournaments among the recent models of a config
//! (the newest `recent` trained models plus the canonical one), on TRAINING_COMPLETED,
//! on tournament work items from the queue, and on a periodic ladder. The tournament job
//! records every game in the Elo store; the daemon publishes ELO_UPDATED per participant.
//! A TRAINING_COMPLETED is answered once (persisted by model SHA-256).
//!
//! Trained models live on the training nodes: the recent models are the newest
//! generations of the config in this home and on every peer's data_server (its
//! `models/<config>/`), those of peers copied first into
//! `models/.peers/<node>/<config>/<sha256 prefix>/<file>` (hidden: never served, never
//! taken for this home's own models; verified by the transfer engine, fetched once,
//! copies no longer among the recent ones removed). A peer that does not answer is
//! skipped with a warning.
//!
//! A leader-only duty: tournaments are claimed and played only while this node leads,
//! and the leader's token is confirmed right before each tournament job; a refused token
//! skips it (warning, `fence_refused` in health). The job carries the token
//! (`{fence_token}`; the Elo store refuses the records of a deposed leader), and while it
//! runs the daemon asks every `leader_poll_s` whether this node still leads under it: the
//! moment it does not, the job's process group is killed, nothing is published and the
//! round counts as refused. A TRAINING_COMPLETED that arrives while
//! this node does not lead is nacked on a node-local event log and ignored on a shared
//! one ([`ringrift_cluster::duty`]).

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_cluster::Leader;
use ringrift_cluster::duty::LeaderDuty;
use ringrift_contracts::TournamentReport;
use ringrift_contracts::payload::TournamentItem;
use ringrift_contracts::wire::parse_payload;
use ringrift_jobs::{CancellationToken, JobKind, JobRequest, Jobs, RunnerJobs};
use ringrift_ledger::StateStore;
use ringrift_loop::claim;
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::ConfigKey;
use ringrift_store::work_queue::{WorkKind, WorkQueue};
use ringrift_transfer::files::{Root, Wanted};
use ringrift_transfer::model_fetch::{generation_in_name, generations};
use ringrift_transfer::{Peer, Setup, TransferSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "tournament_daemon",
    about: "Round-robin tournaments among recent models",
    cycle_interval_s: Some(600.0),
    scope: Some(Scope::Cluster),
};

/// `[tournament_daemon]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TournamentConfig {
    pub recent: usize,
    pub games_per_pair: u32,
    /// Seconds between ladder rounds (the cycle).
    pub timeout_s: f64,
    pub lease_s: f64,
    /// Seconds between the checks of the leadership while a tournament job runs.
    pub leader_poll_s: f64,
}

impl Default for TournamentConfig {
    fn default() -> Self {
        TournamentConfig {
            recent: 4,
            games_per_pair: 20,
            timeout_s: 3600.0,
            lease_s: 600.0,
            leader_poll_s: 5.0,
        }
    }
}

/// The newest `n` trained models of `config` plus the canonical model, if present.
pub fn participants(home: &Path, config: ConfigKey, n: usize) -> Vec<PathBuf> {
    let mut out = ringrift_store::model_files::recent_models(home, config, n);
    out.extend(ringrift_store::model_files::canonical(home, config));
    out
}

pub struct Ladder {
    pub cfg: TournamentConfig,
    pub configs: Vec<ConfigKey>,
    pub home: PathBuf,
    pub worker: String,
    pub jobs: Arc<dyn Jobs>,
    pub queue: Arc<dyn WorkQueue>,
    pub state: StateStore,
    pub duty: LeaderDuty,
    status: StatusLine,
    busy: tokio::sync::Mutex<()>,
    /// The peers whose trained models play too (`None`: this home's only).
    remote: Option<Setup>,
}

/// Where the copies of peers' trained models are kept: `models/.peers`.
pub fn peers_dir(home: &Path) -> PathBuf {
    ringrift_store::paths::models_dir(home).join(".peers")
}

/// A recent model: this home's file, or one a peer serves.
enum Pick {
    Here(PathBuf),
    Peer(Peer, Wanted),
}

impl Ladder {
    pub fn new(
        cfg: TournamentConfig,
        configs: Vec<ConfigKey>,
        home: PathBuf,
        worker: String,
        jobs: Arc<dyn Jobs>,
        queue: Arc<dyn WorkQueue>,
        state: StateStore,
        duty: LeaderDuty,
    ) -> Self {
        Ladder {
            cfg,
            configs,
            home,
            worker,
            jobs,
            queue,
            state,
            duty,
            status: StatusLine::new("no tournament yet"),
            busy: tokio::sync::Mutex::new(()),
            remote: None,
        }
    }

    /// Plays the peers' trained models too, listed and fetched through `setup`.
    pub fn with_remote(mut self, setup: Setup) -> Self {
        self.remote = Some(setup);
        self
    }

    /// The newest `recent` trained models of `config` here and on the peers (theirs
    /// copied here), plus the canonical model.
    async fn participants(&self, config: ConfigKey) -> anyhow::Result<Vec<PathBuf>> {
        let (home, n) = (self.home.clone(), self.cfg.recent);
        let Some(setup) = &self.remote else {
            return Ok(tokio::task::spawn_blocking(move || participants(&home, config, n)).await?);
        };
        let h = home.clone();
        let local = tokio::task::spawn_blocking(move || {
            ringrift_store::model_files::recent_models(&h, config, n)
        })
        .await?;
        let mut pool: Vec<(u32, Pick)> = local
            .into_iter()
            .map(|p| {
                let g = generation_in_name(&p.file_name().unwrap_or_default().to_string_lossy());
                (g, Pick::Here(p))
            })
            .collect();
        for peer in setup.peers() {
            match generations(&setup.engine, &peer, config).await {
                Ok(v) => pool.extend(v.into_iter().take(n).map(|(path, e, g)| {
                    let w = Wanted {
                        root: Root::Models,
                        path,
                        sha256: e.sha256,
                        size: e.size,
                    };
                    (g, Pick::Peer(peer.clone(), w))
                })),
                Err(e) => {
                    tracing::warn!(peer = %peer.name, %config, error = %e, "tournament: the peer's models are not listed; playing without them");
                }
            }
        }
        // Newest first; among equal generations this home's first (a stable sort).
        pool.sort_by(|a, b| b.0.cmp(&a.0));
        pool.truncate(n);
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for (_, pick) in pool {
            match pick {
                Pick::Here(p) => out.push(p),
                Pick::Peer(peer, w) => {
                    let file = w.path.rsplit('/').next().unwrap_or(&w.path).to_owned();
                    let dir = peers_dir(&home)
                        .join(&peer.name)
                        .join(config.to_string())
                        .join(&w.sha256[..16.min(w.sha256.len())]);
                    let dest = dir.join(file);
                    keep.push(dir);
                    let d = dest.clone();
                    let have = tokio::task::spawn_blocking(move || d.is_file()).await?;
                    if !have && let Err(e) = setup.engine.fetch(&peer, &w, &dest).await {
                        tracing::warn!(peer = %peer.name, model = %w.path, error = %e, "tournament: the peer's model was not fetched; playing without it");
                        continue;
                    }
                    out.push(dest);
                }
            }
        }
        // Copies no longer among the recent ones go.
        let dir = peers_dir(&home);
        tokio::task::spawn_blocking(move || prune_copies(&dir, config, &keep)).await?;
        out.extend(ringrift_store::model_files::canonical(&home, config));
        Ok(out)
    }

    /// Runs one round-robin for `config` as `leader`; returns how many participants
    /// played, `None` when the leader's token was refused right before the job.
    pub async fn round(
        &self,
        config: ConfigKey,
        emit: &dyn Publish,
        tag: &str,
        leader: &Leader,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<usize>> {
        let _one = self.busy.lock().await;
        let models = self.participants(config).await?;
        if models.len() < 2 {
            self.status
                .set(format!("{config}: {} model(s), need 2", models.len()));
            return Ok(Some(0));
        }
        let req = JobRequest::new(
            JobKind::Tournament,
            format!("tournament:{config}"),
            Duration::from_secs_f64(self.cfg.timeout_s),
        )
        .var("config_key", config)
        .var("games", self.cfg.games_per_pair)
        // Elo match ids are `<job id>/<game index>`: one id per round's cause (model,
        // work item, stamp), so a round rerun after a crash counts no game twice.
        .var("job_id", format!("tournament:{config}:{tag}"))
        .var("fence_token", leader.token)
        .list("models", models.iter().map(|m| m.display()));
        if !self
            .duty
            .confirm(leader, &format!("tournament {config} ({tag})"))
            .await?
        {
            self.status.set(format!(
                "{config}: deposed (token {} refused), no tournament",
                leader.token
            ));
            return Ok(None);
        }
        // The job runs only while this node leads under the token (and, for a queue item,
        // holds its lease): cancelled (its process group killed) as soon as it does not.
        let cancel = stop.child_token();
        let run = self.jobs.run_until::<TournamentReport>(req, cancel.clone());
        tokio::pin!(run);
        let poll = Duration::from_secs_f64(self.cfg.leader_poll_s);
        let r = tokio::select! {
            r = &mut run => r?,
            why = self.duty.until_lost(leader, poll) => {
                cancel.cancel();
                if let Err(e) = run.await {
                    tracing::info!(error = %e, "tournament job stopped");
                }
                self.status.set(format!("{config}: tournament cancelled: {why}"));
                return Ok(None);
            }
        };
        let mut line = Vec::new();
        for s in &r.standings {
            let (name, elo) = (&s.name, s.elo);
            let p = wire::EloUpdated {
                participant: name.clone(),
                elo,
                previous_elo: 0.0,
                games: u32::try_from(s.games).unwrap_or(u32::MAX),
            };
            emit.publish_acked(event(
                wire::event::Payload::EloUpdated(p),
                format!("elo:{config}:{name}:{tag}"),
                &config.to_string(),
            ))
            .await?;
            line.push(format!("{name} {elo:.0}"));
        }
        let msg = format!("{config}: {} matches; {}", r.matches, line.join(", "));
        tracing::info!("tournament: {msg}");
        self.status.set(msg);
        Ok(Some(models.len()))
    }

    pub async fn on_trained(&self, ev: &Event, emit: &dyn Publish) -> anyhow::Result<()> {
        let wire::event::Payload::TrainingCompleted(t) = &ev.payload else {
            return Ok(());
        };
        let Ok(config) = ev.config_key.parse::<ConfigKey>() else {
            return Ok(());
        };
        let key = format!("after:{}", t.model_sha256);
        if self.state.get::<u64>(&key).await?.is_some() {
            return Ok(());
        }
        let what = format!("TRAINING_COMPLETED #{} ({config})", ev.seq);
        let leader = self.duty.for_event(&what).await?;
        if self
            .round(
                config,
                emit,
                &t.model_sha256,
                &leader,
                &CancellationToken::new(),
            )
            .await?
            .is_none()
        {
            return Err(self.duty.not_leading(&what));
        }
        self.state.put(&key, &1u64).await?;
        Ok(())
    }

    /// The periodic ladder, plus tournament items from the work queue (leader only).
    pub async fn cycle(&self, emit: &dyn Publish) -> anyhow::Result<()> {
        let Some(leader) = self.duty.mine().await? else {
            // A tournament this home still runs is a deposed leader's: its daemon was
            // killed mid-round (a kill -9 of the launcher leaves jobs running, to be
            // adopted), and nothing else would stop it now. The first cycle runs at start.
            match self.jobs.cancel_running("tournament:").await {
                Ok(stopped) if !stopped.is_empty() => {
                    tracing::warn!(
                        ?stopped,
                        "not the leader: stopped tournament jobs left running"
                    );
                    self.status
                        .set(format!("not the leader: stopped {}", stopped.join(", ")));
                }
                Ok(_) => self.status.set("not the leader: no tournaments".to_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, "not the leader: could not stop tournament jobs");
                    self.status.set(format!("not the leader: {e}"));
                }
            }
            return Ok(());
        };
        let stamp = ringrift_store::now_ms().to_string();
        while let Some(item) = claim::claim(
            &self.queue,
            &self.worker,
            &[WorkKind::Tournament],
            Duration::from_secs_f64(self.cfg.lease_s),
        )
        .await?
        {
            let targets: Vec<ConfigKey> = match item.config_key {
                Some(c) => vec![c],
                None => self.configs.clone(),
            };
            let lease = Duration::from_secs_f64(self.cfg.lease_s);
            let (it, me) = (&item, &leader);
            claim::run_leased(&self.queue, &self.worker, &item, lease, |stop| async move {
                let (item, leader) = (it, me);
                parse_payload::<TournamentItem>(&item.item_id, &item.payload)
                    .map_err(|e| e.to_string())?;
                let mut played = 0;
                for c in targets {
                    played += self
                        .round(c, emit, &item.item_id, &leader, &stop)
                        .await
                        .map_err(|e| format!("{e:#}"))?
                        .ok_or_else(|| format!("leadership token {} refused", leader.token))?;
                }
                Ok(serde_json::json!({"participants": played}))
            })
            .await?
            .map_err(|e| anyhow::anyhow!(e))?;
        }
        for &c in &self.configs {
            if self
                .round(c, emit, &stamp, &leader, &CancellationToken::new())
                .await?
                .is_none()
            {
                break;
            }
        }
        Ok(())
    }
}

/// Removes the copies of `config`'s peer models under `dir` (`models/.peers`) whose
/// directory is not in `keep`; what cannot be read or removed is logged and left.
fn prune_copies(dir: &Path, config: ConfigKey, keep: &[PathBuf]) {
    let nodes = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "tournament: copies not pruned");
            return;
        }
    };
    for node in nodes.flatten() {
        let cdir = node.path().join(config.to_string());
        for copy in std::fs::read_dir(&cdir).into_iter().flatten().flatten() {
            let p = copy.path();
            if !keep.contains(&p)
                && let Err(e) = std::fs::remove_dir_all(&p)
            {
                tracing::warn!(copy = %p.display(), error = %e, "tournament: old copy not removed");
            }
        }
    }
}

pub struct TournamentDaemon(pub Ladder);

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: TournamentConfig = ctx.settings.section("tournament_daemon")?;
    handler_base::ensure_config!(
        cfg.recent >= 1 && cfg.games_per_pair >= 1,
        "tournament_daemon: recent and games_per_pair must be >= 1"
    );
    handler_base::ensure_config!(
        cfg.timeout_s > 0.0 && cfg.lease_s >= 1.0 && cfg.leader_poll_s > 0.0,
        "tournament_daemon: intervals must be > 0"
    );
    let configs = ringrift_loop::configs(ctx)?;
    let queue = ringrift_nats::open_node_queue(ctx)?;
    let jobs = Arc::new(RunnerJobs::from_ctx(ctx)?);
    let state = StateStore::open(&ctx.home, &INFO)?;
    let duty = LeaderDuty::from_ctx(ctx)?;
    let setup = Setup::new(ctx, INFO.name, TransferSettings::default())?;
    Ok(Arc::new(TournamentDaemon(
        Ladder::new(
            cfg,
            configs,
            ctx.home.clone(),
            ctx.source(),
            jobs,
            queue,
            state,
            duty,
        )
        .with_remote(setup),
    )))
}

#[async_trait::async_trait]
impl Handler for TournamentDaemon {
    /// A leader duty on one consumer for the cluster: only the leader's copy pulls.
    fn pull_gate(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.0.duty.pull_gate())
    }
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::TrainingCompleted]
    }
    /// One call runs a job, bounded by its timeout.
    fn longest_call(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0.cfg.timeout_s)
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.0.cycle(&*ctx.publisher).await
    }
    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        self.0.on_trained(ev, &*ctx.publisher).await
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.0.status.get())
            .detail("fence_refused", self.0.duty.refused())
    }
}

#[cfg(test)]
mod in_process;
#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use ringrift_cluster::Leadership;
    use ringrift_contracts::example;
    use ringrift_contracts::wire::{payload_json, report_json};
    use ringrift_jobs::FakeJobs;
    use ringrift_store::paths;
    use ringrift_store::work_queue::SqliteWorkQueue;
    use ringrift_store::work_queue::{NewWork, WorkStatus};

    /// The leader of the test cluster: node "me", token 7.
    fn me() -> Leader {
        Leader {
            node: "me".into(),
            token: 7,
        }
    }

    fn ladder(dir: &Path, jobs: Arc<FakeJobs>) -> Ladder {
        ladder_as(dir, jobs, "me")
    }

    fn ladder_as(dir: &Path, jobs: Arc<FakeJobs>, this: &str) -> Ladder {
        let queue: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&dir.join("wq.db")).unwrap());
        Ladder::new(
            TournamentConfig {
                recent: 2,
                ..Default::default()
            },
            vec!["hex8_2p".parse().unwrap()],
            dir.to_owned(),
            "td@test".into(),
            jobs,
            queue,
            StateStore::open(dir, &INFO).unwrap(),
            LeaderDuty::new(Leadership::fixed(this, Some(me()))),
        )
    }

    fn fake() -> Arc<FakeJobs> {
        FakeJobs::new(|r| {
            let n = r.lists["models"].len();
            let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            let standings: Vec<(&str, f64)> = names
                .iter()
                .enumerate()
                .map(|(i, m)| (m.as_str(), 1500.0 + i as f64))
                .collect();
            let t = example::tournament(r.vars["config_key"].parse().unwrap(), &standings);
            report_json(r.kind, &t).map_err(|e| e.to_string())
        })
    }

    fn model(dir: &Path, name: &str) {
        let d = paths::models_dir(dir).join("hex8_2p");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), b"m").unwrap();
    }

    /// The coordinator trains nothing: its home has only the canonical model, and the
    /// trained generations are on the training node `train`, served by its data server.
    /// The round plays the newest two of them (copied under `models/.peers/train/`) and
    /// the canonical model; a second round downloads nothing again; when `train` has a
    /// newer generation, the oldest copy is removed.
    #[tokio::test]
    async fn the_recent_models_of_a_training_node_play_on_the_coordinator() {
        use ringrift_test_support::data_server as testing;
        let key: ConfigKey = "hex8_2p".parse().unwrap();
        let train = testing::server("train").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cluster.toml"),
            testing::cluster(&[
                ("test", "\"coordinator\"", 1, false),
                ("train", "\"training\"", train.port, false),
            ]),
        )
        .unwrap();
        let (ctx, _) = Context::for_test(INFO.name, dir.path(), "").unwrap();
        let setup = Setup::new(&ctx, INFO.name, TransferSettings::default()).unwrap();
        let jobs = fake();
        let l = ladder(dir.path(), jobs.clone()).with_remote(setup);
        let trained = paths::models_dir(train.home.path()).join("hex8_2p");
        std::fs::create_dir_all(&trained).unwrap();
        let put = |g: u32| {
            let (_, bytes) = ringrift_store::models::example(key, g, &[g as u8; 70_000]).unwrap();
            std::fs::write(trained.join(format!("gen{g:04}_w{g}.rrm")), bytes).unwrap();
        };
        put(1);
        put(2);
        put(3);
        std::fs::create_dir_all(paths::models_dir(dir.path())).unwrap();
        std::fs::write(
            paths::models_dir(dir.path()).join("canonical_hex8_2p.rrm"),
            b"c",
        )
        .unwrap();
        let rec = Recorded::default();
        assert_eq!(
            l.round(key, &rec, "t1", &me(), &CancellationToken::new())
                .await
                .unwrap(),
            Some(3)
        );
        let played = |i: usize| -> Vec<String> {
            jobs.calls()[i].lists["models"]
                .iter()
                .map(|m| m.rsplit('/').next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            played(0),
            ["gen0003_w3.rrm", "gen0002_w2.rrm", "canonical_hex8_2p.rrm"]
        );
        let copies = peers_dir(dir.path()).join("train").join("hex8_2p");
        let copy3 = jobs.calls()[0].lists["models"][0].clone();
        assert!(copy3.starts_with(&copies.display().to_string()), "{copy3}");
        let mtime = |p: &str| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = mtime(&copy3);
        assert_eq!(
            l.round(key, &rec, "t2", &me(), &CancellationToken::new())
                .await
                .unwrap(),
            Some(3)
        );
        assert_eq!(mtime(&copy3), before, "not downloaded again");
        put(4);
        assert_eq!(
            l.round(key, &rec, "t3", &me(), &CancellationToken::new())
                .await
                .unwrap(),
            Some(3)
        );
        assert_eq!(
            played(2),
            ["gen0004_w4.rrm", "gen0003_w3.rrm", "canonical_hex8_2p.rrm"]
        );
        assert_eq!(
            std::fs::read_dir(&copies).unwrap().count(),
            2,
            "the copy of generation 2 removed"
        );
    }

    #[tokio::test]
    async fn needs_two_models_then_plays_the_recent_ones_plus_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = fake();
        let l = ladder(dir.path(), jobs.clone());
        let rec = Recorded::default();
        model(dir.path(), "gen0001_w1.rrm");
        assert_eq!(
            l.round(
                "hex8_2p".parse().unwrap(),
                &rec,
                "t",
                &me(),
                &CancellationToken::new()
            )
            .await
            .unwrap(),
            Some(0)
        );
        model(dir.path(), "gen0002_w2.rrm");
        model(dir.path(), "gen0003_w3.rrm");
        std::fs::write(
            paths::models_dir(dir.path()).join("canonical_hex8_2p.rrm"),
            b"c",
        )
        .unwrap();
        assert_eq!(
            l.round(
                "hex8_2p".parse().unwrap(),
                &rec,
                "t",
                &me(),
                &CancellationToken::new()
            )
            .await
            .unwrap(),
            Some(3),
            "2 recent + canonical"
        );
        assert_eq!(rec.events().len(), 3, "one ELO_UPDATED per participant");
        let argv = ringrift_jobs::default_argv(&jobs.calls()[0]).unwrap();
        assert!(argv.iter().any(|a| a.ends_with("canonical_hex8_2p.rrm")));
        let args = argv.join(" ");
        assert!(
            args.contains("--job-id tournament:hex8_2p:t --fence-token 7 tournament")
                && args.contains("--games-per-pair 20 --model /"),
            "{args}"
        );
    }

    /// A follower's cycle stops the tournament jobs its home still runs (a deposed
    /// leader's, left by a daemon killed mid-round); the leader's does not.
    #[tokio::test]
    async fn a_follower_cycle_stops_tournament_jobs_left_running() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = fake();
        ladder_as(dir.path(), jobs.clone(), "other")
            .cycle(&Recorded::default())
            .await
            .unwrap();
        assert_eq!(
            *jobs.cancels.lock().unwrap(),
            vec!["tournament:".to_owned()]
        );
        let jobs = fake();
        ladder(dir.path(), jobs.clone())
            .cycle(&Recorded::default())
            .await
            .unwrap();
        assert!(jobs.cancels.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn training_completed_once_and_queue_items_are_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = fake();
        let l = ladder(dir.path(), jobs.clone());
        model(dir.path(), "gen0001_w1.rrm");
        model(dir.path(), "gen0002_w2.rrm");
        let t = wire::TrainingCompleted {
            model_sha256: "s2".into(),
            ..Default::default()
        };
        let ev = Event::new(wire::event::Payload::TrainingCompleted(t)).with_config("hex8_2p");
        let rec = Recorded::default();
        l.on_trained(&ev, &rec).await.unwrap();
        l.on_trained(&ev, &rec).await.unwrap();
        assert_eq!(jobs.calls().len(), 1);
        let id = l
            .queue
            .enqueue(&NewWork::new(
                WorkKind::Tournament,
                None,
                1,
                payload_json(&TournamentItem {}).unwrap(),
            ))
            .unwrap();
        l.cycle(&rec).await.unwrap();
        assert_eq!(
            l.queue.get(&id).unwrap().unwrap().status,
            WorkStatus::Completed
        );
        assert_eq!(
            jobs.calls().len(),
            3,
            "the queued round and the ladder round"
        );
    }

    fn trained(sha: &str) -> Event {
        let t = wire::TrainingCompleted {
            model_sha256: sha.into(),
            ..Default::default()
        };
        Event::new(wire::event::Payload::TrainingCompleted(t)).with_config("hex8_2p")
    }

    fn tournament_item(l: &Ladder) -> String {
        l.queue
            .enqueue(&NewWork::new(
                WorkKind::Tournament,
                None,
                1,
                payload_json(&TournamentItem {}).unwrap(),
            ))
            .unwrap()
    }

    /// A node that does not lead plays nothing: a TRAINING_COMPLETED that reaches it is
    /// nacked (and not recorded, so the redelivery plays), never acked; its cycle leaves
    /// tournament items in the queue.
    #[tokio::test]
    async fn a_follower_plays_no_tournament() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = fake();
        model(dir.path(), "gen0001_w1.rrm");
        model(dir.path(), "gen0002_w2.rrm");
        let rec = Recorded::default();
        let nacking = ladder_as(dir.path(), jobs.clone(), "other");
        let err = nacking
            .on_trained(&trained("s2"), &rec)
            .await
            .expect_err("nacked");
        assert!(err.to_string().contains("does not lead"), "{err}");
        let id = tournament_item(&nacking);
        nacking.cycle(&rec).await.unwrap();
        assert_eq!(
            nacking.queue.get(&id).unwrap().unwrap().status,
            WorkStatus::Pending,
            "left for the leader"
        );
        assert!(jobs.calls().is_empty(), "no tournament job ran");
        assert!(rec.events().is_empty());
        // The redelivery, once this node leads, plays.
        ladder(dir.path(), jobs.clone())
            .on_trained(&trained("s2"), &rec)
            .await
            .unwrap();
        assert_eq!(jobs.calls().len(), 1);
    }

    /// Leadership lost while a tournament job runs: the job (a real process under the
    /// job runner that would sleep until its 90 s deadline) is killed as soon as the
    /// watch sees the loss, nothing is published and the loss is counted. The job got
    /// the token.
    #[tokio::test]
    async fn a_tournament_job_is_cancelled_when_leadership_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        model(home, "gen0001_w1.rrm");
        model(home, "gen0002_w2.rrm");
        let started = home.join("started");
        let script = home.join("job.sh");
        std::fs::write(
            &script,
            format!(
                "printf '%s %s' \"$$\" \"$2\" > {0}.tmp && mv {0}.tmp {0}\nexec sleep 600\n",
                started.display()
            ),
        )
        .unwrap();
        let templates = ringrift_jobs::JobTemplates {
            tournament: format!("sh {} {{result}} {{fence_token}}", script.display()),
            ..Default::default()
        };
        let jobs = Arc::new(RunnerJobs::new(home, &templates).unwrap());
        let (leadership, switch) = Leadership::manual("me", Some(me()));
        let queue: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&home.join("wq.db")).unwrap());
        let l = Ladder::new(
            TournamentConfig {
                recent: 2,
                leader_poll_s: 0.1,
                // Without the watch the job would end only at this deadline (the
                // runtime waits for it), and the test fails at its own 60 s first.
                timeout_s: 90.0,
                ..Default::default()
            },
            vec!["hex8_2p".parse().unwrap()],
            home.to_owned(),
            "td@test".into(),
            jobs,
            queue,
            StateStore::open(home, &INFO).unwrap(),
            LeaderDuty::new(leadership),
        );
        let rec = Recorded::default();
        // Once the job runs, another node takes over with token 8.
        let depose = async {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let seen = loop {
                if let Ok(s) = std::fs::read_to_string(&started) {
                    break s;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the job never started"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            switch.set(Some(Leader {
                node: "other".into(),
                token: 8,
            }));
            seen
        };
        let (leader, stop) = (me(), CancellationToken::new());
        let round = tokio::time::timeout(
            Duration::from_secs(60),
            l.round("hex8_2p".parse().unwrap(), &rec, "t", &leader, &stop),
        );
        let (played, seen) = tokio::join!(round, depose);
        let played = played.expect("the round ends when leadership is lost, not after the job");
        assert_eq!(played.unwrap(), None, "the round counts as refused");
        let (pid, token) = seen.split_once(' ').unwrap();
        assert_eq!(token, "7", "the job got the leader's token");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the job's process {pid} was killed"
        );
        assert!(rec.events().is_empty(), "{:?}", rec.events());
        assert_eq!(
            TournamentDaemon(l).health_check().details["fence_refused"],
            "1"
        );
    }

    /// A deposed leader (its token no longer the leader's) runs no tournament job and
    /// counts the refusal; a TRAINING_COMPLETED is not recorded as answered.
    #[tokio::test]
    async fn a_refused_token_runs_no_tournament_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = fake();
        model(dir.path(), "gen0001_w1.rrm");
        model(dir.path(), "gen0002_w2.rrm");
        let l = ladder(dir.path(), jobs.clone());
        let stale = Leader {
            node: "me".into(),
            token: 6,
        };
        let rec = Recorded::default();
        assert_eq!(
            l.round(
                "hex8_2p".parse().unwrap(),
                &rec,
                "t",
                &stale,
                &CancellationToken::new()
            )
            .await
            .unwrap(),
            None
        );
        assert!(jobs.calls().is_empty());
        assert!(rec.events().is_empty());
        let d = TournamentDaemon(l);
        assert_eq!(d.health_check().details["fence_refused"], "1");
    }
}
