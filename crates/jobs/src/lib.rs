//! Workload jobs as the daemons see them: a [`Jobs`] trait (so tests inject a fake) and
//! [`RunnerJobs`], which renders the command template of the job kind (`[jobs]` in
//! ringrift.toml; defaults run the embedded `ringrift-job` beside the daemon binary) and
//! runs it through the job runner: own process group, timeout, PID table that survives
//! restarts (a restarted daemon adopts its running job instead of starting a second
//! one), log file, JSON result file.
//!
//! The template owns every argument: a daemon only supplies named values
//! ([`placeholders`] lists them per kind), the template decides which it passes and how.
//! Another trainer (the Python example in `examples/python-trainer/`) is a template that
//! accepts the values it needs and writes the same result JSON: `docs/jobs.md` documents
//! both, and [`Jobs::run`](trait.Jobs.html#method.run) reads it as the typed report.
//!
//! A job can be cancelled while it runs ([`Jobs::run_json_until`]; a leader-only daemon
//! cancels its job when it stops leading): the job runner kills its process group and
//! the run ends with [`JobFailure::Cancelled`].

use job_runner::{CommandTemplate, JobError, JobRunner, JobSpec, SlotKind, SlotSpec, Started};
use ringrift_contracts::report::Report;
use ringrift_contracts::wire::{self, ContractError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use ringrift_contracts::JobKind;
pub use ringrift_store::models::ModelFormat;
pub use tokio_util::sync::CancellationToken;

/// One job to run.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    pub kind: JobKind,
    /// At most one job per key runs at a time, across daemon restarts (e.g. `train:hex8_2p`).
    pub key: String,
    /// Template placeholders (`config_key`, `games`, `output`, ...): [`placeholders`] of
    /// the kind, each substituted as one argument.
    pub vars: BTreeMap<String, String>,
    /// List placeholders (`data`, `models`): an argument using one is repeated per item.
    pub lists: BTreeMap<String, Vec<String>>,
    pub timeout: Duration,
    /// Run on this device (of the kind's slot), e.g. the idle GPU a work item names.
    pub pin: Option<u32>,
}

impl JobRequest {
    pub fn new(kind: JobKind, key: impl Into<String>, timeout: Duration) -> Self {
        JobRequest {
            kind,
            key: key.into(),
            vars: BTreeMap::new(),
            lists: BTreeMap::new(),
            timeout,
            pin: None,
        }
    }
    pub fn pin(mut self, device: Option<u32>) -> Self {
        self.pin = device;
        self
    }
    pub fn var(mut self, k: &str, v: impl ToString) -> Self {
        self.vars.insert(k.to_owned(), v.to_string());
        self
    }
    /// An optional value: absent is the empty string (the template decides what an
    /// empty argument means; `ringrift-job` reads an empty path as "none").
    pub fn opt(self, k: &str, v: Option<impl ToString>) -> Self {
        let v = v.map(|v| v.to_string()).unwrap_or_default();
        self.var(k, v)
    }
    pub fn list<S: ToString>(mut self, k: &str, items: impl IntoIterator<Item = S>) -> Self {
        let items = items.into_iter().map(|i| i.to_string()).collect();
        self.lists.insert(k.to_owned(), items);
        self
    }

