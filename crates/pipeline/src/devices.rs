//! The node's accelerators: GPUs and their utilisation through `nvidia-smi` (the one GPU
//! probe: job slots count these GPUs, idle_resource reads their utilisation).

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

/// GPUs via `nvidia-smi`.
pub struct NvidiaSmi;

impl NvidiaSmi {
    pub fn parse(text: &str) -> anyhow::Result<Vec<Slot>> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (idx, util) = l.split_once(',').ok_or_else(|| {
                    anyhow::anyhow!("nvidia-smi line {l:?}: expected 'index, utilization'")
                })?;
                let u: f64 = util
                    .trim()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("nvidia-smi utilization {util:?}: {e}"))?;
                Ok(Slot {
                    id: format!("gpu{}", idx.trim()),
                    kind: "gpu",
                    utilization: u,
                })
            })
            .collect()
    }

    /// The GPUs and their utilisation (blocking: runs `nvidia-smi`).
    pub fn sample() -> anyhow::Result<Vec<Slot>> {
        let out = std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=index,utilization.gpu",
                "--format=csv,noheader,nounits",
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "nvidia-smi failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// How many GPUs this node has (0 without `nvidia-smi`); blocking.
    pub fn count() -> u32 {
        Self::sample()
            .map(|g| u32::try_from(g.len()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }
}
