//! The cluster as one library: its config file (`cluster.toml`, [`config`]), membership
//! by heartbeat ([`membership`]: alive → suspect → dead, one timeout table), the node's
//! resources ([`resources`]: CPU, memory, disk, the one GPU probe) and the node view that
//! `p2p_backend` serves and `cluster_monitor` aggregates ([`view`], wire conversions at
//! the edge), and the peer API client ([`client`]).
//!
//! Policy-free: no daemon, no I/O beyond reading the config file and `/proc`; the
//! daemons decide what to do with a transition.

pub mod client;
pub mod config;
pub mod membership;
pub mod resources;
pub mod view;

pub use config::{
    ClusterConfig, ClusterError, EventBackend, LeaderMode, Node, Ports, Role, Timeouts,
};
pub use membership::{Change, MemberState, Membership};