    /// Whether the request supplies every placeholder of its kind (the daemons' side of
    /// the template contract; [`FakeJobs`] checks it on every call, so a daemon test
    /// fails when a daemon forgets one). `Err` names the first missing one.
    pub fn check_complete(&self) -> Result<(), String> {
        for p in placeholders(self.kind) {
            if !self.vars.contains_key(*p) && !self.lists.contains_key(*p) {
                return Err(format!(
                    "{} request {} lacks the placeholder {{{p}}}",
                    self.kind.as_str(),
                    self.key
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("{kind} job {key}: {message}")]
    Failed {
        kind: &'static str,
        key: String,
        message: String,
    },
    #[error("job {0}: bad template: {1}")]
    Template(String, String),
    /// Cancelled by its caller ([`Jobs::run_json_until`]); its process group was killed.
    #[error("{kind} job {key}: cancelled ({message})")]
    Cancelled {
        kind: &'static str,
        key: String,
        message: String,
    },
    /// The job succeeded but its result does not fit the report contract.
    #[error("job {key}: {source}")]
    Contract {
        key: String,
        #[source]
        source: ContractError,
    },
}

/// Runs jobs. Implementations return the raw result document; callers use
/// [`Jobs::run`](trait.Jobs.html#method.run) on `dyn Jobs`, which checks it against the
/// report contract of the job kind.
#[async_trait::async_trait]
pub trait Jobs: Send + Sync {
    /// Runs the job; `Ok` is its JSON result document, not yet checked.
    async fn run_json(&self, req: JobRequest) -> Result<serde_json::Value, JobFailure>;

    /// Runs the job until it ends or `cancel` fires, which stops it (its process group
    /// killed) and ends the run with [`JobFailure::Cancelled`]. The default, for jobs
    /// without a process, stops waiting for it.
    async fn run_json_until(
        &self,
        req: JobRequest,
        cancel: CancellationToken,
    ) -> Result<serde_json::Value, JobFailure> {
        let (kind, key) = (req.kind.as_str(), req.key.clone());
        tokio::select! {
            r = self.run_json(req) => r,
            _ = cancel.cancelled() => Err(JobFailure::Cancelled {
                kind,
                key,
                message: "stopped waiting for it".into(),
            }),
        }
    }

    /// The format the `train` template writes (`[jobs] model_format`): the extension of
    /// a train job's `{output}`.
    fn model_format(&self) -> ModelFormat {
        ModelFormat::Rrm
    }

    /// Stops every job of this home the job table has running with a key starting with
    /// `key_prefix`, whichever process started it (a run of the daemon before a crash or
    /// a kill -9 of its launcher included: jobs outlive their daemon, to be adopted):
    /// for a leader duty's jobs on a node that no longer leads. Returns the keys stopped.
    /// The default, for jobs without a process, has none.
    async fn cancel_running(&self, key_prefix: &str) -> Result<Vec<String>, String> {
        let _ = key_prefix;
        Ok(Vec::new())
    }
}

impl dyn Jobs {
    /// Runs the job and reads its result as the report `R` (the wire conversion of
    /// [`ringrift_contracts::wire`]): a missing or mistyped field is a
    /// [`JobFailure::Contract`] naming the field.
    pub async fn run<R: Report>(&self, req: JobRequest) -> Result<R, JobFailure> {
        let (kind, key) = (req.kind, req.key.clone());
        let result = self.run_json(req).await?;
        wire::parse_report(kind, result).map_err(|source| JobFailure::Contract { key, source })
    }

    /// [`run`](#method.run) until `cancel` fires ([`Jobs::run_json_until`]).
    pub async fn run_until<R: Report>(
        &self,
        req: JobRequest,
        cancel: CancellationToken,
    ) -> Result<R, JobFailure> {
        let (kind, key) = (req.kind, req.key.clone());
        let result = self.run_json_until(req, cancel).await?;
        wire::parse_report(kind, result).map_err(|source| JobFailure::Contract { key, source })
    }
}

/// `[jobs]` in ringrift.toml: one command template per kind.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobTemplates {
    pub selfplay: String,
    pub export: String,
    pub train: String,
    pub evaluate: String,
    pub distill: String,
    pub tournament: String,
    /// Where `{bin}` points; default: the directory of the running daemon.
    pub bin: Option<PathBuf>,
    /// The model file format the `train` template writes (`rrm` or `onnx`): the
    /// extension of its `{output}`, and `{model_format}`.
    pub model_format: ModelFormat,
    /// `[jobs.slots]`: the device slot each kind takes (`cpu` or `gpu`).
    pub slots: JobSlots,
    /// CPU slots of this node (default: its cores).
    pub cpu_slots: Option<u32>,
    /// GPU slots of this node (default: the GPUs `nvidia-smi` lists).
    pub gpu_slots: Option<u32>,
    /// The job kinds whose processes get the daemon's token as `RINGRIFT_TOKEN` (e.g. a
    /// trainer that calls the router). Default none: a job never inherits it.
    pub token_for: Vec<String>,
}

/// `[jobs.slots]`: the slot kind of each job kind. The embedded workload runs on CPUs;
/// on a GPU node, e.g. `train = "gpu"` (the job then gets `{gpu}` and
/// `CUDA_VISIBLE_DEVICES`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSlots {
    pub selfplay: SlotKind,
    pub export: SlotKind,
    pub train: SlotKind,
    pub evaluate: SlotKind,
    pub distill: SlotKind,
    pub tournament: SlotKind,
}

impl JobSlots {
    /// The slot a job of `kind` takes.
    pub fn slot(&self, kind: JobKind) -> SlotKind {
        match kind {
            JobKind::Selfplay => self.selfplay,
            JobKind::Export => self.export,
            JobKind::Train => self.train,
            JobKind::Evaluate => self.evaluate,
            JobKind::Distill => self.distill,
            JobKind::Tournament => self.tournament,
        }
    }
}

impl Default for JobSlots {
    fn default() -> Self {
        JobSlots {
            selfplay: SlotKind::Cpu,
            export: SlotKind::Cpu,
            train: SlotKind::Cpu,
            evaluate: SlotKind::Cpu,
            distill: SlotKind::Cpu,
            tournament: SlotKind::Cpu,
        }
    }
}

impl Default for JobTemplates {
    fn default() -> Self {
        let j = "{bin}/ringrift-job --home {home} --quiet --result {result}";
        JobTemplates {
            selfplay: format!(
                "{j} --threads {{threads}} selfplay --config {{config_key}} --games {{games}} \
                 --depth {{depth}} --model {{model}}"
            ),
            export: format!(
                "{j} export --config {{config_key}} --since {{since}} --output {{output}} \
                 --value-blend {{value_blend}}"
            ),
            train: format!(
                "{j} train --config {{config_key}} --data {{data}} --output {{output}} \
                 --init {{init}} --generation {{generation}} --epochs {{epochs}} \
                 --format {{model_format}}"
            ),
            evaluate: format!(
                "{j} --job-id {{job_id}} evaluate --config {{config_key}} --model {{model}} \
                 --name {{name}} --games-random {{games_random}} \
                 --games-heuristic {{games_heuristic}} --games-canonical {{games_canonical}} \
                 --depth {{depth}} --canonical-depth {{canonical_depth}} \
                 --early-reject {{early_reject}} --early-accept {{early_accept}} --gate-random {{gate_random}} \
                 --gate-heuristic {{gate_heuristic}} --gate-canonical {{gate_canonical}} \
                 --canonical-test {{canonical_test}} --sprt-elo0 {{sprt_elo0}} \
                 --sprt-elo1 {{sprt_elo1}} --sprt-alpha {{sprt_alpha}} --sprt-beta {{sprt_beta}}"
            ),
            distill: format!(
                "{j} distill --config {{config_key}} --teacher {{teacher}} --data {{data}} \
                 --output {{output}} --hidden {{hidden}}"
            ),
            tournament: format!(
                "{j} --job-id {{job_id}} --fence-token {{fence_token}} tournament \
                 --config {{config_key}} --games-per-pair {{games}} --model {{models}}"
            ),
            bin: None,
            model_format: ModelFormat::Rrm,
            slots: JobSlots::default(),
            cpu_slots: None,
            token_for: Vec::new(),
            gpu_slots: None,
        }
    }
}

impl JobTemplates {
    /// The command line of `kind`.
    pub fn template(&self, kind: JobKind) -> &str {
        match kind {
            JobKind::Selfplay => &self.selfplay,
            JobKind::Export => &self.export,
            JobKind::Train => &self.train,
            JobKind::Evaluate => &self.evaluate,
            JobKind::Distill => &self.distill,
            JobKind::Tournament => &self.tournament,
        }
    }
}

/// Placeholders every template may use: `home`, `bin` (from `[jobs]`), `result` and
/// `log` (the job's files), `gpu` (its device, `gpu` slots only) and `script` (tests).
pub const COMMON_PLACEHOLDERS: &[&str] = &["home", "bin", "result", "log", "gpu", "script"];

/// Placeholders the daemons supply for a job of `kind` (besides [`COMMON_PLACEHOLDERS`]);
/// `docs/jobs.md` says what each means. Lists: `data` and `models`.
pub fn placeholders(kind: JobKind) -> &'static [&'static str] {
    match kind {
        JobKind::Selfplay => &["config_key", "games", "threads", "depth", "model"],
        JobKind::Export => &["config_key", "since", "output", "value_blend"],
        JobKind::Train => &[
            "config_key",
            "data",
            "output",
            "init",
            "generation",
            "epochs",
            "model_format",
        ],
        JobKind::Evaluate => &[
            "config_key",
            "model",
            "name",
            "games_random",
            "games_heuristic",
            "games_canonical",
            "depth",
            "canonical_depth",
            "job_id",
            "early_reject",
            "early_accept",
            "gate_random",
            "gate_heuristic",
            "gate_canonical",
            "canonical_test",
            "sprt_elo0",
            "sprt_elo1",
            "sprt_alpha",
            "sprt_beta",
        ],
        JobKind::Distill => &["config_key", "teacher", "data", "output", "hidden"],
        JobKind::Tournament => &["config_key", "games", "job_id", "fence_token", "models"],
    }
}

/// Jobs run by the job runner from templates.
#[derive(Clone)]
pub struct RunnerJobs {
    runner: JobRunner,
    templates: Arc<BTreeMap<JobKind, CommandTemplate>>,
    /// The slot kind each job kind takes, and the node's slots of each kind.
    slot_of: Arc<BTreeMap<JobKind, SlotKind>>,
    capacity: Arc<BTreeMap<SlotKind, u32>>,
    home: PathBuf,
    bin: PathBuf,
    model_format: ModelFormat,
    /// This node's name, given to every job as `RINGRIFT_NODE` (the embedded workload
    /// records it as the games' `source_node`).
    node: Option<String>,
    /// `[jobs] token_for`: the kinds that get the token (`token`) as `RINGRIFT_TOKEN`.
    token_for: Arc<std::collections::BTreeSet<JobKind>>,
    token: Option<String>,
}

impl RunnerJobs {
    /// Parses the templates (a bad one is a configuration error) and opens the PID table
    /// `data/jobs.db` under `home`.
    pub fn new(home: &Path, t: &JobTemplates) -> anyhow::Result<RunnerJobs> {
        RunnerJobs::with_gpu(home, t, &ringrift_cluster::resources::NvidiaSmi::default())
    }

