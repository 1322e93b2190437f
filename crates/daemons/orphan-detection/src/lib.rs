//! `orphan_detection`: finds game databases under `$RINGRIFT_HOME/data` that no store of
//! this node knows, every 600 s by default, and either registers or quarantines them.
//!
//! Known: the canonical game stores `data/games/{config}*.db`
//! (`ringrift_store::paths::game_dbs`) and the node's other stores ([`KNOWN_STORES`]).
//! Never looked at: `data/quarantine/`, hidden files and directories (atomic-write temp
//! files), names with `.tmp`, symlinks, and files written within `settle_s` (the file or
//! its `-wal`/`-journal`). Every other `*.db` is inspected
//! (`ringrift_store::games::foreign::inspect`: integrity check, game schema, rows the
//! store can read back):
//!
//! * a game database is an orphan: ORPHAN_DETECTED {path, games}, its games are merged by
//!   `game_id` into the canonical store of each config they belong to, then the file is
//!   moved to `data/quarantine/orphans/` with a `.reason` note saying it was merged (never
//!   deleted; once moved it is never merged again);
//! * a corrupt file, or a database that is not a usable game store (wrong schema, bad
//!   rows, or no `games` table inside `data/games/`) is an orphan too (ORPHAN_DETECTED
//!   with `games` 0) and goes to `data/quarantine/` with the reason;
//! * a valid SQLite database without a `games` table elsewhere is another program's and is
//!   left alone (remembered by size and mtime, so it is not reopened every cycle).
//!
//! What was reported is persisted in `run/orphan_detection.json` (by path, size and
//! mtime), so a restart, or a merge that failed and is retried, does not report the same
//! file again; the event id is derived from the same identity, so the router drops a
//! duplicate published just before a crash.
//!
//! `[orphan_detection]`: `settle_s` (60; a file written more recently is skipped).

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::{Event, wire};
use ringrift_store::games::GameStore;
use ringrift_store::games::foreign::{self, Inspection};
use ringrift_store::{ConfigKey, StoreError, manifest, paths};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "orphan_detection",
    about: "Find unregistered game databases under data/: merge or quarantine them",
    cycle_interval_s: Some(600.0),
    scope: Some(Scope::Node),
};

/// Databases of other stores under `data/` (relative to the home): never orphans, never
/// quarantined by this daemon even when they fail to open.
pub const KNOWN_STORES: &[&str] = &[
    "data/unified_elo.db",
    "data/work_queue.db",
    "data/jobs.db",
    "data/pipeline_state.db",
    "data/ledger.db",
    "data/cross_process_events.db",
];

/// `[orphan_detection]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrphanConfig {
    /// A file (or its `-wal`/`-journal`) modified within this many seconds is being
    /// written and is skipped this cycle.
    pub settle_s: f64,
}

impl Default for OrphanConfig {
    fn default() -> Self {
        OrphanConfig { settle_s: 60.0 }
    }
}

/// A `*.db` file under `data/` that no store knows and nothing is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    /// Relative to the home, `/`-separated.
    pub rel: String,
}

/// One scan of `data/`: the candidates and how many unknown files were still being
/// written.
#[derive(Debug, Default)]
pub struct Scan {
    pub candidates: Vec<Candidate>,
    pub busy: Vec<String>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).ok().and_then(|m| m.modified().ok())
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn rel_of(home: &Path, p: &Path) -> String {
    p.strip_prefix(home)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Lists the unknown `*.db` files under `home/data` (blocking).
pub fn scan(home: &Path, settle: Duration, now: SystemTime) -> Result<Scan, StoreError> {
    let mut known: BTreeSet<PathBuf> = KNOWN_STORES.iter().map(|r| home.join(r)).collect();
    for c in ConfigKey::all() {
        known.extend(paths::game_dbs(home, c)?);
    }
    let quarantine = paths::quarantine_dir(home);
    let mut out = Scan::default();
    let mut dirs = vec![home.join("data")];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(StoreError::Io {
                    action: "list",
                    path: dir,
                    source: e,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || name.contains(".tmp") {
                continue;
            }
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if path != quarantine {
                    dirs.push(path);
                }
                continue;
            }
            if !ft.is_file() || !name.ends_with(".db") || known.contains(&path) {
                continue;
            }
            let newest = [
                mtime(&path),
                mtime(&with_suffix(&path, "-wal")),
                mtime(&with_suffix(&path, "-journal")),
            ]
            .into_iter()
            .flatten()
            .max();
            let age = newest
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            let rel = rel_of(home, &path);
            if age < settle {
                out.busy.push(rel);
            } else {
                out.candidates.push(Candidate { path, rel });
            }
        }
    }
    out.candidates.sort_by(|a, b| a.rel.cmp(&b.rel));
    out.busy.sort();
    Ok(out)
}

