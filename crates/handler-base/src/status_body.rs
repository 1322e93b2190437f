//! The JSON bodies of the daemon-level status endpoints, typed in one place: the
//! launcher's `/status` and `--status --json` ([`LauncherStatus`]) and the health server's
//! `/status` ([`HealthServerStatus`]) and `/ready` ([`Readiness`]). Writers serialise these
//! structs and readers (`--status`, tests, the dashboard) deserialise them, so a field
//! renamed or dropped on one side fails the reader with the field's name instead of
//! reading `null`. Unknown fields are refused for the same reason. The cluster-level
//! bodies (node info, cluster view) are in `ringrift_cluster::view`.

use crate::HealthCheckResult;
use ringrift_proto::wire;
use std::collections::BTreeMap;

/// A supervised daemon's state as the launcher reports it (`"READY"`, ...; `"?"` for a
/// value this build does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DaemonState {
    #[serde(rename = "PENDING")]
    Pending,
    #[serde(rename = "STARTING")]
    Starting,
    #[serde(rename = "READY")]
    Ready,
    #[serde(rename = "BACKOFF")]
    Backoff,
    #[serde(rename = "FAILED")]
    Failed,
    #[serde(rename = "STOPPING")]
    Stopping,
    #[serde(rename = "STOPPED")]
    Stopped,
    /// Waiting for a dependency that is FAILED or BLOCKED (`note` names it).
    #[serde(rename = "BLOCKED")]
    Blocked,
    #[serde(rename = "?")]
    Unknown,
}

impl DaemonState {
    /// From the wire enum's number (`wire::DaemonState`); an unknown number is `Unknown`.
    pub fn from_wire(v: i32) -> DaemonState {
        match wire::DaemonState::try_from(v) {
            Ok(wire::DaemonState::Pending) => DaemonState::Pending,
            Ok(wire::DaemonState::StartingUp) => DaemonState::Starting,
            Ok(wire::DaemonState::Ready) => DaemonState::Ready,
            Ok(wire::DaemonState::Backoff) => DaemonState::Backoff,
            Ok(wire::DaemonState::Failed) => DaemonState::Failed,
            Ok(wire::DaemonState::Stopping) => DaemonState::Stopping,
            Ok(wire::DaemonState::StoppedState) => DaemonState::Stopped,
            Ok(wire::DaemonState::Blocked) => DaemonState::Blocked,
            _ => DaemonState::Unknown,
        }
    }

    /// The wire enum's number (`Unknown` is `DAEMON_STATE_UNSPECIFIED`).
    pub fn to_wire(self) -> i32 {
        (match self {
            DaemonState::Pending => wire::DaemonState::Pending,
            DaemonState::Starting => wire::DaemonState::StartingUp,
            DaemonState::Ready => wire::DaemonState::Ready,
            DaemonState::Backoff => wire::DaemonState::Backoff,
            DaemonState::Failed => wire::DaemonState::Failed,
            DaemonState::Stopping => wire::DaemonState::Stopping,
            DaemonState::Stopped => wire::DaemonState::StoppedState,
            DaemonState::Blocked => wire::DaemonState::Blocked,
            DaemonState::Unknown => wire::DaemonState::Unspecified,
        }) as i32
    }

    /// The name shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Pending => "PENDING",
            DaemonState::Starting => "STARTING",
            DaemonState::Ready => "READY",
            DaemonState::Backoff => "BACKOFF",
            DaemonState::Failed => "FAILED",
            DaemonState::Stopping => "STOPPING",
            DaemonState::Stopped => "STOPPED",
            DaemonState::Blocked => "BLOCKED",
            DaemonState::Unknown => "?",
        }
    }
}

impl std::fmt::Display for DaemonState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One daemon of the launcher's `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherDaemon {
    pub name: String,
    /// 0 while no process runs.
    pub pid: u32,
    pub state: DaemonState,
    pub restarts: u32,
    pub uptime_s: f64,
    /// `exit 1`, `signal 9`, ...; empty before the first exit.
    pub last_exit: String,
    /// Why the launcher holds it (a failed dependency), or empty.
    pub note: String,
    /// The daemon's last health (from its heartbeat); `None` before one, or when its
    /// status number is unknown to this build.
    pub health: Option<HealthCheckResult>,
}

/// The launcher's `GET /status` and `--status --json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherStatus {
    pub profile: String,
    pub launcher_pid: u32,
    pub daemons: Vec<LauncherDaemon>,
}