    /// [`RunnerJobs::new`] counting GPUs (when `jobs.gpu_slots` is not set and a kind runs
    /// on GPUs) with `gpu`, the process's bounded probe.
    pub fn with_gpu(
        home: &Path,
        t: &JobTemplates,
        gpu: &ringrift_cluster::resources::NvidiaSmi,
    ) -> anyhow::Result<RunnerJobs> {
        let mut templates = BTreeMap::new();
        let mut slot_of = BTreeMap::new();
        let cpus = t.cpu_slots.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(1))
                .unwrap_or(1)
        });
        let sl = &t.slots;
        let declared_gpu = JobKind::ALL.iter().any(|&k| sl.slot(k) == SlotKind::Gpu);
        // Probe only when a kind runs on GPUs and the count is not configured.
        let gpus = match t.gpu_slots {
            Some(n) => n,
            None if declared_gpu => gpu.count(),
            None => 0,
        };
        for k in JobKind::ALL {
            let (s, slot) = (t.template(k), sl.slot(k));
            let bad = |e| handler_base::ConfigError::Invalid(format!("jobs.{}: {e}", k.as_str()));
            let invalid =
                |m: String| handler_base::ConfigError::Invalid(format!("jobs.{}: {m}", k.as_str()));
            if slot == SlotKind::Gpu && gpus == 0 {
                return Err(invalid(
                    "jobs.slots says gpu, but this node has no GPU (nvidia-smi lists none; set jobs.gpu_slots)".into(),
                )
                .into());
            }
            if s.contains("{gpu}") && slot != SlotKind::Gpu {
                return Err(invalid(format!(
                    "uses {{gpu}}, but jobs.slots.{} is cpu",
                    k.as_str()
                ))
                .into());
            }
            slot_of.insert(k, slot);
            let tpl = CommandTemplate::parse(s).map_err(bad)?;
            // Every placeholder must be one the daemons supply for this kind, so a typo
            // or an unmatched brace fails at start-up, not at the first job.
            let known = || COMMON_PLACEHOLDERS.iter().chain(placeholders(k));
            for p in tpl.placeholders().map_err(bad)? {
                if !known().any(|q| *q == p) {
                    let known: Vec<&str> = known().copied().collect();
                    return Err(invalid(format!(
                        "unknown placeholder {{{p}}} (known for {}: {})",
                        k.as_str(),
                        known.join(", ")
                    ))
                    .into());
                }
            }
            templates.insert(k, tpl);
        }
        let bin = match &t.bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let mut token_for = std::collections::BTreeSet::new();
        for name in &t.token_for {
            let kind = JobKind::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .ok_or_else(|| {
                    let kinds: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
                    handler_base::ConfigError::Invalid(format!(
                        "jobs.token_for: unknown job kind {name:?} (one of {})",
                        kinds.join(", ")
                    ))
                })?;
            token_for.insert(kind);
        }
        std::fs::create_dir_all(home.join("data"))?;
        let runner = JobRunner::open(&home.join("data/jobs.db"))?;
        if cpus == 0 {
            return Err(handler_base::ConfigError::Invalid(
                "jobs.cpu_slots must be at least 1".into(),
            )
            .into());
        }
        Ok(RunnerJobs {
            runner,
            templates: Arc::new(templates),
            slot_of: Arc::new(slot_of),
            capacity: Arc::new([(SlotKind::Cpu, cpus), (SlotKind::Gpu, gpus)].into()),
            home: home.to_owned(),
            bin,
            model_format: t.model_format,
            node: None,
            token_for: Arc::new(token_for),
            token: None,
        })
    }

    /// The slot kind `kind` takes and how many of them this node has.
    pub fn slots_for(&self, kind: JobKind) -> (SlotKind, u32) {
        let k = self.slot_of.get(&kind).copied().unwrap_or(SlotKind::Cpu);
        (k, self.capacity.get(&k).copied().unwrap_or(0))
    }

    /// From the `[jobs]` section of the daemon's settings.
    pub fn from_ctx(ctx: &handler_base::Context) -> anyhow::Result<RunnerJobs> {
        let t: JobTemplates = ctx.settings.section("jobs")?;
        let gpu = ringrift_cluster::resources::NvidiaSmi::from_settings(&ctx.settings)?;
        let mut jobs = RunnerJobs::with_gpu(&ctx.home, &t, &gpu)?;
        jobs.node = Some(ctx.node.clone());
        if !jobs.token_for.is_empty() {
            jobs.token = handler_base::auth::load(&ctx.settings)?.map(|t| t.secret().to_owned());
        }
        Ok(jobs)
    }

    /// The environment of a job of `kind`: `RINGRIFT_NODE`, and `RINGRIFT_TOKEN` only for
    /// a kind in `[jobs] token_for` (the runner never lets a job inherit it).
    fn job_env(&self, kind: JobKind) -> Vec<(String, String)> {
        let node = self
            .node
            .iter()
            .map(|n| ("RINGRIFT_NODE".to_owned(), n.clone()));
        let token = self
            .token
            .iter()
            .filter(|_| self.token_for.contains(&kind))
            .map(|t| (job_runner::ENV_TOKEN.to_owned(), t.clone()));
        node.chain(token).collect()
    }
}

