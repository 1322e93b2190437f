//! `cluster.toml`: the one list of nodes, their roles and addresses, the membership
//! timeouts, the leader mode and the event backend, parsed and validated here only.
//!
//! Found at `$RINGRIFT_HOME/cluster.toml`, else `/etc/ringrift/cluster.toml` (the first
//! that exists wins whole; files are not merged). No file is a one-node cluster of this
//! machine: the node itself as coordinator on 127.0.0.1, static leader, SQLite events.
//!
//! ```toml
//! [cluster]
//! name = "ringrift"
//!
//! [membership]              # the one timeout table (seconds)
//! heartbeat_interval_s = 15
//! suspect_after_s = 90
//! dead_after_s = 180
//! rpc_timeout_s = 5          # default: 5, or heartbeat_interval_s when shorter
//!
//! [leader]
//! mode = "static"           # the coordinator; or "etcd" with endpoints = ["http://..:2379"]
//! # ttl_s = 10              # etcd only: the lease TTL (a dead leader is replaced within it)
//! # user = "ringrift"; password = "..."   # etcd only: etcd auth (both or neither)
//! # ca = "/etc/ringrift/etcd-ca.pem"      # etcd only: needed by https:// endpoints
//!
//! [events]
//! backend = "sqlite"        # or "jetstream" with servers = ["nats://..:4222", ...]
//! # replicas = 3            # jetstream only: stream replicas (default 3, 1 with one server)
//! # queue_done_retention_s = 3600  # jetstream only: how long the work queue keeps finished items
//! # user = "ringrift"; password = "..."   # jetstream only: NATS user (both or neither)
//! # tls_ca = "/etc/ringrift/nats-ca.pem"  # jetstream only: TLS to NATS (tls:// servers)
//!
//! [auth]
//! require_token = true      # the token itself stays in ringrift.toml [auth] / RINGRIFT_TOKEN
//!
//! [[node]]
//! name = "coord-1"
//! roles = ["coordinator", "training"]
//! address = "10.0.0.1"
//! ports = { p2p = 8770 }    # defaults: p2p 8770, router 8780, health 8765, data 8766
//!
//! [[node]]
//! name = "spot-7"
//! roles = ["selfplay"]
//! address = "10.0.0.7"
//! ephemeral = true
//! exclude_from_sync = true
//! ```
//!
//! Every error names the file, the key and the value ([`ClusterError`]). The etcd leader
//! mode runs in [`crate::leader`]; the JetStream backend runs in the event router and
//! the work queue (`ringrift-nats`).

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The etcd lease TTL when `[leader] ttl_s` is not set.
pub const DEFAULT_LEASE_TTL_S: u32 = 10;
/// Default of `[events] queue_done_retention_s`: finished work items are kept an hour.
pub const DEFAULT_QUEUE_DONE_RETENTION_S: u64 = 3600;

/// The system-wide location, used when the home has no `cluster.toml`.
pub const SYSTEM_FILE: &str = "/etc/ringrift/cluster.toml";

/// A password from the config: never shown by `Debug`, `Display` or serialisation
/// (`/status`, events, logs); [`Secret::expose`] hands it to the client that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the client that sends it; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// How the NATS servers are spoken to (`[events]` with backend `jetstream`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NatsAuth {
    /// `user` and `password`: a NATS user of the servers' authorization block.
    pub user: Option<(String, Secret)>,
    /// `tls_ca`: TLS is required and the servers are verified against this CA (PEM).
    pub tls_ca: Option<PathBuf>,
}

/// How etcd is spoken to (`[leader]` with mode `etcd`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EtcdAuth {
    /// `user` and `password`: an etcd user (etcd's auth enabled).
    pub user: Option<(String, Secret)>,
    /// `ca`: the CA (PEM) https:// endpoints are verified against; required by them.
    pub ca: Option<PathBuf>,
}

/// Why a cluster config was refused. Daemons wrap it in handler-base's `ConfigError`
/// (exit 64).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    #[error("{file}: cannot read: {error}")]
    Read { file: PathBuf, error: String },
    /// Not TOML, a wrong type or an unknown key (the message names line and key).
    #[error("{file}: {error}")]
    Parse { file: PathBuf, error: String },
    #[error("{file}: {key} = {value}: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
}