/// A file's identity between cycles: size and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub size: u64,
    pub mtime_ms: i64,
}

fn identity(p: &Path) -> Option<Identity> {
    let m = std::fs::metadata(p).ok()?;
    let mtime_ms = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Some(Identity {
        size: m.len(),
        mtime_ms,
    })
}

/// What the state file remembers of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Seen {
    /// Another program's database (no `games` table): not reopened while unchanged.
    NotGames { id: Identity },
    /// ORPHAN_DETECTED was published for this version of the file.
    Reported { id: Identity, games: u64 },
}

/// Counters for the health report.
#[derive(Debug, Default, Clone)]
struct Stats {
    cycles: u64,
    merged_files: u64,
    games_merged: u64,
    quarantined: u64,
    ignored: usize,
    busy: usize,
    last_error: Option<String>,
}

pub struct OrphanDetection {
    cfg: OrphanConfig,
    home: PathBuf,
    state_path: PathBuf,
    seen: tokio::sync::Mutex<BTreeMap<String, Seen>>,
    stats: Mutex<Stats>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: OrphanConfig = ctx.settings.section("orphan_detection")?;
    handler_base::ensure_config!(
        cfg.settle_s.is_finite() && cfg.settle_s >= 0.0,
        "orphan_detection.settle_s = {} must be a number of seconds >= 0",
        cfg.settle_s
    );
    let state_path = paths::run_dir(&ctx.home).join("orphan_detection.json");
    let seen = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %state_path.display(), error = %e,
                "orphan_detection state does not parse; starting without it");
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => anyhow::bail!("read {}: {e}", state_path.display()),
    };
    Ok(Arc::new(OrphanDetection {
        cfg,
        home: ctx.home.clone(),
        state_path,
        seen: tokio::sync::Mutex::new(seen),
        stats: Mutex::new(Stats::default()),
    }))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Moves `path` to `dir` with `reason` (see `manifest::quarantine`), its `-wal`/`-shm`
/// side files along (renamed to match, so the moved database still opens whole).
fn quarantine_db(path: &Path, dir: &Path, reason: &str) -> Result<PathBuf, StoreError> {
    let dest = manifest::quarantine(path, dir, reason)?;
    for side in ["-wal", "-shm", "-journal"] {
        let from = with_suffix(path, side);
        if from.exists() {
            let to = with_suffix(&dest, side);
            std::fs::rename(&from, &to).map_err(|e| StoreError::Io {
                action: "move to quarantine",
                path: from,
                source: e,
            })?;
        }
    }
    Ok(dest)
}

/// Merges the games of `orphan` into the canonical store of each config in `per_config`,
/// then moves it to `data/quarantine/orphans/` marked merged. Returns the new games.
fn merge_and_retire(
    home: &Path,
    orphan: &Path,
    per_config: &BTreeMap<ConfigKey, u64>,
) -> Result<u64, StoreError> {
    let mut new = 0u64;
    let mut into = Vec::new();
    for &config in per_config.keys() {
        let target = paths::game_db(home, config);
        let n = GameStore::open(&target)?.merge_config_from(orphan, config)?;
        new += n as u64;
        into.push(format!("{} (+{n})", rel_of(home, &target)));
    }
    let total: u64 = per_config.values().sum();
    let reason = format!(
        "merged by orphan_detection: {new} new of {total} games into {}",
        into.join(", ")
    );
    quarantine_db(
        orphan,
        &paths::quarantine_dir(home).join("orphans"),
        &reason,
    )?;
    Ok(new)
}