#[async_trait::async_trait]
impl Jobs for RunnerJobs {
    fn model_format(&self) -> ModelFormat {
        self.model_format
    }

    async fn run_json(&self, req: JobRequest) -> Result<serde_json::Value, JobFailure> {
        self.run_json_until(req, CancellationToken::new()).await
    }

    async fn cancel_running(&self, key_prefix: &str) -> Result<Vec<String>, String> {
        let (runner, prefix) = (self.runner.clone(), key_prefix.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut stopped = Vec::new();
            let running = runner.running().map_err(|e| format!("running jobs: {e}"))?;
            for h in running
                .into_iter()
                .filter(|h| h.job_key.starts_with(&prefix))
            {
                runner
                    .cancel(&h)
                    .map_err(|e| format!("cancel job {}: {e}", h.job_key))?;
                stopped.push(h.job_key);
            }
            Ok(stopped)
        })
        .await
        .map_err(|e| format!("cancel task: {e}"))?
    }

    async fn run_json_until(
        &self,
        req: JobRequest,
        cancel: CancellationToken,
    ) -> Result<serde_json::Value, JobFailure> {
        let kind = req.kind.as_str();
        let fail = |m: String| JobFailure::Failed {
            kind,
            key: req.key.clone(),
            message: m,
        };
        let template = self
            .templates
            .get(&req.kind)
            .ok_or_else(|| JobFailure::Template(req.key.clone(), "no template".into()))?;
        let template = template
            .expand_lists(&req.lists)
            .map_err(|e| JobFailure::Template(req.key.clone(), e.to_string()))?;
        let mut vars = req.vars.clone();
        vars.insert("home".into(), self.home.display().to_string());
        vars.insert("bin".into(), self.bin.display().to_string());
        let safe_key = req.key.replace([':', '/'], "_");
        let stamp = ringrift_store::now_ms();
        let spec = JobSpec {
            job_key: req.key.clone(),
            kind: kind.to_owned(),
            template,
            vars,
            timeout: req.timeout,
            log_path: self
                .home
                .join("logs/jobs")
                .join(format!("{safe_key}-{stamp}.log")),
            result_path: Some(
                self.home
                    .join("run/jobs")
                    .join(format!("{safe_key}-{stamp}.json")),
            ),
            workdir: None,
            env: self.job_env(req.kind),
            slot: Some({
                let (kind, capacity) = self.slots_for(req.kind);
                SlotSpec {
                    kind,
                    capacity,
                    // A device pin names a GPU; CPU slots are interchangeable.
                    pin: req.pin.filter(|_| kind == SlotKind::Gpu),
                }
            }),
        };
        let runner = self.runner.clone();
        // The handle of the started job, for a cancel that comes while it runs.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let stop = cancel.clone();
        let task = tokio::task::spawn_blocking(
            move || -> Result<job_runner::JobOutcome, String> {
                for d in [
                    spec.log_path.parent(),
                    spec.result_path.as_deref().and_then(Path::parent),
                ]
                .into_iter()
                .flatten()
                {
                    std::fs::create_dir_all(d)
                        .map_err(|e| format!("create {}: {e}", d.display()))?;
                }
                // Every slot of the kind busy (other daemons' jobs too): wait for one, at most
                // as long as the job itself may run (or until cancelled).
                let deadline = std::time::Instant::now() + spec.timeout;
                let mut waited = false;
                let started = loop {
                    if stop.is_cancelled() {
                        return Err("cancelled before it started".into());
                    }
                    match runner.start(&spec) {
                        Err(e @ JobError::NoSlot { .. })
                            if std::time::Instant::now() < deadline =>
                        {
                            if !waited {
                                tracing::info!(key = %spec.job_key, "{e}; waiting for one");
                                waited = true;
                            }
                            std::thread::sleep(Duration::from_millis(250));
                        }
                        r => break r,
                    }
                };
                let h = match started.map_err(|e| e.to_string())? {
                    Started::Started(h) => h,
                    Started::AlreadyRunning(h) => {
                        tracing::info!(job = %h.job_id, key = %h.job_key, pid = h.pid, "adopting the job already running for this key");
                        h
                    }
                    Started::Finished(o) => {
                        tracing::info!(job = %o.job_id, key = %o.job_key, "the same job finished while this daemon was down; using its result");
                        return Ok(o);
                    }
                };
                let _ = started_tx.send(h.clone());
                runner.wait(&h).map_err(|e| e.to_string())
            },
        );
        tokio::pin!(task);
        let joined = tokio::select! {
            r = &mut task => r,
            _ = cancel.cancelled() => {
                // Kill the group once the job has started (no handle: it ended or never
                // started); the waiting thread then sees it end.
                if let Ok(h) = started_rx.await {
                    let runner = self.runner.clone();
                    let killed = tokio::task::spawn_blocking(move || runner.cancel(&h)).await;
                    match killed {
                        Ok(Ok(o)) => tracing::info!(job = %o.job_id, key = %o.job_key, "job cancelled"),
                        Ok(Err(e)) => tracing::warn!(key = %req.key, error = %e, "cancelling the job"),
                        Err(e) => tracing::warn!(key = %req.key, error = %e, "cancelling the job"),
                    }
                }
                let outcome = task.await.map_err(|e| fail(e.to_string()))?;
                return match outcome {
                    Ok(o) if o.status == job_runner::JobStatus::Succeeded => {
                        o.into_result().map_err(|e| fail(e.to_string()))
                    }
                    Ok(o) => Err(JobFailure::Cancelled {
                        kind,
                        key: req.key.clone(),
                        message: o.error.unwrap_or_else(|| format!("{:?}", o.status)),
                    }),
                    Err(message) => Err(JobFailure::Cancelled {
                        kind,
                        key: req.key.clone(),
                        message,
                    }),
                };
            }
        };
        let outcome = joined.map_err(|e| fail(e.to_string()))?.map_err(fail)?;
        outcome.into_result().map_err(|e| fail(e.to_string()))
    }
}

