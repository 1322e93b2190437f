//! The cluster as one library: its config file (`cluster.toml`, [`config`]), membership
//! by heartbeat ([`membership`]: alive → suspect → dead, one timeout table), the node's
//! resources ([`resources`]: CPU, memory, disk, the one GPU probe) and the node view that
//! `p2p_backend` serves and `cluster_monitor` aggregates ([`view`], wire conversions at
//! the edge), the peer API client ([`client`]) and the leadership ([`leader`]: the static
//! coordinator or an etcd lease whose key revision is the fencing token; etcd's generated
//! API in [`etcd`]).
//!
//! Policy-free: no daemon, no I/O beyond reading the config file, `/proc`, etcd and the
//! peer APIs (this node's found through `run/p2p_backend.addr`); the
//! daemons decide what to do with a transition.

pub mod client;
pub mod config;
pub mod duty;
pub mod etcd;
pub mod leader;
pub mod membership;
pub mod resources;
pub mod view;

pub use config::{
    ClusterConfig, ClusterError, EtcdAuth, EventBackend, LeaderMode, NatsAuth, Node, Ports, Role,
    Secret, Timeouts,
};
pub use leader::{Campaign, Leader, LeaderError, Leadership, ManualLeader};
pub use membership::{Change, MemberState, Membership};