/// As a start failure of a daemon: a cluster.toml that cannot be read is I/O
/// ([`handler_base::ConfigError::Io`], exit 74, restarted), one that is wrong is
/// configuration (exit 64). Every caller converts through here.
impl From<ClusterError> for handler_base::ConfigError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Read { file, error } => handler_base::ConfigError::Io {
                what: format!("read {}", file.display()),
                error,
            },
            other => handler_base::ConfigError::Invalid(other.to_string()),
        }
    }
}

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Coordinator,
    Training,
    Selfplay,
    Ephemeral,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Coordinator,
        Role::Training,
        Role::Selfplay,
        Role::Ephemeral,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Training => "training",
            Role::Selfplay => "selfplay",
            Role::Ephemeral => "ephemeral",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's ports (defaults: the single-node defaults of every daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ports {
    pub p2p: u16,
    pub router: u16,
    pub health: u16,
    pub data: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            p2p: 8770,
            router: 8780,
            health: 8765,
            data: 8766,
        }
    }
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Node {
    pub name: String,
    pub roles: BTreeSet<Role>,
    /// Host or IP the other nodes reach it at.
    pub address: String,
    pub ports: Ports,
    /// A spot/ephemeral machine that may vanish.
    pub ephemeral: bool,
    /// Never a sync target.
    pub exclude_from_sync: bool,
}

impl Node {
    /// `address:port` (IPv6 literals bracketed).
    pub fn addr(&self, port: u16) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, port)
        } else {
            format!("{}:{}", self.address, port)
        }
    }

    /// Where a listener of this node on `port` binds by default: its own address when
    /// that is loopback, else every interface (which then needs the token).
    pub fn listen(&self, port: u16) -> String {
        let loopback = self
            .address
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        if self.address == "localhost" {
            format!("127.0.0.1:{port}")
        } else if loopback {
            self.addr(port)
        } else {
            format!("0.0.0.0:{port}")
        }
    }

    /// `address:p2p`, the peer API.
    pub fn p2p_addr(&self) -> String {
        self.addr(self.ports.p2p)
    }

    /// Where this node's p2p_backend listens by default (see [`Node::listen`]).
    pub fn p2p_listen(&self) -> String {
        self.listen(self.ports.p2p)
    }

    /// `http://address:data`, this node's data_server as its peers reach it.
    pub fn data_url(&self) -> String {
        format!("http://{}", self.addr(self.ports.data))
    }

    /// Where this node's data_server listens by default (see [`Node::listen`]).
    pub fn data_listen(&self) -> String {
        self.listen(self.ports.data)
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_owned()).collect()
    }
}

/// Membership timeouts: the one table (`[membership]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// How often a node heartbeats each peer.
    pub heartbeat_interval: Duration,
    /// Silent this long: suspect (NODE_UNHEALTHY).
    pub suspect_after: Duration,
    /// Silent this long: dead (HOST_LEFT).
    pub dead_after: Duration,
    /// Limit of one peer call.
    pub rpc_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            heartbeat_interval: Duration::from_secs(15),
            suspect_after: Duration::from_secs(90),
            dead_after: Duration::from_secs(180),
            rpc_timeout: Duration::from_secs(5),
        }
    }
}

/// How the leader is chosen.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum LeaderMode {
    /// The one node with the coordinator role.
    Static,
    /// The coordinator that holds the etcd lease on [`crate::leader::LEADER_KEY`]
    /// ([`crate::leader`]); `ttl_s` is the lease TTL in whole seconds (default 10).
    Etcd {
        endpoints: Vec<String>,
        ttl_s: u32,
        auth: EtcdAuth,
    },
}

impl LeaderMode {
    pub fn name(&self) -> &'static str {
        match self {
            LeaderMode::Static => "static",
            LeaderMode::Etcd { .. } => "etcd",
        }
    }
}

/// Where cross-node events live.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum EventBackend {
    /// Each node's router keeps its own SQLite log (the single-node default).
    Sqlite,
    /// A NATS JetStream cluster: the router's log is a stream replicated `replicas` times.
    Jetstream {
        servers: Vec<String>,
        replicas: usize,
        /// How long the shared work queue keeps completed and failed items (the server
        /// removes them after that; default 1 h).
        queue_done_retention: std::time::Duration,
        /// Credentials and TLS of the connection.
        auth: NatsAuth,
    },
}

