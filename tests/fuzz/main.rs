//! Fuzz target of every daemon's settings struct (see `ringrift-fuzz`): each daemon's
//! `[<name>]` section (its fields found from its own "unknown field" error, then given
//! generated and nasty values, with lifecycle keys now and then) is built in process
//! through `Context::for_test` and the daemon's `build`, as its binary does at start;
//! the router's and the launcher's sections through their `validate`. Any settings are a
//! daemon that starts (and answers `longest_call`, `subscriptions`, `health_check`) or a
//! configuration error (exit 64) naming the section or key, never a panic and never
//! another start failure (which would be a crash, restarted in a loop).

use handler_base::{Context, Handler};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::sync::Arc;

type Build = fn(&Context) -> anyhow::Result<Arc<dyn Handler>>;

macro_rules! daemons {
    ($($krate:ident),* $(,)?) => {
        &[$(($krate::INFO.name, $krate::build as Build)),*]
    };
}

const DAEMONS: &[(&str, Build)] = daemons![
    ringrift_auto_export,
    ringrift_auto_sync,
    ringrift_cache_coordination,
    ringrift_cluster_data_sync,
    ringrift_cluster_monitor,
    ringrift_continuous_training_loop,
    ringrift_cross_process_poller,
    ringrift_data_pipeline,
    ringrift_data_server,
    ringrift_distillation,
    ringrift_dlq_retry,
    ringrift_elo_sync,
    ringrift_ephemeral_sync,
    ringrift_evaluation,
    ringrift_external_drive_sync,
    ringrift_gossip_sync,
    ringrift_health_server,
    ringrift_high_quality_sync,
    ringrift_idle_resource,
    ringrift_job_scheduler,
    ringrift_maintenance,
    ringrift_model_distribution,
    ringrift_model_sync,
    ringrift_node_health_monitor,
    ringrift_npz_distribution,
    ringrift_orphan_detection,
    ringrift_p2p_backend,
    ringrift_quality_monitor,
    ringrift_queue_monitor,
    ringrift_queue_populator,
    ringrift_replication_monitor,
    ringrift_replication_repair,
    ringrift_selfplay_coordinator,
    ringrift_system_health_monitor,
    ringrift_tournament_daemon,
    ringrift_training_node_watcher,
    ringrift_training_trigger,
    ringrift_unified_promotion,
];

const PROBE: &str = "zz_fuzz_probe";

/// The fields of a section as serde lists them in its "unknown field" error
/// (`expected one of `a`, `b``, `expected `a``, `there are no fields`).
fn fields_from_error(msg: &str) -> Vec<String> {
    let Some(rest) = msg.split_once("expected").map(|(_, r)| r) else {
        return Vec::new();
    };
    rest.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .filter(|f| !f.is_empty() && f.as_str() != PROBE)
        .collect()
}

/// The fields of daemon `name`'s section, found by building it with an unknown key.
fn daemon_fields(home: &std::path::Path, name: &'static str, build: Build) -> Vec<String> {
    let toml = format!("[{name}]\n{PROBE} = 1\n");
    let err = match Context::for_test(name, home, &toml) {
        Err(e) => e.to_string(),
        Ok((ctx, _)) => match build(&ctx) {
            Err(e) => format!("{e:#}"),
            Ok(_) => String::new(),
        },
    };
    fields_from_error(&err)
}

const LIFECYCLE: &[&str] = &[
    "cycle_interval_s",
    "heartbeat_interval_s",
    "stop_grace_s",
    "ack_wait_s",
    "max_ack_pending",
    "stuck_after_s",
    "worker_threads",
];

/// Up to five `key = value` lines: the section's own fields mostly, a lifecycle key or
/// an unknown one now and then.
fn section_lines(fields: Vec<String>) -> BoxedStrategy<Vec<(String, String)>> {
    let n = fields.len();
    let key = if n == 0 {
        (0..LIFECYCLE.len())
            .prop_map(|i| LIFECYCLE[i].to_owned())
            .boxed()
    } else {
        prop_oneof![
            8 => (0..n).prop_map(move |i| fields[i].clone()),
            1 => (0..LIFECYCLE.len()).prop_map(|i| LIFECYCLE[i].to_owned()),
            1 => "[a-z_]{1,8}",
        ]
        .boxed()
    };
    proptest::collection::vec((key, ringrift_fuzz::toml_value()), 0..6).boxed()
}

