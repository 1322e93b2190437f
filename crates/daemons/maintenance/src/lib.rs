//! `maintenance`: housekeeping of `$RINGRIFT_HOME`, hourly by default.
//!
//! * Logs: rotated files (`*.log.N`) and job logs older than `log_max_age_days` are
//!   deleted, then the oldest rotated files until `logs/` is under `logs_max_bytes`.
//!   Live `*.log` files belong to the launcher, which rotates them by size.
//! * SQLite: every `*.db` under `data/` and `events/` gets `wal_checkpoint(TRUNCATE)`;
//!   databases whose free pages exceed `vacuum_free_ratio` are `VACUUM`ed (not the
//!   router's busy log, which its own retention keeps in check).
//! * Temp: files under `tmp/` older than `tmp_max_age_h`, and leftover atomic-write temp
//!   files (`.*.tmp*`, `*.tmp`) under `data/` and `models/` older than an hour, and
//!   partial downloads (`.*.part-*`) there untouched for `tmp_max_age_h`.
//! * Quarantine: the oldest files of `data/quarantine/` (corrupt downloads and orphans,
//!   with their `.reason` notes) until it holds at most `quarantine_max_bytes`.
//! * Retention ([`retention`]): NPZ exports, trained generations, canonical backups,
//!   finished jobs and completed queue rows past their limits; never the canonical
//!   model, its newest backup or data not yet trained on.
//!
//! All file and SQLite work runs in `spawn_blocking`.

pub mod retention;

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "maintenance",
    about: "Log pruning, SQLite checkpoint/vacuum, temp cleanup",
    cycle_interval_s: Some(3600.0),
    scope: Some(Scope::Node),
};

/// `[maintenance]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaintConfig {
    pub log_max_age_days: f64,
    pub logs_max_bytes: u64,
    pub vacuum_free_ratio: f64,
    pub tmp_max_age_h: f64,
    /// Exports kept per config, newest first (older ones go once trained on).
    pub npz_keep: usize,
    /// Trained generations kept per config (`models/<config>/gen*.rrm`).
    pub models_keep: usize,
    /// Canonical backups kept per config (at least 1).
    pub backups_keep: usize,
    /// Finished jobs (rows and result files) older than this go.
    pub job_results_max_age_days: f64,
    /// Completed work-queue rows older than this go.
    pub queue_done_max_age_h: f64,
    /// `data/quarantine/` is cut to this many bytes, oldest files first.
    pub quarantine_max_bytes: u64,
}

impl Default for MaintConfig {
    fn default() -> Self {
        MaintConfig {
            log_max_age_days: 14.0,
            logs_max_bytes: 2 << 30,
            vacuum_free_ratio: 0.25,
            tmp_max_age_h: 24.0,
            npz_keep: 20,
            models_keep: 10,
            backups_keep: 5,
            job_results_max_age_days: 7.0,
            queue_done_max_age_h: 72.0,
            quarantine_max_bytes: 4 << 30,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub logs_removed: u64,
    pub log_bytes_freed: u64,
    pub dbs_checkpointed: u64,
    pub dbs_vacuumed: u64,
    pub db_bytes_freed: u64,
    pub tmp_removed: u64,
    pub npz_removed: u64,
    pub models_removed: u64,
    pub backups_removed: u64,
    pub job_rows_removed: u64,
    pub queue_rows_removed: u64,
    pub quarantine_removed: u64,
    pub quarantine_bytes_freed: u64,
    pub errors: Vec<String>,
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            walk(&p, out);
        } else if m.is_file() {
            out.push((p, m));
        }
    }
}

