//! `data_server`: serves `$RINGRIFT_HOME/data` and `$RINGRIFT_HOME/models` over HTTP on
//! 127.0.0.1:8766 (`run/data_server.addr`) to the node's peers. The serving code (routes,
//! jail, snapshots, digests, bandwidth limit, `[data_server]` settings) is
//! `ringrift_transfer::server`, a library, so the sync daemons' tests start a data server
//! in process (`ringrift-test-support`) without depending on this daemon crate; this
//! crate names the daemon and holds its tests.

use handler_base::DaemonInfo;
use handler_base::scope::Scope;
pub use ringrift_transfer::server::{
    DataServer, DataServerConfig, NAME, app, build, digest, games, jail, serve, snapshot,
};

pub const INFO: DaemonInfo = DaemonInfo {
    name: NAME,
    about: "HTTP file server of data/ and models/: manifests, ranges, SHA-256, auth",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod games_tests;
#[cfg(test)]
mod tests;
