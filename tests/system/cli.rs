//! `ringrift-events` against a live router: emit, tail, bad input.

use ringrift_system_tests::{Home, bin};
use std::process::Command;

fn events(home: &Home, args: &[&str]) -> std::process::Output {
    Command::new(bin("ringrift-events"))
        .arg("--home")
        .arg(home.path())
        .args(args)
        .output()
        .expect("run ringrift-events")
}

#[test]
fn emit_then_tail_json_shows_the_typed_payload() {
    let home = Home::new();
    let (_router, _addr) = home.start_router("127.0.0.1:0", &[]);
    let out = events(
        &home,
        &[
            "emit",
            "NEW_GAMES_AVAILABLE",
            "--payload",
            r#"{"new_games": 12}"#,
            "--config-key",
            "hex8_2p",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("seq=1 "));
    let out = events(&home, &["tail", "--from", "1", "--count", "1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(v["type"], "NEW_GAMES_AVAILABLE");
    assert_eq!(v["payload"]["new_games"], 12);
    assert_eq!(v["config_key"], "hex8_2p");
}

#[test]
fn bad_type_and_bad_payload_are_named() {
    let home = Home::new();
    let (_router, _addr) = home.start_router("127.0.0.1:0", &[]);
    let out = events(&home, &["emit", "NOT_A_TYPE"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_A_TYPE"));
    let out = events(
        &home,
        &["emit", "MODEL_PROMOTED", "--payload", r#"{"elo": "high"}"#],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MODEL_PROMOTED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = events(&home, &["dlq", "list"]);
    assert!(out.status.success());
}

#[test]
fn no_router_is_a_clear_error() {
    let home = Home::new();
    let out = events(&home, &["--router", "127.0.0.1:1", "stats"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connect to router at 127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn daemon_with_bad_config_exits_64() {
    let home = Home::new();
    std::fs::write(
        home.path().join("ringrift.toml"),
        "[dlq_retry]\nbase_delay_s = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(bin("ringrift-dlq-retry"))
        .arg("--home")
        .arg(home.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dlq_retry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin("ringrift-event-router"))
        .arg("--home")
        .arg(home.path())
        .args(["--set", "event_router.listen=nowhere"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin("ringrift-dlq-retry"))
        .arg("--bogus-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// Bad arguments are bad usage for every binary an operator or a unit runs: exit 64
/// (never restarted) with clap's message naming the argument; `--help` is exit 0.
#[test]
fn every_binary_answers_a_bad_argument_with_exit_64_naming_it() {
    let home = Home::new();
    let mut bins: Vec<String> = ringrift_registry::Registry::builtin()
        .daemons()
        .filter(|s| s.implemented)
        .map(|s| s.binary())
        .collect();
    bins.extend(
        [
            "ringrift-launcher",
            "ringrift-events",
            "ringrift-fetch",
            "ringrift-job",
        ]
        .map(String::from),
    );
    bins.sort();
    bins.dedup();
    for b in &bins {
        let out = Command::new(bin(b))
            .env("RINGRIFT_HOME", home.path())
            .arg("--no-such-flag")
            .output()
            .unwrap_or_else(|e| panic!("run {b}: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{b} --no-such-flag: {err}");
        assert!(err.contains("--no-such-flag"), "{b}: {err}");
        let out = Command::new(bin(b))
            .arg("--help")
            .output()
            .expect("run --help");
        assert_eq!(out.status.code(), Some(0), "{b} --help");
    }
}