/// The validated cluster.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterConfig {
    /// The file it came from; `None` for the implicit one-node cluster.
    pub file: Option<PathBuf>,
    pub name: String,
    #[serde(skip)]
    pub timeouts: Timeouts,
    pub leader: LeaderMode,
    pub events: EventBackend,
    /// Every node must run with a token (`[auth] token` in ringrift.toml or
    /// `RINGRIFT_TOKEN`); the secret itself never lives in cluster.toml.
    pub require_token: bool,
    pub nodes: Vec<Node>,
    /// The name of this machine's node.
    pub this: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    membership: RawMembership,
    #[serde(default)]
    leader: RawLeader,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMembership {
    heartbeat_interval_s: Option<f64>,
    suspect_after_s: Option<f64>,
    dead_after_s: Option<f64>,
    rpc_timeout_s: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLeader {
    mode: Option<String>,
    endpoints: Option<Vec<String>>,
    ttl_s: Option<i64>,
    user: Option<String>,
    password: Option<String>,
    ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    backend: Option<String>,
    servers: Option<Vec<String>>,
    replicas: Option<usize>,
    queue_done_retention_s: Option<u64>,
    user: Option<String>,
    password: Option<String>,
    tls_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    require_token: bool,
    /// Refused with a message saying where the secret goes.
    token: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    roles: Vec<String>,
    address: String,
    #[serde(default)]
    ports: Ports,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default)]
    exclude_from_sync: bool,
}

impl ClusterConfig {
    /// The cluster of `home` (its `cluster.toml`, else [`SYSTEM_FILE`], else one node),
    /// seen from the node named `this` (the `node` setting, else the hostname).
    pub fn load(home: &Path, this: &str) -> Result<ClusterConfig, ClusterError> {
        Self::load_from(
            &[home.join("cluster.toml"), PathBuf::from(SYSTEM_FILE)],
            this,
        )
    }

