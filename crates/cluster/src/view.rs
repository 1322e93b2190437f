//! The node view `p2p_backend` serves (gRPC `NodeInfo`, JSON `/status`) and
//! `cluster_monitor` aggregates: domain structs (serialised for humans) and the
//! conversions to and from `ringrift.v1` wire types. A received `wire::NodeInfo` is
//! validated here (`TryFrom`), naming the field it rejects.

use crate::membership::MemberState;
use crate::resources::Resources;
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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DaemonView {
    pub name: String,
    pub pid: u32,
    /// READY, BACKOFF, FAILED, ...
    pub state: String,
    pub restarts: u32,
    pub uptime_s: f64,
    pub healthy: Option<bool>,
    pub health: String,
}

/// One running job of the node's job runner.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobView {
    pub job_id: String,
    pub job_key: String,
    pub pid: i32,
    pub deadline_unix_ms: i64,
}

/// Depth of the node's work queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct QueueView {
    pub pending: u64,
    pub claimed: u64,
    pub completed: u64,
    pub failed: u64,
}

/// One node as another node's membership sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
        let state = wire::DaemonState::try_from(d.state)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_else(|_| "?".into());
        DaemonView {
            name: d.name.clone(),
            pid: d.pid,
            state,
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
            state: wire::DaemonState::from_str_name(&self.state)
                .map(|s| s as i32)
                .unwrap_or(0),
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

    #[test]
    fn node_info_round_trips_and_bad_wire_is_named() {
        let n = NodeInfo {
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
                state: "READY".into(),
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
        };
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
}