fn age(m: &std::fs::Metadata, now: SystemTime) -> Duration {
    m.modified()
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

fn is_rotated_log(p: &Path) -> bool {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    n.rsplit_once(".log.")
        .is_some_and(|(_, suffix)| suffix.chars().all(|c| c.is_ascii_digit()))
}

/// One pass over `home` at time `now`; `trained`: the training loop's watermark per
/// config (exports up to it were trained on).
pub fn run_pass(
    home: &Path,
    cfg: &MaintConfig,
    now: SystemTime,
    trained: &HashMap<String, i64>,
) -> Report {
    let mut r = Report::default();
    prune_logs(home, cfg, now, &mut r);
    retention::prune_npz(home, cfg, trained, &mut r);
    retention::prune_generations(home, cfg, &mut r);
    retention::prune_backups(home, cfg, &mut r);
    retention::prune_rows(home, cfg, now, &mut r);
    sqlite(home, cfg, &mut r);
    clean_tmp(home, cfg, now, &mut r);
    prune_quarantine(home, cfg, &mut r);
    r
}

/// The training loop's trained watermark per config, from the ledger's training
/// checkpoints (written by continuous_training_loop, read here).
pub async fn trained_watermarks(home: &Path) -> anyhow::Result<HashMap<String, i64>> {
    let home = home.to_owned();
    let ledger =
        tokio::task::spawn_blocking(move || ringrift_ledger::Ledger::open(&home)).await??;
    Ok(ledger
        .checkpoints()
        .await?
        .into_iter()
        .map(|c| (c.config.to_string(), c.watermark))
        .collect())
}

pub(crate) fn remove(
    p: &Path,
    size: u64,
    count: &mut u64,
    bytes: Option<&mut u64>,
    r_errors: &mut Vec<String>,
) {
    match std::fs::remove_file(p) {
        Ok(()) => {
            *count += 1;
            if let Some(b) = bytes {
                *b += size;
            }
        }
        Err(e) => r_errors.push(format!("remove {}: {e}", p.display())),
    }
}

fn prune_logs(home: &Path, cfg: &MaintConfig, now: SystemTime, r: &mut Report) {
    let mut files = Vec::new();
    walk(&home.join("logs"), &mut files);
    let max_age = Duration::from_secs_f64(cfg.log_max_age_days * 86400.0);
    let mut kept = Vec::new();
    for (p, m) in files {
        let live =
            p.extension().is_some_and(|e| e == "log") && p.parent() == Some(&home.join("logs"));
        if !live && age(&m, now) > max_age {
            remove(
                &p,
                m.len(),
                &mut r.logs_removed,
                Some(&mut r.log_bytes_freed),
                &mut r.errors,
            );
        } else {
            kept.push((p, m));
        }
    }
    let total: u64 = kept.iter().map(|(_, m)| m.len()).sum();
    let rotated: Vec<_> = kept
        .into_iter()
        .filter(|(p, _)| is_rotated_log(p))
        .collect();
    remove_oldest_until(
        rotated,
        total,
        cfg.logs_max_bytes,
        &mut r.logs_removed,
        &mut r.log_bytes_freed,
        &mut r.errors,
    );
}

/// Removes the oldest of `files` (by mtime) while `total` (the bytes they and whatever
/// else counts are) is over `cap`.
fn remove_oldest_until(
    mut files: Vec<(PathBuf, std::fs::Metadata)>,
    mut total: u64,
    cap: u64,
    count: &mut u64,
    bytes: &mut u64,
    errors: &mut Vec<String>,
) {
    files.sort_by_key(|(_, m)| m.modified().ok());
    for (p, m) in files {
        if total <= cap {
            break;
        }
        total = total.saturating_sub(m.len());
        remove(&p, m.len(), count, Some(&mut *bytes), errors);
    }
}

fn sqlite(home: &Path, cfg: &MaintConfig, r: &mut Report) {
    let mut files = Vec::new();
    walk(&home.join("data"), &mut files);
    walk(&home.join("events"), &mut files);
    for (p, _) in files
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "db"))
    {
        let router_log = p.starts_with(home.join("events"));
        match maintain_db(&p, cfg, !router_log) {
            Ok((vacuumed, freed)) => {
                r.dbs_checkpointed += 1;
                r.dbs_vacuumed += vacuumed as u64;
                r.db_bytes_freed += freed;
            }
            Err(e) => r.errors.push(format!("{}: {e}", p.display())),
        }
    }
}

