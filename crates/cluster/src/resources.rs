//! What a node has: CPU count and load, memory, disk free under the home, and GPUs through
//! the one GPU probe (`nvidia-smi`). The utilisation probes ([`Probe`]: [`NvidiaSmi`],
//! [`CpuStat`], [`AutoProbe`]) moved here from `idle_resource` so `p2p_backend` and
//! `idle_resource` share them. The GPU probe is bounded (`[gpu] probe_timeout_s`, its
//! process group killed past it) and single-flight per process ([`NvidiaSmi`]).
//! Everything here blocks: call it off the async runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One schedulable unit and how busy it is (percent).
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// `gpu<N>` or a CPU core name (`cpu<N>`).
    pub id: String,
    pub kind: &'static str,
    pub utilization: f64,
}

impl Slot {
    /// The device index of a `gpu<N>` slot.
    pub fn gpu_index(&self) -> Option<u32> {
        self.id.strip_prefix("gpu")?.parse().ok()
    }
}

/// Reads utilisation; blocking, called off the runtime.
pub trait Probe: Send + Sync {
    fn sample(&self) -> Result<Vec<Slot>, ProbeError>;
}

/// A probe failure, e.g. "nvidia-smi: No such file or directory".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

fn perr(s: impl Into<String>) -> ProbeError {
    ProbeError(s.into())
}

/// `[gpu]` in ringrift.toml: how the one GPU probe runs, for every daemon that probes
/// (node_health_monitor, p2p_backend, idle_resource, job_scheduler's slot count).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    /// The `nvidia-smi` to run: a name looked up on PATH, or a path.
    pub command: PathBuf,
    /// Seconds one probe may take; then its process group is killed and the probe
    /// reported as failed.
    pub probe_timeout_s: f64,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            command: PathBuf::from("nvidia-smi"),
            probe_timeout_s: 5.0,
        }
    }
}

impl GpuConfig {
    /// `[gpu]` of `settings`, validated (a bad value is a configuration error naming it).
    pub fn load(settings: &handler_base::Settings) -> Result<GpuConfig, handler_base::ConfigError> {
        let cfg: GpuConfig = settings.section("gpu")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), handler_base::ConfigError> {
        handler_base::ensure_config!(
            self.probe_timeout_s.is_finite()
                && self.probe_timeout_s > 0.0
                && self.probe_timeout_s <= 3600.0,
            "gpu.probe_timeout_s = {} must be within (0, 3600]",
            self.probe_timeout_s
        );
        handler_base::ensure_config!(
            !self.command.as_os_str().is_empty(),
            "gpu.command must not be empty"
        );
        Ok(())
    }
}

/// GPUs via `nvidia-smi`, bounded and single-flight.
///
/// A probe runs in its own process group with a deadline (`probe_timeout_s`); past it the
/// group is killed and the probe fails with an error naming the timeout, so a hung driver
/// cannot block a caller. At most one `nvidia-smi` runs per probe (clones share it; build
/// one per process): a caller that arrives while one runs waits for that one's result
/// (never past its deadline) instead of starting a second, and while a killed probe has
/// not exited yet (a process stuck in the driver) callers get the last result with its age
/// and nothing new is started, so a hung probe never stacks up processes.
#[derive(Debug, Clone)]
pub struct NvidiaSmi {
    inner: Arc<Inner>,
    /// How long [`Probe::sample`] waits for a result before it answers with the last one.
    wait: Duration,
}

#[derive(Debug)]
struct Inner {
    command: PathBuf,
    timeout: Duration,
    flight: Mutex<Flight>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Flight {
    /// When the probe in flight started (`None`: none runs).
    running: Option<Instant>,
    last: Option<Outcome>,
    /// How many processes were started (for tests and health details).
    spawned: u64,
}

#[derive(Debug, Clone)]
struct Outcome {
    at: Instant,
    result: Result<Vec<Slot>, ProbeError>,
}

/// One answer of the probe: the result and how old it is (zero-ish when fresh).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    pub result: Result<Vec<Slot>, ProbeError>,
    pub age: Duration,
}

