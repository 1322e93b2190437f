//! Lifecycle settings have one source: the registry's default at the bottom layer, which
//! `ringrift.toml` overrides alike under the launcher and under systemd (the daemon run
//! exactly as its generated unit's ExecStart runs it); a bad value exits 64 naming the key,
//! and I/O at start (a home that cannot be created, a cluster.toml that cannot be read)
//! exits 74 naming what failed.

use ringrift_system_tests::{Home, Proc, bin, bin_dir, wait_for};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The `interval_s` of the daemon's "<name> started" log line in `log`, once it is there.
fn started_interval(log: &std::path::Path, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains(&format!("{name} started")))?;
    let json = &line[line.find('{')?..];
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["interval_s"].as_f64()
}

/// Runs `ringrift-<daemon>` the way `systemd/ringrift-<daemon>.service` does (ExecStart
/// and Environment=), with the unit's bindir and state directory mapped to the built
/// binaries and `home`; stderr to `home/unit.log`.
fn run_as_unit(home: &Home, unit: &str) -> Proc {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("systemd").join(unit)).unwrap();
    let map = |s: &str| {
        s.replace("/usr/local/bin", bin_dir().to_str().unwrap())
            .replace("/var/lib/ringrift", home.path().to_str().unwrap())
    };
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let argv: Vec<String> = exec.split_whitespace().map(map).collect();
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), map(v)))
        .collect();
    assert!(
        env.iter().any(|(k, _)| k == "RINGRIFT_HOME"),
        "{unit} sets RINGRIFT_HOME"
    );
    let log = std::fs::File::create(home.path().join("unit.log")).unwrap();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc {
        name: unit.to_owned(),
        child,
    }
}

const UNIT: &str = "ringrift-training-trigger.service";

