//! `job_scheduler`: claims selfplay items from the work queue and runs them as jobs
//! within the local resource slots (CPU cores, or GPUs when configured), each in its own
//! process group, PID-tracked by the job runner. After each selfplay job it publishes
//! SELFPLAY_COMPLETED and NEW_GAMES_AVAILABLE.
//!
//! Crashed workers: every cycle returns items with expired leases to the queue, and a
//! restarted scheduler resumes the items it still holds (the job runner adopts a job
//! still running under the item's key instead of starting a second one). The model an
//! item plays with is chosen once and saved before its job starts, so a resumed item asks
//! for the same job even if a promotion came in between: the job runner then hands over
//! the outcome of a job that finished while no scheduler watched, instead of playing the
//! item's games again with the new model.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::SelfplayReport;
use ringrift_contracts::payload::SelfplayItem;
use ringrift_contracts::wire::parse_payload;
use ringrift_jobs::{JobKind, JobRequest, Jobs, RunnerJobs};
use ringrift_ledger::StateStore;
use ringrift_loop::claim;
use ringrift_proto::wire;
use ringrift_store::ConfigKey;
use ringrift_store::work_queue::{WorkItem, WorkKind, WorkQueue};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "job_scheduler",
    about: "Run queued selfplay jobs within local resource slots",
    cycle_interval_s: Some(5.0),
    scope: Some(Scope::Node),
};

/// `[job_scheduler]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedConfig {
    /// Jobs at once; 0 = one per slot of the kind selfplay takes (`[jobs.slots]`: CPU
    /// cores, or the node's GPUs).
    pub slots: usize,
    pub threads_per_job: usize,
    pub default_games: u64,
    pub lease_s: f64,
    pub timeout_s: f64,
    /// Search depth of selfplay (`{depth}` of the selfplay template).
    pub depth: u32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            slots: 0,
            threads_per_job: 1,
            default_games: 200,
            lease_s: 300.0,
            timeout_s: 3600.0,
            depth: 2,
        }
    }
}

pub struct Scheduler {
    pub cfg: SchedConfig,
    pub slots: usize,
    pub worker: String,
    pub home: PathBuf,
    pub queue: Arc<dyn WorkQueue>,
    pub jobs: Arc<dyn Jobs>,
    /// The model each held item plays with (`model:<item id>`), until the item is done.
    pub state: StateStore,
    running: Mutex<HashSet<String>>,
    /// Serialises `fill` (cycle and events both call it) so slots are never overbooked.
    filling: tokio::sync::Mutex<()>,
    done: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl Scheduler {
    pub fn new(
        cfg: SchedConfig,
        worker: String,
        home: PathBuf,
        queue: Arc<dyn WorkQueue>,
        jobs: Arc<dyn Jobs>,
        state: StateStore,
    ) -> Arc<Self> {
        let slots = if cfg.slots == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            cfg.slots
        };
        Arc::new(Scheduler {
            cfg,
            slots,
            worker,
            home,
            queue,
            jobs,
            state,
            running: Mutex::new(HashSet::new()),
            filling: tokio::sync::Mutex::new(()),
            done: 0.into(),
            failed: 0.into(),
        })
    }

    fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether a slot of this scheduler runs the item now.
    fn runs(&self, item_id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(item_id)
    }

