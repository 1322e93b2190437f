//! The lifecycle settings of one daemon process, each with one source and validated at
//! start: a bad value is a [`ConfigError`] naming the key and the value (exit 64), never
//! a silent default.
//!
//! Layers (lowest first): the defaults the daemon declares in its [`DaemonInfo`] (equal
//! to its registry entry's, checked by the tidy test, so the launcher and a systemd unit
//! start it with the same default) < /etc < `$RINGRIFT_HOME/ringrift.toml` < `--config` < `RINGRIFT_*`
//! env < `--set`. Every key but `cycle_interval_s` may be set per daemon
//! (`[<name>] key`) or for all (top-level `key`); the per-daemon value wins.

use crate::{ConfigError, DaemonInfo, Settings};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Cycle interval of a daemon that declares none (the test daemon, tools).
pub const FALLBACK_CYCLE_INTERVAL_S: f64 = 60.0;

/// The validated lifecycle settings of one daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    /// `<name>.cycle_interval_s`: time between `run_cycle` calls (default: the
    /// daemon's [`DaemonInfo::cycle_interval_s`]).
    pub cycle_interval: Duration,
    /// `worker_threads` (2): tokio worker threads.
    pub worker_threads: usize,
    /// `publish_buffer` (100 000): bound of the publish outbox.
    pub publish_buffer: usize,
    /// `heartbeat_interval_s` (10; at least 50 ms): DAEMON_HEARTBEAT period.
    pub heartbeat_interval: Duration,
    /// `stop_grace_s` (10): how long the stop (tasks, `on_stop`, flush) may take.
    pub stop_grace: Duration,
    /// `ack_wait_s` (30): the router redelivers an event unacked for this long.
    pub ack_wait: Duration,
    /// `max_ack_pending` (64): unacked deliveries the router allows this consumer.
    pub max_ack_pending: u32,
    /// `stuck_after_s`; `None`: derived, see [`LifecycleConfig::stuck_after`].
    pub stuck_after: Option<Duration>,
    /// `degraded_after_failures` (3): this many failed handlings or cycles in a row
    /// turn the daemon's health DEGRADED, with the newest error as the reason.
    pub degraded_after_failures: u32,
    /// `subscribe_refused_exit_s` (300): how long the router may refuse the daemon's
    /// subscription (a wrong token, an invalid consumer) before the daemon exits 1, so
    /// its supervisor restarts it or, past `max_restarts`, shows it FAILED. Meanwhile it
    /// retries with backoff and reports DEGRADED with the router's reason.
    pub subscribe_refused_exit: Duration,
    /// Delivery scope: the daemon's declared one (`<name>.scope` only for a daemon
    /// that declares none); names the durable consumer, see [`crate::scope`].
    pub scope: crate::scope::Scope,
}

/// `<name>.<key>`, else `<key>` when `top_level`; with the key that held the value.
fn lookup<T: DeserializeOwned>(
    s: &Settings,
    name: &str,
    key: &str,
    top_level: bool,
) -> Result<Option<(String, T)>, ConfigError> {
    let own = format!("{name}.{key}");
    if let Some(v) = s.get::<T>(&own)? {
        return Ok(Some((own, v)));
    }
    if !top_level {
        return Ok(None);
    }
    Ok(s.get::<T>(key)?.map(|v| (key.to_owned(), v)))
}

fn seconds(
    s: &Settings,
    name: &str,
    key: &str,
    top: bool,
) -> Result<Option<Duration>, ConfigError> {
    let Some((k, v)) = lookup::<f64>(s, name, key, top)? else {
        return Ok(None);
    };
    let d = crate::settings::duration(&k, v)?;
    if d.is_zero() {
        return Err(ConfigError::Invalid(format!(
            "{k} = {v}: must be a positive number of seconds"
        )));
    }
    Ok(Some(d))
}

