//! What the tests on `scripts/cluster-up` clusters share: the repository path, the guard
//! that runs `scripts/cluster-down`, `cluster.env` values and `ip` commands.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `scripts/cluster-down` when dropped; during a panic it first prints the last
/// lines of each node's launcher log (clusters started with launchers).
pub(super) struct Cluster {
    pub(super) dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for k in 1..=5 {
                let Ok(log) =
                    std::fs::read_to_string(self.dir.join(format!("logs/launcher-n{k}.log")))
                else {
                    continue;
                };
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "---- last lines of launcher-n{k}.log ----\n{}",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
        let _ = Command::new(repo().join("scripts/cluster-down"))
            .arg("--dir")
            .arg(&self.dir)
            .output();
    }
}

pub(super) fn env_value(dir: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join("cluster.env")).expect("cluster.env");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in cluster.env:\n{text}"))
        .to_owned()
}

pub(super) fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {}", args.join(" "));
}
