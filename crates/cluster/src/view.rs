//! The node view `p2p_backend` serves (gRPC `NodeInfo`, JSON `/status`) and
//! `cluster_monitor` aggregates: domain structs and the conversions to and from
//! `ringrift.v1` wire types. A received `wire::NodeInfo` is validated here (`TryFrom`),
//! naming the field it rejects. The cluster-level JSON bodies are typed here, in one
//! place, for writers and readers alike: p2p_backend's `/status` ([`NodeInfo`]),
//! cluster_monitor's `/status` ([`MonitorStatus`]) and `ringrift-launcher --status
//! --cluster --json` ([`ClusterStatus`]); unknown fields are refused, so a reader and a
//! writer that disagree fail naming the field. The daemon-level bodies are in
//! `handler_base::status_body`.

use crate::membership::MemberState;
use crate::resources::Resources;
use handler_base::HealthCheckResult;
use handler_base::status_body::DaemonState;
use ringrift_proto::wire;

/// A wire message that does not make a valid view.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("NodeInfo.{field}: {reason}")]
pub struct ViewError {
    pub field: String,
    pub reason: String,
}

fn verr(field: impl Into<String>, reason: impl Into<String>) -> ViewError {
    ViewError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One daemon as the node's launcher reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonView {
    pub name: String,
    pub pid: u32,
    /// READY, BACKOFF, FAILED, ... (the launcher's names).
    pub state: DaemonState,
    pub restarts: u32,
    pub uptime_s: f64,
    pub healthy: Option<bool>,
    pub health: String,
}

/// One running job of the node's job runner.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobView {
    pub job_id: String,
    pub job_key: String,
    pub pid: i32,
    pub deadline_unix_ms: i64,
}

/// Depth of the node's work queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueView {
    pub pending: u64,
    pub claimed: u64,
    pub completed: u64,
    pub failed: u64,
}

/// One node as another node's membership sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberView {
    pub node: String,
    pub address: String,
    pub roles: Vec<String>,
    pub state: MemberState,
    /// `None`: never heard from.
    pub last_seen_s_ago: Option<f64>,
    pub started_unix_ms: i64,
}

/// Everything one node says about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    pub node: String,
    pub roles: Vec<String>,
    pub version: String,
    pub started_unix_ms: i64,
    pub resources: Resources,
    pub daemons: Vec<DaemonView>,
    /// Why `daemons` is empty (no launcher), or empty.
    pub daemons_note: String,
    pub jobs: Vec<JobView>,
    pub jobs_note: String,
    pub queue: Option<QueueView>,
    pub leader: String,
    pub leader_mode: String,
    pub members: Vec<MemberView>,
}

/// One node in the cluster view.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub roles: Vec<String>,
    pub address: String,
    pub ephemeral: bool,
    pub state: MemberState,
    pub last_seen_s_ago: Option<f64>,
    /// What the node said about itself (absent while dead or unreachable).
    pub info: Option<NodeInfo>,
    /// Why `info` is absent.
    pub error: String,
}

/// Sums over the nodes that answered.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub nodes: usize,
    pub alive: usize,
    pub suspect: usize,
    pub dead: usize,
    pub unknown: usize,
    pub cpu_count: u64,
    pub gpus: usize,
    pub running_jobs: usize,
    pub disk_free_bytes: u64,
}

/// The whole cluster at one moment, as one node's cluster_monitor sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterView {
    pub cluster: String,
    pub config: String,
    pub observer: String,
    pub leader: String,
    pub leader_mode: String,
    pub event_backend: String,
    pub observed_unix_ms: i64,
    pub queue: Option<QueueView>,
    pub totals: Totals,
    pub nodes: Vec<NodeEntry>,
}

impl ClusterView {
    /// The node named `name`, if the view has it.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// cluster_monitor's `GET /status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorStatus {
    pub health: HealthCheckResult,
    /// Why the last refresh failed, or empty.
    pub error: String,
    /// `None` until a first view was built.
    pub view: Option<ClusterView>,
}

/// One node of cluster.toml as `--status --cluster` asked it (or why it said nothing).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRow {
    pub name: String,
    pub roles: Vec<String>,
    pub address: String,
    pub info: Option<NodeInfo>,
    pub error: String,
}

/// `ringrift-launcher --status --cluster --json`: every node of cluster.toml, in its order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStatus {
    pub cluster: String,
    /// cluster.toml's path.
    pub config: String,
    pub nodes: Vec<NodeRow>,
}