impl OrphanDetection {
    async fn save(&self, seen: &BTreeMap<String, Seen>) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(seen)?;
        let path = self.state_path.clone();
        blocking(move || manifest::atomic_write(&path, &bytes)).await
    }

    /// Publishes ORPHAN_DETECTED for this version of the file unless it already was.
    async fn report(
        &self,
        ctx: &Context,
        seen: &mut BTreeMap<String, Seen>,
        c: &Candidate,
        id: Identity,
        games: u64,
    ) -> anyhow::Result<()> {
        if let Some(Seen::Reported { id: had, .. }) = seen.get(&c.rel)
            && *had == id
        {
            return Ok(());
        }
        let p = wire::OrphanDetected {
            path: c.path.to_string_lossy().into_owned(),
            games,
        };
        ctx.publish(
            Event::new(wire::event::Payload::OrphanDetected(p)).with_id(format!(
                "orphan:{}:{}:{}:{}",
                ctx.node, c.rel, id.size, id.mtime_ms
            )),
        )
        .await?;
        tracing::warn!(path = %c.path.display(), games, "ORPHAN_DETECTED");
        seen.insert(c.rel.clone(), Seen::Reported { id, games });
        self.save(seen).await
    }

    /// Handles one candidate; returns whether it was ignored (another program's DB).
    async fn handle(
        &self,
        ctx: &Context,
        seen: &mut BTreeMap<String, Seen>,
        c: &Candidate,
    ) -> anyhow::Result<bool> {
        if let (Some(Seen::NotGames { id }), Some(now)) = (seen.get(&c.rel), identity(&c.path))
            && *id == now
        {
            return Ok(true);
        }
        let path = c.path.clone();
        let inspection = blocking(move || foreign::inspect(&path)).await?;
        // After the inspection: opening may have checkpointed a leftover `-wal` into it.
        let Some(id) = identity(&c.path) else {
            return Ok(false);
        };
        let in_games_dir = c.path.parent() == Some(paths::games_dir(&self.home).as_path());
        let reason = match inspection {
            Inspection::NotGames if !in_games_dir => {
                seen.insert(c.rel.clone(), Seen::NotGames { id });
                self.save(seen).await?;
                return Ok(true);
            }
            Inspection::NotGames => {
                "no `games` table, in data/games/ where only game stores belong".to_owned()
            }
            Inspection::Rejected(r) => r,
            Inspection::Games(per_config) => {
                let total = per_config.values().sum();
                self.report(ctx, seen, c, id, total).await?;
                let (home, path) = (self.home.clone(), c.path.clone());
                let new = blocking(move || merge_and_retire(&home, &path, &per_config)).await?;
                tracing::info!(path = %c.path.display(), games = total, new, "orphan merged and moved to data/quarantine/orphans/");
                seen.remove(&c.rel);
                self.save(seen).await?;
                let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                st.merged_files += 1;
                st.games_merged += new;
                return Ok(false);
            }
        };
        self.report(ctx, seen, c, id, 0).await?;
        let (path, dir) = (c.path.clone(), paths::quarantine_dir(&self.home));
        let note = format!("orphan_detection: {reason}");
        let dest = blocking(move || quarantine_db(&path, &dir, &note)).await?;
        tracing::warn!(path = %c.path.display(), to = %dest.display(), %reason, "orphan quarantined");
        seen.remove(&c.rel);
        self.save(seen).await?;
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .quarantined += 1;
        Ok(false)
    }
}

#[async_trait::async_trait]
impl Handler for OrphanDetection {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let home = self.home.clone();
        let settle = Duration::from_secs_f64(self.cfg.settle_s);
        let scan = blocking(move || scan(&home, settle, SystemTime::now())).await?;
        let mut seen = self.seen.lock().await;
        let mut ignored = 0;
        let mut errors = Vec::new();
        for c in &scan.candidates {
            match self.handle(ctx, &mut seen, c).await {
                Ok(true) => ignored += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %c.path.display(), error = %format!("{e:#}"), "orphan not handled; retried next cycle");
                    errors.push(format!("{}: {e:#}", c.rel));
                }
            }
        }
        // Forget files that are gone (keep those only being written right now).
        let present: BTreeSet<&String> = scan
            .candidates
            .iter()
            .map(|c| &c.rel)
            .chain(scan.busy.iter())
            .collect();
        let before = seen.len();
        seen.retain(|rel, _| present.contains(rel));
        if seen.len() != before {
            self.save(&seen).await?;
        }
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        st.cycles += 1;
        st.ignored = ignored;
        st.busy = scan.busy.len();
        st.last_error = errors.first().cloned();
        drop(st);
        if !errors.is_empty() {
            anyhow::bail!(
                "{} orphan(s) not handled: {}",
                errors.len(),
                errors.join("; ")
            );
        }
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let st = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let h = HealthCheckResult::running(format!(
            "{} orphan(s) merged ({} new games), {} quarantined",
            st.merged_files, st.games_merged, st.quarantined
        ))
        .detail("cycles", st.cycles)
        .detail("orphans_merged", st.merged_files)
        .detail("games_merged", st.games_merged)
        .detail("quarantined", st.quarantined)
        .detail("other_databases", st.ignored)
        .detail("being_written", st.busy);
        match st.last_error {
            Some(e) => h.detail("last_error", e),
            None => h,
        }
    }
}

#[cfg(test)]
mod tests;