/// Time left past the deadline for the supervising thread to record the timeout.
const RECORD_MARGIN: Duration = Duration::from_millis(500);

impl Default for NvidiaSmi {
    fn default() -> Self {
        NvidiaSmi::new(&GpuConfig::default())
    }
}

impl NvidiaSmi {
    /// A probe with its own single flight; `cfg` must be valid ([`GpuConfig::validate`];
    /// an invalid timeout falls back to the default).
    pub fn new(cfg: &GpuConfig) -> NvidiaSmi {
        let timeout = if cfg.validate().is_ok() {
            Duration::from_secs_f64(cfg.probe_timeout_s)
        } else {
            Duration::from_secs_f64(GpuConfig::default().probe_timeout_s)
        };
        NvidiaSmi {
            inner: Arc::new(Inner {
                command: cfg.command.clone(),
                timeout,
                flight: Mutex::new(Flight::default()),
                changed: Condvar::new(),
            }),
            wait: timeout + RECORD_MARGIN,
        }
    }

    /// The probe of `[gpu]` in `settings`.
    pub fn from_settings(
        settings: &handler_base::Settings,
    ) -> Result<NvidiaSmi, handler_base::ConfigError> {
        Ok(NvidiaSmi::new(&GpuConfig::load(settings)?))
    }

