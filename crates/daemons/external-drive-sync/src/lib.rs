//! `external_drive_sync`: mirrors `$RINGRIFT_HOME/data` and `models/` to an external
//! drive every 300 s by default ([`mirror`] says what is copied and how).
//!
//! Each cycle first checks the target ([`mount::check`]): it must exist, be a directory
//! and, with `require_mount = true` (the default), be a mount point in
//! `/proc/self/mountinfo`. Otherwise nothing is written, health is DEGRADED with a
//! message naming the path, the change is logged once (no error per cycle, no events),
//! and the next cycle checks again. When the target is usable, only files whose source
//! changed since they were mirrored are copied (size and mtime; SHA-256 of the copy read
//! back and compared with the source's before the atomic rename); a pass with work
//! publishes DATA_SYNC_STARTED, then DATA_SYNC_COMPLETED or DATA_SYNC_FAILED (DataSync:
//! `target_node = "external:<path>"`, files, bytes, error, duration). What was mirrored is
//! remembered in `run/external_drive_sync.json`.
//!
//! `[external_drive_sync]`: `path` (absolute; unset = nothing to do, DEGRADED),
//! `require_mount` (true).

pub mod mirror;
pub mod mount;

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::{Event, wire};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "external_drive_sync",
    about: "Mirror data/ and models/ to an external drive, verified",
    cycle_interval_s: Some(300.0),
    scope: Some(Scope::Node),
};

/// `[external_drive_sync]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriveConfig {
    /// The mirror root (absolute).
    pub path: Option<PathBuf>,
    /// The path must be a mount point (the drive is plugged in and mounted).
    pub require_mount: bool,
}