/// A `[jobs]` entry for in-process daemon tests: `kind` runs a shell script under
/// `home` that writes `report` (in its result envelope) to `{result}` and, for the kinds
/// with an `{output}`, a byte to `{output}`; the real job runner runs it. Returns the TOML
/// line for the `[jobs]` table.
pub fn scripted_job<R: Report>(home: &Path, kind: JobKind, report: &R) -> std::io::Result<String> {
    let result = wire::report_json(kind, report).map_err(std::io::Error::other)?;
    let dir = home.join("test-jobs");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join(format!("{}.json", kind.as_str()));
    std::fs::write(&json, result.to_string())?;
    let output = matches!(kind, JobKind::Export | JobKind::Train | JobKind::Distill);
    let mut script = format!("cp '{}' \"$1\"\n", json.display());
    if output {
        script.push_str("mkdir -p \"$(dirname \"$2\")\" && printf x > \"$2\"\n");
    }
    let sh = dir.join(format!("{}.sh", kind.as_str()));
    std::fs::write(&sh, script)?;
    Ok(format!(
        "{} = \"sh {} {{result}}{}\"\n",
        kind.as_str(),
        sh.display(),
        if output { " {output}" } else { "" }
    ))
}

/// The argv the default template of `req.kind` gives for `req` (home `/home`, bin `/bin`,
/// result `/result.json`, log `/job.log`): what `ringrift-job` would be started with, for
/// daemon tests that check the arguments they cause.
pub fn default_argv(req: &JobRequest) -> Result<Vec<String>, String> {
    let t = JobTemplates::default();
    let line = t.template(req.kind);
    let mut vars = req.vars.clone();
    for (k, v) in [
        ("home", "/home"),
        ("bin", "/bin"),
        ("result", "/result.json"),
        ("log", "/job.log"),
    ] {
        vars.insert(k.into(), v.into());
    }
    CommandTemplate::parse(line)
        .and_then(|t| t.expand_lists(&req.lists))
        .and_then(|t| t.render(&vars))
        .map_err(|e| format!("{}: {e}", req.key))
}