impl LauncherStatus {
    /// The daemon named `name`, if the launcher runs it.
    pub fn daemon(&self, name: &str) -> Option<&LauncherDaemon> {
        self.daemons.iter().find(|d| d.name == name)
    }
}

impl From<&wire::DaemonStatus> for LauncherDaemon {
    fn from(d: &wire::DaemonStatus) -> Self {
        LauncherDaemon {
            name: d.name.clone(),
            pid: d.pid,
            state: DaemonState::from_wire(d.state),
            restarts: d.restarts,
            uptime_s: d.uptime_s,
            last_exit: d.last_exit.clone(),
            note: d.note.clone(),
            health: d
                .health
                .clone()
                .and_then(|h| HealthCheckResult::try_from(h).ok()),
        }
    }
}

impl From<&wire::StatusResponse> for LauncherStatus {
    fn from(s: &wire::StatusResponse) -> Self {
        LauncherStatus {
            profile: s.profile.clone(),
            launcher_pid: s.launcher_pid,
            daemons: s.daemons.iter().map(LauncherDaemon::from).collect(),
        }
    }
}

/// What the health server knows of one daemon of its node.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatView {
    pub pid: u32,
    pub node: String,
    pub up: bool,
    pub restarts: u32,
    /// The event time of its newest heartbeat; 0 before one.
    pub last_heartbeat_unix_ms: i64,
    pub uptime_s: f64,
    pub health: Option<HealthCheckResult>,
    /// `started`, or the type and reason of the last lifecycle event that stopped it.
    pub last_event: String,
}

/// One expected daemon that keeps the node from being ready, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotReady {
    pub daemon: String,
    pub reason: String,
}

/// The router's counters as the health server last read them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterCounters {
    pub head_seq: u64,
    pub published: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
}

/// The health server's `GET /ready` (200 when `ready`, else 503).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    pub ready: bool,
    pub not_ready: Vec<NotReady>,
}

/// The health server's `GET /status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthServerStatus {
    /// `not_ready` is empty.
    pub ready: bool,
    pub not_ready: Vec<NotReady>,
    /// The daemons `/ready` waits for (`health_server.expect`).
    pub expect: Vec<String>,
    pub daemons: BTreeMap<String, HeartbeatView>,
    /// `None` while the router does not answer (`router_error` says why).
    pub router: Option<RouterCounters>,
    pub router_error: String,
}

impl HealthServerStatus {
    /// The `/ready` part of it.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.ready,
            not_ready: self.not_ready.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthStatus;
    use serde::de::DeserializeOwned;

