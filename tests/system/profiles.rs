//! Every shipped profile starts as an operator starts it: `ringrift-launcher --profile P`
//! and no other flag, on a fresh home, every planned daemon READY without a restart.

use handler_base::status_body::{DaemonState, LauncherStatus};
use ringrift_system_tests::Home;
use std::time::Duration;

/// The home's own settings, not flags: every listener on port 0 (tests run side by side),
/// and job binaries that do not exist, so the loop profiles' selfplay and training jobs
/// fail to start instead of running on in their own process groups after the test (the
/// daemons that start them stay up: a failed job is a failed cycle, not a crash).
const SETTINGS: &str = "[launcher]\ncontrol = \"127.0.0.1:0\"\n\
    [event_router]\nlisten = \"127.0.0.1:0\"\n[health_server]\nlisten = \"127.0.0.1:0\"\n\
    [p2p_backend]\nlisten = \"127.0.0.1:0\"\n[cluster_monitor]\nlisten = \"127.0.0.1:0\"\n\
    [data_server]\nlisten = \"127.0.0.1:0\"\n[jobs]\nbin = \"/nonexistent/ringrift-test-jobs\"\n";

#[test]
fn every_shipped_profile_starts_with_no_flag() {
    // One profile at a time: `full` alone is ~40 processes on 2 cores.
    let _heavy = ringrift_system_tests::heavy();
    for profile in ringrift_registry::builtin_profile_names() {
        let home = Home::new();
        std::fs::write(home.path().join("ringrift.toml"), SETTINGS).unwrap();
        let mut l = home.spawn("ringrift-launcher", &["--profile", profile]);
        home.wait_addr("launcher", &mut l);
        let all_ready = |s: &LauncherStatus| {
            let ds = &s.daemons;
            (!ds.is_empty() && ds.iter().all(|d| d.state == DaemonState::Ready)).then(|| s.clone())
        };
        let s = ringrift_system_tests::poll_until(Duration::from_secs(120), || {
            if let Some(st) = l.try_exit() {
                panic!(
                    "{profile}: launcher exited with {st}: {}",
                    home.log("ringrift-launcher")
                );
            }
            ringrift_system_tests::launcher_status(&home).and_then(|s| all_ready(&s))
        })
        .unwrap_or_else(|| {
            panic!(
                "{profile}: not every daemon READY within 120 s: {:?}",
                ringrift_system_tests::launcher_status(&home)
            )
        });
        for d in &s.daemons {
            assert_eq!(d.restarts, 0, "{profile}: {d:?}");
        }
        let log = home.log("ringrift-launcher");
        let warnings = log
            .lines()
            .filter(|l| l.contains("not implemented yet"))
            .count();
        assert!(warnings <= 1, "{profile}: one warning line at most:\n{log}");
        let st = l.term(Duration::from_secs(60));
        assert!(st.success(), "{profile}: launcher stop: {st}");
        eprintln!("{profile}: {} daemons READY", s.daemons.len());
    }
}