/// A scripted [`Jobs`] for tests: records requests, answers from a closure.
pub struct FakeJobs {
    pub calls: std::sync::Mutex<Vec<JobRequest>>,
    /// The key prefixes of every `cancel_running` call.
    pub cancels: std::sync::Mutex<Vec<String>>,
    answer: Box<dyn Fn(&JobRequest) -> Result<serde_json::Value, String> + Send + Sync>,
}

impl FakeJobs {
    pub fn new(
        answer: impl Fn(&JobRequest) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    ) -> Arc<FakeJobs> {
        Arc::new(FakeJobs {
            calls: std::sync::Mutex::new(Vec::new()),
            cancels: std::sync::Mutex::new(Vec::new()),
            answer: Box::new(answer),
        })
    }
    pub fn calls(&self) -> Vec<JobRequest> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl Jobs for FakeJobs {
    async fn run_json(&self, req: JobRequest) -> Result<serde_json::Value, JobFailure> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(req.clone());
        req.check_complete()
            .map_err(|m| JobFailure::Template(req.key.clone(), m))?;
        (self.answer)(&req).map_err(|m| JobFailure::Failed {
            kind: req.kind.as_str(),
            key: req.key.clone(),
            message: m,
        })
    }

    async fn cancel_running(&self, key_prefix: &str) -> Result<Vec<String>, String> {
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key_prefix.to_owned());
        Ok(Vec::new())
    }
}

