//! `ringrift-fetch`: the transfer engine from the command line (an operator pulling a
//! node's models or data by hand, the sync benchmark), with an `indicatif` progress bar.

use crate::files::{Engine, Limits, LocalIndex, Root};
use crate::{DataClient, Peer};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Mirror a data_server's `data` or `models` tree into a directory: only what differs
/// is fetched, every file is SHA-256-verified before it is installed (atomic rename),
/// a corrupt one goes to `<to>/.quarantine`.
#[derive(Debug, Parser)]
#[command(name = "ringrift-fetch", version)]
struct Args {
    /// The data_server, e.g. http://10.0.0.5:8766.
    #[arg(long)]
    from: String,
    /// `data` or `models`.
    #[arg(long, default_value = "data", value_parser = ["data", "models"])]
    root: String,
    /// Only the files under this directory of the root.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Destination directory.
    #[arg(long)]
    to: PathBuf,
    /// The cluster token (else RINGRIFT_TOKEN).
    #[arg(long, env = "RINGRIFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA (PEM) the data_server's certificate is verified against: the server is
    /// spoken to over https only (ringrift.toml `[tls] ca`).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Send the token over plain http to another machine (`[tls] allow_plaintext`).
    #[arg(long)]
    allow_plaintext: bool,
    /// Downloads in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    parallel: u64,
    /// Bytes per second over all downloads; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    bandwidth: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn main() -> ExitCode {
    let args = match handler_base::cli::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringrift-fetch: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringrift-fetch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let root = if args.root == "models" {
        Root::Models
    } else {
        Root::Data
    };
    let ca = args
        .ca
        .as_deref()
        .map(handler_base::router_client::tls::ClientTls::from_ca_file)
        .transpose()?;
    let client = DataClient::with_tls(
        args.token.as_deref(),
        Duration::from_secs(30),
        ca.as_ref(),
        args.allow_plaintext,
    )?;
    let peer = Peer::at("source", &args.from);
    if client.refused_peer(std::slice::from_ref(&peer)).is_some() {
        anyhow::bail!(
            "{}: the token is not sent over plain http to another machine: give --ca (the server serves TLS) or --allow-plaintext",
            args.from
        );
    }
    let limits = Limits {
        per_host: usize::try_from(args.parallel)?,
        bytes_per_s: args.bandwidth,
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )?)
    };
    let b2 = bar.clone();
    let engine = Engine::new(client, args.to.join(".quarantine"), limits)?
        .with_progress(move |p| b2.inc(p.bytes));
    let index_path = args.to.join(".ringrift-fetch-index.json");
    let mut index = LocalIndex::load(&index_path)?;
    std::fs::create_dir_all(&args.to)?;
    if !args.quiet {
        let doc = crate::files::manifest_under(engine.client(), &peer, root, &args.prefix).await?;
        bar.set_length(doc.files.values().map(|e| e.size).sum());
    }
    let report = engine
        .mirror(&peer, root, &args.prefix, &|_| true, &args.to, &mut index)
        .await?;
    bar.finish_and_clear();
    if index.is_dirty() {
        index.save(&index_path)?;
    }
    let secs = report.duration.as_secs_f64();
    println!(
        "{} files listed, {} fetched, {} bytes in {:.3} s ({:.1} MB/s), {} failed",
        report.listed,
        report.fetched,
        report.bytes,
        secs,
        report.bytes as f64 / 1e6 / secs.max(1e-9),
        report.failed.len()
    );
    for (path, why) in &report.failed {
        eprintln!("ringrift-fetch: {path}: {why}");
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
