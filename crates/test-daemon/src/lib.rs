//! A test daemon on handler-base, for launcher tests and benchmarks. It appends its
//! lifecycle to `$RINGRIFT_HOME/test_daemon.log` (`<event> <instance> <pid> <unix_ms>`)
//! and crashes on command: after `crash_after_s`, or when `run/<instance>.crash` appears
//! (the file is removed first), exiting with `exit_code`.

use handler_base::{Context, DaemonInfo, Handler};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "test_daemon",
    about: "Test daemon: records its lifecycle, crashes on command",
};

/// `[test_daemon]` (usually set per instance with `--set test_daemon.x=...`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestConfig {
    pub instance: String,
    pub crash_after_s: Option<f64>,
    pub exit_code: i32,
    pub cycle_interval_s: f64,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            instance: "test".into(),
            crash_after_s: None,
            exit_code: 1,
            cycle_interval_s: 0.05,
        }
    }
}

pub struct TestDaemon {
    cfg: TestConfig,
    record: PathBuf,
    crash_file: PathBuf,
    started: Instant,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: TestConfig = ctx.settings.section("test_daemon")?;
    anyhow::ensure!(
        cfg.cycle_interval_s > 0.0,
        "test_daemon.cycle_interval_s must be > 0"
    );
    Ok(Arc::new(TestDaemon {
        record: ctx.home.join("test_daemon.log"),
        crash_file: ctx.home.join("run").join(format!("{}.crash", cfg.instance)),
        cfg,
        started: Instant::now(),
    }))
}

impl TestDaemon {
    fn record(&self, what: &str) {
        let line = format!(
            "{what} {} {} {}\n",
            self.cfg.instance,
            std::process::id(),
            router_client::now_ms()
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.record)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn crash(&self, why: &str) -> ! {
        self.record("exit");
        eprintln!(
            "test daemon {} exiting with {} ({why})",
            self.cfg.instance, self.cfg.exit_code
        );
        std::process::exit(self.cfg.exit_code)
    }
}

#[async_trait::async_trait]
impl Handler for TestDaemon {
    fn cycle_interval(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.cycle_interval_s)
    }

    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.record("start");
        Ok(())
    }

    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        if self
            .cfg
            .crash_after_s
            .is_some_and(|s| self.started.elapsed().as_secs_f64() >= s)
        {
            self.crash("crash_after_s");
        }
        if std::fs::remove_file(&self.crash_file).is_ok() {
            self.crash("crash file");
        }
        Ok(())
    }

    async fn on_stop(&self, _ctx: &Context) {
        self.record("stop");
    }
}
