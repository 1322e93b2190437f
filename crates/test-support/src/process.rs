//! Processes of tests: the built binaries (`target/debug`), a child killed when dropped,
//! a temp `$RINGRIFT_HOME` whose logs a failing test prints, daemons started in it on
//! port 0 with their addresses read from `run/*.addr`, and the real `ringrift-event-router`
//! (a daemon crate's test that needs a router starts the binary: no daemon crate depends
//! on another; `scripts/test` builds every binary before the tests).

use crate::poll::{poll_until, poll_until_async, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `target/debug` (or whichever profile built the tests).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with the command to build it when missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests that start it",
        p.display()
    );
    p
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn term(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        wait_for(&format!("{} to exit", self.name), limit, || {
            self.child.try_wait().ok().flatten()
        })
    }

    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A temp `$RINGRIFT_HOME` with its own logs folder for child output.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

/// A failing test shows the end of every log of its home (the temp home itself is
/// removed), so a failure seen once in a loaded CI run names its cause.
impl Drop for Home {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(dir) = std::fs::read_dir(self.path().join("test-logs")) else {
            return;
        };
        let mut logs: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!("---- last {} lines of {} ----", tail.len(), log.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// Lines of each log a failing test prints.
const LOG_TAIL: usize = 60;

/// How long a daemon may take to write its address file.
const ADDR_LIMIT: Duration = Duration::from_secs(60);

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("ringrift-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("test-logs")).expect("logs dir");
        Home { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `binary` with `--home` and `args`; stderr goes to `test-logs/<name>.log`.
    pub fn spawn(&self, binary: &str, args: &[&str]) -> Proc {
        self.spawn_env(binary, args, &[])
    }

    /// [`Home::spawn`] with extra environment variables.
    pub fn spawn_env(&self, binary: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        self.spawn_wrapped(&[], binary, args, env)
    }

    /// [`Home::spawn_env`] run through `wrapper` (e.g. `ip netns exec <ns>`).
    pub fn spawn_wrapped(
        &self,
        wrapper: &[&str],
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("test-logs").join(format!("{binary}.log")))
            .expect("log file");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin(binary));
                c
            }
            None => Command::new(bin(binary)),
        };
        let child = cmd
            .arg("--home")
            .arg(self.path())
            .args(args)
            .env_remove("RINGRIFT_HOME")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        Proc {
            name: binary.to_owned(),
            child,
        }
    }

    /// A home whose `ringrift.toml` holds `[auth] token = token`, then `extra`.
    pub fn with_token(token: &str, extra: &str) -> Home {
        let home = Home::new();
        std::fs::write(
            home.path().join("ringrift.toml"),
            format!("[auth]\ntoken = \"{token}\"\n{extra}"),
        )
        .expect("ringrift.toml");
        home
    }

    /// Writes `profiles/<name>.toml` listing `daemons` (a profile of this home only).
    pub fn write_profile(&self, name: &str, daemons: &[&str]) {
        let dir = self.path().join("profiles");
        std::fs::create_dir_all(&dir).expect("profiles dir");
        let list: Vec<String> = daemons.iter().map(|d| format!("{d:?}")).collect();
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "description = \"test profile {name}\"\ndaemons = [{}]\n",
                list.join(", ")
            ),
        )
        .expect("profile");
    }

    /// The launcher on profile `name` for config hex8_2p (control on port 0), once it
    /// and its event router are up; returns it with the router's address.
    pub fn launch_profile(&self, name: &str) -> (Proc, String) {
        let mut l = self.spawn(
            "ringrift-launcher",
            &[
                "--profile",
                name,
                "--configs",
                "hex8_2p",
                "--control",
                "127.0.0.1:0",
            ],
        );
        self.wait_addr("launcher", &mut l);
        let router = self.wait_addr("event_router", &mut l);
        (l, router)
    }

    /// Waits for the daemon to write `run/<name>.addr`. The deadline is generous (60 s):
    /// under the whole suite's load on 2 cores a launcher restarted after a kill -9 once
    /// took more than 20 s to bring its p2p_backend up; a timeout shows the log.
    pub fn wait_addr(&self, name: &str, proc_: &mut Proc) -> String {
        let addr = poll_until(ADDR_LIMIT, || self.addr_unless_exited(name, proc_));
        addr.unwrap_or_else(|| self.no_addr(name, proc_))
    }

    /// [`Home::wait_addr`] from async code (polls on a timer, blocks no thread).
    pub async fn wait_addr_async(&self, name: &str, proc_: &mut Proc) -> String {
        let addr = poll_until_async(ADDR_LIMIT, || {
            let a = self.addr_unless_exited(name, proc_);
            async move { a }
        })
        .await;
        addr.unwrap_or_else(|| self.no_addr(name, proc_))
    }

    /// `run/<name>.addr` once written; panics with the log if `proc_` has exited.
    fn addr_unless_exited(&self, name: &str, proc_: &mut Proc) -> Option<String> {
        if let Some(st) = proc_.try_exit() {
            panic!(
                "{} exited early with {st}; log: {}",
                proc_.name,
                self.log(&proc_.name)
            );
        }
        let path = self.path().join("run").join(format!("{name}.addr"));
        std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn no_addr(&self, name: &str, proc_: &Proc) -> ! {
        panic!(
            "timed out after {ADDR_LIMIT:?} waiting for run/{name}.addr; log of {}: {}",
            proc_.name,
            self.log(&proc_.name)
        )
    }

    /// Starts the router on `listen` (e.g. `127.0.0.1:0`) and returns it with its address.
    pub fn start_router(&self, listen: &str, extra: &[&str]) -> (Proc, String) {
        let mut p = self.spawn_router(listen, extra);
        let addr = self.wait_addr("event_router", &mut p);
        (p, addr)
    }

    /// [`Home::start_router`] from async code: the real `ringrift-event-router` binary
    /// on a loopback port 0, for a daemon test that calls the router beyond publishing
    /// (dead letters, stats, consumers). Killed when the `Proc` is dropped.
    pub async fn start_router_async(&self, extra: &[&str]) -> (Proc, String) {
        let mut p = self.spawn_router("127.0.0.1:0", extra);
        let addr = self.wait_addr_async("event_router", &mut p).await;
        (p, addr)
    }

    fn spawn_router(&self, listen: &str, extra: &[&str]) -> Proc {
        let _ = std::fs::remove_file(self.path().join("run/event_router.addr"));
        let set = format!("event_router.listen={listen}");
        // Tests count events: keep the router's own heartbeat out of their way.
        let mut args = vec!["--set", set.as_str(), "--set", "heartbeat_interval_s=3600"];
        args.extend_from_slice(extra);
        self.spawn("ringrift-event-router", &args)
    }

    pub fn log(&self, binary: &str) -> String {
        std::fs::read_to_string(self.path().join("test-logs").join(format!("{binary}.log")))
            .unwrap_or_default()
    }
}