impl ClusterStatus {
    /// The row of the node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeRow> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

fn state_to_wire(s: MemberState) -> wire::MemberState {
    match s {
        MemberState::Unknown => wire::MemberState::MemberUnknown,
        MemberState::Alive => wire::MemberState::MemberAlive,
        MemberState::Suspect => wire::MemberState::MemberSuspect,
        MemberState::Dead => wire::MemberState::MemberDead,
    }
}

fn state_from_wire(v: i32, field: &str) -> Result<MemberState, ViewError> {
    match wire::MemberState::try_from(v) {
        Ok(wire::MemberState::MemberUnknown) => Ok(MemberState::Unknown),
        Ok(wire::MemberState::MemberAlive) => Ok(MemberState::Alive),
        Ok(wire::MemberState::MemberSuspect) => Ok(MemberState::Suspect),
        Ok(wire::MemberState::MemberDead) => Ok(MemberState::Dead),
        _ => Err(verr(field, format!("invalid member state {v}"))),
    }
}

impl DaemonView {
    /// From the launcher's status (a trusted local answer; unknown states shown as `?`).
    pub fn from_supervisor(d: &wire::DaemonStatus) -> DaemonView {
        DaemonView {
            name: d.name.clone(),
            pid: d.pid,
            state: DaemonState::from_wire(d.state),
            restarts: d.restarts,
            uptime_s: d.uptime_s,
            healthy: d.health.as_ref().map(|h| h.healthy),
            health: d
                .health
                .as_ref()
                .map(|h| h.message.clone())
                .unwrap_or_default(),
        }
    }

    fn to_wire(&self) -> wire::DaemonStatus {
        wire::DaemonStatus {
            name: self.name.clone(),
            pid: self.pid,
            state: self.state.to_wire(),
            restarts: self.restarts,
            uptime_s: self.uptime_s,
            last_exit: String::new(),
            health: self.healthy.map(|healthy| wire::HealthCheckResult {
                healthy,
                status: 0,
                message: self.health.clone(),
                details: Default::default(),
            }),
            note: String::new(),
        }
    }
}

impl From<&NodeInfo> for wire::NodeInfo {
    fn from(n: &NodeInfo) -> Self {
        let r = &n.resources;
        wire::NodeInfo {
            node: n.node.clone(),
            roles: n.roles.clone(),
            version: n.version.clone(),
            started_unix_ms: n.started_unix_ms,
            resources: Some(wire::Resources {
                cpu_count: r.cpu_count,
                load_1m: r.load_1m,
                load_5m: r.load_5m,
                load_15m: r.load_15m,
                memory_total_bytes: r.memory_total_bytes,
                memory_available_bytes: r.memory_available_bytes,
                disk_free_bytes: r.disk_free_bytes,
                disk_total_bytes: r.disk_total_bytes,
                gpus: r
                    .gpus
                    .iter()
                    .map(|(id, u)| wire::Gpu {
                        id: id.clone(),
                        utilization: *u,
                    })
                    .collect(),
                gpu_note: r.gpu_note.clone(),
            }),
            daemons: n.daemons.iter().map(DaemonView::to_wire).collect(),
            daemons_note: n.daemons_note.clone(),
            jobs: n
                .jobs
                .iter()
                .map(|j| wire::JobInfo {
                    job_id: j.job_id.clone(),
                    job_key: j.job_key.clone(),
                    pid: j.pid,
                    deadline_unix_ms: j.deadline_unix_ms,
                })
                .collect(),
            jobs_note: n.jobs_note.clone(),
            queue: n.queue.map(|q| wire::WorkQueueDepth {
                pending: q.pending,
                claimed: q.claimed,
                completed: q.completed,
                failed: q.failed,
            }),
            leader: n.leader.clone(),
            leader_mode: n.leader_mode.clone(),
            members: n
                .members
                .iter()
                .map(|m| wire::Member {
                    node: m.node.clone(),
                    address: m.address.clone(),
                    roles: m.roles.clone(),
                    state: state_to_wire(m.state) as i32,
                    last_seen_s_ago: m.last_seen_s_ago.unwrap_or(-1.0),
                    started_unix_ms: m.started_unix_ms,
                })
                .collect(),
        }
    }
}

impl TryFrom<wire::NodeInfo> for NodeInfo {
    type Error = ViewError;