/// Checkpoints `p`, vacuums it if allowed and fragmented; returns (vacuumed, bytes freed).
pub fn maintain_db(
    p: &Path,
    cfg: &MaintConfig,
    allow_vacuum: bool,
) -> rusqlite::Result<(bool, u64)> {
    let c = rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    if !allow_vacuum {
        return Ok((false, 0));
    }
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if pages == 0 || (free as f64 / pages as f64) < cfg.vacuum_free_ratio {
        return Ok((false, 0));
    }
    let before = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    c.execute_batch("VACUUM")?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let after = std::fs::metadata(p).map(|m| m.len()).unwrap_or(before);
    Ok((true, before.saturating_sub(after)))
}

fn clean_tmp(home: &Path, cfg: &MaintConfig, now: SystemTime, r: &mut Report) {
    let mut files = Vec::new();
    walk(&home.join("tmp"), &mut files);
    let max_age = Duration::from_secs_f64(cfg.tmp_max_age_h * 3600.0);
    for (p, m) in files {
        if age(&m, now) > max_age {
            remove(&p, m.len(), &mut r.tmp_removed, None, &mut r.errors);
        }
    }
    let mut files = Vec::new();
    walk(&home.join("data"), &mut files);
    walk(&home.join("models"), &mut files);
    for (p, m) in files {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let temp = n.ends_with(".tmp") || (n.starts_with('.') && n.contains(".tmp"));
        // A download in progress writes its part file; one untouched for tmp_max_age_h
        // was given up.
        let part = n.starts_with('.') && n.contains(".part-");
        if (temp && age(&m, now) > Duration::from_secs(3600)) || (part && age(&m, now) > max_age) {
            remove(&p, m.len(), &mut r.tmp_removed, None, &mut r.errors);
        }
    }
}

fn prune_quarantine(home: &Path, cfg: &MaintConfig, r: &mut Report) {
    let mut files = Vec::new();
    walk(&ringrift_store::paths::quarantine_dir(home), &mut files);
    let total: u64 = files.iter().map(|(_, m)| m.len()).sum();
    remove_oldest_until(
        files,
        total,
        cfg.quarantine_max_bytes,
        &mut r.quarantine_removed,
        &mut r.quarantine_bytes_freed,
        &mut r.errors,
    );
}

pub struct Maintenance {
    cfg: MaintConfig,
    last: Mutex<Option<Report>>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: MaintConfig = ctx.settings.section("maintenance")?;
    handler_base::ensure_config!(
        (0.0..=1.0).contains(&cfg.vacuum_free_ratio),
        "maintenance.vacuum_free_ratio must be within 0..=1"
    );
    handler_base::ensure_config!(
        cfg.log_max_age_days > 0.0
            && cfg.tmp_max_age_h > 0.0
            && cfg.job_results_max_age_days > 0.0
            && cfg.queue_done_max_age_h > 0.0,
        "maintenance ages (log_max_age_days, tmp_max_age_h, job_results_max_age_days, queue_done_max_age_h) must be > 0"
    );
    handler_base::ensure_config!(
        cfg.npz_keep >= 1 && cfg.models_keep >= 1 && cfg.backups_keep >= 1,
        "maintenance.npz_keep, models_keep and backups_keep must be at least 1"
    );
    Ok(Arc::new(Maintenance {
        cfg,
        last: Mutex::new(None),
    }))
}

