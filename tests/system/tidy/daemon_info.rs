//! Every daemon crate's `DaemonInfo` (what its binary runs with: default cycle interval,
//! delivery scope) equals its registry entry (what the launcher and systemd read), so
//! the two cannot drift.

use handler_base::DaemonInfo;

macro_rules! infos {
    ($($krate:ident),* $(,)?) => {
        &[$($krate::INFO),*]
    };
}

/// One entry per folder of `crates/daemons` (checked below).
const DAEMONS: &[DaemonInfo] = infos![
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
    ringrift_event_router,
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

/// Where `info` and the registry `reg` disagree, one line each.
fn drift(reg: &ringrift_registry::Registry, info: &DaemonInfo) -> Vec<String> {
    let Some(spec) = reg.get(info.name) else {
        return vec![format!("{}: no registry entry", info.name)];
    };
    let mut out = Vec::new();
    if spec.cycle_interval_s != info.cycle_interval_s {
        out.push(format!(
            "{}: cycle_interval_s is {:?} in its DaemonInfo, {:?} in the registry",
            info.name, info.cycle_interval_s, spec.cycle_interval_s
        ));
    }
    if spec.scope != info.scope {
        out.push(format!(
            "{}: scope is {:?} in its DaemonInfo, {:?} in the registry",
            info.name, info.scope, spec.scope
        ));
    }
    out
}

#[test]
fn every_daemon_info_matches_the_registry() {
    let reg = ringrift_registry::Registry::builtin();
    let folders: std::collections::BTreeSet<String> =
        std::fs::read_dir(super::root().join("crates/daemons"))
            .expect("crates/daemons")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().replace('-', "_"))
            .collect();
    let listed: std::collections::BTreeSet<String> =
        DAEMONS.iter().map(|i| i.name.to_owned()).collect();
    assert_eq!(
        listed, folders,
        "tests/system/tidy/daemon_info.rs must list every daemon crate (and its dev-dependency \
         in tests/Cargo.toml)"
    );
    // The check itself: a planted difference is reported by name.
    let planted = DaemonInfo {
        cycle_interval_s: Some(1.5),
        ..ringrift_maintenance::INFO
    };
    assert_eq!(
        drift(&reg, &planted),
        [
            "maintenance: cycle_interval_s is Some(1.5) in its DaemonInfo, Some(3600.0) in the registry"
        ]
    );
    let bad: Vec<String> = DAEMONS.iter().flat_map(|i| drift(&reg, i)).collect();
    assert!(
        bad.is_empty(),
        "DaemonInfo and registry disagree (change both, or the launcher and the binary run \
         different defaults): {bad:#?}"
    );
}