fn count(s: &Settings, name: &str, key: &str, max: i64, default: i64) -> Result<i64, ConfigError> {
    match lookup::<i64>(s, name, key, true)? {
        None => Ok(default),
        Some((_, v)) if (1..=max).contains(&v) => Ok(v),
        Some((k, v)) => Err(ConfigError::Invalid(format!(
            "{k} = {v}: must be 1..={max}"
        ))),
    }
}

/// `heartbeat_interval_s` of daemon `name` (default 10 s, at least 50 ms), as
/// [`LifecycleConfig::load`] reads it: for a supervisor that checks it against its own
/// bounds without loading the rest.
pub fn heartbeat_interval(s: &Settings, name: &str) -> Result<Duration, ConfigError> {
    Ok(seconds(s, name, "heartbeat_interval_s", true)?
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(50)))
}

impl LifecycleConfig {
    /// Reads and validates the lifecycle settings of daemon `info`.
    pub fn load(s: &Settings, info: &DaemonInfo) -> Result<LifecycleConfig, ConfigError> {
        let name = info.name;
        let secs = Duration::from_secs_f64;
        let ack_wait = seconds(s, name, "ack_wait_s", true)?.unwrap_or(secs(30.0));
        if ack_wait.as_millis() > u128::from(u32::MAX) {
            return Err(ConfigError::Invalid(format!(
                "ack_wait_s = {}: too long",
                ack_wait.as_secs_f64()
            )));
        }
        // Bounded by what the conversions below can hold.
        let workers = count(s, name, "worker_threads", 1024, 2)?;
        let buffer = count(s, name, "publish_buffer", i64::from(u32::MAX), 100_000)?;
        let pending = count(s, name, "max_ack_pending", i64::from(u32::MAX), 64)?;
        let degraded = count(s, name, "degraded_after_failures", 1_000_000, 3)?;
        Ok(LifecycleConfig {
            cycle_interval: seconds(s, name, "cycle_interval_s", false)?
                .unwrap_or(secs(FALLBACK_CYCLE_INTERVAL_S)),
            worker_threads: usize::try_from(workers).unwrap_or(2),
            publish_buffer: usize::try_from(buffer).unwrap_or(100_000),
            heartbeat_interval: heartbeat_interval(s, name)?,
            stop_grace: seconds(s, name, "stop_grace_s", true)?.unwrap_or(secs(10.0)),
            ack_wait,
            max_ack_pending: u32::try_from(pending).unwrap_or(64),
            stuck_after: seconds(s, name, "stuck_after_s", true)?,
            degraded_after_failures: u32::try_from(degraded).unwrap_or(3),
            subscribe_refused_exit: seconds(s, name, "subscribe_refused_exit_s", true)?
                .unwrap_or(secs(300.0)),
            scope: crate::scope::scope_of(s, info)?,
        })
    }