    /// Serialises `v` as a writer does and reads it back as a reader does.
    fn round_trip<T: serde::Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
        let text = serde_json::to_string(v).unwrap();
        let back: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(&back, v);
    }

    fn launcher_status() -> LauncherStatus {
        LauncherStatus {
            profile: "standard".into(),
            launcher_pid: 7,
            daemons: vec![
                LauncherDaemon {
                    name: "event_router".into(),
                    pid: 10,
                    state: DaemonState::Ready,
                    restarts: 1,
                    uptime_s: 3.5,
                    last_exit: "exit 1".into(),
                    note: String::new(),
                    health: Some(HealthCheckResult::degraded("slow").detail("lag", 3)),
                },
                LauncherDaemon {
                    name: "top".into(),
                    pid: 0,
                    state: DaemonState::Blocked,
                    restarts: 0,
                    uptime_s: 0.0,
                    last_exit: String::new(),
                    note: "dependency base failed".into(),
                    health: None,
                },
            ],
        }
    }

    fn health_server_status() -> HealthServerStatus {
        let mut daemons = BTreeMap::new();
        daemons.insert(
            "auto_sync".to_owned(),
            HeartbeatView {
                pid: 3,
                node: "n1".into(),
                up: true,
                restarts: 0,
                last_heartbeat_unix_ms: 1_000,
                uptime_s: 1.0,
                health: Some(HealthCheckResult::running("ok")),
                last_event: "started".into(),
            },
        );
        HealthServerStatus {
            ready: false,
            not_ready: vec![NotReady {
                daemon: "elo_sync".into(),
                reason: "no heartbeat yet".into(),
            }],
            expect: vec!["auto_sync".into(), "elo_sync".into()],
            daemons,
            router: Some(RouterCounters {
                head_seq: 9,
                published: 9,
                delivered: 4,
                dead_lettered: 0,
            }),
            router_error: String::new(),
        }
    }

    #[test]
    fn every_daemon_level_body_round_trips() {
        round_trip(&launcher_status());
        let h = health_server_status();
        round_trip(&h);
        round_trip(&h.readiness());
    }

    #[test]
    fn every_daemon_state_round_trips_through_the_wire_enum_and_json() {
        let all = [
            DaemonState::Pending,
            DaemonState::Starting,
            DaemonState::Ready,
            DaemonState::Backoff,
            DaemonState::Failed,
            DaemonState::Stopping,
            DaemonState::Stopped,
            DaemonState::Blocked,
            DaemonState::Unknown,
        ];
        for s in all {
            assert_eq!(DaemonState::from_wire(s.to_wire()), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            round_trip(&s);
        }
        assert_eq!(DaemonState::from_wire(99), DaemonState::Unknown);
    }

    /// The shape readers were written against (the JSON the launcher served before it
    /// was typed): a writer that renames or drops a field fails here.
    #[test]
    fn launcher_status_keeps_its_json_shape() {
        let v = serde_json::to_value(launcher_status()).unwrap();
        let d = &v["daemons"][0];
        assert_eq!(v["profile"], "standard");
        assert_eq!(v["launcher_pid"], 7);
        assert_eq!(d["name"], "event_router");
        assert_eq!(d["state"], "READY");
        assert_eq!(d["pid"], 10);
        assert_eq!(d["restarts"], 1);
        assert_eq!(d["uptime_s"], 3.5);
        assert_eq!(d["last_exit"], "exit 1");
        assert_eq!(d["note"], "");
        assert_eq!(d["health"]["status"], "DEGRADED");
        assert_eq!(d["health"]["healthy"], true);
        assert_eq!(d["health"]["details"]["lag"], "3");
        assert!(v["daemons"][1]["health"].is_null());
    }

    #[test]
    fn health_server_status_keeps_its_json_shape() {
        let v = serde_json::to_value(health_server_status()).unwrap();
        assert_eq!(v["ready"], false);
        assert_eq!(v["not_ready"][0]["daemon"], "elo_sync");
        assert_eq!(v["not_ready"][0]["reason"], "no heartbeat yet");
        assert_eq!(v["expect"][1], "elo_sync");
        assert_eq!(v["daemons"]["auto_sync"]["up"], true);
        assert_eq!(v["daemons"]["auto_sync"]["health"]["status"], "RUNNING");
        assert_eq!(v["router"]["head_seq"], 9);
        assert_eq!(v["router_error"], "");
    }

    /// A reader and a writer that disagree on a field fail with the field's name.
    #[test]
    fn a_body_with_a_field_the_reader_does_not_know_or_misses_is_refused_by_name() {
        let mut v = serde_json::to_value(launcher_status()).unwrap();
        v["daemons"][0]["exit"] = v["daemons"][0]["last_exit"].take();
        v["daemons"][0].as_object_mut().unwrap().remove("last_exit");
        let e = serde_json::from_value::<LauncherStatus>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit"), "{e}");
        let mut v = serde_json::to_value(health_server_status()).unwrap();
        v.as_object_mut().unwrap().remove("router_error");
        let e = serde_json::from_value::<HealthServerStatus>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `router_error`"), "{e}");
        let e = serde_json::from_str::<Readiness>(r#"{"ready": true, "not_ready": [], "x": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `x`"), "{e}");
    }

    #[test]
    fn a_launcher_status_from_the_wire_keeps_health_and_names_states() {
        let w = wire::StatusResponse {
            profile: "minimal".into(),
            launcher_pid: 1,
            daemons: vec![wire::DaemonStatus {
                name: "a".into(),
                pid: 2,
                state: wire::DaemonState::StartingUp as i32,
                restarts: 0,
                uptime_s: 0.0,
                last_exit: String::new(),
                health: Some(HealthCheckResult::error("bad").into()),
                note: String::new(),
            }],
        };
        let s = LauncherStatus::from(&w);
        let d = s.daemon("a").unwrap();
        assert_eq!(d.state, DaemonState::Starting);
        assert_eq!(d.health.as_ref().unwrap().status, HealthStatus::Error);
        assert!(s.daemon("b").is_none());
    }
}
