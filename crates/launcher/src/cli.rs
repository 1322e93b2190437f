//! Command-line interface of the launcher.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ringrift-launcher",
    about = "Start, supervise and stop RingRift daemons as OS processes"
)]
pub struct Args {
    /// Profile to run (coordinator, training, selfplay, ephemeral, minimal, standard, full).
    #[arg(long)]
    pub profile: Option<String>,
    /// Run this daemon (repeatable); its dependencies are pulled in.
    #[arg(long = "daemon", value_name = "NAME")]
    pub daemons: Vec<String>,
    /// Run every daemon of this category.
    #[arg(long, value_name = "CAT")]
    pub category: Option<String>,
    /// Run every (non-deprecated) daemon.
    #[arg(long)]
    pub all: bool,
    /// Config keys passed to the daemons, e.g. hex8_2p,square8_2p.
    #[arg(long, value_name = "KEYS")]
    pub configs: Option<String>,
    /// Refuse to start when a member of the profile (or category, or --all) is
    /// registered but not implemented yet. Without it such members are skipped with one
    /// warning line; a daemon named with --daemon is always refused.
    #[arg(long)]
    pub strict: bool,
    /// The default now (kept so older scripts and units keep working).
    #[arg(long, hide = true, conflicts_with = "strict")]
    pub skip_unimplemented: bool,
    /// List the registry and exit.
    #[arg(long)]
    pub list: bool,
    /// Check the registry (dependencies, cycles, binaries) and the profile, then exit.
    #[arg(long)]
    pub validate: bool,
    /// Ask the running launcher for its daemons and print a table.
    #[arg(long)]
    pub status: bool,
    /// With --status: every node of cluster.toml, asked through its peer API.
    #[arg(long, requires = "status")]
    pub cluster: bool,
    /// Like --status, redrawn on every change.
    #[arg(long)]
    pub watch: bool,
    /// Print --status/--list as JSON.
    #[arg(long)]
    pub json: bool,
    /// State directory (default: $RINGRIFT_HOME, else ~/.local/state/ringrift).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Extra config file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Registry file replacing the built-in one (tests, custom deployments).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Control API address (default: launcher.control, 127.0.0.1:8790; port 0 = any).
    #[arg(long)]
    pub control: Option<String>,
    /// Override one config key, e.g. `--set launcher.stop_grace_s=5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Stop one daemon of the running launcher (it stays stopped until `restart`).
    Stop { name: String },
    /// Restart one daemon of the running launcher now.
    Restart { name: String },
    /// Write systemd units for every daemon and a target per profile into DIR.
    SystemdUnits {
        #[arg(long, default_value = "systemd")]
        out: PathBuf,
        /// Where the binaries are installed.
        #[arg(long, default_value = "/usr/local/bin")]
        bindir: String,
    },
}
