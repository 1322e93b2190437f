//! `ringrift-launcher`: the one restart authority. Reads a profile (or `--daemon`,
//! `--category`, `--all`), pulls in dependencies, starts daemons as child processes in
//! dependency order (independent ones in parallel), supervises them (`supervise.rs`),
//! serves the control API (`control.rs`), and stops them in reverse dependency order.
//! Also `--list`, `--validate`, `--status` (`--cluster`: every node, `cluster_status.rs`),
//! `--watch`, `stop`, `restart` and the systemd
//! generator (`systemd.rs`).

mod child;
pub mod cli;
mod cluster_status;
pub mod control;
mod logs;
pub mod supervise;
pub mod systemd;

use anyhow::{Context as _, bail};
use handler_base::settings::{Settings, Sources, resolve_home};
use ringrift_registry::{Registry, load_profile};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use supervise::{LauncherConfig, Planned};

/// A usage or configuration error: exit 64.
fn usage(msg: impl Into<String>) -> anyhow::Error {
    handler_base::ConfigError::Usage(msg.into()).into()
}

pub fn main() -> ExitCode {
    let args = match handler_base::cli::parse_args::<cli::Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringrift-launcher: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringrift-launcher: {e:#}");
            ExitCode::from(handler_base::start_exit_code(&e))
        }
    }
}

/// Where daemon binaries are looked up: beside the launcher, then on PATH.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)));
    let path = std::env::var_os("PATH").unwrap_or_default();
    beside
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