    /// Requeues expired leases, then fills free slots; returns the spawned tasks.
    pub async fn fill(
        self: &Arc<Self>,
        emit: Arc<dyn Publish>,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let _one = self.filling.lock().await;
        let q = self.queue.clone();
        let n = tokio::task::spawn_blocking(move || q.requeue_expired()).await??;
        if n > 0 {
            tracing::warn!(
                items = n,
                "requeued items whose worker stopped renewing its lease"
            );
        }
        let (q, w) = (self.queue.clone(), self.worker.clone());
        let held = tokio::task::spawn_blocking(move || q.held_by(&w)).await??;
        let mut tasks = Vec::new();
        let mut resume: Vec<WorkItem> = held
            .into_iter()
            .filter(|i| i.kind == WorkKind::Selfplay)
            .collect();
        while self.running() < self.slots {
            let item = match resume.pop() {
                Some(i) if self.runs(&i.item_id) => continue,
                // Listed as held before its task may have finished it (the listing is not
                // atomic with the tasks; seen in the shipped cluster: an item played twice
                // on one node): resumed only while this worker's claim still stands, which
                // the lease renewal checks (and renews).
                Some(i) => {
                    let (q, w, id) = (self.queue.clone(), self.worker.clone(), i.item_id.clone());
                    let lease = Duration::from_secs_f64(self.cfg.lease_s);
                    match tokio::task::spawn_blocking(move || q.heartbeat(&id, &w, lease)).await? {
                        Ok(true) => i,
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(item = %i.item_id, error = %e, "held item not resumed: its claim could not be checked");
                            continue;
                        }
                    }
                }
                None => match claim::claim(
                    &self.queue,
                    &self.worker,
                    &[WorkKind::Selfplay],
                    Duration::from_secs_f64(self.cfg.lease_s),
                )
                .await?
                {
                    // Delivered again to this worker while a slot runs it (its heartbeats
                    // came late): the queue counts no attempt and the running task keeps
                    // it; a second run would do the work twice.
                    Some(i) if self.runs(&i.item_id) => continue,
                    Some(i) => i,
                    None => break,
                },
            };
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(item.item_id.clone());
            let (me, emit) = (self.clone(), emit.clone());
            tasks.push(tokio::spawn(async move {
                let id = item.item_id.clone();
                if let Err(e) = me.run_item(item, emit.as_ref()).await {
                    tracing::error!(item = %id, error = format!("{e:#}"), "work item bookkeeping failed");
                }
                me.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            }));
        }
        Ok(tasks)
    }

    async fn run_item(&self, item: WorkItem, emit: &dyn Publish) -> anyhow::Result<()> {
        let lease = Duration::from_secs_f64(self.cfg.lease_s);
        let played_key = played_key(&item.item_id);
        let outcome = claim::run_leased(&self.queue, &self.worker, &item, lease, |stop| async {
            self.selfplay(&item, emit, stop)
                .await
                .map_err(|e| format!("{e:#}"))
        })
        .await?;
        self.state.delete(&model_key(&item.item_id)).await?;
        match outcome {
            Ok(_) => {
                self.state.delete(&played_key).await?;
                self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            }
            Err(e) => {
                tracing::error!(item = %item.item_id, error = %e, "selfplay job failed");
                self.failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            }
        };
        Ok(())
    }

    async fn selfplay(
        &self,
        item: &WorkItem,
        emit: &dyn Publish,
        stop: ringrift_jobs::CancellationToken,
    ) -> anyhow::Result<serde_json::Value> {
        let config: ConfigKey = item
            .config_key
            .ok_or_else(|| anyhow::anyhow!("selfplay item {} has no config key", item.item_id))?;
        let p: SelfplayItem = parse_payload(&item.item_id, &item.payload)?;
        let games = p.games.unwrap_or(self.cfg.default_games);
        let mut req = JobRequest::new(
            JobKind::Selfplay,
            format!("selfplay:{}", item.item_id),
            Duration::from_secs_f64(self.cfg.timeout_s),
        )
        .var("config_key", config)
        .var("games", games)
        .pin(p.gpu())
        .var("threads", self.cfg.threads_per_job)
        .var("depth", self.cfg.depth);
        req = req.opt("model", self.model_for(&item.item_id, config).await?);
        // An item this worker played whose outcome the queue did not take (a cut link, a
        // lease that ran out first, the daemon killed before it recorded it) and that
        // comes back to it: its report is kept from the moment the job ends, so it is
        // announced (the same event ids: deduplicated) and recorded, not played again.
        let played_key = played_key(&item.item_id);
        let r: SelfplayReport = match self.state.get::<SelfplayReport>(&played_key).await? {
            Some(r) => {
                tracing::info!(item = %item.item_id, "played here before; recording that outcome, not playing again");
                r
            }
            None => {
                let r: SelfplayReport = self.jobs.run_until(req, stop).await?;
                self.state.put(&played_key, &r).await?;
                r
            }
        };
        let key = config.to_string();
        let played = r.games as u64;
        let db = r.db.display().to_string();
        let sp = wire::SelfplayCompleted {
            games: played,
            moves: r.moves,
            model: r.model.clone().unwrap_or_default(),
            db_path: db.clone(),
            duration_s: r.elapsed_s,
        };
        emit.publish_acked(event(
            wire::event::Payload::SelfplayCompleted(sp),
            format!("selfplay:{}", item.item_id),
            &key,
        ))
        .await?;
        let ng = wire::NewGamesAvailable {
            new_games: played,
            total_games: r.max_seq.max(0) as u64,
            db_path: db,
            node: self.worker.clone(),
        };
        emit.publish_acked(event(
            wire::event::Payload::NewGamesAvailable(ng),
            format!("games:{}", item.item_id),
            &key,
        ))
        .await?;
        tracing::info!(%config, games = played, item = %item.item_id, "selfplay done");
        Ok(serde_json::to_value(&r)?)
    }

    /// The model `item` plays with: the one saved when the item first ran, else the
    /// current model (canonical, else the newest generation; `None` = the null model),
    /// saved now.
    pub async fn model_for(&self, item: &str, config: ConfigKey) -> anyhow::Result<Option<String>> {
        let key = model_key(item);
        if let Some(chosen) = self.state.get::<Option<String>>(&key).await? {
            return Ok(chosen);
        }
        let home = self.home.clone();
        let model = tokio::task::spawn_blocking(move || {
            ringrift_store::model_files::current_model(&home, config)
        })
        .await?
        .map(|m| m.display().to_string());
        self.state.put(&key, &model).await?;
        Ok(model)
    }
}