    /// The same probe (same single flight) whose [`Probe::sample`] waits at most `wait`
    /// before answering with the last result (e.g. a peer API answer that must be quick).
    pub fn waiting_at_most(&self, wait: Duration) -> NvidiaSmi {
        NvidiaSmi {
            inner: self.inner.clone(),
            wait,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// How many `nvidia-smi` processes this probe has started.
    pub fn spawned(&self) -> u64 {
        self.inner.lock().spawned
    }

    pub fn parse(text: &str) -> Result<Vec<Slot>, ProbeError> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (idx, util) = l.split_once(',').ok_or_else(|| {
                    perr(format!(
                        "nvidia-smi line {l:?}: expected 'index, utilization'"
                    ))
                })?;
                let u: f64 = util
                    .trim()
                    .parse()
                    .map_err(|e| perr(format!("nvidia-smi utilization {util:?}: {e}")))?;
                Ok(Slot {
                    id: format!("gpu{}", idx.trim()),
                    kind: "gpu",
                    utilization: u,
                })
            })
            .collect()
    }

    /// Starts a probe unless one is in flight, then waits up to `max_wait` for a result
    /// newer than this call; without one, the last result with its age (blocking).
    pub fn reading(&self, max_wait: Duration) -> GpuReading {
        let asked = Instant::now();
        let until = asked + max_wait;
        let mut f = self.inner.lock();
        loop {
            // A stuck probe reaped while we waited: start the fresh one this call asked for.
            if f.running.is_none() && f.last.as_ref().is_none_or(|o| o.at < asked) {
                self.inner.start(&mut f, Instant::now());
            }
            if let Some(o) = f.last.as_ref().filter(|o| o.at >= asked) {
                return GpuReading {
                    result: o.result.clone(),
                    age: Instant::now().saturating_duration_since(o.at),
                };
            }
            let now = Instant::now();
            if now >= until {
                break;
            }
            f = self
                .inner
                .changed
                .wait_timeout(f, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let now = Instant::now();
        let running = f
            .running
            .map(|s| {
                format!(
                    "a probe started {:.1} s ago is still running",
                    (now - s).as_secs_f64()
                )
            })
            .unwrap_or_else(|| "no probe running".into());
        match &f.last {
            Some(o) => {
                let age = now.saturating_duration_since(o.at);
                GpuReading {
                    result: o.result.clone().map_err(|e| {
                        perr(format!(
                            "{e} (result of {:.1} s ago; {running})",
                            age.as_secs_f64()
                        ))
                    }),
                    age,
                }
            }
            None => GpuReading {
                result: Err(perr(format!(
                    "{}: no result yet ({running})",
                    self.inner.command.display()
                ))),
                age: Duration::ZERO,
            },
        }
    }

    /// How many GPUs this node has (0 without `nvidia-smi`, or when it fails).
    pub fn count(&self) -> u32 {
        self.sample()
            .map(|g| u32::try_from(g.len()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, f: &mut Flight, result: Result<Vec<Slot>, ProbeError>) {
        f.last = Some(Outcome {
            at: Instant::now(),
            result,
        });
        self.changed.notify_all();
    }

    /// Spawns `nvidia-smi` in its own process group and a thread that enforces the
    /// deadline; `f.running` holds until the process has exited and been reaped.
    fn start(self: &Arc<Self>, f: &mut Flight, now: Instant) {
        use std::os::unix::process::CommandExt;
        let cmd = self.command.display().to_string();
        let child = std::process::Command::new(&self.command)
            .args([
                "--query-gpu=index,utilization.gpu",
                "--format=csv,noheader,nounits",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => return self.record(f, Err(perr(format!("{cmd}: {e}")))),
        };
        let pgid = child.id();
        f.running = Some(now);
        f.spawned += 1;
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gpu-probe".into())
            .spawn(move || me.supervise(child, pgid));
        if let Err(e) = spawned {
            kill_group(pgid);
            f.running = None;
            self.record(
                f,
                Err(perr(format!("{cmd}: no thread to supervise it: {e}"))),
            );
        }
    }

    /// Waits for the probe (off the caller's thread): its output within the deadline, else
    /// kills the group and records the timeout; then waits until the process is gone.
    fn supervise(&self, child: std::process::Child, pgid: u32) {
        let cmd = self.command.display().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name("gpu-probe-wait".into())
            .spawn(move || {
                let _ = tx.send(child.wait_with_output());
            });
        if let Err(e) = waiter {
            // The child went with the closure; kill it so nothing lingers.
            kill_group(pgid);
            let mut f = self.lock();
            f.running = None;
            self.record(
                &mut f,
                Err(perr(format!("{cmd}: no thread to wait for it: {e}"))),
            );
            return;
        }
        let (result, timed_out) = match rx.recv_timeout(self.timeout) {
            Ok(Ok(out)) if out.status.success() => (
                NvidiaSmi::parse(&String::from_utf8_lossy(&out.stdout)),
                false,
            ),
            Ok(Ok(out)) => (
                Err(perr(format!(
                    "{cmd} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))),
                false,
            ),
            Ok(Err(e)) => (Err(perr(format!("{cmd}: {e}"))), false),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                kill_group(pgid);
                tracing::warn!(command = %cmd, pgid, timeout_s = self.timeout.as_secs_f64(), "GPU probe timed out; killed its process group");
                (
                    Err(perr(format!(
                        "{cmd} did not answer within {:.1} s (gpu.probe_timeout_s): killed its process group {pgid}",
                        self.timeout.as_secs_f64()
                    ))),
                    true,
                )
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                (Err(perr(format!("{cmd}: its waiting thread ended"))), false)
            }
        };
        {
            // The result and the end of the flight under one lock: a caller that comes
            // between them would otherwise see a probe in flight, start none, and wait
            // its whole `max_wait` for a result that never comes.
            let mut f = self.lock();
            if !timed_out {
                f.running = None;
            }
            self.record(&mut f, result);
        }
        if timed_out {
            // Until the killed process is reaped (never, if it is stuck in the driver),
            // the probe stays in flight and no second one starts.
            let _ = rx.recv();
            self.lock().running = None;
            self.changed.notify_all();
        }
    }
}

/// SIGKILL to the probe's process group (the group id is the probe's pid, which is not
/// reaped yet, so it cannot name another group).
fn kill_group(pgid: u32) {
    if let Ok(p) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Probe for NvidiaSmi {
    fn sample(&self) -> Result<Vec<Slot>, ProbeError> {
        self.reading(self.wait).result
    }
}

/// CPU cores via `/proc/stat` deltas between samples (the first sample sees none).
#[derive(Debug, Default)]
pub struct CpuStat {
    prev: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl CpuStat {
    /// Per-core (busy, total) jiffies.
    pub fn parse(text: &str) -> BTreeMap<String, (u64, u64)> {
        text.lines()
            .filter(|l| {
                l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(|b| b.is_ascii_digit())
            })
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next()?.to_owned();
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                let total: u64 = v.iter().sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                Some((name, (total.saturating_sub(idle), total)))
            })
            .collect()
    }

    pub fn utilization(&self, now: BTreeMap<String, (u64, u64)>) -> Vec<Slot> {
        let mut prev = self.prev.lock().unwrap_or_else(|p| p.into_inner());
        let out = now
            .iter()
            .filter_map(|(k, (b, t))| {
                let (pb, pt) = prev.get(k)?;
                let dt = t.saturating_sub(*pt);
                (dt > 0).then(|| Slot {
                    id: k.clone(),
                    kind: "cpu",
                    utilization: 100.0 * b.saturating_sub(*pb) as f64 / dt as f64,
                })
            })
            .collect();
        *prev = now;
        out
    }
}

impl Probe for CpuStat {
    fn sample(&self) -> Result<Vec<Slot>, ProbeError> {
        let text =
            std::fs::read_to_string("/proc/stat").map_err(|e| perr(format!("/proc/stat: {e}")))?;
        Ok(self.utilization(Self::parse(&text)))
    }
}

/// GPUs when `nvidia-smi` answers, CPU cores otherwise.
#[derive(Debug, Default)]
pub struct AutoProbe {
    gpu: NvidiaSmi,
    cpu: CpuStat,
}

impl AutoProbe {
    /// With this process's GPU probe.
    pub fn new(gpu: NvidiaSmi) -> AutoProbe {
        AutoProbe {
            gpu,
            cpu: CpuStat::default(),
        }
    }
}

impl Probe for AutoProbe {
    fn sample(&self) -> Result<Vec<Slot>, ProbeError> {
        match self.gpu.sample() {
            Ok(g) if !g.is_empty() => Ok(g),
            _ => self.cpu.sample(),
        }
    }
}

/// A node's resources at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu_count: u32,
    pub load_1m: f64,
    pub load_5m: f64,
    pub load_15m: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// (id, utilisation %).
    pub gpus: Vec<(String, f64)>,
    /// Why no GPU was found, when none was.
    pub gpu_note: String,
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut f = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// `/proc/meminfo`: (MemTotal, MemAvailable) in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let kb = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("MemTotal:")?, kb("MemAvailable:")?))
}

/// Samples this machine (blocking: reads `/proc`, runs `nvidia-smi`, statvfs of `home`).
/// A part that cannot be read stays 0; GPUs absent are explained in `gpu_note`.
pub fn sample(home: &Path, gpu: &dyn Probe) -> Resources {
    let mut r = Resources {
        cpu_count: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        ..Default::default()
    };
    if let Some((a, b, c)) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t))
    {
        (r.load_1m, r.load_5m, r.load_15m) = (a, b, c);
    }
    if let Some((total, avail)) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
    {
        (r.memory_total_bytes, r.memory_available_bytes) = (total, avail);
    }
    let disk_path = if home.exists() { home } else { Path::new("/") };
    // The statvfs field types differ between platforms (u32 on some).
    #[allow(clippy::unnecessary_cast)]
    if let Ok(st) = nix::sys::statvfs::statvfs(disk_path) {
        let frag = st.fragment_size() as u64;
        r.disk_free_bytes = st.blocks_available() as u64 * frag;
        r.disk_total_bytes = st.blocks() as u64 * frag;
    }
    match gpu.sample() {
        Ok(g) => {
            r.gpus = g
                .into_iter()
                .filter(|s| s.kind == "gpu")
                .map(|s| (s.id, s.utilization))
                .collect();
            if r.gpus.is_empty() {
                r.gpu_note = "no GPU found".into();
            }
        }
        Err(e) => r.gpu_note = e.to_string(),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_proc_files_and_samples_this_machine() {
        let g = NvidiaSmi::parse("0, 5\n1, 87\n").unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!((g[1].id.as_str(), g[1].utilization), ("gpu1", 87.0));
        assert!(NvidiaSmi::parse("garbage\n").is_err());
        assert_eq!(
            parse_loadavg("0.50 1.25 2.00 1/234 5678\n"),
            Some((0.5, 1.25, 2.0))
        );
        assert_eq!(parse_loadavg("x"), None);
        assert_eq!(
            parse_meminfo("MemTotal:  2048 kB\nMemFree: 1 kB\nMemAvailable: 1024 kB\n"),
            Some((2048 * 1024, 1024 * 1024))
        );
        let dir = tempfile::tempdir().unwrap();
        let r = sample(dir.path(), &NvidiaSmi::default());
        assert!(r.cpu_count >= 1);
        assert!(r.disk_total_bytes > 0 && r.disk_free_bytes <= r.disk_total_bytes);
        assert!(r.memory_total_bytes > 0);
        assert!(!r.gpus.is_empty() || !r.gpu_note.is_empty());
    }

    /// The fake-`nvidia-smi` tests spawn processes: one at a time, so no test forks while
    /// another holds its script open for writing ("Text file busy").
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fake `nvidia-smi` in `dir` that appends its pid to `dir/pids`, then runs `body`.
    fn fake(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("nvidia-smi");
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho $$ >> '{}/pids'\n{body}\n", dir.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn pids(dir: &Path) -> Vec<i32> {
        std::fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Polls `f` until it is `Some`, for at most `secs`.
    fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < end, "not within {secs} s: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Processes of process group `pgid` that are not zombies.
    fn live_in_group(pgid: i32) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.first() != Some(&"Z") && f.get(2) == Some(&pgid.to_string().as_str())
            })
            .collect()
    }

    fn probe(cmd: PathBuf, secs: f64) -> NvidiaSmi {
        NvidiaSmi::new(&GpuConfig {
            command: cmd,
            probe_timeout_s: secs,
        })
    }

    #[test]
    fn a_hung_probe_fails_at_its_deadline_is_killed_and_never_doubled() {
        let _s = serial();
        let dir = tempfile::tempdir().unwrap();
        let gpu = probe(fake(dir.path(), "sleep 120\necho '0, 1'"), 2.0);
        let first = {
            let gpu = gpu.clone();
            let t0 = Instant::now();
            std::thread::spawn(move || (gpu.sample(), t0.elapsed()))
        };
        let pid = poll(20, "the fake nvidia-smi runs", || {
            pids(dir.path()).first().copied()
        });
        // A second caller while the first probe runs: it shares that probe.
        let t1 = Instant::now();
        let second = gpu.sample();
        let second_took = t1.elapsed();
        let (first, first_took) = first.join().unwrap();
        for (r, took) in [(&first, first_took), (&second, second_took)] {
            let e = r.as_ref().expect_err("a hung probe fails");
            assert!(
                e.0.contains("did not answer within 2.0 s") && e.0.contains("probe_timeout_s"),
                "{e}"
            );
            // Deadline + margin (the first includes spawning the process).
            assert!(took < Duration::from_millis(2000 + 1500), "{took:?}");
        }
        assert_eq!(pids(dir.path()), [pid], "one nvidia-smi for two callers");
        assert_eq!(gpu.spawned(), 1);
        // The fake and its `sleep` child are gone (killed as a group, reaped).
        poll(20, "no process left in the probe's group", || {
            live_in_group(pid).is_empty().then_some(())
        });
        poll(20, "the probe is free again", || {
            gpu.inner.lock().running.is_none().then_some(())
        });
    }

    #[test]
    fn a_killed_probe_that_has_not_exited_blocks_new_ones_and_callers_get_its_age() {
        let _s = serial();
        let dir = tempfile::tempdir().unwrap();
        // A descendant that left the group keeps the output open: the killed probe is not
        // finished (as one stuck in the driver), so it stays the one in flight.
        let stuck = dir.path().join("stuck");
        let body = format!(
            "setsid sh -c 'echo $$ > \"{}\"; exec sleep 120' &\nsleep 120",
            stuck.display()
        );
        let gpu = probe(fake(dir.path(), &body), 1.0);
        let e = gpu.sample().expect_err("timed out");
        assert!(e.0.contains("did not answer within 1.0 s"), "{e}");
        let stuck_pid: i32 = poll(20, "the stuck descendant runs", || {
            std::fs::read_to_string(&stuck).ok()?.trim().parse().ok()
        });
        // Later callers: the last result with its age, and no second nvidia-smi.
        let r = gpu.reading(Duration::from_millis(300));
        let e = r.result.expect_err("still the timeout");
        assert!(
            e.0.contains("did not answer within 1.0 s") && e.0.contains("still running"),
            "{e}"
        );
        assert!(r.age > Duration::ZERO);
        assert_eq!(gpu.spawned(), 1);
        assert_eq!(pids(dir.path()).len(), 1);
        // Once it is gone, the next caller probes again.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stuck_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        poll(20, "the probe is free again", || {
            gpu.inner.lock().running.is_none().then_some(())
        });
        let _ = gpu.sample();
        assert_eq!(gpu.spawned(), 2);
    }

    #[test]
    fn a_fake_nvidia_smi_with_valid_output_works_and_failures_are_named() {
        let _s = serial();
        let dir = tempfile::tempdir().unwrap();
        let gpu = probe(fake(dir.path(), "echo '0, 5'\necho '1, 87'"), 30.0);
        let g = gpu.sample().unwrap();
        assert_eq!(
            g.iter()
                .map(|s| (s.id.as_str(), s.utilization))
                .collect::<Vec<_>>(),
            [("gpu0", 5.0), ("gpu1", 87.0)]
        );
        assert_eq!(gpu.count(), 2);
        let r = sample(dir.path(), &gpu);
        assert_eq!(
            r.gpus,
            [("gpu0".to_owned(), 5.0), ("gpu1".to_owned(), 87.0)]
        );
        assert_eq!(gpu.spawned(), 3);
        // Every process was reaped.
        poll(20, "the probes' processes are gone", || {
            pids(dir.path())
                .iter()
                .all(|p| live_in_group(*p).is_empty())
                .then_some(())
        });

        let bad = probe(fake(dir.path(), "echo 'driver gone' >&2\nexit 9"), 30.0);
        let e = bad.sample().unwrap_err();
        assert!(e.0.contains("failed") && e.0.contains("driver gone"), "{e}");
        let absent = probe(dir.path().join("absent"), 30.0);
        let e = absent.sample().unwrap_err();
        assert!(e.0.contains("absent"), "{e}");
        assert_eq!(absent.spawned(), 0);

        for (v, ok) in [(5.0, true), (0.0, false), (f64::NAN, false), (-1.0, false)] {
            let c = GpuConfig {
                probe_timeout_s: v,
                ..GpuConfig::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{v}");
        }
        let s = handler_base::Settings::from_toml("[gpu]\nprobe_timeout_s = 0\n").unwrap();
        let e = GpuConfig::load(&s).unwrap_err().to_string();
        assert!(e.contains("gpu.probe_timeout_s = 0"), "{e}");
    }
}