    fn try_from(w: wire::NodeInfo) -> Result<Self, ViewError> {
        if w.node.is_empty() {
            return Err(verr("node", "empty"));
        }
        let r = w.resources.ok_or_else(|| verr("resources", "missing"))?;
        for (i, g) in r.gpus.iter().enumerate() {
            if !(0.0..=100.0).contains(&g.utilization) {
                return Err(verr(
                    format!("resources.gpus[{i}].utilization"),
                    format!("{} is not a percentage", g.utilization),
                ));
            }
        }
        let members = w
            .members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                if m.node.is_empty() {
                    return Err(verr(format!("members[{i}].node"), "empty"));
                }
                Ok(MemberView {
                    state: state_from_wire(m.state, &format!("members[{i}].state"))?,
                    node: m.node,
                    address: m.address,
                    roles: m.roles,
                    last_seen_s_ago: (m.last_seen_s_ago >= 0.0).then_some(m.last_seen_s_ago),
                    started_unix_ms: m.started_unix_ms,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeInfo {
            node: w.node,
            roles: w.roles,
            version: w.version,
            started_unix_ms: w.started_unix_ms,
            resources: Resources {
                cpu_count: r.cpu_count,
                load_1m: r.load_1m,
                load_5m: r.load_5m,
                load_15m: r.load_15m,
                memory_total_bytes: r.memory_total_bytes,
                memory_available_bytes: r.memory_available_bytes,
                disk_free_bytes: r.disk_free_bytes,
                disk_total_bytes: r.disk_total_bytes,
                gpus: r.gpus.into_iter().map(|g| (g.id, g.utilization)).collect(),
                gpu_note: r.gpu_note,
            },
            daemons: w.daemons.iter().map(DaemonView::from_supervisor).collect(),
            daemons_note: w.daemons_note,
            jobs: w
                .jobs
                .into_iter()
                .map(|j| JobView {
                    job_id: j.job_id,
                    job_key: j.job_key,
                    pid: j.pid,
                    deadline_unix_ms: j.deadline_unix_ms,
                })
                .collect(),
            jobs_note: w.jobs_note,
            queue: w.queue.map(|q| QueueView {
                pending: q.pending,
                claimed: q.claimed,
                completed: q.completed,
                failed: q.failed,
            }),
            leader: w.leader,
            leader_mode: w.leader_mode,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_info() -> NodeInfo {
        NodeInfo {
            node: "a".into(),
            roles: vec!["coordinator".into()],
            version: "0.0.0".into(),
            started_unix_ms: 5,
            resources: Resources {
                cpu_count: 2,
                gpus: vec![("gpu0".into(), 12.0)],
                ..Default::default()
            },
            daemons: vec![DaemonView {
                name: "event_router".into(),
                pid: 9,
                state: DaemonState::Ready,
                restarts: 1,
                uptime_s: 3.0,
                healthy: Some(true),
                health: "ok".into(),
            }],
            daemons_note: String::new(),
            jobs: vec![],
            jobs_note: "no data/jobs.db".into(),
            queue: Some(QueueView {
                pending: 3,
                ..Default::default()
            }),
            leader: "a".into(),
            leader_mode: "static".into(),
            members: vec![MemberView {
                node: "b".into(),
                address: "127.0.0.1:1".into(),
                roles: vec!["selfplay".into()],
                state: MemberState::Suspect,
                last_seen_s_ago: None,
                started_unix_ms: 0,
            }],
        }
    }

    #[test]
    fn node_info_round_trips_and_bad_wire_is_named() {
        let n = node_info();
        let w = wire::NodeInfo::from(&n);
        assert_eq!(NodeInfo::try_from(w.clone()).unwrap(), n);
        let mut bad = w.clone();
        bad.members[0].state = 42;
        assert_eq!(
            NodeInfo::try_from(bad).unwrap_err().to_string(),
            "NodeInfo.members[0].state: invalid member state 42"
        );
        let mut bad = w;
        bad.resources = None;
        assert!(
            NodeInfo::try_from(bad)
                .unwrap_err()
                .to_string()
                .contains("resources")
        );
    }

    /// Serialises `v` as a writer does and reads it back as a reader does.
    fn json_round_trip<T>(v: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let text = serde_json::to_string(v).unwrap();
        let back: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(&back, v);
    }

    fn monitor_status() -> MonitorStatus {
        let n = node_info();
        MonitorStatus {
            health: HealthCheckResult::running("1 of 2 nodes alive").detail("leader", "a"),
            error: String::new(),
            view: Some(ClusterView {
                cluster: "c".into(),
                config: "/h/cluster.toml".into(),
                observer: "a".into(),
                leader: "a".into(),
                leader_mode: "static".into(),
                event_backend: "sqlite".into(),
                observed_unix_ms: 11,
                queue: n.queue,
                totals: Totals {
                    nodes: 2,
                    alive: 1,
                    dead: 1,
                    ..Default::default()
                },
                nodes: vec![
                    NodeEntry {
                        name: "a".into(),
                        roles: vec!["coordinator".into()],
                        address: "127.0.0.1:1".into(),
                        ephemeral: false,
                        state: MemberState::Alive,
                        last_seen_s_ago: Some(0.5),
                        info: Some(n),
                        error: String::new(),
                    },
                    NodeEntry {
                        name: "b".into(),
                        roles: vec![],
                        address: "127.0.0.1:2".into(),
                        ephemeral: true,
                        state: MemberState::Dead,
                        last_seen_s_ago: None,
                        info: None,
                        error: "not asked: dead".into(),
                    },
                ],
            }),
        }
    }

    fn cluster_status() -> ClusterStatus {
        ClusterStatus {
            cluster: "c".into(),
            config: "/h/cluster.toml".into(),
            nodes: vec![
                NodeRow {
                    name: "a".into(),
                    roles: vec!["coordinator".into()],
                    address: "127.0.0.1:1".into(),
                    info: Some(node_info()),
                    error: String::new(),
                },
                NodeRow {
                    name: "b".into(),
                    roles: vec![],
                    address: "127.0.0.1:2".into(),
                    info: None,
                    error: "connection refused".into(),
                },
            ],
        }
    }

    #[test]
    fn every_cluster_level_body_round_trips() {
        json_round_trip(&node_info());
        json_round_trip(&monitor_status());
        json_round_trip(&cluster_status());
    }

    /// The shape readers were written against (before the bodies were typed); the
    /// daemon states are the launcher's names (`STARTING`, `STOPPED`), not the wire's.
    #[test]
    fn cluster_level_bodies_keep_their_json_shape() {
        let v = serde_json::to_value(monitor_status()).unwrap();
        assert_eq!(v["health"]["status"], "RUNNING");
        assert_eq!(v["view"]["leader"], "a");
        assert_eq!(v["view"]["observer"], "a");
        assert_eq!(v["view"]["totals"]["alive"], 1);
        let n = &v["view"]["nodes"][0];
        assert_eq!(n["state"], "alive");
        assert_eq!(n["roles"][0], "coordinator");
        assert_eq!(n["info"]["node"], "a");
        assert_eq!(n["info"]["resources"]["cpu_count"], 2);
        assert_eq!(n["info"]["resources"]["gpus"][0][0], "gpu0");
        assert_eq!(n["info"]["daemons"][0]["state"], "READY");
        assert_eq!(n["info"]["members"][0]["state"], "suspect");
        assert!(n["info"]["members"][0]["last_seen_s_ago"].is_null());
        let v = serde_json::to_value(cluster_status()).unwrap();
        assert_eq!(v["cluster"], "c");
        assert_eq!(v["nodes"][0]["info"]["leader"], "a");
        assert_eq!(v["nodes"][1]["error"], "connection refused");
        let mut d = node_info().daemons.remove(0);
        d.state = DaemonState::Starting;
        assert_eq!(serde_json::to_value(&d).unwrap()["state"], "STARTING");
    }

    /// A reader and a writer that disagree on a field fail with the field's name.
    #[test]
    fn a_cluster_body_the_reader_does_not_match_is_refused_by_name() {
        let mut v = serde_json::to_value(monitor_status()).unwrap();
        v["view"]["nodes"][0]["info"]["leader_node"] = "a".into();
        let e = serde_json::from_value::<MonitorStatus>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `leader_node`"), "{e}");
        let mut v = serde_json::to_value(cluster_status()).unwrap();
        v["nodes"][1].as_object_mut().unwrap().remove("error");
        let e = serde_json::from_value::<ClusterStatus>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `error`"), "{e}");
        let mut v = serde_json::to_value(node_info()).unwrap();
        v["members"][0]["state"] = "gone".into();
        let e = serde_json::from_value::<NodeInfo>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone"), "{e}");
    }
}