#[test]
fn ringrift_toml_sets_the_cycle_interval_under_the_launcher_and_under_systemd() {
    let toml = "heartbeat_interval_s = 60\n[event_router]\nlisten = \"127.0.0.1:0\"\n[training_trigger]\ncycle_interval_s = 7\n";

    // Under the launcher: it passes no interval, so the user's file wins.
    let home = Home::new();
    std::fs::write(home.path().join("ringrift.toml"), toml).unwrap();
    let mut l = home.spawn(
        "ringrift-launcher",
        &["--daemon", "training_trigger", "--control", "127.0.0.1:0"],
    );
    let log = home.path().join("logs/training_trigger.log");
    let got = wait_for(
        "training_trigger started under the launcher",
        Duration::from_secs(30),
        || started_interval(&log, "training_trigger"),
    );
    assert_eq!(
        got,
        7.0,
        "launcher: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    l.term(Duration::from_secs(30));

    // As the unit runs it: the same file, the same interval.
    let home = Home::new();
    std::fs::write(home.path().join("ringrift.toml"), toml).unwrap();
    let (_router, _) = home.start_router("127.0.0.1:0", &[]);
    let _d = run_as_unit(&home, UNIT);
    let log = home.path().join("unit.log");
    let got = wait_for(
        "training_trigger started as its unit",
        Duration::from_secs(30),
        || started_interval(&log, "training_trigger"),
    );
    assert_eq!(
        got,
        7.0,
        "unit: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Without the file's value the unit gets the registry's default, as the launcher does.
    let home = Home::new();
    let (_router, _) = home.start_router("127.0.0.1:0", &[]);
    let _d = run_as_unit(&home, UNIT);
    let log = home.path().join("unit.log");
    let got = wait_for(
        "training_trigger started with defaults",
        Duration::from_secs(30),
        || started_interval(&log, "training_trigger"),
    );
    let registry = ringrift_registry::Registry::builtin();
    assert_eq!(
        Some(got),
        registry.get("training_trigger").unwrap().cycle_interval_s
    );
}

#[test]
fn a_bad_lifecycle_value_exits_64_naming_key_and_value() {
    for (line, value) in [
        ("[training_trigger]\ncycle_interval_s = \"abc\"", "abc"),
        ("[training_trigger]\ncycle_interval_s = 0", "0"),
        ("[training_trigger]\ncycle_interval_s = -2", "-2"),
        ("worker_threads = 0", "0"),
        ("[training_trigger]\nstop_grace_s = \"soon\"", "soon"),
    ] {
        let home = Home::new();
        std::fs::write(home.path().join("ringrift.toml"), line).unwrap();
        let mut d = home.spawn("ringrift-training-trigger", &["--router", "127.0.0.1:1"]);
        let st = wait_for("exit on bad config", Duration::from_secs(20), || {
            d.try_exit()
        });
        let log = home.log("ringrift-training-trigger");
        assert_eq!(st.code(), Some(64), "{line}: {log}");
        let last = line
            .lines()
            .last()
            .and_then(|l| l.split(" = ").next())
            .unwrap();
        let key = match line.strip_prefix("[training_trigger]") {
            Some(_) => format!("training_trigger.{last}"),
            None => last.to_owned(),
        };
        assert!(log.contains(&key) && log.contains(value), "{line}: {log}");
    }
}

/// I/O is not configuration (issue 28, point 5): a home directory that cannot be created
/// and a cluster.toml that cannot be read exit 74 (EX_IOERR: a supervisor restarts it)
/// naming what failed; before, both exited 64 (never restarted).
#[test]
fn a_home_or_cluster_toml_that_cannot_be_read_exits_74() {
    use std::io::Read;
    let home = Home::new();
    let file = home.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let bad_home = file.join("home");
    let mut c = Command::new(bin("ringrift-training-trigger"))
        .arg("--home")
        .arg(&bad_home)
        .args(["--router", "127.0.0.1:1"])
        .env_remove("RINGRIFT_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_for(
        "exit on a home it cannot create",
        Duration::from_secs(20),
        || c.try_wait().unwrap(),
    );
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(st.code(), Some(74), "{err}");
    assert!(
        err.contains("cannot create the home directory")
            && err.contains(bad_home.to_str().unwrap()),
        "{err}"
    );

    // cluster.toml exists but cannot be read (a directory).
    let home = Home::new();
    std::fs::create_dir(home.path().join("cluster.toml")).unwrap();
    std::fs::write(
        home.path().join("ringrift.toml"),
        "[event_router]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut d = home.spawn("ringrift-event-router", &[]);
    let st = wait_for(
        "exit on an unreadable cluster.toml",
        Duration::from_secs(20),
        || d.try_exit(),
    );
    let log = home.log("ringrift-event-router");
    assert_eq!(st.code(), Some(74), "{log}");
    assert!(
        log.contains("read ") && log.contains("cluster.toml"),
        "{log}"
    );
}

/// `inf`, NaN or an overflowing number in any duration setting exits 64 naming the key
/// (issue 28, point 5): one check in `Settings::section` covers every daemon's settings
/// struct. Before, several passed their own checks (`> 0` holds for `inf`) and panicked
/// later in `Duration::from_secs_f64`, a crash the supervisor restarted forever.
#[test]
fn a_non_finite_duration_setting_exits_64_naming_the_key() {
    for (binary, toml, key) in [
        (
            "ringrift-replication-monitor",
            "[replication_monitor]\nsettle_s = 1e300",
            "replication_monitor.settle_s",
        ),
        (
            "ringrift-maintenance",
            "[maintenance]\nlog_max_age_days = inf",
            "maintenance.log_max_age_days",
        ),
        (
            "ringrift-event-router",
            "[event_router]\nlisten = \"127.0.0.1:0\"\nretention_interval_s = inf",
            "event_router.retention_interval_s",
        ),
        (
            "ringrift-tournament-daemon",
            "[tournament_daemon]\nleader_poll_s = nan",
            "tournament_daemon.leader_poll_s",
        ),
        (
            "ringrift-evaluation",
            "[evaluation]\ntimeout_s = inf",
            "evaluation.timeout_s",
        ),
    ] {
        let home = Home::new();
        std::fs::write(home.path().join("ringrift.toml"), toml).unwrap();
        let mut d = home.spawn(binary, &["--router", "127.0.0.1:1"]);
        let st = wait_for("exit on a bad duration", Duration::from_secs(20), || {
            d.try_exit()
        });
        let log = home.log(binary);
        assert_eq!(st.code(), Some(64), "{toml}: {log}");
        assert!(
            log.contains(key) && !log.contains("panicked"),
            "{toml}: {log}"
        );
    }
}
