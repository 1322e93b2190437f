//! Runs jobs (selfplay, export, train, evaluate, distill, …) from command templates.
//!
//! Each job runs in its own process group, with stdout and stderr appended to a log file
//! and a deadline after which the whole group (grandchildren too) is killed: SIGTERM,
//! then SIGKILL after a grace period. Every job is a row in a SQLite `jobs` table
//! (PID, process-group id, process start time), so a runner that restarts finds the jobs
//! its predecessor left running: [`JobRunner::start`] returns
//! [`Started::AlreadyRunning`] instead of launching a duplicate, and
//! [`JobRunner::recover`] adopts or reaps them. A job that finished while no runner
//! watched it is not run again: the next `start` of the same key and spec gets its
//! outcome ([`Started::Finished`]), once.
//!
//! Nothing escapes tracking: the row is written before the process is spawned (the child
//! carries its job id in `RINGRIFT_JOB_ID`, so a runner killed between the two finds it
//! in `/proc`); the job's deadline is also enforced without the runner, by coreutils
//! `timeout` wrapped around the command; and a process group is signalled only while
//! its leader is still the process the row names (a recycled id is left alone).
//!
//! Device slots: a job may need a slot of a kind (`cpu`, `gpu`) out of the node's
//! capacity. The running rows of the table (shared by every daemon of the home) are the
//! slot holders, so slots are counted node-wide without a second table; a GPU job gets
//! its device as `{gpu}` and in `CUDA_VISIBLE_DEVICES`. A job reports success by exiting 0 and
//! writing a JSON object to its result file (placeholder `{result}`); a missing or
//! malformed result file fails the job with an error naming the file and the problem.
//!
//! The API is synchronous (it never blocks for long except in [`JobRunner::wait`]);
//! async callers use [`JobRunner::run_async`], which does the blocking parts in
//! `spawn_blocking` and honours a cancellation token.

mod procfs;
mod template;

pub use procfs::{group_members, is_alive};
pub use template::CommandTemplate;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use ringrift_store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Errors of the runner itself (as opposed to a job that ran and failed, which is a
/// [`JobOutcome`] with status [`JobStatus::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("bad command template: {0}")]
    Template(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("job table {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start job {job_key}: {source}")]
    Spawn {
        job_key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signal process group {pgid}: {source}")]
    Signal {
        pgid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("job {job_id} ({job_key}) {status:?}: {message}")]
    JobFailed {
        job_id: String,
        job_key: String,
        status: JobStatus,
        message: String,
    },
    #[error("blocking task failed: {0}")]
    Join(String),
    #[error("no free {kind} slot of {capacity}{}", pin.map(|p| format!(" (device {p} wanted)")).unwrap_or_default())]
    NoSlot {
        kind: SlotKind,
        capacity: u32,
        pin: Option<u32>,
    },
}

/// The kind of device slot a job needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    Cpu,
    Gpu,
}

impl SlotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Cpu => "cpu",
            SlotKind::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for SlotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A slot a job needs: one of `capacity` slots of `kind` on this node, or exactly
/// device `pin` when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSpec {
    pub kind: SlotKind,
    pub capacity: u32,
    pub pin: Option<u32>,
}

trait DbContext<T> {
    fn db(self, path: &Path) -> Result<T, JobError>;
}

