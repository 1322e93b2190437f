//! The local model cache: the model files (`.rrm`, `.onnx`) under `models/`, which of them must stay, and
//! which go when the folder is over its budget (least recently used first) or when a
//! promotion superseded them. Listing and deleting are blocking (run off the runtime);
//! choosing is pure.
//!
//! Layout (`ringrift_store::models`, the training loop): `models/canonical_{config}.{rrm,onnx}`
//! (+ `.json`), the `models/ringrift_best_{config}` links, candidates
//! `models/{config}/gen*.{rrm,onnx}`, canonical backups `models/backup/canonical_{config}.{ms}.{ext}`
//! (+ `.json`). Protected, never deleted here: every `canonical_*` model at the top, the
//! target of every `ringrift_best_*` link, the newest `keep_newest` files of each
//! candidate folder and the newest backup of each config (the previous canonical).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One model file under `models/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// Relative to `models/`, `/`-separated.
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ms: i64,
    /// Last use: the later of access and modification time.
    pub used_ms: i64,
}

/// Every model file (`.rrm`, `.onnx`) under `models/` (hidden and temp names skipped).
pub fn list(models: &Path) -> Vec<LocalModel> {
    let mut out = Vec::new();
    let mut dirs = vec![models.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || name.contains(".tmp") {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                dirs.push(path);
                continue;
            }
            if !ft.is_file() || ringrift_store::models::ModelFormat::of(name).is_none() {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            let mtime_ms = m.mtime().saturating_mul(1000) + m.mtime_nsec() / 1_000_000;
            let atime_ms = m.atime().saturating_mul(1000) + m.atime_nsec() / 1_000_000;
            let rel = path
                .strip_prefix(models)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push(LocalModel {
                rel,
                size: m.len(),
                mtime_ms,
                used_ms: mtime_ms.max(atime_ms),
                path,
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// `backup/canonical_{config}.{ms}.{rrm|onnx}` → (config, ms).
fn backup_of(rel: &str) -> Option<(&str, i64)> {
    ringrift_store::models::backup_of(rel.strip_prefix("backup/")?)
}

/// The candidate folder of `rel` (`{config}/gen*.rrm` → `{config}`), if it is one.
fn candidate_dir(rel: &str) -> Option<&str> {
    let (dir, file) = rel.split_once('/')?;
    (dir != "backup" && !file.contains('/')).then_some(dir)
}

/// The files that must stay (by `rel`).
pub fn protected(models: &Path, listed: &[LocalModel], keep_newest: usize) -> BTreeSet<String> {
    let mut keep = BTreeSet::new();
    for m in listed {
        if !m.rel.contains('/') && m.rel.starts_with("canonical_") {
            keep.insert(m.rel.clone());
        }
    }
    // Link targets.
    let canonical_root = std::fs::canonicalize(models).unwrap_or_else(|_| models.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(models) {
        for e in rd.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with("ringrift_best_") {
                continue;
            }
            if let Ok(target) = std::fs::canonicalize(e.path())
                && let Ok(rel) = target.strip_prefix(&canonical_root)
            {
                keep.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    // Newest candidates per folder, newest backup per config.
    let mut by_dir: BTreeMap<&str, Vec<&LocalModel>> = BTreeMap::new();
    let mut backups: BTreeMap<&str, Vec<(i64, &LocalModel)>> = BTreeMap::new();
    for m in listed {
        if let Some((config, stamp)) = backup_of(&m.rel) {
            backups.entry(config).or_default().push((stamp, m));
        } else if let Some(dir) = candidate_dir(&m.rel) {
            by_dir.entry(dir).or_default().push(m);
        }
    }
    for files in by_dir.values_mut() {
        files.sort_by_key(|m| std::cmp::Reverse((m.mtime_ms, m.rel.clone())));
        keep.extend(files.iter().take(keep_newest).map(|m| m.rel.clone()));
    }
    for files in backups.values_mut() {
        files.sort_by_key(|(stamp, _)| std::cmp::Reverse(*stamp));
        keep.extend(files.iter().take(1).map(|(_, m)| m.rel.clone()));
    }
    keep
}

/// What to delete so the total fits `budget`: unprotected files, least recently used
/// first, until the total is within the budget (or nothing unprotected is left).
pub fn lru_victims<'a>(
    listed: &'a [LocalModel],
    keep: &BTreeSet<String>,
    budget: u64,
) -> Vec<&'a LocalModel> {
    let mut total: u64 = listed.iter().map(|m| m.size).sum();
    let mut candidates: Vec<&LocalModel> =
        listed.iter().filter(|m| !keep.contains(&m.rel)).collect();
    candidates.sort_by_key(|m| (m.used_ms, m.rel.clone()));
    let mut out = Vec::new();
    for m in candidates {
        if total <= budget {
            break;
        }
        total = total.saturating_sub(m.size);
        out.push(m);
    }
    out
}

/// The files a promotion in `config` superseded: its older backups (all but the newest,
/// the previous canonical) and, when the promoted file is known here (`promoted_mtime_ms`),
/// its candidates older than it; never a protected file.
pub fn superseded<'a>(
    listed: &'a [LocalModel],
    keep: &BTreeSet<String>,
    config: &str,
    promoted_mtime_ms: Option<i64>,
) -> Vec<&'a LocalModel> {
    listed
        .iter()
        .filter(|m| !keep.contains(&m.rel))
        .filter(|m| match backup_of(&m.rel) {
            Some((c, _)) => c == config,
            None => {
                candidate_dir(&m.rel) == Some(config)
                    && promoted_mtime_ms.is_some_and(|t| m.mtime_ms < t)
            }
        })
        .collect()
}

/// Deletes a model file (and a backup's `.json` sidecar). Returns the bytes freed.
pub fn delete(m: &LocalModel) -> std::io::Result<u64> {
    std::fs::remove_file(&m.path)?;
    if backup_of(&m.rel).is_some() {
        match std::fs::remove_file(m.path.with_extension("json")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(m.size)
}
