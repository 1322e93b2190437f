//! The flags every daemon binary accepts, and how every RingRift CLI answers bad
//! arguments: clap's message and exit 64 (bad usage, never restarted), `--help` exit 0.

use std::path::PathBuf;
use std::process::ExitCode;

/// Prints a clap error and maps it to the exit code: `--help`/`--version` 0, a bad
/// argument [`crate::EXIT_CONFIG`] (clap's own default, 2, would read as a crash).
pub fn usage_exit(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(crate::EXIT_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

/// The arguments of a tool (`ringrift-launcher`, `ringrift-events`, `ringrift-fetch`):
/// parsed, or the exit code of [`usage_exit`].
pub fn parse_args<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| usage_exit(&e))
}

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