#[async_trait::async_trait]
impl Handler for Maintenance {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let (home, cfg) = (ctx.home.clone(), self.cfg.clone());
        // Unknown watermarks keep every export: never delete data not yet trained on.
        let trained = match trained_watermarks(&home).await {
            Ok(t) => t,
            Err(e) => {
                ctx.errors.record("maintenance", &format!("{e:#}"));
                HashMap::new()
            }
        };
        let r =
            tokio::task::spawn_blocking(move || run_pass(&home, &cfg, SystemTime::now(), &trained))
                .await?;
        tracing::info!(
            logs_removed = r.logs_removed,
            log_bytes_freed = r.log_bytes_freed,
            dbs_checkpointed = r.dbs_checkpointed,
            dbs_vacuumed = r.dbs_vacuumed,
            db_bytes_freed = r.db_bytes_freed,
            tmp_removed = r.tmp_removed,
            npz_removed = r.npz_removed,
            models_removed = r.models_removed,
            backups_removed = r.backups_removed,
            job_rows_removed = r.job_rows_removed,
            queue_rows_removed = r.queue_rows_removed,
            quarantine_removed = r.quarantine_removed,
            quarantine_bytes_freed = r.quarantine_bytes_freed,
            errors = r.errors.len(),
            "maintenance pass done"
        );
        for e in &r.errors {
            ctx.errors.record("maintenance", e);
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        match self.last.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            None => HealthCheckResult::running("no pass yet"),
            Some(r) => {
                let h = if r.errors.is_empty() {
                    HealthCheckResult::running("last pass clean")
                } else {
                    HealthCheckResult::degraded(format!("{} errors in last pass", r.errors.len()))
                };
                h.detail("logs_removed", r.logs_removed)
                    .detail("dbs_vacuumed", r.dbs_vacuumed)
                    .detail("tmp_removed", r.tmp_removed)
                    .detail("db_bytes_freed", r.db_bytes_freed)
                    .detail("npz_removed", r.npz_removed)
                    .detail("models_removed", r.models_removed)
                    .detail("backups_removed", r.backups_removed)
                    .detail("job_rows_removed", r.job_rows_removed)
                    .detail("queue_rows_removed", r.queue_rows_removed)
                    .detail("quarantine_removed", r.quarantine_removed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, bytes: usize, age_s: u64) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![b'x'; bytes]).unwrap();
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
    }

    /// The watermarks are the training loop's checkpoints in the ledger (the newest per
    /// config), not its private state.
    #[tokio::test]
    async fn trained_watermarks_are_read_from_the_ledger() {
        let h = tempfile::tempdir().unwrap();
        assert!(trained_watermarks(h.path()).await.unwrap().is_empty());
        // Rows as continuous_training_loop writes them (its writer is refused here).
        drop(ringrift_ledger::Ledger::open(h.path()).unwrap());
        let db = rusqlite::Connection::open(h.path().join("data/ledger.db")).unwrap();
        db.execute_batch(
            "INSERT INTO training VALUES ('hex8_2p', 1, 40, 'a', 1), ('hex8_2p', 2, 90, 'b', 2), ('square8_2p', 1, 5, 'c', 3)",
        )
        .unwrap();
        let wm = trained_watermarks(h.path()).await.unwrap();
        assert_eq!(
            wm,
            HashMap::from([("hex8_2p".to_owned(), 90), ("square8_2p".to_owned(), 5)])
        );
    }

