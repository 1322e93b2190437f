//! What a node has: CPU count and load, memory, disk free under the home, and GPUs through
//! the one GPU probe (`nvidia-smi`). The utilisation probes ([`Probe`]: [`NvidiaSmi`],
//! [`CpuStat`], [`AutoProbe`]) moved here from `idle_resource` so `p2p_backend` and
//! `idle_resource` share them. Everything here blocks: call it off the async runtime.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

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

/// GPUs via `nvidia-smi`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NvidiaSmi;

impl NvidiaSmi {
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
}

impl Probe for NvidiaSmi {
    fn sample(&self) -> Result<Vec<Slot>, ProbeError> {
        let out = std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=index,utilization.gpu",
                "--format=csv,noheader,nounits",
            ])
            .output()
            .map_err(|e| perr(format!("nvidia-smi: {e}")))?;
        if !out.status.success() {
            return Err(perr(format!(
                "nvidia-smi failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Self::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

impl NvidiaSmi {
    /// How many GPUs this node has (0 without `nvidia-smi`).
    pub fn count() -> u32 {
        NvidiaSmi
            .sample()
            .map(|g| u32::try_from(g.len()).unwrap_or(u32::MAX))
            .unwrap_or(0)
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
    cpu: CpuStat,
}

impl Probe for AutoProbe {
    fn sample(&self) -> Result<Vec<Slot>, ProbeError> {
        match NvidiaSmi.sample() {
            Ok(g) if !g.is_empty() => Ok(g),
            _ => self.cpu.sample(),
        }
    }
}

/// A node's resources at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
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
        let r = sample(dir.path(), &NvidiaSmi);
        assert!(r.cpu_count >= 1);
        assert!(r.disk_total_bytes > 0 && r.disk_free_bytes <= r.disk_total_bytes);
        assert!(r.memory_total_bytes > 0);
        assert!(!r.gpus.is_empty() || !r.gpu_note.is_empty());
    }
}