    /// The first of `candidates` that exists, else the one-node cluster.
    pub fn load_from(candidates: &[PathBuf], this: &str) -> Result<ClusterConfig, ClusterError> {
        match candidates.iter().find(|p| p.exists()) {
            None => Ok(Self::single_node(this)),
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| ClusterError::Read {
                    file: file.clone(),
                    error: e.to_string(),
                })?;
                Self::parse(&text, file, this)
            }
        }
    }

    /// The implicit cluster: this machine alone, coordinator, on loopback.
    pub fn single_node(this: &str) -> ClusterConfig {
        ClusterConfig {
            file: None,
            name: "ringrift".into(),
            timeouts: Timeouts::default(),
            leader: LeaderMode::Static,
            events: EventBackend::Sqlite,
            require_token: false,
            nodes: vec![Node {
                name: this.to_owned(),
                roles: BTreeSet::from([Role::Coordinator]),
                address: "127.0.0.1".into(),
                ports: Ports::default(),
                ephemeral: false,
                exclude_from_sync: false,
            }],
            this: this.to_owned(),
        }
    }

    /// Parses and validates `text` (read from `file`, named in errors).
    pub fn parse(text: &str, file: &Path, this: &str) -> Result<ClusterConfig, ClusterError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ClusterError::Parse {
            file: file.to_owned(),
            error: e.to_string().trim_end().to_owned(),
        })?;
        let bad = |key: &str, value: &dyn std::fmt::Debug, reason: &str| ClusterError::Invalid {
            file: file.to_owned(),
            key: key.to_owned(),
            value: format!("{value:?}"),
            reason: reason.to_owned(),
        };

        if raw.auth.token.is_some() {
            return Err(bad(
                "auth.token",
                &"***",
                "the secret does not belong in cluster.toml: set [auth] token in ringrift.toml or RINGRIFT_TOKEN (cluster.toml may say require_token = true)",
            ));
        }

        let t = Timeouts::default();
        let secs = |key: &str, v: Option<f64>, default: Duration| match v {
            None => Ok(default),
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
            Some(s) => Err(bad(key, &s, "must be a positive number of seconds")),
        };
        let m = &raw.membership;
        let heartbeat_interval = secs(
            "membership.heartbeat_interval_s",
            m.heartbeat_interval_s,
            t.heartbeat_interval,
        )?;
        let timeouts = Timeouts {
            heartbeat_interval,
            suspect_after: secs(
                "membership.suspect_after_s",
                m.suspect_after_s,
                t.suspect_after,
            )?,
            dead_after: secs("membership.dead_after_s", m.dead_after_s, t.dead_after)?,
            // Unset: 5 s, or the heartbeat interval when that is shorter.
            rpc_timeout: secs(
                "membership.rpc_timeout_s",
                m.rpc_timeout_s,
                t.rpc_timeout.min(heartbeat_interval),
            )?,
        };
        if timeouts.suspect_after <= timeouts.heartbeat_interval {
            return Err(bad(
                "membership.suspect_after_s",
                &timeouts.suspect_after.as_secs_f64(),
                &format!(
                    "must be longer than heartbeat_interval_s ({}), or every node is suspect between two heartbeats",
                    timeouts.heartbeat_interval.as_secs_f64()
                ),
            ));
        }
        if timeouts.dead_after <= timeouts.suspect_after {
            return Err(bad(
                "membership.dead_after_s",
                &timeouts.dead_after.as_secs_f64(),
                &format!(
                    "must be longer than suspect_after_s ({})",
                    timeouts.suspect_after.as_secs_f64()
                ),
            ));
        }
        if timeouts.rpc_timeout >= timeouts.suspect_after {
            return Err(bad(
                "membership.rpc_timeout_s",
                &timeouts.rpc_timeout.as_secs_f64(),
                "must be shorter than suspect_after_s",
            ));
        }

        let name = raw.cluster.name.unwrap_or_else(|| "ringrift".into());
        if !valid_name(&name) {
            return Err(bad("cluster.name", &name, NAME_RULE));
        }

        if raw.node.is_empty() {
            return Err(bad(
                "node",
                &"[]",
                "list at least one [[node]] (or remove the file for a one-node cluster)",
            ));
        }
        let mut nodes = Vec::new();
        let mut seen_names: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen_addrs: BTreeMap<String, usize> = BTreeMap::new();
        for (i, n) in raw.node.into_iter().enumerate() {
            let key = |k: &str| format!("node[{i}].{k}");
            if !valid_name(&n.name) {
                return Err(bad(&key("name"), &n.name, NAME_RULE));
            }
            if let Some(j) = seen_names.insert(n.name.clone(), i) {
                return Err(bad(
                    &key("name"),
                    &n.name,
                    &format!("node[{j}] has the same name"),
                ));
            }
            if n.roles.is_empty() {
                return Err(bad(
                    &key("roles"),
                    &n.roles,
                    "give at least one of coordinator, training, selfplay, ephemeral",
                ));
            }
            let mut roles = BTreeSet::new();
            for r in &n.roles {
                let role = Role::parse(r).ok_or_else(|| {
                    bad(
                        &key("roles"),
                        r,
                        "unknown role (expected coordinator, training, selfplay or ephemeral)",
                    )
                })?;
                if !roles.insert(role) {
                    return Err(bad(&key("roles"), r, "listed twice"));
                }
            }
            if !valid_host(&n.address) {
                return Err(bad(
                    &key("address"),
                    &n.address,
                    "not a host name or IP address",
                ));
            }
            for (port, v) in [
                ("p2p", n.ports.p2p),
                ("router", n.ports.router),
                ("health", n.ports.health),
                ("data", n.ports.data),
            ] {
                if v == 0 {
                    return Err(bad(
                        &key(&format!("ports.{port}")),
                        &v,
                        "peers cannot reach port 0: give the port the node listens on",
                    ));
                }
            }
            let node = Node {
                name: n.name,
                roles,
                address: n.address,
                ports: n.ports,
                ephemeral: n.ephemeral || n.roles.iter().any(|r| r == "ephemeral"),
                exclude_from_sync: n.exclude_from_sync,
            };
            if let Some(j) = seen_addrs.insert(node.p2p_addr(), i) {
                return Err(bad(
                    &key("ports.p2p"),
                    &node.p2p_addr(),
                    &format!("node[{j}] has the same peer address"),
                ));
            }
            nodes.push(node);
        }

        let coordinators: Vec<&str> = nodes
            .iter()
            .filter(|n| n.roles.contains(&Role::Coordinator))
            .map(|n| n.name.as_str())
            .collect();
        let leader = match raw.leader.mode.as_deref().unwrap_or("static") {
            "static" => {
                if let Some(e) = &raw.leader.endpoints {
                    return Err(bad("leader.endpoints", e, "only with mode = \"etcd\""));
                }
                if let Some(t) = &raw.leader.ttl_s {
                    return Err(bad("leader.ttl_s", t, "only with mode = \"etcd\""));
                }
                if raw.leader.user.is_some() || raw.leader.password.is_some() {
                    return Err(bad("leader.user", &"***", "only with mode = \"etcd\""));
                }
                if let Some(c) = &raw.leader.ca {
                    return Err(bad("leader.ca", c, "only with mode = \"etcd\""));
                }
                if coordinators.len() != 1 {
                    return Err(bad(
                        "node[*].roles",
                        &coordinators,
                        "leader mode \"static\" needs exactly one node with the coordinator role",
                    ));
                }
                LeaderMode::Static
            }
            "etcd" => {
                let endpoints = raw.leader.endpoints.unwrap_or_default();
                if endpoints.is_empty() {
                    return Err(bad(
                        "leader.endpoints",
                        &endpoints,
                        "mode \"etcd\" needs at least one endpoint, e.g. \"http://10.0.0.1:2379\"",
                    ));
                }
                for e in &endpoints {
                    if !valid_url(e, &["http", "https"]) {
                        return Err(bad(
                            "leader.endpoints",
                            e,
                            "not an http:// or https:// host:port URL",
                        ));
                    }
                }
                if coordinators.is_empty() {
                    return Err(bad(
                        "node[*].roles",
                        &coordinators,
                        "no node has the coordinator role: etcd elects among coordinators",
                    ));
                }
                let ttl_s = match raw.leader.ttl_s {
                    None => DEFAULT_LEASE_TTL_S,
                    Some(t) => u32::try_from(t)
                        .ok()
                        .filter(|t| (1..=3600).contains(t))
                        .ok_or_else(|| {
                            bad(
                                "leader.ttl_s",
                                &t,
                                "must be a whole number of seconds from 1 to 3600 (etcd lease TTLs are whole seconds)",
                            )
                        })?,
                };
                let user = credentials(&bad, "leader", raw.leader.user, raw.leader.password)?;
                if raw.leader.ca.is_none()
                    && let Some(e) = endpoints.iter().find(|e| e.starts_with("https://"))
                {
                    return Err(bad(
                        "leader.ca",
                        e,
                        "an https:// endpoint needs [leader] ca (the PEM CA its certificate is verified against)",
                    ));
                }
                let auth = EtcdAuth {
                    user,
                    ca: raw.leader.ca,
                };
                LeaderMode::Etcd {
                    endpoints,
                    ttl_s,
                    auth,
                }
            }
            other => {
                return Err(bad(
                    "leader.mode",
                    &other,
                    "unknown leader mode (expected \"static\" or \"etcd\")",
                ));
            }
        };
        let events = match raw.events.backend.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                if let Some(s) = &raw.events.servers {
                    return Err(bad(
                        "events.servers",
                        s,
                        "only with backend = \"jetstream\"",
                    ));
                }
                if let Some(r) = &raw.events.replicas {
                    return Err(bad(
                        "events.replicas",
                        r,
                        "only with backend = \"jetstream\"",
                    ));
                }
                if let Some(r) = &raw.events.queue_done_retention_s {
                    return Err(bad(
                        "events.queue_done_retention_s",
                        r,
                        "only with backend = \"jetstream\" (the SQLite queue's is maintenance's queue_done_max_age_h)",
                    ));
                }
                if raw.events.user.is_some() || raw.events.password.is_some() {
                    return Err(bad(
                        "events.user",
                        &"***",
                        "only with backend = \"jetstream\"",
                    ));
                }
                if let Some(f) = &raw.events.tls_ca {
                    return Err(bad("events.tls_ca", f, "only with backend = \"jetstream\""));
                }
                EventBackend::Sqlite
            }
            "jetstream" => {
                let servers = raw.events.servers.unwrap_or_default();
                if servers.is_empty() {
                    return Err(bad(
                        "events.servers",
                        &servers,
                        "backend \"jetstream\" needs at least one server, e.g. \"nats://10.0.0.1:4222\"",
                    ));
                }
                for s in &servers {
                    if !valid_url(s, &["nats", "tls"]) {
                        return Err(bad(
                            "events.servers",
                            s,
                            "not a nats:// or tls:// host:port URL",
                        ));
                    }
                }
                let default = if servers.len() == 1 { 1 } else { 3 };
                let replicas = raw.events.replicas.unwrap_or(default);
                if !(1..=5).contains(&replicas) {
                    return Err(bad(
                        "events.replicas",
                        &replicas,
                        "JetStream streams have 1 to 5 replicas",
                    ));
                }
                let keep = raw
                    .events
                    .queue_done_retention_s
                    .unwrap_or(DEFAULT_QUEUE_DONE_RETENTION_S);
                if keep == 0 {
                    return Err(bad(
                        "events.queue_done_retention_s",
                        &keep,
                        "finished work items are kept at least 1 s",
                    ));
                }
                let user = credentials(&bad, "events", raw.events.user, raw.events.password)?;
                EventBackend::Jetstream {
                    servers,
                    replicas,
                    queue_done_retention: std::time::Duration::from_secs(keep),
                    auth: NatsAuth {
                        user,
                        tls_ca: raw.events.tls_ca,
                    },
                }
            }
            other => {
                return Err(bad(
                    "events.backend",
                    &other,
                    "unknown event backend (expected \"sqlite\" or \"jetstream\")",
                ));
            }
        };

        if !nodes.iter().any(|n| n.name == this) {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(bad(
                "node[*].name",
                &names,
                &format!(
                    "this machine's node {this:?} (the `node` setting, else the hostname) is not listed"
                ),
            ));
        }
        Ok(ClusterConfig {
            file: Some(file.to_owned()),
            name,
            timeouts,
            leader,
            events,
            require_token: raw.auth.require_token,
            nodes,
            this: this.to_owned(),
        })
    }

    /// The node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// This machine's node (always present after validation).
    pub fn this_node(&self) -> &Node {
        self.node(&self.this)
            .or(self.nodes.first())
            .expect("a validated cluster has at least one node")
    }

    /// Every node but this one.
    pub fn peers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.name != self.this)
    }

    /// The leader as configuration alone decides it: the coordinator under `static`;
    /// `None` under `etcd` (the lease decides: [`crate::leader`]).
    pub fn static_leader(&self) -> Option<&Node> {
        match self.leader {
            LeaderMode::Static => self
                .nodes
                .iter()
                .find(|n| n.roles.contains(&Role::Coordinator)),
            LeaderMode::Etcd { .. } => None,
        }
    }

    /// Why this cluster's loop cannot work on its event backend, if it cannot: with
    /// `[events] backend = "sqlite"` each node's router keeps its own log and no event
    /// crosses nodes, so an EVALUATION_COMPLETED of a training node (the `training` role
    /// runs evaluation) reaches the leader's unified_promotion only when that node is the
    /// one node that can lead (the only coordinator). Refused at start (exit 64) by the
    /// launcher and the event router rather than promoting nothing in silence.
    pub fn events_cannot_reach_leader(&self) -> Option<ClusterError> {
        if self.events != EventBackend::Sqlite || self.nodes.len() < 2 {
            return None;
        }
        let coordinators: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.roles.contains(&Role::Coordinator))
            .map(|n| n.name.as_str())
            .collect();
        let sole_leader = match coordinators.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let split: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.roles.contains(&Role::Training) && Some(n.name.as_str()) != sole_leader)
            .map(|n| n.name.as_str())
            .collect();
        if split.is_empty() {
            return None;
        }
        Some(ClusterError::Invalid {
            file: self.file.clone().unwrap_or_default(),
            key: "events.backend".into(),
            value: "\"sqlite\"".into(),
            reason: format!(
                "node(s) {} evaluate (role training) but promotion is decided on the leader ({}); with the SQLite backend events do not cross nodes, so no evaluation would reach it. Use backend = \"jetstream\", or give the training role only to the one coordinator",
                split.join(", "),
                if coordinators.is_empty() {
                    "none".to_owned()
                } else {
                    coordinators.join(" or ")
                }
            ),
        })
    }

    /// Where the config came from, for logs and status.
    pub fn source(&self) -> String {
        self.file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "no cluster.toml: one-node cluster".into())
    }
}

const NAME_RULE: &str = "names are 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'";

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_host(s: &str) -> bool {
    if s.trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `scheme://host:port` with one of `schemes`.
/// `<section>.user` and `<section>.password`: both or neither; neither empty.
fn credentials(
    bad: &dyn Fn(&str, &dyn std::fmt::Debug, &str) -> ClusterError,
    section: &str,
    user: Option<String>,
    password: Option<String>,
) -> Result<Option<(String, Secret)>, ClusterError> {
    match (user, password) {
        (None, None) => Ok(None),
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Ok(Some((u, Secret(p)))),
        (Some(u), None) => Err(bad(
            &format!("{section}.password"),
            &u,
            "a user needs its password (both or neither)",
        )),
        (None, Some(_)) => Err(bad(
            &format!("{section}.user"),
            &"***",
            "a password needs its user (both or neither)",
        )),
        (Some(u), Some(_)) => Err(bad(
            &format!("{section}.user"),
            &u,
            "user and password must not be empty",
        )),
    }
}

fn valid_url(s: &str, schemes: &[&str]) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let rest = rest.trim_end_matches('/');
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    schemes.contains(&scheme) && valid_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