impl<T> DbContext<T> for Result<T, rusqlite::Error> {
    fn db(self, path: &Path) -> Result<T, JobError> {
        self.map_err(|source| JobError::Db {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Identity for de-duplication: at most one running job per key (e.g.
    /// `train:hex8_2p`).
    pub job_key: String,
    /// Free-form kind for humans and metrics (`selfplay`, `train`, …).
    pub kind: String,
    pub template: CommandTemplate,
    /// Placeholder values. `result` and `log` are added by the runner.
    pub vars: BTreeMap<String, String>,
    pub timeout: Duration,
    pub log_path: PathBuf,
    /// Where the job writes its JSON result; `None` = success is exit code 0 alone.
    pub result_path: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// The device slot it needs; `None`: runs outside slot accounting.
    pub slot: Option<SlotSpec>,
}

/// Final or current state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A running (or recorded) job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHandle {
    pub job_id: String,
    pub job_key: String,
    pub pid: i32,
    pub pgid: i32,
    pub proc_start: Option<u64>,
    pub deadline_ms: i64,
    pub log_path: PathBuf,
    pub result_path: Option<PathBuf>,
    /// The runner process that started it.
    pub runner_pid: i32,
}

/// Result of [`JobRunner::start`].
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    Started(JobHandle),
    /// A job with this key is already running (possibly started by an earlier runner).
    AlreadyRunning(JobHandle),
    /// The same job (key and spec) succeeded while no runner watched it and nobody has
    /// had its outcome yet: here it is, instead of running the job again.
    Finished(JobOutcome),
}

impl Started {
    /// The running job to poll or wait on (`None` for [`Started::Finished`]).
    pub fn handle(&self) -> Option<&JobHandle> {
        match self {
            Started::Started(h) | Started::AlreadyRunning(h) => Some(h),
            Started::Finished(_) => None,
        }
    }
}

/// The environment variable that carries a job's id into its processes.
pub const ENV_JOB_ID: &str = "RINGRIFT_JOB_ID";

/// The cluster token's variable: never inherited by a job (an external trainer has no
/// business holding the daemons' secret); a job gets it only in its spec's `env` (see
/// `[jobs] token_for` of the pipeline).
pub const ENV_TOKEN: &str = "RINGRIFT_TOKEN";

/// The command of a job (output not yet attached): its own process group, no stdin,
/// `RINGRIFT_JOB_ID`, the spec's working directory and `env`, and without the inherited
/// [`ENV_TOKEN`] unless `env` sets it.
fn command(spec: &JobSpec, argv: &[String], env: &[(String, String)], job_id: &str) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .env_remove(ENV_TOKEN)
        .env(ENV_JOB_ID, job_id);
    if let Some(dir) = &spec.workdir {
        cmd.current_dir(dir);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub job_id: String,
    pub job_key: String,
    pub status: JobStatus,
    /// `None` when the job was adopted from an earlier runner or killed by a signal.
    pub exit_code: Option<i32>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub log_path: PathBuf,
}

impl JobOutcome {
    /// The result document of a successful job, or an error saying why there is none.
    pub fn into_result(self) -> Result<serde_json::Value, JobError> {
        match (self.status, self.result) {
            (JobStatus::Succeeded, Some(v)) => Ok(v),
            (JobStatus::Succeeded, None) => Ok(serde_json::Value::Null),
            (status, _) => Err(JobError::JobFailed {
                job_id: self.job_id,
                job_key: self.job_key,
                status,
                message: self.error.unwrap_or_else(|| "no error recorded".into()),
            }),
        }
    }
}

/// What [`JobRunner::recover`] found for one job left running by an earlier runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovered {
    /// Still running: adopted; poll or wait on the handle.
    Running(JobHandle),
    /// Ended while no runner watched; reaped with this outcome.
    Finished(JobOutcome),
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY NOT NULL,
        job_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        argv TEXT NOT NULL,
        pid INTEGER NOT NULL,
        pgid INTEGER NOT NULL,
        proc_start INTEGER,
        runner_pid INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        deadline_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        log_path TEXT NOT NULL,
        result_path TEXT,
        finished_at INTEGER,
        exit_code INTEGER,
        error TEXT,
        result TEXT
    );
    CREATE UNIQUE INDEX jobs_one_running_per_key ON jobs(job_key) WHERE status = 'running';",
    // spec: what the job does (kind, template, vars but the result/log paths), to hand a
    // finished job's outcome to the next identical start; delivered: whether a caller
    // has had the outcome; runner_start: the runner's start time (its PID may be reused).
    "ALTER TABLE jobs ADD COLUMN spec TEXT;
     ALTER TABLE jobs ADD COLUMN delivered INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE jobs ADD COLUMN runner_start INTEGER;",
    // The device slot a running job holds (the running rows are the slot holders).
    "ALTER TABLE jobs ADD COLUMN slot_kind TEXT;
     ALTER TABLE jobs ADD COLUMN slot_idx INTEGER;",
];