fn model_key(item: &str) -> String {
    format!("model:{item}")
}

/// The outcome of an item played here and not yet recorded by the queue.
fn played_key(item: &str) -> String {
    format!("played:{item}")
}

pub struct JobScheduler(pub Arc<Scheduler>);

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: SchedConfig = ctx.settings.section("job_scheduler")?;
    handler_base::ensure_config!(
        cfg.lease_s >= 1.0 && cfg.timeout_s > 0.0,
        "job_scheduler: lease_s >= 1 and timeouts > 0"
    );
    handler_base::ensure_config!(
        cfg.threads_per_job >= 1 && cfg.default_games >= 1,
        "job_scheduler: threads_per_job and default_games must be >= 1"
    );
    let queue = ringrift_nats::open_node_queue(ctx)?;
    let jobs = Arc::new(RunnerJobs::from_ctx(ctx)?);
    let mut cfg = cfg;
    if cfg.slots == 0 {
        // One selfplay job per slot of the kind its template declares (GPUs or cores).
        let (kind, n) = jobs.slots_for(JobKind::Selfplay);
        tracing::info!(slots = n, %kind, "selfplay slots");
        cfg.slots = usize::try_from(n).unwrap_or(1).max(1);
    }
    Ok(Arc::new(JobScheduler(Scheduler::new(
        cfg,
        ctx.source(),
        ctx.home.clone(),
        queue,
        jobs,
        StateStore::open(&ctx.home, &INFO)?,
    ))))
}

#[async_trait::async_trait]
impl Handler for JobScheduler {
    /// WORK_QUEUED wakes the scheduler at once; the cycle is the fallback poll.
    fn subscriptions(&self) -> Vec<ringrift_proto::EventType> {
        vec![ringrift_proto::EventType::WorkQueued]
    }
    /// One call runs a job, bounded by its timeout.
    fn longest_call(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0.cfg.timeout_s)
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.0.fill(ctx.publisher.clone()).await?;
        Ok(())
    }
    async fn handle_event(&self, ctx: &Context, ev: &ringrift_proto::Event) -> anyhow::Result<()> {
        match &ev.payload {
            wire::event::Payload::WorkQueued(w) if w.kind == "selfplay" => {
                self.run_cycle(ctx).await
            }
            _ => Ok(()),
        }
    }
    fn health_check(&self) -> HealthCheckResult {
        use std::sync::atomic::Ordering::Relaxed;
        HealthCheckResult::running(format!("{}/{} slots busy", self.0.running(), self.0.slots))
            .detail("jobs_done", self.0.done.load(Relaxed))
            .detail("jobs_failed", self.0.failed.load(Relaxed))
    }
}

