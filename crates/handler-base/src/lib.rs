//! The daemon lifecycle shared by every RingRift daemon, and nothing else.
//!
//! A daemon crate implements [`Handler`] and its `main.rs` calls [`daemon_main`] with a
//! factory. This crate then: parses the common flags ([`cli::CommonArgs`]), loads layered
//! config ([`settings::Settings`]; a bad one exits 64, any other start failure 1), sets
//! up tracing, validates the lifecycle settings ([`LifecycleConfig`], the defaults its
//! [`DaemonInfo`] declares at the bottom layer), connects to the router (reconnecting;
//! publishes wait in an outbox file under `run/outbox/`), runs `on_start`, the periodic
//! `run_cycle`, the subscribed event handlers (deduplicated after success, acked or
//! nacked, kept alive with in-progress acks), the heartbeat, readiness (`sd_notify`
//! READY and WATCHDOG while every loop progresses) and a graceful stop on SIGTERM/SIGINT.
//! A loop that dies ends the process with exit 1. Servers that are not cycle handlers
//! (the router itself) use the same start-up through [`service_main`].
//!
//! The entry points take `Arc<dyn Handler>` / function pointers, never generics, so the
//! runtime is compiled once for all fifty daemons.

pub mod auth;
pub mod cli;
mod dedup;
mod errors;
#[cfg(test)]
mod fuzz;
mod health;
pub mod lifecycle;
mod liveness;
pub mod metrics;
mod publish;
pub mod router_client;
mod run;
pub mod scope;
pub mod settings;
pub mod status_body;
mod status_line;
pub mod tls;

pub use cli::CommonArgs;
pub use dedup::Dedup;
pub use errors::ErrorLog;
pub use health::{HealthCheckResult, HealthStatus};
pub use lifecycle::LifecycleConfig;
pub use publish::{Publish, Recorded, event};
pub use router_client::ClientError;
pub use run::{
    Context, DaemonInfo, Factory, Handler, Probe, ServiceContext, ServiceFn, daemon_main,
    service_main,
};
pub use settings::{ConfigError, Settings};
pub use status_line::{StatusLine, StatusMap};

/// The heartbeat health detail present while a loop is stuck in one handler call longer
/// than `stuck_after_s` (its value says which loop and for how long); the launcher
/// restarts a daemon whose heartbeat carries it, as systemd does through WatchdogSec.
pub const STALLED: &str = "stalled";

/// Exit code for bad configuration or usage (EX_USAGE): supervisors must not restart.
pub const EXIT_CONFIG: u8 = 64;

/// Exit code for an I/O failure at start (EX_IOERR: a home that cannot be created, a
/// config file that cannot be read; [`ConfigError::Io`]): restarted like a crash.
pub const EXIT_IO: u8 = 74;

/// Like `anyhow::ensure!`, but the error is a [`ConfigError`], so the daemon exits 64:
/// `ensure_config!(cfg.threshold > 0, "auto_export.threshold must be > 0")`.
#[macro_export]
macro_rules! ensure_config {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::ConfigError::Invalid(format!($($msg)+)).into());
        }
    };
}

/// True when `e` is, or wraps, a [`ConfigError`] other than [`ConfigError::Io`]: the one
/// start failure that exits 64.
pub fn is_config_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ConfigError>()
            .is_some_and(|c| !matches!(c, ConfigError::Io { .. }))
    })
}

/// True when `e` is, or wraps, a [`ConfigError::Io`]: a start failure that exits 74.
pub fn is_io_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ConfigError>()
            .is_some_and(|c| matches!(c, ConfigError::Io { .. }))
    })
}

/// The exit code of a failed start: 64 for (a chain holding) a configuration error, 74
/// for an I/O one ([`ConfigError::Io`]), else 1.
pub fn start_exit_code(e: &anyhow::Error) -> u8 {
    if is_config_error(e) {
        EXIT_CONFIG
    } else if is_io_error(e) {
        EXIT_IO
    } else {
        1
    }
}

/// Writes `run/<name>.addr` under `home` atomically, so readers never see half an address.
pub fn write_addr_file(
    home: &std::path::Path,
    name: &str,
    addr: &str,
) -> std::io::Result<std::path::PathBuf> {
    let dir = home.join("run");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.addr"));
    let tmp = dir.join(format!(".{name}.addr.{}", std::process::id()));
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Reads `run/<name>.addr` under `home`, if present.
pub fn read_addr_file(home: &std::path::Path, name: &str) -> Option<String> {
    let s = std::fs::read_to_string(home.join("run").join(format!("{name}.addr"))).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}
