//! The peer API client (`ringrift.v1.P2p`) that p2p_backend and cluster_monitor use,
//! with the shared token's bearer header.

use ringrift_proto::wire::p2p_client::P2pClient;

/// A peer API client that sends the token.
pub type PeerClient = P2pClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        router_client::Bearer,
    >,
>;

/// A lazy client of the peer API at `addr` (no connection until the first call; it
/// reconnects by itself after failures).
pub fn peer_client(
    addr: &str,
    bearer: router_client::Bearer,
) -> Result<PeerClient, router_client::ClientError> {
    Ok(P2pClient::with_interceptor(
        router_client::endpoint(addr)?.connect_lazy(),
        bearer,
    ))
}
