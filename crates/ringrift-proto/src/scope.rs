//! Delivery scope: who receives a daemon's events when copies of it run on several nodes
//! of one event log. Each daemon declares it in its `DaemonInfo` (handler-base) and the
//! registry states it for the launcher and systemd; the tidy test keeps the two equal.

/// Who receives a daemon's events when copies of it run on several nodes of one event
/// log (JetStream): the name of the durable consumer each copy reads through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each node's copy has its own durable consumer `<daemon>@<node>` and sees every
    /// event: the daemon acts on this node's files or state (sync, monitors, local
    /// caches, the state a future leader needs).
    Node,
    /// One durable consumer `<daemon>` serves the cluster: each event reaches one copy.
    /// For a leader duty only the leader's copy pulls (see handler-base's `pull_gate`).
    Cluster,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::Cluster => "cluster",
        }
    }
}