#[cfg(test)]
mod in_process;
#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use ringrift_contracts::wire::{payload_json, report_json};
    use ringrift_jobs::FakeJobs;
    use ringrift_store::work_queue::SqliteWorkQueue;
    use ringrift_store::work_queue::{NewWork, WorkStatus};

    fn setup(dir: &std::path::Path, slots: usize, jobs: Arc<FakeJobs>) -> Arc<Scheduler> {
        let queue: Arc<dyn WorkQueue> =
            Arc::new(SqliteWorkQueue::open(&dir.join("wq.db")).unwrap());
        Scheduler::new(
            SchedConfig {
                slots,
                ..Default::default()
            },
            "js@test".into(),
            dir.to_owned(),
            queue,
            jobs,
            StateStore::open(dir, &INFO).unwrap(),
        )
    }

    /// A selfplay report of `games` games.
    fn report(config: &str, games: usize) -> SelfplayReport {
        SelfplayReport {
            config_key: config.parse().unwrap(),
            games,
            moves: 100,
            wins_by_seat: vec![games as u64, 0],
            draws: 0,
            mean_length: 20.0,
            elapsed_s: 0.1,
            games_per_s: 10.0,
            moves_per_s: 1000.0,
            threads: 1,
            db: "/g.db".into(),
            model: None,
            model_sha256: None,
            max_seq: 5,
        }
    }

    fn reply(req: &JobRequest, games: usize) -> Result<serde_json::Value, String> {
        let r = report(&req.vars["config_key"], games);
        report_json(req.kind, &r).map_err(|e| e.to_string())
    }

    /// One item, claimed by this worker (`js@test`) as if its run had been cut short.
    fn held_item(s: &Scheduler) -> String {
        let id = add(s, 1).remove(0);
        s.queue
            .claim("js@test", &[WorkKind::Selfplay], Duration::from_secs(3600))
            .unwrap()
            .unwrap();
        id
    }

    fn add(s: &Scheduler, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                s.queue
                    .enqueue(&NewWork::new(
                        WorkKind::Selfplay,
                        Some("hex8_2p".parse().unwrap()),
                        1,
                        payload_json(&SelfplayItem {
                            games: Some(5),
                            reason: None,
                            device: None,
                        })
                        .unwrap(),
                    ))
                    .unwrap()
            })
            .collect()
    }

    /// Holds every fake job until opened, and records how many ran at once.
    #[derive(Default)]
    struct Gate {
        state: std::sync::Mutex<Held>,
        changed: std::sync::Condvar,
    }
    #[derive(Default)]
    struct Held {
        open: bool,
        running: usize,
        most: usize,
    }
    impl Gate {
        fn pass(&self) {
            let mut g = self.state.lock().unwrap();
            g.running += 1;
            g.most = g.most.max(g.running);
            self.changed.notify_all();
            let wait = Duration::from_secs(30);
            g = self
                .changed
                .wait_timeout_while(g, wait, |g| !g.open)
                .unwrap()
                .0;
            assert!(g.open, "the test never opened the gate");
            g.running -= 1;
        }
        fn await_running(&self, n: usize) {
            let g = self.state.lock().unwrap();
            let wait = Duration::from_secs(30);
            let g = self
                .changed
                .wait_timeout_while(g, wait, |g| g.running < n)
                .unwrap()
                .0;
            assert_eq!(g.running, n, "jobs running");
        }
        fn open(&self) {
            self.state.lock().unwrap().open = true;
            self.changed.notify_all();
        }
        fn most(&self) -> usize {
            self.state.lock().unwrap().most
        }
    }

    // Fake jobs block their worker thread while held, so the runtime needs threads to spare.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn runs_no_more_jobs_than_slots_and_reports_games() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        let held = gate.clone();
        let jobs = FakeJobs::new(move |r| {
            held.pass();
            reply(r, r.vars["games"].parse().unwrap())
        });
        let s = setup(dir.path(), 2, jobs.clone());
        let ids = add(&s, 3);
        let rec: Arc<Recorded> = Arc::new(Recorded::default());
        let tasks = s.fill(rec.clone()).await.unwrap();
        assert_eq!(tasks.len(), 2, "two slots");
        let g = gate.clone();
        tokio::task::spawn_blocking(move || g.await_running(2))
            .await
            .unwrap();
        assert!(
            s.fill(rec.clone()).await.unwrap().is_empty(),
            "no slot is free while two jobs run"
        );
        gate.open();
        for t in tasks {
            t.await.unwrap();
        }
        let tasks = s.fill(rec.clone()).await.unwrap();
        assert_eq!(tasks.len(), 1);
        for t in tasks {
            t.await.unwrap();
        }
        for id in ids {
            assert_eq!(
                s.queue.get(&id).unwrap().unwrap().status,
                WorkStatus::Completed
            );
        }
        let games: u64 = rec
            .payloads()
            .iter()
            .filter_map(|p| {
                if let wire::event::Payload::NewGamesAvailable(g) = p {
                    Some(g.new_games)
                } else {
                    None
                }
            })
            .sum();
        assert_eq!(games, 15);
        assert_eq!(gate.most(), 2, "jobs running at once");
        assert!(
            jobs.calls()
                .iter()
                .all(|c| c.key.starts_with("selfplay:") && c.vars["games"] == "5")
        );
    }

    struct ManualClock(std::sync::atomic::AtomicI64);
    impl ringrift_store::work_queue::Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn items_of_a_dead_worker_are_requeued_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = FakeJobs::new(|r| reply(r, 1));
        let clock = Arc::new(ManualClock(1_000_000.into()));
        let queue: Arc<dyn WorkQueue> = Arc::new(
            SqliteWorkQueue::with_clock(&dir.path().join("wq.db"), clock.clone()).unwrap(),
        );
        let s = Scheduler::new(
            SchedConfig {
                slots: 1,
                ..Default::default()
            },
            "js@test".into(),
            dir.path().to_owned(),
            queue,
            jobs,
            StateStore::open(dir.path(), &INFO).unwrap(),
        );
        let id = add(&s, 1).remove(0);
        s.queue
            .claim(
                "dead-worker",
                &[WorkKind::Selfplay],
                Duration::from_secs(60),
            )
            .unwrap()
            .unwrap();
        clock
            .0
            .fetch_add(61_000, std::sync::atomic::Ordering::SeqCst);
        for t in s.fill(Arc::new(Recorded::default())).await.unwrap() {
            t.await.unwrap();
        }
        assert_eq!(
            s.queue.get(&id).unwrap().unwrap().status,
            WorkStatus::Completed
        );
    }

    /// A listing of held items taken before one of them was finished.
    struct StaleListing(Vec<WorkItem>);

    impl ringrift_test_support::queue::Faults for StaleListing {
        fn held_by(&self, mut listed: Vec<WorkItem>) -> Vec<WorkItem> {
            listed.extend(self.0.iter().cloned());
            listed
        }
    }

    /// An item this worker finished after the scheduler listed what it holds is not
    /// started again (the listing and the tasks are not one step).
    #[tokio::test]
    async fn an_item_finished_after_the_held_listing_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = FakeJobs::new(|r| reply(r, 1));
        let s = setup(dir.path(), 1, jobs.clone());
        let id = held_item(&s);
        let listed = s.queue.held_by("js@test").unwrap();
        assert_eq!(listed.len(), 1);
        assert!(
            s.queue
                .complete(&id, "js@test", &serde_json::json!({}))
                .unwrap()
        );
        let s2 = Scheduler::new(
            SchedConfig {
                slots: 1,
                ..Default::default()
            },
            "js@test".into(),
            dir.path().to_owned(),
            Arc::new(ringrift_test_support::queue::Faulty {
                queue: s.queue.clone(),
                faults: StaleListing(listed),
            }),
            jobs.clone(),
            StateStore::open(dir.path(), &INFO).unwrap(),
        );
        for t in s2.fill(Arc::new(Recorded::default())).await.unwrap() {
            t.await.unwrap();
        }
        assert!(jobs.calls().is_empty(), "run again: {:?}", jobs.calls());
    }

    #[tokio::test]
    async fn a_restarted_scheduler_resumes_items_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = FakeJobs::new(|r| reply(r, 1));
        let s = setup(dir.path(), 1, jobs.clone());
        let id = held_item(&s);
        let s2 = setup(dir.path(), 1, jobs.clone());
        for t in s2.fill(Arc::new(Recorded::default())).await.unwrap() {
            t.await.unwrap();
        }
        assert_eq!(
            s2.queue.get(&id).unwrap().unwrap().status,
            WorkStatus::Completed
        );
        assert_eq!(
            jobs.calls()[0].key,
            format!("selfplay:{id}"),
            "same job key: a running job would be adopted"
        );
    }

    #[tokio::test]
    async fn an_item_played_here_whose_outcome_was_not_recorded_is_not_played_again() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = FakeJobs::new(|r| reply(r, 1));
        let s = setup(dir.path(), 1, jobs.clone());
        // Played by this worker; the queue was out of reach when it ended, so the item is
        // still this worker's and comes back to it.
        let id = held_item(&s);
        let report = report("hex8_2p", 7);
        s.state.put(&played_key(&id), &report).await.unwrap();
        let s2 = setup(dir.path(), 1, jobs.clone());
        let rec = Arc::new(Recorded::default());
        for t in s2.fill(rec.clone()).await.unwrap() {
            t.await.unwrap();
        }
        let item = s2.queue.get(&id).unwrap().unwrap();
        assert_eq!(item.status, WorkStatus::Completed);
        assert!(jobs.calls().is_empty(), "played again: {:?}", jobs.calls());
        // Announced (again: the same event ids, which the router deduplicates).
        assert!(
            rec.events()
                .iter()
                .any(|e| matches!(e.payload, wire::event::Payload::SelfplayCompleted(_))),
            "no SELFPLAY_COMPLETED"
        );
        assert_eq!(
            s2.state
                .get::<serde_json::Value>(&played_key(&id))
                .await
                .unwrap(),
            None,
            "the record goes once the queue has the outcome"
        );
    }

    #[tokio::test]
    async fn a_resumed_item_plays_with_the_model_its_first_attempt_chose() {
        let dir = tempfile::tempdir().unwrap();
        let k: ConfigKey = "hex8_2p".parse().unwrap();
        let models = ringrift_store::paths::models_dir(dir.path()).join("hex8_2p");
        std::fs::create_dir_all(&models).unwrap();
        let first = models.join("gen0001_w1.rrm");
        std::fs::write(&first, b"1").unwrap();
        let jobs = FakeJobs::new(|r| reply(r, 1));
        let s = setup(dir.path(), 1, jobs.clone());
        let id = add(&s, 1).remove(0);
        // The first attempt chooses (and saves) its model; then the scheduler dies.
        let chosen = s.model_for(&id, k).await.unwrap();
        assert_eq!(chosen, Some(first.display().to_string()));
        s.queue
            .claim("js@test", &[WorkKind::Selfplay], Duration::from_secs(3600))
            .unwrap()
            .unwrap();
        // A promotion lands meanwhile.
        let promoted = ringrift_store::models::canonical_path(
            dir.path(),
            k,
            ringrift_store::models::ModelFormat::Rrm,
        );
        std::fs::write(&promoted, b"2").unwrap();
        let s2 = setup(dir.path(), 1, jobs.clone());
        for t in s2.fill(Arc::new(Recorded::default())).await.unwrap() {
            t.await.unwrap();
        }
        let call = jobs.calls().remove(0);
        assert_eq!(
            call.vars.get("model"),
            chosen.as_ref(),
            "the resumed item must ask for the job its first attempt started"
        );
        // Done: the saved choice is gone, and the next item plays the promoted model.
        assert_eq!(
            s2.state
                .get::<Option<String>>(&model_key(&id))
                .await
                .unwrap(),
            None
        );
        let next = add(&s2, 1).remove(0);
        assert_eq!(
            s2.model_for(&next, k).await.unwrap(),
            Some(promoted.display().to_string())
        );
    }
}