async fn run(args: cli::Args) -> anyhow::Result<ExitCode> {
    let home = resolve_home(args.home.as_deref());
    let overrides: Vec<(String, String)> = args
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| usage(format!("--set {kv:?}: expected KEY=VALUE")))
        })
        .collect::<anyhow::Result<_>>()?;
    let settings = Settings::load(&Sources::standard(&home, args.config.clone(), overrides))
        .map_err(|e| usage(e.to_string()))?;
    let mut cfg: LauncherConfig = settings
        .section("launcher")
        .map_err(|e| usage(e.to_string()))?;
    cfg.validate().map_err(usage)?;
    if let Some(c) = &args.control {
        cfg.control = c.clone();
    }
    let token = handler_base::auth::load(&settings).map_err(|e| usage(e.to_string()))?;
    let tls = handler_base::tls::Tls::load(&settings).map_err(|e| usage(e.to_string()))?;
    let bearer = tls.bearer(token.as_ref());
    let registry = match &args.registry {
        Some(p) => Registry::from_toml(
            &std::fs::read_to_string(p)
                .with_context(|| format!("read registry {}", p.display()))?,
        )
        .map_err(|e| usage(e.to_string()))?,
        None => Registry::builtin(),
    };
    let control_addr = || {
        args.control
            .clone()
            .or_else(|| handler_base::read_addr_file(&home, "launcher"))
            .unwrap_or_else(|| cfg.control.clone())
    };

    if let Some(cmd) = &args.cmd {
        return match cmd {
            cli::Cmd::Stop { name } | cli::Cmd::Restart { name } => {
                let mut c = control::connect(&control_addr(), bearer.clone()).await?;
                let req = ringrift_proto::wire::DaemonRequest { name: name.clone() };
                let r = if matches!(cmd, cli::Cmd::Stop { .. }) {
                    c.stop(req).await
                } else {
                    c.restart(req).await
                };
                let r = r.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
                println!(
                    "{}: {}",
                    name,
                    if matches!(cmd, cli::Cmd::Stop { .. }) {
                        "stopping"
                    } else {
                        "restarting"
                    }
                );
                let _ = r;
                Ok(ExitCode::SUCCESS)
            }
            cli::Cmd::SystemdUnits { out, bindir } => {
                std::fs::create_dir_all(out)?;
                let units = systemd::generate(&registry, bindir).map_err(usage)?;
                for (name, text) in &units {
                    std::fs::write(out.join(name), text)?;
                }
                println!("wrote {} units to {}", units.len(), out.display());
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    if args.cluster {
        let node = settings.node_name()?;
        let cluster = ringrift_cluster::ClusterConfig::load(&home, &node)
            .map_err(handler_base::ConfigError::from)?;
        let rows = cluster_status::collect(&cluster, bearer.clone()).await;
        let all = rows.iter().all(|r| r.info.is_some());
        if args.json {
            let body = cluster_status::body(&cluster, rows);
            println!("{}", serde_json::to_string(&body)?);
        } else {
            print!("{}", cluster_status::table(&cluster, &rows));
        }
        return Ok(if all {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if args.status || args.watch {
        let mut c = control::connect(&control_addr(), bearer.clone()).await?;
        if args.status {
            let s = c
                .status(ringrift_proto::wire::StatusRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("status: {}", s.message()))?
                .into_inner();
            if args.json {
                println!("{}", serde_json::to_string(&control::status_body(&s))?)
            } else {
                print!("{}", control::table(&s))
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut stream = c
            .watch(ringrift_proto::wire::StatusRequest {})
            .await?
            .into_inner();
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal();
        while let Some(s) = stream.message().await? {
            if tty {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", control::table(&s));
            println!();
        }
        println!("launcher went away");
        return Ok(ExitCode::SUCCESS);
    }
    if args.list {
        for s in registry.all() {
            let what = match &s.alias_of {
                Some(t) => format!("alias of {t} (deprecated)"),
                None if s.implemented => "implemented".into(),
                None => "NOT IMPLEMENTED".into(),
            };
            println!(
                "{:<28} {:<13} {:<26} deps={}",
                s.name,
                s.category,
                what,
                s.deps().join(",")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    if args.validate {
        let mut problems: Vec<String> = registry
            .validate(&|b| find_binary(b).is_some())
            .iter()
            .map(|p| p.to_string())
            .collect();
        match plan(&args, &registry, &home, &settings) {
            Ok((plan, warnings, _)) => {
                for w in &warnings {
                    println!("warning: {w}");
                }
                println!(
                    "{} daemons planned: {}",
                    plan.len(),
                    plan.iter()
                        .map(|p| p.spec.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        for p in &problems {
            println!("problem: {p}");
        }
        println!(
            "{}",
            if problems.is_empty() {
                "valid".to_owned()
            } else {
                format!("{} problem(s)", problems.len())
            }
        );
        return Ok(if problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let (plan, warnings, profile_configs) = plan(&args, &registry, &home, &settings)?;
    let mut args = args;
    if args.configs.is_none() && !profile_configs.is_empty() {
        args.configs = Some(profile_configs.join(","));
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    check_heartbeats(&plan, &settings)?;
    let node = settings.node_name()?;
    // A cluster whose loop cannot work on its event backend is refused here, before any
    // daemon starts, not discovered as a loop that never promotes (the two daemons it
    // breaks refuse it too, under systemd).
    if plan
        .iter()
        .any(|p| ["evaluation", "unified_promotion"].contains(&p.spec.name.as_str()))
    {
        let cluster = ringrift_cluster::ClusterConfig::load(&home, &node)
            .map_err(handler_base::ConfigError::from)?;
        if let Some(e) = cluster.events_cannot_reach_leader() {
            bail!(usage(e.to_string()));
        }
    }
    supervise_all(args, cfg, home, node, token, tls, plan).await
}

/// A daemon whose heartbeat interval is not below the launcher's stale-heartbeat bound
/// (3 × its registry `health_check_interval_s`, 90 s by default) would be killed as hung
/// again and again: refused before anything starts, naming both numbers (exit 64).
fn check_heartbeats(plan: &[Planned], settings: &Settings) -> anyhow::Result<()> {
    for p in plan {
        let hci = p.spec.health_check_interval_s;
        if !(hci > 0.0) {
            continue;
        }
        let every = handler_base::lifecycle::heartbeat_interval(settings, &p.spec.name)
            .map_err(|e| usage(e.to_string()))?
            .as_secs_f64();
        let bound = 3.0 * hci;
        if every >= bound {
            bail!(usage(format!(
                "{}: heartbeat_interval_s = {every} is not below the launcher's stale-heartbeat bound of {bound} s (3 × health_check_interval_s = {hci} of its registry entry): the launcher would kill it as hung; lower heartbeat_interval_s",
                p.spec.name
            )));
        }
    }
    Ok(())
}

/// Which daemons run, in dependency order, with their binaries and arguments; warnings;
/// and the profile's config keys (empty: none named).
fn plan(
    args: &cli::Args,
    reg: &Registry,
    home: &Path,
    settings: &Settings,
) -> anyhow::Result<(Vec<Planned>, Vec<String>, Vec<String>)> {
    let mut names: Vec<String> = args.daemons.clone();
    let mut overrides = std::collections::BTreeMap::new();
    let mut profile_name = None;
    let mut profile_configs = Vec::new();
    if let Some(cat) = &args.category {
        let found: Vec<String> = reg
            .daemons()
            .filter(|s| &s.category == cat)
            .map(|s| s.name.clone())
            .collect();
        if found.is_empty() {
            bail!(usage(format!("no daemon in category {cat:?}")));
        }
        names.extend(found);
    }
    if args.all {
        names.extend(reg.daemons().map(|s| s.name.clone()));
    }
    if names.is_empty() || args.profile.is_some() {
        let name = args.profile.clone().unwrap_or_else(|| "standard".into());
        let dir = settings
            .string("launcher.profile_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("profiles"));
        let p = load_profile(&name, Some(&dir), reg).map_err(|e| usage(e.to_string()))?;
        names.extend(p.daemons);
        overrides = p.overrides;
        profile_configs = p.configs;
        profile_name = Some(name);
    }
    let (order, mut warnings) = reg.closure(&names).map_err(|e| usage(e.to_string()))?;
    // A daemon asked for by name that is not implemented is refused; members of a
    // profile, category or --all that are not are skipped (one warning line) unless
    // --strict, so every shipped profile starts as it is.
    let unimplemented: Vec<&str> = order
        .iter()
        .filter(|n| reg.get(n).is_some_and(|s| !s.implemented))
        .map(|s| s.as_str())
        .collect();
    let asked: Vec<&str> = args
        .daemons
        .iter()
        .filter_map(|d| reg.resolve(d).ok())
        .map(|(s, _)| s.name.as_str())
        .filter(|n| unimplemented.contains(n))
        .collect();
    if !asked.is_empty() {
        bail!(usage(format!(
            "{} daemon(s) asked for with --daemon are registered but not implemented yet: {}. See `ringrift-launcher --list`.",
            asked.len(),
            asked.join(", ")
        )));
    }
    let mut skipped: Vec<String> = Vec::new();
    if !unimplemented.is_empty() {
        if args.strict {
            bail!(usage(format!(
                "--strict: {} daemon(s) of this selection are registered but not implemented yet: {}. Run without --strict to start the rest, or see `ringrift-launcher --list`.",
                unimplemented.len(),
                unimplemented.join(", ")
            )));
        }
        skipped.extend(unimplemented.iter().map(|s| s.to_string()));
    }
    let mut out: Vec<Planned> = Vec::new();
    let mut blocked: Vec<String> = Vec::new();
    for n in &order {
        let spec = reg
            .get(n)
            .ok_or_else(|| usage(format!("unknown daemon {n}")))?
            .clone();
        let deps: Vec<String> = spec
            .deps()
            .iter()
            .filter_map(|d| reg.resolve(d).ok())
            .map(|(d, _)| d.name.clone())
            .collect();
        if skipped.contains(n) {
            continue;
        }
        if let Some(d) = deps.iter().find(|d| skipped.contains(d)) {
            blocked.push(format!("{n} (needs {d})"));
            skipped.push(n.clone());
            continue;
        }
        let binary = find_binary(&spec.binary()).ok_or_else(|| anyhow::anyhow!("binary {} for daemon {n} not found beside the launcher or on PATH (build with `cargo build --workspace --bins`)", spec.binary()))?;
        // Lifecycle settings (the cycle interval) are not passed: the daemon binary reads
        // its registry default itself, below the user's files, as under systemd.
        let mut args_v = spec.args.clone();
        let mut env = Vec::new();
        if let Some(o) = overrides.get(n) {
            args_v.extend(o.args.iter().cloned());
            env.extend(o.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.push(Planned {
            spec,
            binary,
            args: args_v,
            env,
            deps,
        });
    }
    if !unimplemented.is_empty() {
        let also = if blocked.is_empty() {
            String::new()
        } else {
            format!("; skipped with them: {}", blocked.join(", "))
        };
        warnings.push(format!(
            "not implemented yet, skipped: {}{also} (--strict refuses instead; `ringrift-launcher --list`)",
            unimplemented.join(", ")
        ));
    }
    if let Some(p) = profile_name {
        tracing::info!(profile = %p, daemons = out.len(), "plan ready");
    }
    supervise::pass_the_plan(&mut out);
    Ok((out, warnings, profile_configs))
}

async fn supervise_all(
    args: cli::Args,
    cfg: LauncherConfig,
    home: PathBuf,
    node: String,
    token: Option<handler_base::auth::Token>,
    tls: handler_base::tls::Tls,
    plan: Vec<Planned>,
) -> anyhow::Result<ExitCode> {
    if plan.is_empty() {
        bail!(usage("nothing to run"));
    }
    handler_base::auth::check_listen("launcher.control", &cfg.control, token.as_ref(), &tls)
        .map_err(|e| usage(e.to_string()))?;
    std::fs::create_dir_all(home.join("run")).map_err(|e| handler_base::ConfigError::Io {
        what: format!("create {}", home.join("run").display()),
        error: e.to_string(),
    })?;
    let listener = tokio::net::TcpListener::bind(&cfg.control)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "control API on {}: {e} (is another launcher running? use --control ADDR)",
                cfg.control
            )
        })?;
    let listener = tls.incoming(listener)?;
    let addr = listener.local();
    handler_base::write_addr_file(&home, "launcher", &addr.to_string())?;
    let profile = args.profile.clone().unwrap_or_else(|| {
        if args.daemons.is_empty() && args.category.is_none() && !args.all {
            "standard".into()
        } else {
            "custom".into()
        }
    });
    let (sh, mut rxs) = supervise::shared(
        profile.clone(),
        node,
        supervise::Credentials {
            token: token.clone(),
            bearer: tls.bearer(token.as_ref()),
        },
        home.clone(),
        cfg,
        args.configs.clone(),
        &plan,
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(control::serve(
        sh.clone(),
        listener,
        shutdown.clone(),
        token,
    ));
    tracing::info!(control = %addr, %profile, daemons = plan.len(), home = %home.display(), "launcher started");
    let mut tasks = tokio::task::JoinSet::new();
    for p in &plan {
        if let Some(rx) = rxs.remove(&p.spec.name) {
            tasks.spawn(supervise::supervise(sh.clone(), p.clone(), rx));
        }
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping daemons in reverse dependency order"),
        _ = int.recv() => tracing::info!("SIGINT: stopping daemons in reverse dependency order"),
    }
    supervise::shutdown(&sh, &plan).await;
    while tasks.join_next().await.is_some() {}
    shutdown.cancel();
    let _ = server.await;
    let _ = std::fs::remove_file(home.join("run/launcher.addr"));
    tracing::info!("launcher stopped");
    Ok(ExitCode::SUCCESS)
}
