//! The flags every daemon binary accepts.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
pub struct CommonArgs {
    /// Run one cycle (start, one `run_cycle`, flush events) and exit.
    #[arg(long)]
    pub once: bool,
    /// Extra config file (TOML), above $RINGRIFT_HOME/ringrift.toml, below env and flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (default: $RINGRIFT_HOME, else ~/.local/state/ringrift).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Event router address, host:port (default: run/event_router.addr, else 127.0.0.1:8780).
    #[arg(long, value_name = "ADDR")]
    pub router: Option<String>,
    /// Override one config key, e.g. `--set auto_export.threshold=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Comma-separated config keys to work on, e.g. hex8_2p,square8_2p.
    #[arg(long, value_name = "KEYS")]
    pub configs: Option<String>,
}

impl CommonArgs {
    /// `--set` pairs, split; an entry without `=` is a usage error.
    pub fn overrides(&self) -> Result<Vec<(String, String)>, String> {
        self.set
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
                _ => Err(format!("--set {kv:?}: expected KEY=VALUE")),
            })
            .collect()
    }
}
