//! The launcher's restart backoff: a daemon crashing at once is restarted after 1, 2, 4,
//! 8 and 16 s, then FAILED (31 s of required waiting; helpers in `launcher.rs`).

use crate::launcher::{records, start_launcher, test_daemon, wait_state};
use handler_base::status_body::DaemonState;
use ringrift_system_tests::Home;
use std::time::Duration;

#[test]
fn crashing_daemon_backs_off_1_2_4_8_16_s_then_fails() {
    let home = Home::new();
    let reg = test_daemon("crasher", &[], &["test_daemon.crash_after_s=0.1"]);
    let _l = start_launcher(&home, &reg, &["--daemon", "crasher"]);
    let d = wait_state(
        &home,
        "crasher",
        DaemonState::Failed,
        Duration::from_secs(60),
    );
    assert_eq!(d.restarts, 5);
    let r = records(&home);
    let starts: Vec<i64> = r.iter().filter(|x| x.0 == "start").map(|x| x.3).collect();
    let exits: Vec<i64> = r.iter().filter(|x| x.0 == "exit").map(|x| x.3).collect();
    assert_eq!((starts.len(), exits.len()), (6, 6), "{r:?}");
    for (i, want) in [1.0, 2.0, 4.0, 8.0, 16.0].iter().enumerate() {
        let gap = (starts[i + 1] - exits[i]) as f64 / 1000.0;
        assert!(
            gap >= want - 0.05 && gap <= want + 0.75,
            "restart {} came {gap:.3}s after the crash, want ≈{want}s",
            i + 1
        );
    }
}