/// Runs and tracks jobs. Cheap to clone; clones share the table and child handles.
#[derive(Clone)]
pub struct JobRunner {
    db: ringrift_store::db::SharedDb,
    children: Arc<Mutex<HashMap<String, Child>>>,
    /// Held from a job's row insert to its spawn, so starts in this process do not
    /// interleave.
    starting: Arc<Mutex<()>>,
    /// coreutils `timeout`, which enforces a job's deadline while no runner runs.
    timeout_bin: Option<PathBuf>,
    grace: Duration,
    poll_interval: Duration,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("path", &self.db.path())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reads a job's result file: it must exist and hold a JSON object.
pub fn read_result_file(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("result file {} unreadable: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("result file {} is not valid JSON: {e}", path.display()))?;
    if !value.is_object() {
        return Err(format!(
            "result file {} must hold a JSON object, found {value}",
            path.display()
        ));
    }
    Ok(value)
}

impl JobRunner {
    /// Opens (or creates) the job table at `db_path`, e.g. `$RINGRIFT_HOME/run/jobs.db`.
    pub fn open(db_path: &Path) -> Result<Self, JobError> {
        Ok(JobRunner {
            db: ringrift_store::db::SharedDb::open(db_path, MIGRATIONS)
                .map_err(StoreError::from)?,
            children: Arc::new(Mutex::new(HashMap::new())),
            starting: Arc::new(Mutex::new(())),
            timeout_bin: find_in_path("timeout"),
            grace: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
        })
    }

    /// Whether deadlines are enforced while no runner runs (coreutils `timeout` found).
    pub fn has_deadline_guard(&self) -> bool {
        self.timeout_bin.is_some()
    }

    /// Time between SIGTERM and SIGKILL when stopping a group.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn db_path(&self) -> &Path {
        self.db.path()
    }

    /// Retention: deletes rows of jobs that finished before `before_ms` and whose
    /// outcome a caller has had, with their result files. Returns how many rows went.
    pub fn purge_finished(&self, before_ms: i64) -> Result<usize, JobError> {
        let path = self.db_path().to_path_buf();
        let conn = self.db.lock();
        let files: Vec<Option<String>> = {
            let mut st = conn
                .prepare(
                    "SELECT result_path FROM jobs
                     WHERE status != 'running' AND delivered = 1 AND finished_at < ?1",
                )
                .db(&path)?;
            st.query_map([before_ms], |r| r.get(0))
                .db(&path)?
                .collect::<Result<_, _>>()
                .db(&path)?
        };
        for f in files.into_iter().flatten() {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(JobError::Io {
                        action: "remove job result",
                        path: PathBuf::from(f),
                        source: e,
                    });
                }
            }
        }
        conn.execute(
            "DELETE FROM jobs WHERE status != 'running' AND delivered = 1 AND finished_at < ?1",
            [before_ms],
        )
        .db(&path)
    }

    /// Starts a job unless one with the same key is running (then returns that one) or
    /// the same job finished unwatched and its outcome was never handed out (then
    /// returns that outcome).
    pub fn start(&self, spec: &JobSpec) -> Result<Started, JobError> {
        let _one = lock(&self.starting);
        let path = self.db_path().to_path_buf();
        let fingerprint = spec_fingerprint(spec);
        let job_id = uuid::Uuid::new_v4().to_string();
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let deadline_ms = ringrift_store::now_ms().saturating_add(ms(spec.timeout));
        let mut argv: Vec<String>;
        let held: Option<(SlotKind, u32)>;
        {
            let mut conn = self.db.lock();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .db(&path)?;
            if let Some(h) = running_row(&tx, &path, &spec.job_key)? {
                match self.check(&tx, &path, h)? {
                    Check::Running(h) => return Ok(Started::AlreadyRunning(h)),
                    // Ended while nobody watched: reap it (its outcome stays undelivered).
                    Check::Ended(o) => finish_row(&tx, &path, &o, false)?,
                }
            }
            if let Some(o) = undelivered(&tx, &path, &spec.job_key, &fingerprint)? {
                mark_delivered(&tx, &path, &o.job_id)?;
                tx.commit().db(&path)?;
                return Ok(Started::Finished(o));
            }
            let slot = match spec.slot {
                Some(want) => Some((want.kind, self.free_slot(&tx, &path, want)?)),
                None => None,
            };
            let mut vars = spec.vars.clone();
            if let Some(r) = &spec.result_path {
                vars.insert("result".into(), r.display().to_string());
            }
            vars.insert("log".into(), spec.log_path.display().to_string());
            if let Some((SlotKind::Gpu, idx)) = slot {
                vars.insert("gpu".into(), idx.to_string());
            }
            argv = spec.template.render(&vars)?;
            if let Some(t) = &self.timeout_bin {
                // The deadline guard: fires only if no runner stopped the job first.
                let guard = spec.timeout + self.grace + Duration::from_secs(2);
                let mut wrapped = vec![
                    t.display().to_string(),
                    format!("--kill-after={}s", self.grace.as_secs().max(1)),
                    format!("{}s", guard.as_secs().max(1)),
                ];
                wrapped.append(&mut argv);
                argv = wrapped;
            }
            held = slot;
            if let Some(r) = &spec.result_path {
                // A stale result from an earlier run must never be read as this job's.
                match std::fs::remove_file(r) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(JobError::Io {
                            action: "remove stale result file",
                            path: r.clone(),
                            source: e,
                        });
                    }
                }
            }
            // Recorded before it exists: a runner killed before the spawn's pid is
            // written leaves a row that `check` resolves through `/proc`.
            tx.execute(
                "INSERT INTO jobs (job_id, job_key, kind, argv, pid, pgid, proc_start, runner_pid,
                    runner_start, started_at, deadline_at, status, log_path, result_path, spec,
                    delivered, slot_kind, slot_idx)
                 VALUES (?1, ?2, ?3, ?4, 0, 0, NULL, ?5, ?6, ?7, ?8, 'running', ?9, ?10, ?11, 0,
                    ?12, ?13)",
                params![
                    job_id,
                    spec.job_key,
                    spec.kind,
                    serde_json::to_string(&argv).unwrap_or_default(),
                    me,
                    procfs::stat(me).and_then(|s| i64::try_from(s.start_time).ok()),
                    ringrift_store::now_ms(),
                    deadline_ms,
                    spec.log_path.display().to_string(),
                    spec.result_path.as_ref().map(|p| p.display().to_string()),
                    fingerprint,
                    held.map(|(k, _)| k.as_str()),
                    held.map(|(_, i)| i),
                ],
            )
            .db(&path)?;
            tx.commit().db(&path)?;
        }
        let mut handle = JobHandle {
            job_id,
            job_key: spec.job_key.clone(),
            pid: 0,
            pgid: 0,
            proc_start: None,
            deadline_ms,
            log_path: spec.log_path.clone(),
            result_path: spec.result_path.clone(),
            runner_pid: me,
        };
        let mut env = spec.env.clone();
        if let Some((SlotKind::Gpu, idx)) = held {
            env.push(("CUDA_VISIBLE_DEVICES".into(), idx.to_string()));
        }
        let child = match self.spawn(spec, &argv, &env, &handle.job_id) {
            Ok(c) => c,
            Err(e) => {
                let mut o = base_outcome(&handle, JobStatus::Failed);
                o.error = Some(e.to_string());
                finish_row(&self.db.lock(), &path, &o, true)?;
                return Err(e);
            }
        };
        handle.pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        handle.pgid = handle.pid;
        handle.proc_start = procfs::stat(handle.pid).map(|s| s.start_time);
        let recorded = self.db.lock().execute(
            "UPDATE jobs SET pid = ?1, pgid = ?2, proc_start = ?3 WHERE job_id = ?4",
            params![
                handle.pid,
                handle.pgid,
                handle.proc_start.and_then(|s| i64::try_from(s).ok()),
                handle.job_id
            ],
        );
        let mut children = lock(&self.children);
        if let Err(e) = recorded {
            // Not recorded means not tracked: do not leave it running.
            let _ = killpg(Pid::from_raw(handle.pgid), Signal::SIGKILL);
            let mut child = child;
            let _ = child.wait();
            return Err(JobError::Db { path, source: e });
        }
        children.insert(handle.job_id.clone(), child);
        Ok(Started::Started(handle))
    }

    /// A free slot for `want` (the pinned device, else the lowest free index), counting
    /// every running job of the home; holders whose job ended unwatched are reaped first.
    fn free_slot(&self, conn: &Connection, path: &Path, want: SlotSpec) -> Result<u32, JobError> {
        let holders: Vec<(JobHandle, u32)> = {
            let mut st = conn
                .prepare(&format!(
                    "SELECT {HANDLE_COLUMNS}, slot_idx FROM jobs
                     WHERE status = 'running' AND slot_kind = ?1"
                ))
                .db(path)?;
            st.query_map([want.kind.as_str()], |r| {
                Ok((handle_from_row(r)?, r.get(9)?))
            })
            .db(path)?
            .collect::<Result<_, _>>()
            .db(path)?
        };
        let mut used = std::collections::BTreeSet::new();
        for (h, idx) in holders {
            match self.check(conn, path, h)? {
                Check::Running(_) => {
                    used.insert(idx);
                }
                Check::Ended(o) => finish_row(conn, path, &o, false)?,
            }
        }
        let free = match want.pin {
            Some(p) => (p < want.capacity && !used.contains(&p)).then_some(p),
            None => (0..want.capacity).find(|i| !used.contains(i)),
        };
        free.ok_or(JobError::NoSlot {
            kind: want.kind,
            capacity: want.capacity,
            pin: want.pin,
        })
    }

    fn spawn(
        &self,
        spec: &JobSpec,
        argv: &[String],
        env: &[(String, String)],
        job_id: &str,
    ) -> Result<Child, JobError> {
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| JobError::Io {
                action: "create log directory",
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(|e| JobError::Io {
                action: "open log",
                path: spec.log_path.clone(),
                source: e,
            })?;
        let log_err = log.try_clone().map_err(|e| JobError::Io {
            action: "open log",
            path: spec.log_path.clone(),
            source: e,
        })?;
        let mut cmd = command(spec, argv, env, job_id);
        cmd.stdout(log).stderr(log_err);
        cmd.spawn().map_err(|source| JobError::Spawn {
            job_key: spec.job_key.clone(),
            source,
        })
    }

    /// Whether a job recorded as running still runs; resolves a row written before its
    /// spawn (pid 0) through the job id in the processes' environment.
    fn check(&self, conn: &Connection, path: &Path, h: JobHandle) -> Result<Check, JobError> {
        if lock(&self.children).contains_key(&h.job_id) {
            return Ok(Check::Running(h));
        }
        if h.pid != 0 {
            return Ok(if group_alive(&h) {
                Check::Running(h)
            } else {
                Check::Ended(adopted_outcome(&h))
            });
        }
        if let Some((pid, st)) = procfs::find_env(ENV_JOB_ID, &h.job_id) {
            let h = JobHandle {
                pid,
                pgid: st.pgrp,
                proc_start: Some(st.start_time),
                ..h
            };
            conn.execute(
                "UPDATE jobs SET pid = ?1, pgid = ?2, proc_start = ?3 WHERE job_id = ?4",
                params![h.pid, h.pgid, i64::try_from(st.start_time).ok(), h.job_id],
            )
            .db(path)?;
            return Ok(Check::Running(h));
        }
        if self.runner_alive(conn, path, &h)? {
            // Its runner is between the row and the spawn.
            return Ok(Check::Running(h));
        }
        let mut o = adopted_outcome(&h);
        if o.status == JobStatus::Failed && o.result.is_none() {
            o.error = Some(format!(
                "its runner (pid {}) died while starting it and no process of the job was found",
                h.runner_pid
            ));
        }
        Ok(Check::Ended(o))
    }

    fn runner_alive(
        &self,
        conn: &Connection,
        path: &Path,
        h: &JobHandle,
    ) -> Result<bool, JobError> {
        let start: Option<i64> = conn
            .query_row(
                "SELECT runner_start FROM jobs WHERE job_id = ?1",
                [&h.job_id],
                |r| r.get(0),
            )
            .optional()
            .db(path)?
            .flatten();
        Ok(procfs::is_alive(
            h.runner_pid,
            start.and_then(|s| u64::try_from(s).ok()),
        ))
    }

    /// Jobs recorded as running, oldest first, read-only (no adoption, no reaping): what a
    /// status page shows.
    pub fn running(&self) -> Result<Vec<JobHandle>, JobError> {
        let path = self.db_path().to_path_buf();
        let conn = self.db.lock();
        running_rows(&conn, &path)
    }

    /// Jobs recorded as running (by this or an earlier runner): adopts the live ones and
    /// reaps the dead ones (reading their result files).
    pub fn recover(&self) -> Result<Vec<Recovered>, JobError> {
        let path = self.db_path().to_path_buf();
        let _one = lock(&self.starting);
        let conn = self.db.lock();
        let handles = running_rows(&conn, &path)?;
        let mut out = Vec::new();
        for h in handles {
            match self.check(&conn, &path, h)? {
                Check::Running(h) => out.push(Recovered::Running(h)),
                Check::Ended(outcome) => {
                    // Reported here, but still handed to the next identical `start`.
                    finish_row(&conn, &path, &outcome, false)?;
                    out.push(Recovered::Finished(outcome));
                }
            }
        }
        Ok(out)
    }

    /// Checks a job once: `None` while it runs (killing it if past its deadline).
    pub fn poll(&self, h: &JobHandle) -> Result<Option<JobOutcome>, JobError> {
        if let Some(done) = self.recorded_outcome(&h.job_id)? {
            mark_delivered(&self.db.lock(), self.db_path(), &done.job_id)?;
            return Ok(Some(done));
        }
        let fresh;
        let h = if h.pid == 0 {
            // Recorded before its spawn (by another runner): look again.
            let _one = lock(&self.starting);
            let conn = self.db.lock();
            let row = conn
                .query_row(
                    &format!("SELECT {HANDLE_COLUMNS} FROM jobs WHERE job_id = ?1"),
                    [&h.job_id],
                    handle_from_row,
                )
                .db(self.db_path())?;
            match self.check(&conn, self.db_path(), row)? {
                Check::Running(r) if r.pid == 0 => return Ok(None),
                Check::Running(r) => {
                    fresh = r;
                    &fresh
                }
                Check::Ended(o) => {
                    finish_row(&conn, self.db_path(), &o, true)?;
                    return Ok(Some(o));
                }
            }
        } else {
            h
        };
        let exited = {
            let mut children = lock(&self.children);
            match children.get_mut(&h.job_id) {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => {
                        children.remove(&h.job_id);
                        Some(Some(status))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        return Err(JobError::Io {
                            action: "wait for job",
                            path: h.log_path.clone(),
                            source: e,
                        });
                    }
                },
                // Adopted: not our child, so watch the group instead.
                None => (!group_alive(h)).then_some(None),
            }
        };
        let outcome = match exited {
            Some(Some(status)) => {
                // The leader is gone; leftovers in its group must not outlive the job.
                let _ = signal_group(h, Signal::SIGKILL);
                Some(own_outcome(h, status))
            }
            Some(None) => Some(adopted_outcome(h)),
            None if ringrift_store::now_ms() >= h.deadline_ms => {
                self.stop_group(h)?;
                let mut o = base_outcome(h, JobStatus::TimedOut);
                o.error = Some(format!(
                    "timed out; process group {} killed (log: {})",
                    h.pgid,
                    h.log_path.display()
                ));
                Some(o)
            }
            None => None,
        };
        if let Some(o) = &outcome {
            let conn = self.db.lock();
            finish_row(&conn, self.db_path(), o, true)?;
        }
        Ok(outcome)
    }

    /// Blocks until the job ends (polling; the deadline still applies).
    pub fn wait(&self, h: &JobHandle) -> Result<JobOutcome, JobError> {
        loop {
            if let Some(o) = self.poll(h)? {
                return Ok(o);
            }
            std::thread::sleep(self.poll_interval);
        }
    }

    /// Starts (or joins the already-running job with the same key) and waits.
    /// A job that finished unwatched with the same spec is not run again: its outcome
    /// is returned.
    pub fn run(&self, spec: &JobSpec) -> Result<JobOutcome, JobError> {
        match self.start(spec)? {
            Started::Finished(o) => Ok(o),
            Started::Started(h) | Started::AlreadyRunning(h) => self.wait(&h),
        }
    }

    /// Kills the job's whole process group and records it as cancelled.
    pub fn cancel(&self, h: &JobHandle) -> Result<JobOutcome, JobError> {
        if let Some(done) = self.recorded_outcome(&h.job_id)? {
            mark_delivered(&self.db.lock(), self.db_path(), &done.job_id)?;
            return Ok(done);
        }
        self.stop_group(h)?;
        let mut o = base_outcome(h, JobStatus::Cancelled);
        o.error = Some(format!("cancelled; process group {} killed", h.pgid));
        let conn = self.db.lock();
        finish_row(&conn, self.db_path(), &o, true)?;
        Ok(o)
    }

    /// Async run: start, poll until done, cancel the group when `cancel` fires. The
    /// blocking parts run in `spawn_blocking`.
    pub async fn run_async(
        &self,
        spec: JobSpec,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<JobOutcome, JobError> {
        let this = self.clone();
        let handle = match blocking(move || this.start(&spec)).await? {
            Started::Finished(o) => return Ok(o),
            Started::Started(h) | Started::AlreadyRunning(h) => h,
        };
        loop {
            let (this, h) = (self.clone(), handle.clone());
            if let Some(o) = blocking(move || this.poll(&h)).await? {
                return Ok(o);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = cancel.cancelled() => {
                    let (this, h) = (self.clone(), handle.clone());
                    return blocking(move || this.cancel(&h)).await;
                }
            }
        }
    }

    /// SIGTERM the group, wait up to the grace period for it to empty, then SIGKILL.
    fn stop_group(&self, h: &JobHandle) -> Result<(), JobError> {
        signal_group(h, Signal::SIGTERM)?;
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline && !self.group_gone(h) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !self.group_gone(h) {
            signal_group(h, Signal::SIGKILL)?;
        }
        let child = lock(&self.children).remove(&h.job_id);
        if let Some(mut child) = child {
            let _ = child.wait();
        }
        Ok(())
    }

    /// Whether nothing of the group runs any more (reaping our own exited leader).
    fn group_gone(&self, h: &JobHandle) -> bool {
        if let Some(child) = lock(&self.children).get_mut(&h.job_id) {
            let _ = child.try_wait();
        }
        !group_is_ours(h) || procfs::group_members(h.pgid).is_empty()
    }

    fn recorded_outcome(&self, job_id: &str) -> Result<Option<JobOutcome>, JobError> {
        let path = self.db_path();
        let conn = self.db.lock();
        let row = conn
            .query_row(
                "SELECT job_key, status, exit_code, result, error, log_path FROM jobs WHERE job_id = ?1",
                [job_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i32>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .db(path)?;
        let Some((job_key, status, exit_code, result, error, log_path)) = row else {
            return Err(JobError::UnknownJob(job_id.to_string()));
        };
        let status = match status.as_str() {
            "running" => return Ok(None),
            "succeeded" => JobStatus::Succeeded,
            "timed_out" => JobStatus::TimedOut,
            "cancelled" => JobStatus::Cancelled,
            _ => JobStatus::Failed,
        };
        Ok(Some(JobOutcome {
            job_id: job_id.to_string(),
            job_key,
            status,
            exit_code,
            result: result.and_then(|r| serde_json::from_str(&r).ok()),
            error,
            log_path: PathBuf::from(log_path),
        }))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::Join(e.to_string()))?
}

/// Signals the job's process group, unless its id now belongs to someone else.
fn signal_group(h: &JobHandle, sig: Signal) -> Result<(), JobError> {
    if h.pgid <= 0 || !group_is_ours(h) {
        return Ok(());
    }
    match killpg(Pid::from_raw(h.pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(JobError::Signal {
            pgid: h.pgid,
            source,
        }),
    }
}

/// Whether process group `h.pgid` is still the job's. Linux does not hand out an id
/// still in use as a group id, so the group is ours unless a process of that id leads
/// a group now and is not the leader the row names (the group died and the id was
/// recycled).
fn group_is_ours(h: &JobHandle) -> bool {
    match procfs::stat(h.pgid) {
        Some(s) if s.pgrp == h.pgid && h.pgid == h.pid => {
            h.proc_start.is_none_or(|t| t == s.start_time)
        }
        _ => true,
    }
}

/// Whether anything of a (possibly adopted) job still runs. The leader's start time
/// guards against a reused PID; grandchildren keep the group alive after the leader.
fn group_alive(h: &JobHandle) -> bool {
    procfs::is_alive(h.pid, h.proc_start)
        || (group_is_ours(h) && !procfs::group_members(h.pgid).is_empty())
}

/// What `check` found of a job recorded as running.
enum Check {
    Running(JobHandle),
    Ended(JobOutcome),
}

/// What a job does, for recognising the same job again: kind, command template and
/// placeholder values except the per-run result and log paths.
fn spec_fingerprint(spec: &JobSpec) -> String {
    let vars: BTreeMap<&str, &str> = spec
        .vars
        .iter()
        .filter(|(k, _)| k.as_str() != "result" && k.as_str() != "log")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::json!({
        "kind": spec.kind,
        "argv": spec.template.argv(),
        "vars": vars,
        "workdir": spec.workdir,
        "env": spec.env,
    })
    .to_string()
}

/// The newest succeeded, never handed out outcome of the same job.
fn undelivered(
    conn: &Connection,
    path: &Path,
    job_key: &str,
    spec: &str,
) -> Result<Option<JobOutcome>, JobError> {
    conn.query_row(
        "SELECT job_id, exit_code, result, error, log_path FROM jobs
         WHERE job_key = ?1 AND spec = ?2 AND delivered = 0 AND status = 'succeeded'
         ORDER BY finished_at DESC LIMIT 1",
        params![job_key, spec],
        |r| {
            Ok(JobOutcome {
                job_id: r.get(0)?,
                job_key: job_key.to_owned(),
                status: JobStatus::Succeeded,
                exit_code: r.get(1)?,
                result: r
                    .get::<_, Option<String>>(2)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
                error: r.get(3)?,
                log_path: PathBuf::from(r.get::<_, String>(4)?),
            })
        },
    )
    .optional()
    .db(path)
}

fn mark_delivered(conn: &Connection, path: &Path, job_id: &str) -> Result<(), JobError> {
    conn.execute("UPDATE jobs SET delivered = 1 WHERE job_id = ?1", [job_id])
        .db(path)?;
    Ok(())
}

/// The first executable `name` on `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn base_outcome(h: &JobHandle, status: JobStatus) -> JobOutcome {
    JobOutcome {
        job_id: h.job_id.clone(),
        job_key: h.job_key.clone(),
        status,
        exit_code: None,
        result: None,
        error: None,
        log_path: h.log_path.clone(),
    }
}

/// Outcome of a job whose exit status we saw.
fn own_outcome(h: &JobHandle, status: std::process::ExitStatus) -> JobOutcome {
    let mut o = base_outcome(h, JobStatus::Failed);
    o.exit_code = status.code();
    if status.code() == Some(124) && ringrift_store::now_ms() >= h.deadline_ms {
        o.status = JobStatus::TimedOut;
        o.error = Some(format!(
            "timed out; killed by its deadline guard (log: {})",
            h.log_path.display()
        ));
        return o;
    }
    if !status.success() {
        o.error = Some(match status.code() {
            Some(c) => format!("exited with code {c} (log: {})", h.log_path.display()),
            None => format!(
                "killed by a signal: {status} (log: {})",
                h.log_path.display()
            ),
        });
        return o;
    }
    match &h.result_path {
        None => o.status = JobStatus::Succeeded,
        Some(p) => match read_result_file(p) {
            Ok(v) => {
                o.status = JobStatus::Succeeded;
                o.result = Some(v);
            }
            Err(e) => o.error = Some(e),
        },
    }
    o
}

/// Outcome of a job that ended while no runner was its parent: the result file decides.
fn adopted_outcome(h: &JobHandle) -> JobOutcome {
    let mut o = base_outcome(h, JobStatus::Failed);
    match &h.result_path {
        Some(p) => match read_result_file(p) {
            Ok(v) => {
                o.status = JobStatus::Succeeded;
                o.result = Some(v);
            }
            Err(e) => o.error = Some(format!("ended while the runner was down; {e}")),
        },
        None => o.error = Some("ended while the runner was down; exit status unknown".into()),
    }
    if o.status == JobStatus::Failed && ringrift_store::now_ms() >= h.deadline_ms {
        o.status = JobStatus::TimedOut;
        o.error = Some(format!(
            "deadline passed while no runner watched; its deadline guard stopped it (log: {})",
            h.log_path.display()
        ));
    }
    o
}

/// Records how a job ended; `delivered`: the outcome goes to a caller now.
fn finish_row(
    conn: &Connection,
    path: &Path,
    o: &JobOutcome,
    delivered: bool,
) -> Result<(), JobError> {
    conn.execute(
        "UPDATE jobs SET status = ?1, finished_at = ?2, exit_code = ?3, error = ?4, result = ?5,
             delivered = ?7
         WHERE job_id = ?6 AND status = 'running'",
        params![
            o.status.as_str(),
            ringrift_store::now_ms(),
            o.exit_code,
            o.error,
            o.result.as_ref().map(|r| r.to_string()),
            o.job_id,
            delivered
        ],
    )
    .db(path)?;
    Ok(())
}

const HANDLE_COLUMNS: &str =
    "job_id, job_key, pid, pgid, proc_start, deadline_at, log_path, result_path, runner_pid";

fn handle_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobHandle> {
    Ok(JobHandle {
        job_id: r.get(0)?,
        job_key: r.get(1)?,
        pid: r.get(2)?,
        pgid: r.get(3)?,
        proc_start: r
            .get::<_, Option<i64>>(4)?
            .and_then(|s| u64::try_from(s).ok()),
        deadline_ms: r.get(5)?,
        log_path: PathBuf::from(r.get::<_, String>(6)?),
        result_path: r.get::<_, Option<String>>(7)?.map(PathBuf::from),
        runner_pid: r.get(8)?,
    })
}

fn running_row(
    conn: &Connection,
    path: &Path,
    job_key: &str,
) -> Result<Option<JobHandle>, JobError> {
    conn.query_row(
        &format!("SELECT {HANDLE_COLUMNS} FROM jobs WHERE job_key = ?1 AND status = 'running'"),
        [job_key],
        handle_from_row,
    )
    .optional()
    .db(path)
}

fn running_rows(conn: &Connection, path: &Path) -> Result<Vec<JobHandle>, JobError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {HANDLE_COLUMNS} FROM jobs WHERE status = 'running' ORDER BY started_at"
        ))
        .db(path)?;
    let rows = stmt.query_map([], handle_from_row).db(path)?;
    rows.collect::<Result<Vec<_>, _>>().db(path)
}
