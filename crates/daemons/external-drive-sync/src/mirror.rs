//! One mirror pass (blocking; the daemon runs it in `spawn_blocking`): list the sources,
//! keep the files whose source changed since they were mirrored (size and mtime, for a
//! database also its `-wal`), copy each verified, and update the manifest.
//!
//! Mirror layout: `<target>/data/…`, `<target>/models/…` as under the home, and
//! `<target>/ringrift-manifest.json` (`ringrift_store::manifest::Manifest`: per path the
//! SHA-256 and size of the mirrored copy and the source's mtime). A database is copied
//! from a `VACUUM INTO` snapshot (`ringrift_store::db::snapshot`), never its live file.
//! Files deleted from the home stay on the mirror and in its manifest: it is a backup.
//! Not mirrored: `data/quarantine/`, hidden names (atomic-write temp files), `.tmp`
//! names, SQLite side files (`-wal`, `-shm`, `-journal`). Relative symlinks (the
//! `ringrift_best_*` links) are recreated as links.

use ringrift_store::manifest::{self, FileEntry, Manifest};
use ringrift_store::{StoreError, db, paths};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "ringrift-manifest.json";

/// Size and mtime (ns) of a file; zeros when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
}

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .map(|m| Stamp {
            size: m.len(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
        })
        .unwrap_or_default()
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A source file's state: itself and, for a database, its `-wal`.
pub type SourceState = [Stamp; 2];

/// A file under `data/` or `models/` of the home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Relative to the home, `/`-separated (also its path under the mirror).
    pub rel: String,
    pub path: PathBuf,
    pub database: bool,
    pub state: SourceState,
}

impl Source {
    fn of(path: PathBuf, rel: String) -> Source {
        let database = rel.ends_with(".db");
        let wal = if database {
            stamp(&with_suffix(&path, "-wal"))
        } else {
            Stamp::default()
        };
        Source {
            state: [stamp(&path), wal],
            rel,
            path,
            database,
        }
    }
}

/// What was mirrored of one path (`run/external_drive_sync.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirrored {
    pub source: SourceState,
    pub sha256: String,
    pub size: u64,
}

/// The daemon's memory of a target, persisted so a restart does not copy everything again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub target: PathBuf,
    pub files: BTreeMap<String, Mirrored>,
}

fn skipped(name: &str) -> bool {
    name.starts_with('.')
        || name.contains(".tmp")
        || name.ends_with("-wal")
        || name.ends_with("-shm")
        || name.ends_with("-journal")
}

/// The files and relative symlinks to mirror: `data/` (without `data/quarantine/`) and
/// `models/`.
pub fn sources(home: &Path) -> (Vec<Source>, Vec<(String, PathBuf)>) {
    let quarantine = paths::quarantine_dir(home);
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut dirs = vec![home.join("data"), paths::models_dir(home)];
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if skipped(name) {
                continue;
            }
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            let rel = path
                .strip_prefix(home)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                if path != quarantine {
                    dirs.push(path);
                }
            } else if ft.is_file() {
                files.push(Source::of(path, rel));
            } else if ft.is_symlink()
                && let Ok(target) = std::fs::read_link(&path)
                && target.is_relative()
            {
                links.push((rel, target));
            }
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    links.sort();
    (files, links)
}

/// The sources whose mirrored copy is missing or older than the source.
pub fn plan(sources: Vec<Source>, state: &State, target: &Path) -> Vec<Source> {
    sources
        .into_iter()
        .filter(|s| match state.files.get(&s.rel) {
            Some(m) if m.source == s.state => std::fs::metadata(target.join(&s.rel))
                .map(|meta| meta.len() != m.size)
                .unwrap_or(true),
            _ => true,
        })
        .collect()
}

/// What one pass copied.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub files: u64,
    pub bytes: u64,
    pub errors: Vec<String>,
}

/// Copies `todo` to `target` (verified, atomic), recreates `links`, and rewrites the
/// manifest and `state` for what was copied. `staging`: a private directory on the
/// home's file system for database snapshots.
pub fn run(
    todo: &[Source],
    links: &[(String, PathBuf)],
    target: &Path,
    staging: &Path,
    state: &mut State,
) -> Outcome {
    let mut out = Outcome::default();
    let manifest_path = target.join(MANIFEST);
    let mut manifest = match Manifest::load(&manifest_path) {
        Ok(m) => m,
        Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Manifest::default()
        }
        Err(e) => {
            // Rebuilt from what this pass and the state know; the old one is kept aside.
            out.errors
                .push(format!("mirror manifest unreadable, rewritten: {e}"));
            let _ = std::fs::rename(&manifest_path, with_suffix(&manifest_path, ".bad"));
            Manifest::default()
        }
    };
    for s in todo {
        match copy_one(s, target, staging) {
            Ok((sha256, size)) => {
                out.files += 1;
                out.bytes += size;
                let mtime_ms = s.state[0].mtime_ns / 1_000_000;
                manifest.files.insert(
                    s.rel.clone(),
                    FileEntry {
                        sha256: sha256.clone(),
                        size,
                        mtime_ms,
                    },
                );
                state.files.insert(
                    s.rel.clone(),
                    Mirrored {
                        source: s.state,
                        sha256,
                        size,
                    },
                );
            }
            Err(e) => out.errors.push(format!("{}: {e}", s.rel)),
        }
    }
    for (rel, to) in links {
        let link = target.join(rel);
        if std::fs::read_link(&link).ok().as_ref() == Some(to) {
            continue;
        }
        let made = link
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .map_err(|e| e.to_string())
            .and_then(|_| manifest::atomic_symlink(to, &link).map_err(|e| e.to_string()));
        if let Err(e) = made {
            out.errors.push(format!("{rel}: {e}"));
        }
    }
    // Entries the state has but the manifest lost (a rewritten manifest).
    for (rel, m) in &state.files {
        manifest
            .files
            .entry(rel.clone())
            .or_insert_with(|| FileEntry {
                sha256: m.sha256.clone(),
                size: m.size,
                mtime_ms: m.source[0].mtime_ns / 1_000_000,
            });
    }
    if (out.files > 0 || !manifest_path.exists())
        && let Err(e) = manifest.save(&manifest_path)
    {
        out.errors.push(format!("{MANIFEST}: {e}"));
    }
    out
}

/// Copies one source; returns the SHA-256 and size of the verified copy.
fn copy_one(s: &Source, target: &Path, staging: &Path) -> Result<(String, u64), StoreError> {
    let dst = target.join(&s.rel);
    if !s.database {
        return manifest::copy_verified(&s.path, &dst);
    }
    std::fs::create_dir_all(staging).map_err(|e| StoreError::Io {
        action: "create staging directory",
        path: staging.to_owned(),
        source: e,
    })?;
    let snap = staging.join(format!("{}.db", uuid::Uuid::new_v4().simple()));
    let r = db::snapshot(&s.path, &snap).and_then(|()| manifest::copy_verified(&snap, &dst));
    let _ = std::fs::remove_file(&snap);
    r
}
