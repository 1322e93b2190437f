//! The other nodes' data servers: who they are (from cluster.toml) and an HTTP client
//! that sends the cluster token and bounds every request in time.

use crate::TransferError;
use ringrift_cluster::{ClusterConfig, Node, Role};
use std::time::Duration;

/// A node whose `data_server` can be asked for files and games.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// `http://host:port`, no trailing slash.
    pub url: String,
    pub roles: Vec<Role>,
    pub ephemeral: bool,
    /// Never a sync target (data never lands there).
    pub exclude_from_sync: bool,
}

impl Peer {
    /// A peer at `url` (tests, the CLI, the bench): no roles, a valid target.
    pub fn at(name: &str, url: &str) -> Peer {
        Peer {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            roles: Vec::new(),
            ephemeral: false,
            exclude_from_sync: false,
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl From<&Node> for Peer {
    /// A node of cluster.toml as a peer: its data server at `address:ports.data`.
    fn from(n: &Node) -> Peer {
        Peer {
            name: n.name.clone(),
            url: n.data_url(),
            roles: n.roles.iter().copied().collect(),
            ephemeral: n.ephemeral,
            exclude_from_sync: n.exclude_from_sync,
        }
    }
}

/// Every node of `cluster` but this one, in cluster.toml order.
pub fn peers(cluster: &ClusterConfig) -> Vec<Peer> {
    cluster.peers().map(Peer::from).collect()
}

/// The peers data may be sent to: not excluded from sync.
pub fn targets(cluster: &ClusterConfig) -> Vec<Peer> {
    peers(cluster)
        .into_iter()
        .filter(|p| !p.exclude_from_sync)
        .collect()
}

/// An HTTP client of data servers. Cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub struct DataClient {
    http: reqwest::Client,
    token: Option<String>,
}

impl DataClient {
    /// `token`: the cluster token (sent as `Authorization: Bearer`); `timeout`: for
    /// connecting and between two reads of a body (a stalled peer fails, a slow one
    /// does not).
    pub fn new(token: Option<&str>, timeout: Duration) -> Result<DataClient, TransferError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| TransferError::Invalid(format!("HTTP client: {e}")))?;
        Ok(DataClient {
            http,
            token: token.map(str::to_owned),
        })
    }

    /// A request to `peer` at `path_and_query` (which starts with `/`), with the token.
    pub fn request(
        &self,
        method: reqwest::Method,
        peer: &Peer,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}{path_and_query}", peer.url));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends `rb`; a non-success status becomes [`TransferError::Status`] with the
    /// start of the body (the server's reason).
    pub async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TransferError> {
        let resp = rb.send().await.map_err(|e| TransferError::Http {
            url: e.url().map(|u| u.to_string()).unwrap_or_default(),
            source: e,
        })?;
        check_status(resp).await
    }

    /// GET `path_and_query` from `peer` and decode the JSON answer as `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        peer: &Peer,
        path_and_query: &str,
    ) -> Result<T, TransferError> {
        self.send_json(self.request(reqwest::Method::GET, peer, path_and_query))
            .await
    }

    /// Sends `rb` and decodes its (successful) JSON answer as `T`.
    pub async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, TransferError> {
        let resp = self.send(rb).await?;
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| TransferError::Http {
            url: url.clone(),
            source: e,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| TransferError::BadAnswer {
            url,
            why: e.to_string(),
        })
    }
}

/// `resp` if its status is a success (2xx or 304), else its status and reason.
pub async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, TransferError> {
    let status = resp.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(resp);
    }
    let url = resp.url().to_string();
    let body = resp.text().await.unwrap_or_default();
    Err(TransferError::Status {
        url,
        status: status.as_u16(),
        body: body.chars().take(300).collect(),
    })
}

/// The node of an event source `daemon@node` (`None` without `@`).
pub fn node_of(source: &str) -> Option<&str> {
    source
        .rsplit_once('@')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_of_reads_the_part_after_the_last_at() {
        assert_eq!(node_of("unified_promotion@n1"), Some("n1"));
        assert_eq!(node_of("x@y@gpu-2"), Some("gpu-2"));
        assert_eq!(node_of("nobody"), None);
        assert_eq!(node_of("d@"), None);
    }
}
