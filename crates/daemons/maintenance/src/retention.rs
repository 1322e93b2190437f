//! Retention of the loop's artefacts, so nothing grows without bound: NPZ exports,
//! trained generations, canonical backups, job results and rows, completed queue rows.
//!
//! Never removed: the canonical model (`models/canonical_*.rrm` is not in any set pruned
//! here), its newest backup (`backups_keep` is at least 1), the newest `npz_keep`
//! exports and any export not yet trained on (by the training loop's watermark), and
//! jobs whose outcome no caller has had yet.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::{MaintConfig, Report, remove};

/// `data/training/<config>_after<W>.npz` → (config, W).
fn npz_name(p: &Path) -> Option<(String, i64)> {
    let stem = p.file_name()?.to_str()?.strip_suffix(".npz")?;
    let (config, w) = stem.rsplit_once("_after")?;
    Some((config.to_owned(), w.parse().ok()?))
}

/// Exports beyond the newest `npz_keep` of a config that training has consumed. An
/// export `after<W>` holds the games after W up to the next export's W, so it is
/// trained on once the training loop's watermark reached that next W; a config with no
/// known watermark loses nothing.
pub fn prune_npz(home: &Path, cfg: &MaintConfig, trained: &HashMap<String, i64>, r: &mut Report) {
    let mut by_config: BTreeMap<String, Vec<(i64, PathBuf, u64)>> = BTreeMap::new();
    for e in std::fs::read_dir(home.join("data/training"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        if let (Some((config, w)), Ok(m)) = (npz_name(&p), e.metadata()) {
            by_config.entry(config).or_default().push((w, p, m.len()));
        }
    }
    for (config, mut files) in by_config {
        let Some(&wm) = trained.get(&config) else {
            continue;
        };
        files.sort_by_key(|f| f.0);
        let keep_from = files.len().saturating_sub(cfg.npz_keep);
        for i in 0..keep_from {
            let next_w = files[i + 1].0;
            if next_w <= wm {
                let (_, p, len) = &files[i];
                remove(p, *len, &mut r.npz_removed, None, &mut r.errors);
            }
        }
    }
}

/// Files in `dir` for which `key(name)` returns `(group, number)`, grouped, newest first
/// (by that number, then modification time).
fn grouped(
    dir: &Path,
    key: impl Fn(&str) -> Option<(String, i64)>,
) -> BTreeMap<String, Vec<(PathBuf, u64)>> {
    let mut g: BTreeMap<String, Vec<(i64, SystemTime, PathBuf, u64)>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let (Some((k, n)), Ok(m)) = (key(&name), e.metadata()) else {
            continue;
        };
        if m.is_file() {
            let t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            g.entry(k).or_default().push((n, t, e.path(), m.len()));
        }
    }
    g.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
            (k, v.into_iter().map(|x| (x.2, x.3)).collect())
        })
        .collect()
}

/// Trained generations `models/<config>/gen*.rrm` beyond the newest `models_keep`.
pub fn prune_generations(home: &Path, cfg: &MaintConfig, r: &mut Report) {
    let models = home.join("models");
    for e in std::fs::read_dir(&models).into_iter().flatten().flatten() {
        let dir = e.path();
        if !dir.is_dir() || dir.file_name().is_some_and(|n| n == "backup") {
            continue;
        }
        // The same newest-first order the loop picks its recent models by.
        let gens = ringrift_store::model_files::newest_generations(&dir, usize::MAX);
        for p in gens.into_iter().skip(cfg.models_keep) {
            remove(&p, 0, &mut r.models_removed, None, &mut r.errors);
        }
    }
}

/// Canonical backups `models/backup/canonical_<config>.<stamp>.{rrm|onnx,json}` beyond the
/// newest `backups_keep` of each config (the sidecar goes with its model).
pub fn prune_backups(home: &Path, cfg: &MaintConfig, r: &mut Report) {
    let dir = home.join("models/backup");
    let backups = grouped(&dir, |n| {
        let (config, stamp) = ringrift_store::models::backup_of(n)?;
        Some((config.to_owned(), stamp))
    });
    for files in backups.into_values() {
        for (p, len) in files.into_iter().skip(cfg.backups_keep.max(1)) {
            let sidecar = p.with_extension("json");
            remove(&p, len, &mut r.backups_removed, None, &mut r.errors);
            match std::fs::remove_file(&sidecar) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => r.errors.push(format!("remove {}: {e}", sidecar.display())),
            }
        }
    }
}

fn cutoff_ms(now: SystemTime, age: Duration) -> i64 {
    let t = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Finished job rows (and their result files) and completed queue rows older than
/// their limits, through the owning libraries.
pub fn prune_rows(home: &Path, cfg: &MaintConfig, now: SystemTime, r: &mut Report) {
    let jobs = home.join("data/jobs.db");
    if jobs.exists() {
        let before = cutoff_ms(
            now,
            Duration::from_secs_f64(cfg.job_results_max_age_days * 86400.0),
        );
        match job_runner::JobRunner::open(&jobs).and_then(|j| j.purge_finished(before)) {
            Ok(n) => r.job_rows_removed += n as u64,
            Err(e) => r.errors.push(format!("job retention: {e}")),
        }
    }
    let queue = ringrift_store::paths::work_queue_db(home);
    if queue.exists() {
        let before = cutoff_ms(
            now,
            Duration::from_secs_f64(cfg.queue_done_max_age_h * 3600.0),
        );
        match ringrift_store::work_queue::SqliteWorkQueue::open(&queue)
            .and_then(|q| q.purge_completed(before))
        {
            Ok(n) => r.queue_rows_removed += n as u64,
            Err(e) => r.errors.push(format!("queue retention: {e}")),
        }
    }
}
