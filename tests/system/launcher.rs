//! The launcher's acceptance tests: exit 64, counter reset, no orphans on SIGKILL,
//! ordered SIGTERM, status/stop/restart from a second process, validation, /ready of
//! the minimal profile, hung and stuck daemons restarted, and a router that refuses the
//! launcher's token left alone. (Restart backoff and FAILED after max restarts are in
//! `a_long/launcher_backoff.rs`, which sorts first.)

use handler_base::HealthStatus;
use handler_base::status_body::{
    DaemonState, HealthServerStatus, LauncherDaemon, LauncherStatus, Readiness,
};
use ringrift_system_tests::{Home, Proc, bin, wait_for};
use std::process::Command;
use std::time::Duration;

/// A registry entry for a standalone test daemon.
pub(crate) fn test_daemon(name: &str, deps: &[&str], extra: &[&str]) -> String {
    let mut args = vec![
        "--router".to_owned(),
        "127.0.0.1:1".to_owned(),
        "--set".to_owned(),
        format!("test_daemon.instance={name}"),
        "--set".to_owned(),
        "test_daemon.cycle_interval_s=0.05".to_owned(),
    ];
    for e in extra {
        args.push("--set".into());
        args.push((*e).to_owned());
    }
    let q = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let deps: Vec<String> = deps.iter().map(|d| (*d).to_owned()).collect();
    format!(
        "[[daemon]]\nname = \"{name}\"\ncategory = \"test\"\nbinary = \"ringrift-test-daemon\"\nstandalone = true\nimplemented = true\ndepends_on = [{}]\nargs = [{}]\n\n",
        q(&deps),
        q(&args)
    )
}