/// An evaluate job's gate values: the Wilson bars (early rejection) and the SPRT against
/// the canonical model, which stops those games when it decides.
pub fn gate_vars(req: JobRequest, g: &ringrift_contracts::Gate) -> JobRequest {
    req.var("gate_random", g.min_lower_vs_random)
        .var("gate_heuristic", g.min_lower_vs_heuristic)
        .var("gate_canonical", g.min_lower_vs_canonical)
        .var("canonical_test", g.canonical_test)
        .var("sprt_elo0", g.sprt_elo0)
        .var("sprt_elo1", g.sprt_elo1)
        .var("sprt_alpha", g.sprt_alpha)
        .var("sprt_beta", g.sprt_beta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result file as an external trainer would write it: the export report contract,
    /// `rows` left out when `rows` is false.
    fn export_script(rows: bool) -> String {
        let rows = if rows { "\"rows\": 30, " } else { "" };
        format!(
            "printf '{{\"job\": \"export\", \"version\": 1, \"config_key\": \"%s\", \"games\": 3, {rows}\"output\": \"/d/x.npz\", \"sha256\": \"ab\", \"bytes\": 100, \"max_seq\": 7, \"elapsed_s\": 0.5, \"rows_per_s\": 60.0}}' \"$2\" > \"$1\""
        )
    }

    fn export_jobs(dir: &Path) -> RunnerJobs {
        let t = JobTemplates {
            export: "sh -c {script} x {result} {config_key}".into(),
            ..Default::default()
        };
        RunnerJobs::new(dir, &t).unwrap()
    }

    #[tokio::test]
    async fn runner_jobs_render_the_template_and_read_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = export_jobs(dir.path());
        let req = JobRequest::new(JobKind::Export, "export:hex8_2p", Duration::from_secs(30))
            .var("config_key", "hex8_2p")
            .var("script", export_script(true));
        let jobs: &dyn Jobs = &jobs;
        let r: ringrift_contracts::ExportReport = jobs.run(req).await.unwrap();
        assert_eq!(r.rows, 30);
        assert_eq!(r.config_key.to_string(), "hex8_2p");
        assert_eq!(r.max_seq, 7);
    }

    #[tokio::test]
    async fn a_job_result_missing_a_field_fails_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = export_jobs(dir.path());
        let req = JobRequest::new(JobKind::Export, "export:hex8_2p", Duration::from_secs(30))
            .var("config_key", "hex8_2p")
            .var("script", export_script(false));
        let jobs: &dyn Jobs = &jobs;
        let err = jobs
            .run::<ringrift_contracts::ExportReport>(req)
            .await
            .unwrap_err();
        assert!(matches!(err, JobFailure::Contract { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("export:hex8_2p"), "{msg}");
        assert!(msg.contains("export job result"), "{msg}");
        assert!(msg.contains("missing field `rows`"), "{msg}");
    }

    /// Cancelling a running job kills its process (a `sleep 600`) and ends the run with
    /// `Cancelled`, long before the job would have ended.
    #[tokio::test]
    async fn a_cancelled_job_is_killed_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let t = JobTemplates {
            train: "sh -c {script}".into(),
            ..Default::default()
        };
        let jobs = RunnerJobs::new(dir.path(), &t).unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo $$ > {0}.tmp && mv {0}.tmp {0}; exec sleep 600",
            pid_file.display()
        );
        let req = JobRequest::new(JobKind::Train, "train:hex8_2p", Duration::from_secs(900))
            .var("script", script);
        let cancel = CancellationToken::new();
        let kill = async {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let pid = loop {
                if let Ok(p) = std::fs::read_to_string(&pid_file) {
                    break p.trim().to_owned();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the job never started"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            cancel.cancel();
            pid
        };
        let (ran, pid) = tokio::join!(
            tokio::time::timeout(
                Duration::from_secs(120),
                jobs.run_json_until(req, cancel.clone())
            ),
            kill
        );
        let err = ran.expect("ended once cancelled").unwrap_err();
        assert!(matches!(err, JobFailure::Cancelled { .. }), "{err:?}");
        assert!(err.to_string().contains("train:hex8_2p"), "{err}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} killed"
        );
    }

    /// A job left running by an earlier runner (its daemon killed) is stopped by
    /// `cancel_running` of a new one, matched by key prefix; other keys are left alone.
    #[tokio::test]
    async fn cancel_running_stops_a_job_an_earlier_runner_left() {
        let dir = tempfile::tempdir().unwrap();
        let t = JobTemplates {
            tournament: "sh -c {script}".into(),
            ..Default::default()
        };
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo $$ > {0}.tmp && mv {0}.tmp {0}; exec sleep 600",
            pid_file.display()
        );
        let req = JobRequest::new(
            JobKind::Tournament,
            "tournament:hex8_2p",
            Duration::from_secs(900),
        )
        .var("script", script);
        let earlier = RunnerJobs::new(dir.path(), &t).unwrap();
        let run = tokio::spawn(async move { earlier.run_json(req).await });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let pid = loop {
            if let Ok(p) = std::fs::read_to_string(&pid_file) {
                break p.trim().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the job never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The earlier daemon is gone; its job runs on.
        run.abort();
        let now = RunnerJobs::new(dir.path(), &t).unwrap();
        assert_eq!(
            now.cancel_running("export:").await.unwrap(),
            Vec::<String>::new()
        );
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "other keys left alone"
        );
        assert_eq!(
            now.cancel_running("tournament:").await.unwrap(),
            vec!["tournament:hex8_2p".to_owned()]
        );
        let gone = std::time::Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
        {
            assert!(std::time::Instant::now() < gone, "process {pid} still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            now.runner.running().unwrap().is_empty(),
            "no row left running"
        );
    }

    #[tokio::test]
    async fn a_failing_job_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let t = JobTemplates {
            train: "sh -c {script}".into(),
            ..Default::default()
        };
        let jobs = RunnerJobs::new(dir.path(), &t).unwrap();
        let req = JobRequest::new(JobKind::Train, "train:hex8_2p", Duration::from_secs(30))
            .var("script", "exit 3");
        let err = jobs.run_json(req).await.unwrap_err().to_string();
        assert!(err.contains("train:hex8_2p"), "{err}");
    }

    #[tokio::test]
    async fn a_gpu_kind_gets_its_device_and_waits_for_a_free_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = JobTemplates {
            selfplay: "sh -c {script} x {result} {gpu}".into(),
            slots: JobSlots {
                selfplay: SlotKind::Gpu,
                ..Default::default()
            },
            gpu_slots: Some(1),
            ..Default::default()
        };
        let jobs = RunnerJobs::new(dir.path(), &t).unwrap();
        assert_eq!(jobs.slots_for(JobKind::Selfplay), (SlotKind::Gpu, 1));
        // Each job records when it held the GPU; one GPU means no overlap.
        let script = "s=$(date +%s%N); sleep 0.3; \
                      printf '{\"gpu\": \"%s\", \"cuda\": \"%s\", \"from\": %s, \"to\": %s}' \
                      \"$2\" \"$CUDA_VISIBLE_DEVICES\" \"$s\" \"$(date +%s%N)\" > \"$1\"";
        let req = |key: &str| {
            JobRequest::new(JobKind::Selfplay, key, Duration::from_secs(30))
                .var("script", script)
                .pin(Some(0))
        };
        let (a, b) = tokio::join!(
            jobs.run_json(req("selfplay:a")),
            jobs.run_json(req("selfplay:b"))
        );
        /// What each test job wrote: its device and when it held it.
        #[derive(Debug, serde::Deserialize)]
        struct Held {
            gpu: String,
            cuda: String,
            from: u64,
            to: u64,
        }
        let held = |v: serde_json::Value| serde_json::from_value::<Held>(v).unwrap();
        let (a, b) = (held(a.unwrap()), held(b.unwrap()));
        for r in [&a, &b] {
            assert_eq!((r.gpu.as_str(), r.cuda.as_str()), ("0", "0"), "{r:?}");
        }
        assert!(
            a.to <= b.from || b.to <= a.from,
            "both held the one GPU at once: {a:?} {b:?}"
        );
    }

    #[test]
    fn gpu_slots_need_gpus_and_gpu_placeholders_need_gpu_slots() {
        let dir = tempfile::tempdir().unwrap();
        let no_gpus = JobTemplates {
            slots: JobSlots {
                train: SlotKind::Gpu,
                ..Default::default()
            },
            gpu_slots: Some(0),
            ..Default::default()
        };
        let err = RunnerJobs::new(dir.path(), &no_gpus)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("jobs.train") && err.contains("no GPU"),
            "{err}"
        );
        let cpu_kind = JobTemplates {
            evaluate: "run --device {gpu}".into(),
            ..Default::default()
        };
        let err = RunnerJobs::new(dir.path(), &cpu_kind)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("jobs.evaluate") && err.contains("{gpu}"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_template_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let t = JobTemplates {
            train: "run {unclosed".into(),
            ..Default::default()
        };
        let err = RunnerJobs::new(dir.path(), &t).err().unwrap().to_string();
        assert!(err.contains("jobs.train"), "{err}");
    }

    #[test]
    fn an_unknown_placeholder_is_a_configuration_error_naming_template_and_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let t = JobTemplates {
            train: "python3 train.py --data {data} --epoch {epoch}".into(),
            ..Default::default()
        };
        let err = RunnerJobs::new(dir.path(), &t).err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("jobs.train") && msg.contains("{epoch}"),
            "{msg}"
        );
        assert!(
            err.downcast_ref::<handler_base::ConfigError>().is_some(),
            "exit 64: {err:?}"
        );
        // A placeholder of another kind is unknown here too.
        let t = JobTemplates {
            export: "x --teacher {teacher}".into(),
            ..Default::default()
        };
        let msg = RunnerJobs::new(dir.path(), &t).err().unwrap().to_string();
        assert!(
            msg.contains("jobs.export") && msg.contains("{teacher}"),
            "{msg}"
        );
    }

    /// The defaults use every value the daemons supply and nothing else, so a complete
    /// request renders and `ringrift-job` gets all it needs.
    #[test]
    fn the_default_templates_use_exactly_the_placeholders_of_their_kind() {
        let t = JobTemplates::default();
        for kind in JobKind::ALL {
            let line = t.template(kind);
            let mut used = CommandTemplate::parse(line)
                .unwrap()
                .placeholders()
                .unwrap();
            used.retain(|p| !COMMON_PLACEHOLDERS.contains(&p.as_str()));
            used.sort();
            let mut want: Vec<String> =
                placeholders(kind).iter().map(|p| (*p).to_owned()).collect();
            want.sort();
            assert_eq!(used, want, "{}", kind.as_str());
        }
    }

    #[tokio::test]
    async fn a_quoted_argument_with_a_placeholder_is_one_argument_and_lists_repeat() {
        let dir = tempfile::tempdir().unwrap();
        // The job writes its argv, one element per line, as the result's `argv` field.
        let t = JobTemplates {
            train: r#"sh -c {script} {result} "--name={config_key} with space" --data {data} --init {init}"#.into(),
            ..Default::default()
        };
        let jobs = RunnerJobs::new(dir.path(), &t).unwrap();
        let req = JobRequest::new(JobKind::Train, "train:hex8_2p", Duration::from_secs(30))
            .var("config_key", "hex8_2p; rm -rf /")
            .list("data", ["/d/a b.npz", "/d/c.npz"])
            .opt("init", None::<String>)
            .var(
                "script",
                r#"printf '%s\n' "$@" | python3 -c 'import json,sys; print(json.dumps({"argv": sys.stdin.read().splitlines()}))' > "$0""#,
            );
        let v = jobs.run_json(req).await.unwrap();
        assert_eq!(
            v["argv"],
            serde_json::json!([
                "--name=hex8_2p; rm -rf / with space",
                "--data",
                "/d/a b.npz",
                "/d/c.npz",
                "--init",
                ""
            ])
        );
    }

    #[tokio::test]
    async fn fake_jobs_refuse_a_request_missing_a_placeholder_of_its_kind() {
        let jobs = FakeJobs::new(|_| Ok(serde_json::json!({})));
        let req = JobRequest::new(JobKind::Export, "export:x", Duration::from_secs(1))
            .var("config_key", "hex8_2p")
            .var("since", 0);
        let err = jobs.run_json(req).await.unwrap_err().to_string();
        assert!(err.contains("{output}"), "{err}");
    }
}
