//! The peer API client (`ringrift.v1.P2p`) that p2p_backend and the cluster and health
//! monitors use, with the shared token's bearer header, [`node_info`]: one bounded
//! `NodeInfo` call validated into the domain view, and [`local_node_info`]: the same
//! asked of this node's own p2p_backend.

use crate::view::{NodeInfo, ViewError};
use ringrift_proto::wire::{self, p2p_client::P2pClient};
use std::time::Duration;

/// A peer API client that sends the token.
pub type PeerClient = P2pClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        handler_base::router_client::Bearer,
    >,
>;

/// A lazy client of the peer API at `addr` (no connection until the first call; it
/// reconnects by itself after failures).
pub fn peer_client(
    addr: &str,
    bearer: handler_base::router_client::Bearer,
) -> Result<PeerClient, handler_base::router_client::ClientError> {
    Ok(P2pClient::with_interceptor(
        bearer.endpoint(addr)?.connect_lazy(),
        bearer,
    ))
}

/// Why a peer's `NodeInfo` could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{addr}: {source}")]
    Address {
        addr: String,
        source: handler_base::router_client::ClientError,
    },
    #[error("{addr}: no answer within {limit:?}")]
    Timeout { addr: String, limit: Duration },
    #[error("{addr}: {}", .status.message())]
    Rpc { addr: String, status: tonic::Status },
    #[error("{addr}: {source}")]
    Invalid { addr: String, source: ViewError },
    #[error("no p2p_backend on this node (run/p2p_backend.addr absent)")]
    NotRunning,
}

/// Asks the peer API at `addr` who it is, within `limit`.
pub async fn node_info(
    addr: &str,
    bearer: handler_base::router_client::Bearer,
    limit: Duration,
) -> Result<NodeInfo, PeerError> {
    let mut c = peer_client(addr, bearer).map_err(|source| PeerError::Address {
        addr: addr.to_owned(),
        source,
    })?;
    let r = tokio::time::timeout(limit, c.node_info(wire::NodeInfoRequest {}))
        .await
        .map_err(|_| PeerError::Timeout {
            addr: addr.to_owned(),
            limit,
        })?
        .map_err(|status| PeerError::Rpc {
            addr: addr.to_owned(),
            status,
        })?;
    NodeInfo::try_from(r.into_inner()).map_err(|source| PeerError::Invalid {
        addr: addr.to_owned(),
        source,
    })
}

/// Asks this node's own peer API, found at `run/p2p_backend.addr` under `home` (read off
/// the async runtime), within `limit`.
pub async fn local_node_info(
    home: &std::path::Path,
    bearer: handler_base::router_client::Bearer,
    limit: Duration,
) -> Result<NodeInfo, PeerError> {
    let h = home.to_owned();
    let addr = tokio::task::spawn_blocking(move || handler_base::read_addr_file(&h, "p2p_backend"))
        .await
        .ok()
        .flatten()
        .ok_or(PeerError::NotRunning)?;
    node_info(&addr, bearer, limit).await
}
