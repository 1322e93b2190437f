//! The other nodes' data servers: who they are (from cluster.toml) and an HTTP client
//! that sends the cluster token and bounds every request in time. With `[tls] ca` the
//! client speaks https to every peer (verified against that CA, never plaintext), and
//! it never sends the token in clear to another machine unless `[tls] allow_plaintext`.

use crate::TransferError;
use ringrift_cluster::{ClusterConfig, Node, Role};
use std::sync::Arc;
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

/// The peers data may be sent to: durable and not excluded from sync. An ephemeral node
/// (a spot instance) is never a target: its shipped profile runs no data_server (a push
/// to it could only fail) and it goes away with whatever it was sent; it hands its own
/// games over through ephemeral_sync.
pub fn targets(cluster: &ClusterConfig) -> Vec<Peer> {
    peers(cluster)
        .into_iter()
        .filter(|p| !p.exclude_from_sync && !p.ephemeral)
        .collect()
}

/// An HTTP client of data servers. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct DataClient {
    http: reqwest::Client,
    token: Option<String>,
    tls: bool,
    allow_plaintext: bool,
}

impl std::fmt::Debug for DataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataClient")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

impl DataClient {
    /// `token`: the cluster token (sent as `Authorization: Bearer`); `timeout`: for
    /// connecting and between two reads of a body (a stalled peer fails, a slow one
    /// does not).
    pub fn new(token: Option<&str>, timeout: Duration) -> Result<DataClient, TransferError> {
        DataClient::with_tls(token, timeout, None, false)
    }

    /// [`DataClient::new`] speaking https only, verified against `tls` (`[tls] ca`),
    /// when it is given; `allow_plaintext`: the token may go over http to another
    /// machine (`[tls] allow_plaintext`).
    pub fn with_tls(
        token: Option<&str>,
        timeout: Duration,
        tls: Option<&handler_base::router_client::tls::ClientTls>,
        allow_plaintext: bool,
    ) -> Result<DataClient, TransferError> {
        // Our own rustls config in every case: the process has no default crypto
        // provider (reqwest would panic building one). Without a CA no root is trusted,
        // so an https URL fails instead of trusting anyone.
        let config = match tls {
            Some(t) => (*t.rustls()).clone(),
            None => rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| TransferError::Invalid(format!("HTTP client TLS: {e}")))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .no_proxy()
            .tls_backend_preconfigured(config)
            .https_only(tls.is_some())
            .build()
            .map_err(|e| TransferError::Invalid(format!("HTTP client: {e}")))?;
        Ok(DataClient {
            http,
            token: token.map(str::to_owned),
            tls: tls.is_some(),
            allow_plaintext,
        })
    }

    /// The underlying HTTP client (no token added): for raw requests in tests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The URL of `path_and_query` at `peer`: https when this client has TLS.
    pub fn url(&self, peer: &Peer, path_and_query: &str) -> String {
        match peer.url.strip_prefix("http://").filter(|_| self.tls) {
            Some(rest) => format!("https://{rest}{path_and_query}"),
            None => format!("{}{path_and_query}", peer.url),
        }
    }

    /// Whether the token may go to `url`: over https, or over http to this machine or
    /// with `allow_plaintext`.
    pub fn may_send_token(&self, url: &str) -> bool {
        if self.allow_plaintext {
            return true;
        }
        let Ok(u) = reqwest::Url::parse(url) else {
            return false;
        };
        u.scheme() == "https"
            || u.host_str()
                .is_some_and(handler_base::router_client::tls::is_local_host)
    }

    /// The first peer of `peers` the token would not be sent to (plaintext to another
    /// machine without `allow_plaintext`), if any: a configuration error at start-up.
    pub fn refused_peer<'a>(&self, peers: &'a [Peer]) -> Option<&'a Peer> {
        self.token.as_ref()?;
        peers
            .iter()
            .find(|p| !self.may_send_token(&self.url(p, "/")))
    }

    /// A request to `peer` at `path_and_query` (which starts with `/`), with the token.
    pub fn request(
        &self,
        method: reqwest::Method,
        peer: &Peer,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let url = self.url(peer, path_and_query);
        let send_token = self.may_send_token(&url);
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) if send_token => rb.bearer_auth(t),
            Some(_) => {
                // Checked at start-up (`refused_peer`); a peer that reaches here all the
                // same gets no token, so the server refuses it rather than the token
                // crossing the network in clear.
                tracing::warn!(peer = %peer.name, "not sending the token over plaintext http to another machine");
                rb
            }
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
    fn the_token_never_goes_over_plaintext_to_another_machine() {
        let t = Duration::from_secs(1);
        let c = DataClient::new(Some("s3cret"), t).expect("client");
        let remote = Peer::at("far", "http://10.0.0.7:8766");
        let near = Peer::at("near", "http://127.0.0.1:8766");
        assert!(!c.may_send_token(&c.url(&remote, "/manifest")));
        assert!(c.may_send_token(&c.url(&near, "/manifest")));
        let peers = [near.clone(), remote.clone()];
        assert_eq!(c.refused_peer(&peers).map(|p| p.name.as_str()), Some("far"));
        // The request to the far peer goes without the token.
        let rb = c.request(reqwest::Method::GET, &remote, "/manifest");
        let req = rb.build().expect("request");
        assert!(req.headers().get(reqwest::header::AUTHORIZATION).is_none());
        let rb = c.request(reqwest::Method::GET, &near, "/manifest");
        assert!(
            rb.build()
                .expect("request")
                .headers()
                .contains_key("authorization")
        );
        // Without a token nothing is refused; with allow_plaintext it is sent.
        assert!(
            DataClient::new(None, t)
                .expect("client")
                .refused_peer(&peers)
                .is_none()
        );
        let open = DataClient::with_tls(Some("s3cret"), t, None, true).expect("client");
        assert!(open.refused_peer(&peers).is_none());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn node_of_reads_the_part_after_the_last_at() {
        assert_eq!(node_of("unified_promotion@n1"), Some("n1"));
        assert_eq!(node_of("x@y@gpu-2"), Some("gpu-2"));
        assert_eq!(node_of("nobody"), None);
        assert_eq!(node_of("d@"), None);
    }
}