pub(crate) fn start_launcher(home: &Home, registry: &str, args: &[&str]) -> Proc {
    let reg = home.path().join("registry.toml");
    std::fs::write(&reg, registry).unwrap();
    let mut all = vec![
        "--registry",
        reg.to_str().unwrap(),
        "--control",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let mut p = home.spawn("ringrift-launcher", &all);
    home.wait_addr("launcher", &mut p);
    p
}

fn launcher_cmd(home: &Home, args: &[&str]) -> std::process::Output {
    Command::new(bin("ringrift-launcher"))
        .arg("--home")
        .arg(home.path())
        .args(args)
        .output()
        .expect("run ringrift-launcher")
}

/// `--status --json` from a second process, read as the typed body.
fn status(home: &Home) -> LauncherStatus {
    let out = launcher_cmd(home, &["--status", "--json"]);
    assert!(
        out.status.success(),
        "--status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--status --json is not a LauncherStatus: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn daemon<'a>(s: &'a LauncherStatus, name: &str) -> &'a LauncherDaemon {
    s.daemon(name)
        .unwrap_or_else(|| panic!("{name} not in {s:?}"))
}

pub(crate) fn wait_state(
    home: &Home,
    name: &str,
    state: DaemonState,
    limit: Duration,
) -> LauncherDaemon {
    wait_for(&format!("{name} {state}"), limit, || {
        let s = status(home);
        (daemon(&s, name).state == state).then(|| daemon(&s, name).clone())
    })
}

/// (event, instance, pid, unix_ms) lines of the test daemons.
pub(crate) fn records(home: &Home) -> Vec<(String, String, u32, i64)> {
    std::fs::read_to_string(home.path().join("test_daemon.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn exit_64_is_never_restarted() {
    let home = Home::new();
    let reg = test_daemon(
        "misconfigured",
        &[],
        &["test_daemon.crash_after_s=0.05", "test_daemon.exit_code=64"],
    );
    let _l = start_launcher(&home, &reg, &["--daemon", "misconfigured"]);
    let d = wait_state(
        &home,
        "misconfigured",
        DaemonState::Failed,
        Duration::from_secs(20),
    );
    assert_eq!((d.restarts, d.last_exit.as_str()), (0, "exit 64"));
    assert_eq!(records(&home).iter().filter(|x| x.0 == "start").count(), 1);
}

#[test]
fn restart_counter_resets_after_a_healthy_period() {
    let home = Home::new();
    let reg = test_daemon("flappy", &[], &["test_daemon.crash_after_s=0.5"]);
    let _l = start_launcher(
        &home,
        &reg,
        &[
            "--daemon",
            "flappy",
            "--set",
            "launcher.reset_after_s=0.2",
            "--set",
            "launcher.backoff_base_s=0.3",
        ],
    );
    wait_for("4 starts", Duration::from_secs(30), || {
        (records(&home).iter().filter(|x| x.0 == "start").count() >= 4).then_some(())
    });
    let r = records(&home);
    let starts: Vec<i64> = r.iter().filter(|x| x.0 == "start").map(|x| x.3).collect();
    let exits: Vec<i64> = r.iter().filter(|x| x.0 == "exit").map(|x| x.3).collect();
    for i in 0..3 {
        let gap = (starts[i + 1] - exits[i]) as f64 / 1000.0;
        assert!(
            (0.25..0.55).contains(&gap),
            "gap {i} is {gap:.3}s: the counter was not reset (doubling would give ≥0.6s)"
        );
    }
}

fn chain_registry() -> String {
    [
        test_daemon("a", &[], &[]),
        test_daemon("b", &["a"], &[]),
        test_daemon("c", &["b"], &[]),
    ]
    .concat()
}

#[test]
fn sigkill_of_the_launcher_leaves_no_child_alive() {
    let home = Home::new();
    let mut l = start_launcher(&home, &chain_registry(), &["--daemon", "c"]);
    let pids: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| wait_state(&home, n, DaemonState::Ready, Duration::from_secs(20)).pid)
        .collect();
    assert!(pids.iter().all(|p| alive(*p)));
    l.kill9();
    let t = std::time::Instant::now();
    wait_for("children gone", Duration::from_secs(2), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    eprintln!(
        "all children gone {:?} after SIGKILL of the launcher",
        t.elapsed()
    );
}

#[test]
fn sigterm_stops_dependents_first_each_with_sigterm() {
    let home = Home::new();
    let mut l = start_launcher(&home, &chain_registry(), &["--daemon", "c"]);
    for n in ["a", "b", "c"] {
        wait_state(&home, n, DaemonState::Ready, Duration::from_secs(20));
    }
    let r = records(&home);
    let start = |n: &str| r.iter().find(|x| x.0 == "start" && x.1 == n).unwrap().3;
    assert!(
        start("a") <= start("b") && start("b") <= start("c"),
        "dependencies start first: {r:?}"
    );
    let st = l.term(Duration::from_secs(30));
    assert!(st.success(), "launcher exit {st}");
    let r = records(&home);
    let stops: Vec<&str> = r
        .iter()
        .filter(|x| x.0 == "stop")
        .map(|x| x.1.as_str())
        .collect();
    assert_eq!(
        stops,
        vec!["c", "b", "a"],
        "each stopped gracefully (on_stop ran after SIGTERM), dependents first"
    );
}

#[test]
fn status_stop_and_restart_from_a_second_process() {
    let home = Home::new();
    let _l = start_launcher(&home, &chain_registry(), &["--daemon", "c"]);
    let b = wait_state(&home, "b", DaemonState::Ready, Duration::from_secs(20));
    let pid = b.pid;
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.contains("ringrift-test-daemon") && cmdline.contains("test_daemon.instance=b"),
        "{cmdline}"
    );
    let table = String::from_utf8(launcher_cmd(&home, &["--status"]).stdout).unwrap();
    assert!(
        table.contains(&pid.to_string()) && table.contains("READY"),
        "{table}"
    );

    assert!(launcher_cmd(&home, &["stop", "b"]).status.success());
    wait_state(&home, "b", DaemonState::Stopped, Duration::from_secs(20));
    wait_for("old b gone", Duration::from_secs(5), || {
        (!alive(pid)).then_some(())
    });
    assert_eq!(
        daemon(&status(&home), "c").state,
        DaemonState::Ready,
        "stopping a dependency does not cascade"
    );
    assert!(launcher_cmd(&home, &["restart", "b"]).status.success());
    let b2 = wait_state(&home, "b", DaemonState::Ready, Duration::from_secs(20));
    assert_ne!(b2.pid, pid);
    let out = launcher_cmd(&home, &["stop", "nope"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn status_without_a_launcher_says_so() {
    let home = Home::new();
    let out = launcher_cmd(&home, &["--status", "--control", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no launcher is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_catches_a_cycle_and_a_missing_binary() {
    let home = Home::new();
    let reg = home.path().join("bad.toml");
    let mut text = test_daemon("x", &["y"], &[]) + &test_daemon("y", &["x"], &[]);
    text.push_str("[[daemon]]\nname = \"ghost\"\ncategory = \"test\"\nstandalone = true\nimplemented = true\nbinary = \"ringrift-no-such-binary\"\n");
    std::fs::write(&reg, text).unwrap();
    let out = launcher_cmd(
        &home,
        &[
            "--registry",
            reg.to_str().unwrap(),
            "--validate",
            "--daemon",
            "ghost",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("dependency cycle"), "{stdout}");
    assert!(
        stdout.contains("ringrift-no-such-binary not found"),
        "{stdout}"
    );
    let ok = launcher_cmd(&home, &["--validate", "--profile", "standard"]);
    assert!(
        ok.status.success(),
        "built-in registry validates: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

/// A daemon asked for by name that is not implemented yet is refused (exit 64, named);
/// a profile with such members starts without them by default and is refused under
/// `--strict` (checked with --validate, which plans exactly as a start does).
#[test]
fn unimplemented_daemons_are_refused_clearly() {
    let home = Home::new();
    // Any daemon still registered as not implemented (the list shrinks over time).
    let reg = ringrift_registry::Registry::builtin();
    let name = reg
        .daemons()
        .find(|s| !s.implemented && !s.is_alias())
        .map(|s| s.name.clone())
        .expect("an unimplemented daemon left to test with");
    let out = launcher_cmd(&home, &["--daemon", &name, "--control", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&name) && err.contains("not implemented yet"),
        "{err}"
    );
    // The coordinator profile names daemons not implemented yet (the seed's list).
    let coordinator = ringrift_registry::load_profile("coordinator", None, &reg).unwrap();
    let missing: Vec<&String> = coordinator
        .daemons
        .iter()
        .filter(|d| reg.get(d).is_some_and(|s| !s.implemented))
        .collect();
    assert!(
        !missing.is_empty(),
        "pick a profile with unimplemented members"
    );
    let strict = launcher_cmd(
        &home,
        &["--validate", "--profile", "coordinator", "--strict"],
    );
    let text = String::from_utf8_lossy(&strict.stdout);
    assert_eq!(strict.status.code(), Some(1), "{text}");
    assert!(
        text.contains("--strict") && text.contains(missing[0].as_str()),
        "{text}"
    );
    let lenient = launcher_cmd(&home, &["--validate", "--profile", "coordinator"]);
    let text = String::from_utf8_lossy(&lenient.stdout);
    assert!(lenient.status.success(), "{text}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "one warning line: {text}");
    assert!(warnings[0].contains(missing[0].as_str()), "{text}");
    let out = launcher_cmd(&home, &["--profile", "no_such_profile"]);
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_profile_is_ready_only_when_all_healthy_and_flips_when_one_dies() {
    let home = Home::new();
    // Heartbeats every second: at 0.2 s ten daemons send 50 a second, more than the
    // health server's one-at-a-time consumer handled beside the rest of the suite (it
    // fell 64 s behind in a clean-clone CI run and /ready said every heartbeat was stale).
    std::fs::write(
        home.path().join("ringrift.toml"),
        "heartbeat_interval_s = 1.0\n[event_router]\nlisten = \"127.0.0.1:0\"\n[health_server]\nlisten = \"127.0.0.1:0\"\ncycle_interval_s = 0.2\nstale_after_s = 3\n[p2p_backend]\nlisten = \"127.0.0.1:0\"\n[cluster_monitor]\nlisten = \"127.0.0.1:0\"\ncycle_interval_s = 0.2\n",
    )
    .unwrap();
    let mut l = home.spawn(
        "ringrift-launcher",
        &["--profile", "minimal", "--control", "127.0.0.1:0"],
    );
    home.wait_addr("launcher", &mut l);
    let addr = home.wait_addr("health_server", &mut l);
    // Poll /ready: whenever it says 200, the launcher must show both daemons READY. (Nine
    // daemons start on a 2-core machine that may be running the rest of the suite: up to
    // 90 s; a timeout names what /ready last said and the launcher's table.)
    let last = std::sync::Mutex::new(None);
    let ready = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let r = ringrift_system_tests::http_get_with(&addr, "/ready", None).await;
            if matches!(r, Some((200, _))) {
                return;
            }
            *last.lock().unwrap() = r;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        ready.is_ok(),
        "no /ready 200 within 90 s; it last said {:?}; the launcher: {:?}",
        last.lock().unwrap(),
        status(&home)
    );
    let s = status(&home);
    for n in ["event_router", "health_server"] {
        assert_eq!(daemon(&s, n).state, DaemonState::Ready, "{s:?}");
    }
    let router_pid = daemon(&s, "event_router").pid as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(router_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    ringrift_system_tests::wait_for_async(
        "/ready 503 naming event_router",
        Duration::from_secs(10),
        || async {
            let (code, body) = ringrift_system_tests::http_get_with(&addr, "/ready", None).await?;
            let r: Readiness = serde_json::from_str(&body).ok()?;
            (code == 503 && r.not_ready.iter().any(|n| n.daemon == "event_router")).then_some(r)
        },
    )
    .await;
    ringrift_system_tests::wait_for_async("/ready 200 again", Duration::from_secs(60), || async {
        let (code, _) = ringrift_system_tests::http_get_with(&addr, "/ready", None).await?;
        (code == 200).then_some(())
    })
    .await;
    assert_eq!(daemon(&status(&home), "event_router").restarts, 1);
    let (code, metrics) = ringrift_system_tests::http_get_with(&addr, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ringrift_daemon_up{daemon=\"health_server\"} 1"),
        "{metrics}"
    );
    ringrift_system_tests::promtool_check(&metrics);
    let (code, st) = ringrift_system_tests::http_get_with(&addr, "/status", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    let st: HealthServerStatus =
        serde_json::from_str(&st).unwrap_or_else(|e| panic!("/status: {e}: {st}"));
    assert!(st.daemons["health_server"].up, "{st:?}");
}

/// A registry with the real router and one test daemon that talks to it (heartbeats reach
/// the launcher through the router).
fn routed_registry(name: &str, health_check_interval_s: f64) -> String {
    format!(
        "[[daemon]]\nname = \"event_router\"\ncategory = \"event\"\nimplemented = true\n\n[[daemon]]\nname = \"{name}\"\ncategory = \"test\"\nbinary = \"ringrift-test-daemon\"\nimplemented = true\nhealth_check_interval_s = {health_check_interval_s}\nargs = [\"--set\", \"test_daemon.instance={name}\", \"--set\", \"test_daemon.cycle_interval_s=0.05\"]\n\n"
    )
}

/// A home whose daemons heartbeat every 0.1 s and whose router listens on port 0.
fn fast_heartbeat_home() -> Home {
    let home = Home::new();
    std::fs::write(
        home.path().join("ringrift.toml"),
        "heartbeat_interval_s = 0.1\n[event_router]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    home
}

#[test]
fn a_daemon_that_stops_heartbeating_is_killed_and_restarted() {
    let home = fast_heartbeat_home();
    let _l = start_launcher(
        &home,
        &routed_registry("hung", 0.5),
        &[
            "--daemon",
            "hung",
            "--set",
            "launcher.stop_grace_s=0.5",
            "--set",
            "launcher.backoff_base_s=0.1",
        ],
    );
    // Heartbeats flow: the launcher shows the daemon's health.
    let d = wait_for(
        "hung READY with a heartbeat",
        Duration::from_secs(30),
        || {
            let s = status(&home);
            let d = daemon(&s, "hung").clone();
            (d.state == DaemonState::Ready && d.health.is_some()).then_some(d)
        },
    );
    let pid = d.pid;
    // Alive but frozen: no heartbeat, no exit.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let d = wait_for("hung restarted", Duration::from_secs(20), || {
        let s = status(&home);
        let d = daemon(&s, "hung").clone();
        (d.state == DaemonState::Ready && d.pid != pid).then_some(d)
    });
    assert_eq!(d.restarts, 1, "counts as a crash restart: {d:?}");
    assert!(d.last_exit.contains("no heartbeat"), "{d:?}");
    wait_for("frozen process killed", Duration::from_secs(5), || {
        (!alive(pid)).then_some(())
    });
    let s = status(&home);
    assert_eq!(
        daemon(&s, "event_router").restarts,
        0,
        "only the hung one: {s:?}"
    );
}

#[test]
fn a_dependent_of_a_failed_daemon_is_reported_blocked() {
    let home = Home::new();
    // `base` fails before it is ever ready: /bin/false, no restarts allowed.
    let reg = "[[daemon]]\nname = \"base\"\ncategory = \"test\"\nbinary = \"/bin/false\"\nstandalone = true\nimplemented = true\nmax_restarts = 0\n\n".to_owned()
        + &test_daemon("top", &["base"], &[])
        + &test_daemon("roof", &["top"], &[]);
    let _l = start_launcher(&home, &reg, &["--daemon", "roof"]);
    wait_state(&home, "base", DaemonState::Failed, Duration::from_secs(20));
    let top = wait_state(&home, "top", DaemonState::Blocked, Duration::from_secs(10));
    assert_eq!(top.note, "dependency base failed", "{top:?}");
    let roof = wait_state(&home, "roof", DaemonState::Blocked, Duration::from_secs(10));
    assert_eq!(roof.note, "dependency top is blocked", "{roof:?}");
    let table = String::from_utf8(launcher_cmd(&home, &["--status"]).stdout).unwrap();
    assert!(
        table.contains("BLOCKED") && table.contains("dependency base failed"),
        "{table}"
    );
    wait_for("log line", Duration::from_secs(5), || {
        home.log("ringrift-launcher")
            .contains("BLOCKED: dependency base failed")
            .then_some(())
    });
}

/// ESTABLISHED TCP connections of process `pid` to local `port`.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9
                && f[3] == "01"
                && inodes.contains(f[9])
                && f[2]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

#[test]
fn router_restarts_do_not_leak_connections_of_the_launcher() {
    let home = fast_heartbeat_home();
    let l = start_launcher(
        &home,
        &routed_registry("client", 30.0),
        &[
            "--daemon",
            "event_router",
            "--set",
            "launcher.backoff_base_s=0.1",
        ],
    );
    let launcher_pid = l.pid() as u32;
    let mut pid = 0u32;
    for round in 0..4 {
        let d = wait_for(
            "router READY with a heartbeat",
            Duration::from_secs(30),
            || {
                let s = status(&home);
                let d = daemon(&s, "event_router").clone();
                (d.state == DaemonState::Ready && d.health.is_some() && d.pid != pid).then_some(d)
            },
        );
        pid = d.pid;
        if round < 3 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
    }
    let port: u16 = router_addr_of(&home)
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Watch for longer than a subscription's longest reconnect backoff (5 s): a leaked
    // subscription would have reconnected by then.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let mut most = 0;
    while std::time::Instant::now() < until {
        most = most.max(connections_to(launcher_pid, port));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        (1..=1).contains(&connections_to(launcher_pid, port)) && most <= 1,
        "launcher holds {} connections to the router (at most {most}) after 3 router restarts",
        connections_to(launcher_pid, port)
    );
}

fn router_addr_of(home: &Home) -> String {
    std::fs::read_to_string(home.path().join("run/event_router.addr"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Under the launcher, a daemon whose heartbeat says a loop is stuck in one handler call
/// (past its `stuck_after_s`) is restarted, as systemd does through WatchdogSec (issue 28,
/// point 3). Its heartbeat keeps flowing, so heartbeat age alone never caught it.
#[test]
fn a_daemon_stuck_in_a_handler_call_is_restarted() {
    let home = fast_heartbeat_home();
    let reg = "[[daemon]]\nname = \"event_router\"\ncategory = \"event\"\nimplemented = true\n\n\
        [[daemon]]\nname = \"stuck\"\ncategory = \"test\"\nbinary = \"ringrift-test-daemon\"\n\
        implemented = true\nhealth_check_interval_s = 30\nargs = [\"--set\", \
        \"test_daemon.instance=stuck\", \"--set\", \"test_daemon.cycle_interval_s=0.05\", \
        \"--set\", \"test_daemon.stuck_after_s=1\"]\n\n";
    let _l = start_launcher(
        &home,
        reg,
        &[
            "--daemon",
            "stuck",
            "--set",
            "launcher.stop_grace_s=0.5",
            "--set",
            "launcher.backoff_base_s=0.1",
        ],
    );
    let d = wait_for(
        "stuck READY with a heartbeat",
        Duration::from_secs(30),
        || {
            let s = status(&home);
            let d = daemon(&s, "stuck").clone();
            (d.state == DaemonState::Ready && d.health.is_some()).then_some(d)
        },
    );
    let pid = d.pid;
    std::fs::write(home.path().join("run/stuck.hang"), "").unwrap();
    let d = wait_for("stuck restarted", Duration::from_secs(60), || {
        let s = status(&home);
        let d = daemon(&s, "stuck").clone();
        (d.state == DaemonState::Ready && d.pid != pid).then_some(d)
    });
    assert_eq!(d.restarts, 1, "counts as a crash restart: {d:?}");
    let last = d.last_exit.as_str();
    assert!(
        last.contains("stuck") && last.contains("cycle loop"),
        "{d:?}"
    );
    assert!(
        records(&home)
            .iter()
            .any(|(what, _, p, _)| what == "hang" && *p == pid),
        "the first process hung"
    );
}

/// A router that refuses the launcher's token (issue 28, point 1): the heartbeat feed
/// retries instead of ending, and the router, whose heartbeats the launcher cannot see,
/// is not killed as hung (before: every 3 × health_check_interval, until FAILED).
#[test]
fn a_router_that_refuses_the_launcher_is_not_killed_as_hung() {
    let home = fast_heartbeat_home();
    let reg = "[[daemon]]\nname = \"event_router\"\ncategory = \"event\"\nimplemented = true\n\
        health_check_interval_s = 0.5\nargs = [\"--set\", \"auth.token=only-the-router-has-it\"]\n\n";
    let _l = start_launcher(
        &home,
        reg,
        &[
            "--daemon",
            "event_router",
            "--set",
            "launcher.stop_grace_s=0.5",
            "--set",
            "launcher.backoff_base_s=0.1",
        ],
    );
    let d = wait_state(
        &home,
        "event_router",
        DaemonState::Ready,
        Duration::from_secs(30),
    );
    let pid = d.pid;
    // The hung limit is 1.5 s; watch for several times that (as the connection test
    // watches past the reconnect backoff): the router must stay the same process.
    let until = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < until {
        let s = status(&home);
        let d = daemon(&s, "event_router");
        assert!(
            d.pid == pid && d.restarts == 0,
            "the router was killed: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = home.log("ringrift-launcher");
    let lines = log
        .lines()
        .filter(|l| l.contains("refuses the launcher's heartbeat feed"))
        .count();
    assert_eq!(lines, 1, "logged once while it retries:\n{log}");
}

/// A daemon whose subscription the router refuses (issue 28, point 4; here an invalid
/// consumer: its node-scoped name is longer than the router's 200 characters, while its
/// publishes, heartbeats included, are accepted) is not left running deaf: it retries,
/// reports DEGRADED naming the router's reason, and exits 1 after
/// `subscribe_refused_exit_s`, so the launcher restarts it (and would show it FAILED past
/// `max_restarts`). Before: RUNNING and healthy, subscribing again every second forever.
#[test]
fn a_daemon_whose_subscription_is_refused_degrades_then_exits() {
    let home = Home::new();
    std::fs::write(
        home.path().join("ringrift.toml"),
        "heartbeat_interval_s = 0.1\n[event_router]\nlisten = \"127.0.0.1:0\"\n\
         [test_daemon]\nsubscribe = [\"EXTERNAL\"]\nscope = \"node\"\n\
         subscribe_refused_exit_s = 3\n",
    )
    .unwrap();
    let node = "n".repeat(250);
    // Registered as `test_daemon`, the name its heartbeats carry (their node is not this
    // machine's, so the launcher matches them by name and pid).
    let reg = format!(
        "[[daemon]]\nname = \"event_router\"\ncategory = \"event\"\nimplemented = true\n\n\
        [[daemon]]\nname = \"test_daemon\"\ncategory = \"test\"\nbinary = \"ringrift-test-daemon\"\n\
        implemented = true\nhealth_check_interval_s = 30\nargs = [\"--set\", \
        \"test_daemon.instance=refused\", \"--set\", \"test_daemon.cycle_interval_s=0.05\", \
        \"--set\", \"node={node}\"]\n\n"
    );
    let _l = start_launcher(
        &home,
        &reg,
        &[
            "--daemon",
            "test_daemon",
            "--set",
            "launcher.stop_grace_s=0.5",
            "--set",
            "launcher.backoff_base_s=0.1",
        ],
    );
    let d = wait_for(
        "test_daemon DEGRADED with the router's reason",
        Duration::from_secs(30),
        || {
            let s = status(&home);
            let d = daemon(&s, "test_daemon").clone();
            (d.state == DaemonState::Ready
                && d.health
                    .as_ref()
                    .is_some_and(|h| h.status == HealthStatus::Degraded))
            .then_some(d)
        },
    );
    let pid = d.pid;
    let health = d.health.as_ref().expect("DEGRADED health");
    let why = health
        .details
        .get("subscribe_refused")
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        why.contains("InvalidArgument") && why.contains("consumer name"),
        "{d:?}"
    );
    assert!(
        health.message.contains("refuses the event subscription"),
        "{d:?}"
    );
    let d = wait_for(
        "test_daemon exited and restarted",
        Duration::from_secs(30),
        || {
            let s = status(&home);
            let d = daemon(&s, "test_daemon").clone();
            (d.restarts >= 1 && d.pid != pid).then_some(d)
        },
    );
    assert_eq!(
        d.last_exit, "exit 1",
        "exits 1 (a crash, restarted), not 64: {d:?}"
    );
    let log = std::fs::read_to_string(home.path().join("logs/test_daemon.log")).unwrap();
    assert!(
        log.contains("subscribe_refused_exit_s = 3"),
        "the exit says why:\n{log}"
    );
}

/// `heartbeat_interval_s` at or past the launcher's stale-heartbeat bound (3 ×
/// `health_check_interval_s`, 90 s by default) is refused before anything starts, exit 64
/// naming both numbers (issue 28, point 5); before, the launcher ran the daemons and
/// killed each as hung at every bound.
#[test]
fn a_heartbeat_interval_past_the_stale_bound_is_refused() {
    let home = Home::new();
    std::fs::write(
        home.path().join("ringrift.toml"),
        "heartbeat_interval_s = 95\n[event_router]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let reg = home.path().join("registry.toml");
    std::fs::write(&reg, routed_registry("slow", 30.0)).unwrap();
    let mut l = home.spawn(
        "ringrift-launcher",
        &[
            "--registry",
            reg.to_str().unwrap(),
            "--control",
            "127.0.0.1:0",
            "--daemon",
            "slow",
        ],
    );
    let st = wait_for("the launcher exits", Duration::from_secs(20), || {
        l.try_exit()
    });
    let log = home.log("ringrift-launcher");
    assert_eq!(st.code(), Some(64), "{log}");
    assert!(
        log.contains("heartbeat_interval_s = 95") && log.contains("bound of 90 s"),
        "{log}"
    );
}

/// A closed stdout does not stop the launcher's log pump (issue 28, point 5): the
/// console write fails (EPIPE) off the runtime, and the daemon's lines keep reaching its
/// log file. Before, `println!` in the pump panicked on the first line, the pump task
/// ended and the child's output was no longer read.
#[test]
fn a_closed_stdout_does_not_stop_the_log_pump() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Stdio;
    let home = Home::new();
    let script = home.path().join("talker.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ni=0\nwhile :; do echo \"tick $i\"; i=$((i+1)); sleep 0.01; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reg = home.path().join("registry.toml");
    std::fs::write(
        &reg,
        format!(
            "[[daemon]]\nname = \"talker\"\ncategory = \"test\"\nbinary = \"{}\"\nstandalone = true\nimplemented = true\n",
            script.display()
        ),
    )
    .unwrap();
    let stderr =
        std::fs::File::create(home.path().join("test-logs/ringrift-launcher.log")).unwrap();
    let child = Command::new(bin("ringrift-launcher"))
        .arg("--home")
        .arg(home.path())
        .arg("--registry")
        .arg(&reg)
        .args(["--control", "127.0.0.1:0", "--daemon", "talker"])
        .env_remove("RINGRIFT_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    /// Kills the launcher (and so its children) however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut l = Kill(child);
    // The read end closed: every write to the launcher's stdout fails.
    drop(l.0.stdout.take());
    let log = home.path().join("logs/talker.log");
    let lines = || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_for("talker's lines logged", Duration::from_secs(30), || {
        (lines() >= 50).then_some(())
    });
    let first = lines();
    wait_for("the pump goes on", Duration::from_secs(30), || {
        (lines() >= first + 100).then_some(())
    });
    assert!(l.0.try_wait().unwrap().is_none(), "the launcher runs on");
    let err = home.log("ringrift-launcher");
    assert!(!err.contains("panicked"), "{err}");
}