fn toml(section: &str, lines: &[(String, String)]) -> String {
    let mut t = format!("[{section}]\n");
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in lines {
        // A key given twice is a TOML error: keep the test about values.
        if seen.insert(k.clone()) {
            t.push_str(&format!("{k} = {v}\n"));
        }
    }
    t
}

/// A start failure must be a configuration error naming what is wrong.
fn config_error(
    e: &anyhow::Error,
    section: &str,
    lines: &[(String, String)],
) -> Result<(), TestCaseError> {
    let msg = format!("{e:#}");
    prop_assert!(
        handler_base::is_config_error(e),
        "[{}] start failed with an error that is not a configuration error (exit 1, restarted): {}",
        section,
        msg
    );
    let named = msg.contains(section) || lines.iter().any(|(k, _)| msg.contains(k.as_str()));
    prop_assert!(
        named,
        "[{}] error names neither the section nor a key: {}",
        section,
        msg
    );
    Ok(())
}

#[test]
fn fuzz_daemon_settings() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let home = tempfile::tempdir().expect("tempdir");
    let strategies: Vec<BoxedStrategy<(usize, Vec<(String, String)>)>> = DAEMONS
        .iter()
        .enumerate()
        .map(|(i, (name, build))| {
            let fields = daemon_fields(home.path(), name, *build);
            section_lines(fields).prop_map(move |l| (i, l)).boxed()
        })
        .collect();
    let r = ringrift_fuzz::run(
        file!(),
        "daemon_settings",
        proptest::strategy::Union::new(strategies),
        |(i, lines)| {
            let (name, build) = DAEMONS[i];
            let text = toml(name, &lines);
            let ctx = match Context::for_test(name, home.path(), &text) {
                Ok((ctx, _)) => ctx,
                // The layering itself (fuzz_settings_layers' target): exit 64. A TOML
                // number out of range is named by file only (the config crate's message,
                // e.g. "number too large to fit in target type in ringrift.toml").
                Err(e) => {
                    prop_assert!(
                        handler_base::is_config_error(&e),
                        "[{}] settings: {:#}",
                        name,
                        e
                    );
                    return Ok(());
                }
            };
            let r = match build(&ctx) {
                Ok(h) => {
                    let _ = (h.longest_call(), h.subscriptions(), h.health_check());
                    let _ = ctx.lifecycle.stuck_after(h.longest_call());
                    Ok(())
                }
                Err(e) => config_error(&e, name, &lines),
            };
            // Whatever a build started ends with its context, as at a daemon's stop.
            ctx.shutdown.cancel();
            r
        },
    );
    assert_eq!(r, Ok(()));
}

#[test]
fn fuzz_router_and_launcher_settings() {
    let router = fields_from_error(
        &handler_base::Settings::from_toml(&format!("[event_router]\n{PROBE} = 1\n"))
            .and_then(|s| s.section::<ringrift_event_router::RouterConfig>("event_router"))
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string()),
    );
    let launcher = fields_from_error(
        &handler_base::Settings::from_toml(&format!("[launcher]\n{PROBE} = 1\n"))
            .and_then(|s| s.section::<ringrift_launcher::supervise::LauncherConfig>("launcher"))
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string()),
    );
    assert!(
        !router.is_empty() && !launcher.is_empty(),
        "fields found: {router:?} {launcher:?}"
    );
    let strategy = prop_oneof![
        section_lines(router).prop_map(|l| (true, l)),
        section_lines(launcher).prop_map(|l| (false, l)),
    ];
    let r = ringrift_fuzz::run(
        file!(),
        "router_launcher_settings",
        strategy,
        |(is_router, lines)| {
            let section = if is_router {
                "event_router"
            } else {
                "launcher"
            };
            let Ok(s) = handler_base::Settings::from_toml(&toml(section, &lines)) else {
                return Ok(());
            };
            if is_router {
                if let Ok(c) = s.section::<ringrift_event_router::RouterConfig>(section) {
                    let _ = c.validate();
                }
            } else if let Ok(c) = s.section::<ringrift_launcher::supervise::LauncherConfig>(section)
            {
                let _ = c.validate();
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}