    /// How long one handler call may be busy before the daemon counts as stuck:
    /// `stuck_after_s`, else the largest of 3 × the cycle interval, 10 min and twice
    /// `longest_call` (a job daemon's job timeout).
    pub fn stuck_after(&self, longest_call: Duration) -> Duration {
        self.stuck_after.unwrap_or_else(|| {
            (self.cycle_interval * 3)
                .max(Duration::from_secs(600))
                .max(longest_call.saturating_mul(2))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<LifecycleConfig, ConfigError> {
        LifecycleConfig::load(&Settings::from_toml(toml).unwrap(), &"d".into())
    }

    #[test]
    fn defaults_per_daemon_and_top_level() {
        let l = load("").unwrap();
        assert_eq!(
            (
                l.cycle_interval,
                l.ack_wait,
                l.max_ack_pending,
                l.worker_threads
            ),
            (Duration::from_secs(60), Duration::from_secs(30), 64, 2)
        );
        assert_eq!(l.subscribe_refused_exit, Duration::from_secs(300));
        assert_eq!(l.stuck_after(Duration::ZERO), Duration::from_secs(600));
        assert_eq!(
            l.stuck_after(Duration::from_secs(3600)),
            Duration::from_secs(7200),
            "a job may run to its timeout"
        );
        let l = load(
            "ack_wait_s = 5\nworker_threads = 3\ncycle_interval_s = 1\n[d]\nack_wait_s = 90\nmax_ack_pending = 8\ncycle_interval_s = 0.5\nstop_grace_s = 2",
        )
        .unwrap();
        assert_eq!(
            (l.ack_wait, l.max_ack_pending, l.worker_threads),
            (Duration::from_secs(90), 8, 3)
        );
        assert_eq!(l.cycle_interval, Duration::from_millis(500));
        assert_eq!(l.stop_grace, Duration::from_secs(2));
        assert_eq!(
            load("cycle_interval_s = 1").unwrap().cycle_interval,
            Duration::from_secs(60),
            "a top-level cycle interval is not a daemon's"
        );
    }

    #[test]
    fn bad_values_name_key_and_value() {
        for (bad, key, value) in [
            (
                "[d]\ncycle_interval_s = \"abc\"",
                "d.cycle_interval_s",
                "abc",
            ),
            ("[d]\ncycle_interval_s = 0", "d.cycle_interval_s", "0"),
            ("[d]\ncycle_interval_s = -3", "d.cycle_interval_s", "-3"),
            ("ack_wait_s = 0", "ack_wait_s", "0"),
            ("ack_wait_s = \"x\"", "ack_wait_s", "x"),
            ("max_ack_pending = 0", "max_ack_pending", "0"),
            ("[d]\nstuck_after_s = -1", "d.stuck_after_s", "-1"),
            ("worker_threads = 0", "worker_threads", "0"),
            ("worker_threads = \"many\"", "worker_threads", "many"),
            ("publish_buffer = -5", "publish_buffer", "-5"),
            (
                "degraded_after_failures = 0",
                "degraded_after_failures",
                "0",
            ),
            ("heartbeat_interval_s = 0", "heartbeat_interval_s", "0"),
            (
                "[d]\nsubscribe_refused_exit_s = -2",
                "d.subscribe_refused_exit_s",
                "-2",
            ),
            ("[d]\nstop_grace_s = \"soon\"", "d.stop_grace_s", "soon"),
        ] {
            let e = load(bad).expect_err(bad).to_string();
            assert!(e.contains(key) && e.contains(value), "{bad}: {e}");
        }
    }

    #[test]
    fn the_declared_default_is_the_bottom_layer() {
        const INFO: DaemonInfo = DaemonInfo {
            cycle_interval_s: Some(45.0),
            ..DaemonInfo::unregistered("training_trigger", "")
        };
        let defaults = INFO.defaults();
        assert_eq!(
            defaults,
            vec![(
                "training_trigger.cycle_interval_s".to_owned(),
                "45".to_owned()
            )]
        );
        let dir = tempfile::tempdir().unwrap();
        let src = crate::settings::Sources {
            home: dir.path().to_owned(),
            defaults: defaults.clone(),
            ..Default::default()
        };
        let l = LifecycleConfig::load(&Settings::load(&src).unwrap(), &INFO);
        assert_eq!(l.unwrap().cycle_interval, Duration::from_secs(45));
        std::fs::write(
            dir.path().join("ringrift.toml"),
            "[training_trigger]\ncycle_interval_s = 7\n",
        )
        .unwrap();
        let l = LifecycleConfig::load(&Settings::load(&src).unwrap(), &INFO);
        assert_eq!(l.unwrap().cycle_interval, Duration::from_secs(7));
        let bare = DaemonInfo::from("test_daemon");
        assert!(bare.defaults().is_empty());
        let l = LifecycleConfig::load(&Settings::from_toml("").unwrap(), &bare);
        assert_eq!(
            l.unwrap().cycle_interval,
            Duration::from_secs_f64(FALLBACK_CYCLE_INTERVAL_S)
        );
    }
}