    #[test]
    fn prunes_old_rotated_logs_and_keeps_live_and_recent_ones() {
        let h = tempfile::tempdir().unwrap();
        let logs = h.path().join("logs");
        touch(&logs.join("a.log"), 10, 100 * 86400);
        touch(&logs.join("a.log.1"), 10, 20 * 86400);
        touch(&logs.join("a.log.2"), 10, 86400);
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now(),
            &HashMap::new(),
        );
        assert_eq!(r.logs_removed, 1);
        assert!(
            logs.join("a.log").exists()
                && logs.join("a.log.2").exists()
                && !logs.join("a.log.1").exists()
        );
    }

    #[test]
    fn size_cap_removes_oldest_rotated_first() {
        let h = tempfile::tempdir().unwrap();
        let logs = h.path().join("logs");
        touch(&logs.join("b.log.3"), 1000, 300);
        touch(&logs.join("b.log.2"), 1000, 200);
        touch(&logs.join("b.log.1"), 1000, 100);
        let cfg = MaintConfig {
            logs_max_bytes: 2000,
            ..Default::default()
        };
        let r = run_pass(h.path(), &cfg, SystemTime::now(), &HashMap::new());
        assert_eq!(r.logs_removed, 1);
        assert!(!logs.join("b.log.3").exists() && logs.join("b.log.1").exists());
    }

    #[test]
    fn stale_part_files_go_and_quarantine_is_cut_to_its_budget_oldest_first() {
        let h = tempfile::tempdir().unwrap();
        let games = h.path().join("data/games");
        touch(
            &games.join(".hex8_2p.db.part-0123456789abcdef"),
            100,
            2 * 86400,
        );
        touch(&games.join(".sq8_2p.db.part-fedcba9876543210"), 100, 60);
        let q = ringrift_store::paths::quarantine_dir(h.path());
        touch(&q.join("a.rrm.1.x"), 1000, 300);
        touch(&q.join("a.rrm.1.x.reason"), 10, 300);
        touch(&q.join("b.rrm.2.y"), 1000, 200);
        touch(&q.join("c.rrm.3.z"), 1000, 100);
        let cfg = MaintConfig {
            quarantine_max_bytes: 2000,
            ..Default::default()
        };
        let r = run_pass(h.path(), &cfg, SystemTime::now(), &HashMap::new());
        assert!(!games.join(".hex8_2p.db.part-0123456789abcdef").exists());
        assert!(games.join(".sq8_2p.db.part-fedcba9876543210").exists());
        assert_eq!(r.tmp_removed, 1);
        assert!(!q.join("a.rrm.1.x").exists() && !q.join("a.rrm.1.x.reason").exists());
        assert!(q.join("b.rrm.2.y").exists() && q.join("c.rrm.3.z").exists());
        assert_eq!((r.quarantine_removed, r.quarantine_bytes_freed), (2, 1010));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }

    #[test]
    fn vacuums_a_fragmented_database_and_checkpoints_all() {
        let h = tempfile::tempdir().unwrap();
        let db = h.path().join("data/games/x.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x BLOB);")
            .unwrap();
        for _ in 0..200 {
            c.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        c.execute("DELETE FROM t", []).unwrap();
        drop(c);
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now(),
            &HashMap::new(),
        );
        assert_eq!((r.dbs_checkpointed, r.dbs_vacuumed), (1, 1), "{r:?}");
        assert!(r.db_bytes_freed > 500_000, "{r:?}");
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now(),
            &HashMap::new(),
        );
        assert_eq!(r.dbs_vacuumed, 0, "nothing left to vacuum");
    }

    #[test]
    fn removes_stale_temp_files_only() {
        let h = tempfile::tempdir().unwrap();
        touch(&h.path().join("tmp/old"), 1, 2 * 86400);
        touch(&h.path().join("tmp/new"), 1, 10);
        touch(&h.path().join("data/training/.x.npz.tmp123"), 1, 7200);
        touch(&h.path().join("data/training/.y.npz.tmp9"), 1, 10);
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now(),
            &HashMap::new(),
        );
        assert_eq!(r.tmp_removed, 2);
        assert!(
            h.path().join("tmp/new").exists()
                && h.path().join("data/training/.y.npz.tmp9").exists()
        );
    }

    #[test]
    fn a_corrupt_database_is_reported_not_fatal() {
        let h = tempfile::tempdir().unwrap();
        touch(&h.path().join("data/bad.db"), 4096, 10);
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now(),
            &HashMap::new(),
        );
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(r.errors[0].contains("bad.db"));
    }

    #[test]
    fn retention_keeps_the_newest_and_anything_not_yet_trained_on() {
        let h = tempfile::tempdir().unwrap();
        let home = h.path();
        // Exports after 0, 10, ..., 50; trained up to 30: after0/after10/after20 are
        // consumed (their successors start at or below 30), after30 is not.
        for w in [0, 10, 20, 30, 40, 50] {
            touch(
                &home.join(format!("data/training/hex8_2p_after{w}.npz")),
                10,
                100,
            );
        }
        // Another config without a known watermark keeps everything.
        for w in [0, 10, 20] {
            touch(
                &home.join(format!("data/training/square8_2p_after{w}.npz")),
                10,
                100,
            );
        }
        for g in 1..=5u64 {
            touch(
                &home.join(format!("models/hex8_2p/gen{g:04}_w{g}.rrm")),
                10,
                1000 - g * 10,
            );
        }
        touch(&home.join("models/canonical_hex8_2p.rrm"), 10, 5000);
        for stamp in [100, 200, 300] {
            touch(
                &home.join(format!("models/backup/canonical_hex8_2p.{stamp}.rrm")),
                10,
                100,
            );
            touch(
                &home.join(format!("models/backup/canonical_hex8_2p.{stamp}.json")),
                1,
                100,
            );
        }
        let cfg = MaintConfig {
            npz_keep: 2,
            models_keep: 2,
            backups_keep: 1,
            ..Default::default()
        };
        let trained = HashMap::from([("hex8_2p".to_owned(), 30)]);
        let r = run_pass(home, &cfg, SystemTime::now(), &trained);
        let npz = |c: &str, w: i64| {
            home.join(format!("data/training/{c}_after{w}.npz"))
                .exists()
        };
        assert_eq!(
            [0, 10, 20, 30, 40, 50].map(|w| npz("hex8_2p", w)),
            [false, false, false, true, true, true],
            "{r:?}"
        );
        assert!([0, 10, 20].iter().all(|&w| npz("square8_2p", w)));
        let gens: Vec<bool> = (1..=5u64)
            .map(|g| {
                home.join(format!("models/hex8_2p/gen{g:04}_w{g}.rrm"))
                    .exists()
            })
            .collect();
        assert_eq!(gens, [false, false, false, true, true]);
        assert!(home.join("models/canonical_hex8_2p.rrm").exists());
        assert!(
            home.join("models/backup/canonical_hex8_2p.300.rrm")
                .exists()
        );
        assert!(
            home.join("models/backup/canonical_hex8_2p.300.json")
                .exists()
        );
        assert!(
            !home
                .join("models/backup/canonical_hex8_2p.200.rrm")
                .exists()
        );
        assert!(
            !home
                .join("models/backup/canonical_hex8_2p.100.json")
                .exists()
        );
        assert_eq!(
            (r.npz_removed, r.models_removed, r.backups_removed),
            (3, 3, 2)
        );
    }

    #[test]
    fn old_completed_queue_rows_and_delivered_jobs_go() {
        use ringrift_store::work_queue::{NewWork, SqliteWorkQueue, WorkKind, WorkQueue};
        let h = tempfile::tempdir().unwrap();
        let q = SqliteWorkQueue::open(&ringrift_store::paths::work_queue_db(h.path())).unwrap();
        let a = q
            .enqueue(&NewWork::new(
                WorkKind::Selfplay,
                None,
                0,
                serde_json::json!({}),
            ))
            .unwrap();
        let b = q
            .enqueue(&NewWork::new(
                WorkKind::Selfplay,
                None,
                0,
                serde_json::json!({}),
            ))
            .unwrap();
        let done = q
            .claim("w", &[WorkKind::Selfplay], Duration::from_secs(60))
            .unwrap()
            .unwrap()
            .item_id;
        let open = if done == a { b } else { a };
        assert!(q.complete(&done, "w", &serde_json::json!({})).unwrap());
        let jobs = job_runner::JobRunner::open(&h.path().join("data/jobs.db")).unwrap();
        std::fs::create_dir_all(h.path().join("run/jobs")).unwrap();
        let spec = job_runner::JobSpec {
            job_key: "k".into(),
            kind: "test".into(),
            template: job_runner::CommandTemplate::new(vec![
                "sh".into(),
                "-c".into(),
                "echo '{{}}' > {result}".into(),
            ])
            .unwrap(),
            vars: Default::default(),
            timeout: Duration::from_secs(30),
            log_path: h.path().join("logs/jobs/k.log"),
            result_path: Some(h.path().join("run/jobs/k.json")),
            workdir: None,
            env: vec![],
            slot: None,
        };
        assert_eq!(
            jobs.run(&spec).unwrap().status,
            job_runner::JobStatus::Succeeded
        );
        // A pass now keeps everything; a pass 4 days on removes the completed row; 8
        // days on, the finished job and its result file too.
        let day = Duration::from_secs(86400);
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now(),
            &HashMap::new(),
        );
        assert_eq!((r.queue_rows_removed, r.job_rows_removed), (0, 0), "{r:?}");
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now() + 4 * day,
            &HashMap::new(),
        );
        assert_eq!((r.queue_rows_removed, r.job_rows_removed), (1, 0), "{r:?}");
        assert!(q.get(&done).unwrap().is_none() && q.get(&open).unwrap().is_some());
        let r = run_pass(
            h.path(),
            &MaintConfig::default(),
            SystemTime::now() + 8 * day,
            &HashMap::new(),
        );
        assert_eq!(r.job_rows_removed, 1, "{r:?}");
        assert!(!h.path().join("run/jobs/k.json").exists());
    }
}

#[cfg(test)]
mod in_process;