impl Default for DriveConfig {
    fn default() -> Self {
        DriveConfig {
            path: None,
            require_mount: true,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Status {
    /// Why nothing is mirrored right now.
    unavailable: Option<String>,
    cycles: u64,
    last_files: u64,
    last_bytes: u64,
    total_files: u64,
    total_bytes: u64,
    mirrored: usize,
    last_error: Option<String>,
}

pub struct ExternalDriveSync {
    cfg: DriveConfig,
    home: PathBuf,
    state_path: PathBuf,
    state: tokio::sync::Mutex<mirror::State>,
    status: Mutex<Status>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: DriveConfig = ctx.settings.section("external_drive_sync")?;
    if let Some(p) = &cfg.path {
        handler_base::ensure_config!(
            p.is_absolute(),
            "external_drive_sync.path = {:?} must be an absolute path",
            p.display().to_string()
        );
    }
    let state_path = ringrift_store::paths::run_dir(&ctx.home).join("external_drive_sync.json");
    let state: mirror::State = match std::fs::read(&state_path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %state_path.display(), error = %e,
                "external_drive_sync state does not parse; every file is compared again");
            mirror::State::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => mirror::State::default(),
        Err(e) => anyhow::bail!("read {}: {e}", state_path.display()),
    };
    let unavailable = cfg
        .path
        .is_none()
        .then(|| "external_drive_sync.path is not set; nothing mirrored".to_owned());
    Ok(Arc::new(ExternalDriveSync {
        cfg,
        home: ctx.home.clone(),
        state_path,
        state: tokio::sync::Mutex::new(state),
        status: Mutex::new(Status {
            unavailable,
            ..Default::default()
        }),
    }))
}

fn sync_event(kind: fn(wire::DataSync) -> wire::event::Payload, p: wire::DataSync) -> Event {
    Event::new(kind(p))
}

impl ExternalDriveSync {
    fn set_unavailable(&self, why: Option<String>) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if st.unavailable != why {
            match &why {
                Some(w) => tracing::warn!(reason = %w, "external drive unavailable"),
                None => tracing::info!(path = ?self.cfg.path, "external drive available"),
            }
        }
        st.unavailable = why;
    }
}

#[async_trait::async_trait]
impl Handler for ExternalDriveSync {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let Some(path) = self.cfg.path.clone() else {
            return Ok(());
        };
        let require_mount = self.cfg.require_mount;
        let check_path = path.clone();
        let checked = tokio::task::spawn_blocking(move || {
            mount::check(&check_path, require_mount, || {
                std::fs::read_to_string("/proc/self/mountinfo")
            })
        })
        .await?;
        let target = match checked {
            Ok(t) => {
                self.set_unavailable(None);
                t
            }
            Err(why) => {
                self.set_unavailable(Some(why));
                return Ok(());
            }
        };
        let mut state = self.state.lock().await;
        if state.target != target {
            *state = mirror::State {
                target: target.clone(),
                ..Default::default()
            };
        }
        let (home, t, snapshot) = (self.home.clone(), target.clone(), state.clone());
        let (todo, links, links_changed) = tokio::task::spawn_blocking(move || {
            let (sources, links) = mirror::sources(&home);
            let links_changed = links
                .iter()
                .any(|(rel, to)| std::fs::read_link(t.join(rel)).ok().as_ref() != Some(to));
            (mirror::plan(sources, &snapshot, &t), links, links_changed)
        })
        .await?;
        let target_node = format!("external:{}", path.display());
        let data_sync = |files: u64, bytes: u64, error: String, duration_s: f64| wire::DataSync {
            source_node: ctx.node.clone(),
            target_node: target_node.clone(),
            files,
            bytes,
            error,
            duration_s,
        };
        if todo.is_empty() && !links_changed {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            st.cycles += 1;
            st.last_files = 0;
            st.last_bytes = 0;
            st.mirrored = state.files.len();
            return Ok(());
        }
        let planned_bytes: u64 = todo.iter().map(|s| s.state[0].size).sum();
        ctx.publish(sync_event(
            wire::event::Payload::DataSyncStarted,
            data_sync(todo.len() as u64, planned_bytes, String::new(), 0.0),
        ))
        .await?;
        let started = Instant::now();
        let staging = ringrift_store::paths::run_dir(&self.home)
            .join("external_drive_sync")
            .join("staging");
        let mut working = state.clone();
        let t = target.clone();
        let (outcome, working) = tokio::task::spawn_blocking(move || {
            let o = mirror::run(&todo, &links, &t, &staging, &mut working);
            (o, working)
        })
        .await?;
        *state = working;
        let bytes = serde_json::to_vec(&*state)?;
        let sp = self.state_path.clone();
        tokio::task::spawn_blocking(move || ringrift_store::manifest::atomic_write(&sp, &bytes))
            .await??;
        let duration_s = started.elapsed().as_secs_f64();
        let error = outcome.errors.join("; ");
        {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            st.cycles += 1;
            st.last_files = outcome.files;
            st.last_bytes = outcome.bytes;
            st.total_files += outcome.files;
            st.total_bytes += outcome.bytes;
            st.mirrored = state.files.len();
            st.last_error = (!error.is_empty()).then(|| error.clone());
        }
        if outcome.errors.is_empty() {
            tracing::info!(files = outcome.files, bytes = outcome.bytes, duration_s, target = %path.display(), "mirrored to external drive");
            ctx.publish(sync_event(
                wire::event::Payload::DataSyncCompleted,
                data_sync(outcome.files, outcome.bytes, String::new(), duration_s),
            ))
            .await?;
            Ok(())
        } else {
            ctx.publish(sync_event(
                wire::event::Payload::DataSyncFailed,
                data_sync(outcome.files, outcome.bytes, error.clone(), duration_s),
            ))
            .await?;
            anyhow::bail!("mirror to {}: {error}", path.display())
        }
    }

    fn health_check(&self) -> HealthCheckResult {
        let st = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let h = match &st.unavailable {
            Some(why) => HealthCheckResult::degraded(why.clone()),
            None => HealthCheckResult::running(format!(
                "{} files mirrored to {}",
                st.mirrored,
                self.cfg
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
        }
        .detail("cycles", st.cycles)
        .detail("mirrored_files", st.mirrored)
        .detail("last_cycle_files", st.last_files)
        .detail("last_cycle_bytes", st.last_bytes)
        .detail("copied_files_total", st.total_files)
        .detail("copied_bytes_total", st.total_bytes);
        match st.last_error {
            Some(e) => h.detail("last_error", e),
            None => h,
        }
    }
}

#[cfg(test)]
mod tests;
