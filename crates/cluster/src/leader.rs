//! Leadership: who runs the leader-only duties (queue population, promotion, tournaments)
//! and the fencing token their writes carry.
//!
//! `[leader] mode = "static"`: the one coordinator of cluster.toml, token
//! [`STATIC_TOKEN`] forever. `mode = "etcd"`: etcd elects, nothing here does. Each
//! coordinator's `p2p_backend` runs a [`Campaign`]: it holds a lease with the configured
//! TTL (kept alive every TTL/4) and, in one Txn, creates [`LEADER_KEY`] bound to that
//! lease if the key is absent (`create_revision == 0`), else reads it. The node named in
//! the key leads while the key exists; the key's `create_revision` is the fencing token:
//! it grows with every new holder, since a key can only be created again after the old
//! one is gone (its lease expired or was revoked). A dead leader's lease expires within
//! one TTL and the next campaign round (TTL/4 later at most) of another node takes over.
//!
//! Every daemon reads the same truth through [`Leadership`]: [`Leadership::mine`] before a
//! leader-only duty (a linearizable read of the key), then the duty's writes carry the
//! token, and the resource refuses a stale one (the work queue's `enqueue_fenced`, the
//! canonical model's swap, the Elo store's `record_matches_fenced`);
//! [`Leadership::confirm`] compares the key's create_revision with the token in an etcd
//! Txn right before a side effect and, every few seconds, while a long job runs.
//!
//! etcd is spoken to as `[leader]` says: https endpoints over TLS verified against
//! `[leader] ca` (never plaintext), and with `user`/`password` every call carries the
//! auth token of an `Authenticate` (fetched again when etcd says it expired).
//!
//! The static token is compared like any other: one leader ever, so it always passes on
//! a home that only ran static leadership; a store that has seen an etcd leader's token
//! refuses it (going back to static while that leader may still run is the split brain
//! the fence exists for; the operator clears the fences, `docs/cluster.md`).

use crate::config::{ClusterConfig, EtcdAuth, LeaderMode, Role, Secret};
use crate::etcd::etcdserverpb::{
    self as pb, auth_client::AuthClient, compare, kv_client::KvClient, lease_client::LeaseClient,
    request_op,
};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The key the elected node's name is written under.
pub const LEADER_KEY: &str = "/ringrift/leader";
/// The token of the static leader (it never changes hands).
pub const STATIC_TOKEN: u64 = 1;

/// The leader and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Leader {
    pub node: String,
    pub token: u64,
}

/// Why the leadership could not be read or campaigned for.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LeaderError {
    #[error("etcd {endpoints}: {message}")]
    Etcd { endpoints: String, message: String },
    #[error("etcd {endpoints}: no answer within {secs:.1} s")]
    Timeout { endpoints: String, secs: f64 },
    #[error("leader.endpoints = {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("leader.ca = {path:?}: {message}")]
    Ca {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Adds etcd's auth token (`token` metadata) to every call once one is had.
#[derive(Clone, Default)]
struct EtcdToken(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl EtcdToken {
    fn get(&self) -> Option<MetadataValue<Ascii>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, v: Option<MetadataValue<Ascii>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

impl tonic::service::Interceptor for EtcdToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = self.get() {
            req.metadata_mut().insert("token", v);
        }
        Ok(req)
    }
}

/// The etcd user of `[leader] user`/`password`.
#[derive(Clone)]
struct Login {
    auth: AuthClient<Channel>,
    user: String,
    password: Secret,
}

type Authed = InterceptedService<Channel, EtcdToken>;

/// The etcd side: clients over all endpoints and the limits.
#[derive(Clone)]
struct Etcd {
    kv: KvClient<Authed>,
    lease: LeaseClient<Authed>,
    token: EtcdToken,
    login: Option<Login>,
    endpoints: String,
    rpc_timeout: Duration,
    ttl_s: u32,
}

impl Etcd {
    /// Clients over `endpoints` (connecting lazily): an https endpoint over TLS
    /// verified against `auth.ca` (reads the file; no CA is an error, never
    /// plaintext), with `auth.user` every call authenticated.
    fn connect(
        endpoints: &[String],
        auth: &EtcdAuth,
        rpc_timeout: Duration,
        ttl_s: u32,
    ) -> Result<Etcd, LeaderError> {
        let tls = match &auth.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| LeaderError::Ca {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Some(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                        // etcd speaks only gRPC (HTTP/2); older etcd may not say so in ALPN.
                        .assume_http2(true),
                )
            }
            None => None,
        };
        let mut eps = Vec::new();
        for e in endpoints {
            let bad = |message: String| LeaderError::Endpoint {
                endpoint: e.clone(),
                message,
            };
            let mut ep = Endpoint::from_shared(e.clone())
                .map_err(|err| bad(err.to_string()))?
                .connect_timeout(rpc_timeout)
                .tcp_nodelay(true);
            if auth.user.is_some()
                && ep.uri().scheme_str() == Some("http")
                && !ep
                    .uri()
                    .host()
                    .is_some_and(handler_base::router_client::tls::is_local_host)
            {
                tracing::warn!(
                    endpoint = %e,
                    "leader.password goes to another machine in clear: use https:// endpoints with leader.ca"
                );
            }
            if ep.uri().scheme_str() == Some("https") {
                let Some(tls) = &tls else {
                    return Err(bad(
                        "an https endpoint needs [leader] ca (it is never spoken to in plaintext)"
                            .into(),
                    ));
                };
                ep = ep
                    .tls_config(tls.clone())
                    .map_err(|err| bad(err.to_string()))?;
            }
            eps.push(ep);
        }
        let channel = Channel::balance_list(eps.into_iter());
        let token = EtcdToken::default();
        Ok(Etcd {
            kv: KvClient::with_interceptor(channel.clone(), token.clone()),
            lease: LeaseClient::with_interceptor(channel.clone(), token.clone()),
            token,
            login: auth.user.as_ref().map(|(user, password)| Login {
                auth: AuthClient::new(channel),
                user: user.clone(),
                password: password.clone(),
            }),
            endpoints: endpoints.join(","),
            rpc_timeout,
            ttl_s,
        })
    }

    /// With a user and no auth token yet: `Authenticate` and keep the token.
    async fn log_in(&self) -> Result<(), LeaderError> {
        let Some(login) = &self.login else {
            return Ok(());
        };
        if self.token.get().is_some() {
            return Ok(());
        }
        let mut auth = login.auth.clone();
        let req = pb::AuthenticateRequest {
            name: login.user.clone(),
            password: login.password.expose().to_owned(),
        };
        let r = match tokio::time::timeout(self.rpc_timeout, auth.authenticate(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => {
                return Err(LeaderError::Etcd {
                    endpoints: self.endpoints.clone(),
                    message: format!("authenticate as {:?}: {}", login.user, s.message()),
                });
            }
            Err(_) => {
                return Err(LeaderError::Timeout {
                    endpoints: self.endpoints.clone(),
                    secs: self.rpc_timeout.as_secs_f64(),
                });
            }
        };
        let v = MetadataValue::try_from(r.token).map_err(|_| LeaderError::Etcd {
            endpoints: self.endpoints.clone(),
            message: "etcd's auth token is not ASCII".into(),
        })?;
        self.token.set(Some(v));
        Ok(())
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, LeaderError> {
        // The call's interceptor runs when `f` is first polled: after the login.
        self.log_in().await?;
        match tokio::time::timeout(self.rpc_timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => {
                if self.login.is_some()
                    && (s.code() == tonic::Code::Unauthenticated
                        || s.message().contains("invalid auth token"))
                {
                    // Expired (etcd's simple tokens live minutes): the next call logs
                    // in again.
                    self.token.set(None);
                }
                Err(LeaderError::Etcd {
                    endpoints: self.endpoints.clone(),
                    message: format!("{:?}: {}", s.code(), s.message()),
                })
            }
            Err(_) => Err(LeaderError::Timeout {
                endpoints: self.endpoints.clone(),
                secs: self.rpc_timeout.as_secs_f64(),
            }),
        }
    }

    fn leader_of(kv: &crate::etcd::mvccpb::KeyValue) -> Option<Leader> {
        let node = String::from_utf8(kv.value.clone()).ok()?;
        let token = u64::try_from(kv.create_revision).ok()?;
        Some(Leader { node, token })
    }

    /// The key as etcd has it now (a linearizable read).
    async fn read(&self) -> Result<Option<Leader>, LeaderError> {
        let mut kv = self.kv.clone();
        let r = self
            .call(kv.range(pb::RangeRequest {
                key: LEADER_KEY.into(),
                ..Default::default()
            }))
            .await?;
        Ok(r.kvs.first().and_then(Etcd::leader_of))
    }
}

/// What every daemon asks: who leads, with which token, and is it this node.
#[derive(Clone)]
pub struct Leadership {
    this: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Static(Option<Leader>),
    /// Set by hand through a [`ManualLeader`] (tests of leadership that changes).
    Manual(std::sync::Arc<std::sync::Mutex<Option<Leader>>>),
    Etcd(Box<Etcd>),
}

/// The switch of a [`Leadership::manual`]: who leads from now on.
#[derive(Clone)]
pub struct ManualLeader(std::sync::Arc<std::sync::Mutex<Option<Leader>>>);

impl ManualLeader {
    /// Makes `leader` the leader (`None`: nobody leads).
    pub fn set(&self, leader: Option<Leader>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = leader;
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("this", &self.this)
            .field("mode", &self.mode())
            .finish()
    }
}

impl Leadership {
    /// The leadership `cluster` configures, seen from its node. Under etcd the clients
    /// connect lazily (call within a tokio runtime).
    pub fn new(cluster: &ClusterConfig) -> Result<Leadership, LeaderError> {
        let kind = match &cluster.leader {
            LeaderMode::Static => Kind::Static(cluster.static_leader().map(|n| Leader {
                node: n.name.clone(),
                token: STATIC_TOKEN,
            })),
            LeaderMode::Etcd {
                endpoints,
                ttl_s,
                auth,
            } => Kind::Etcd(Box::new(Etcd::connect(
                endpoints,
                auth,
                cluster.timeouts.rpc_timeout,
                *ttl_s,
            )?)),
        };
        Ok(Leadership {
            this: cluster.this.clone(),
            kind,
        })
    }

    /// A fixed leader (tests, tools).
    pub fn fixed(this: &str, leader: Option<Leader>) -> Leadership {
        Leadership {
            this: this.to_owned(),
            kind: Kind::Static(leader),
        }
    }

    /// A leader changed by hand through the returned [`ManualLeader`] (tests of a
    /// leader deposed while it works); answers like a fixed one otherwise.
    pub fn manual(this: &str, leader: Option<Leader>) -> (Leadership, ManualLeader) {
        let cell = std::sync::Arc::new(std::sync::Mutex::new(leader));
        let l = Leadership {
            this: this.to_owned(),
            kind: Kind::Manual(cell.clone()),
        };
        (l, ManualLeader(cell))
    }

    pub fn mode(&self) -> &'static str {
        match self.kind {
            Kind::Static(_) => "static",
            Kind::Manual(_) => "manual",
            Kind::Etcd(_) => "etcd",
        }
    }

    /// The leader of a static or manual leadership.
    fn local(&self) -> Option<Option<Leader>> {
        match &self.kind {
            Kind::Static(l) => Some(l.clone()),
            Kind::Manual(cell) => Some(cell.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            Kind::Etcd(_) => None,
        }
    }

    /// This node's name.
    pub fn this(&self) -> &str {
        &self.this
    }

    /// The leader now (`None` under etcd while nobody holds the lease).
    pub async fn current(&self) -> Result<Option<Leader>, LeaderError> {
        match &self.kind {
            Kind::Etcd(e) => e.read().await,
            _ => Ok(self.local().flatten()),
        }
    }

    /// The leadership with its token if this node holds it now, else `None`.
    pub async fn mine(&self) -> Result<Option<Leader>, LeaderError> {
        Ok(self.current().await?.filter(|l| l.node == self.this))
    }

    /// Whether this node still leads under `token`: an etcd Txn comparing the key's
    /// create_revision with the token and its value with this node (static: the token is
    /// the static one and this node the coordinator). Call right before a side effect
    /// whose resource has no fence of its own.
    pub async fn confirm(&self, token: u64) -> Result<bool, LeaderError> {
        match &self.kind {
            Kind::Static(_) | Kind::Manual(_) => Ok(self
                .local()
                .flatten()
                .is_some_and(|l| l.node == self.this && l.token == token)),
            Kind::Etcd(e) => {
                let Ok(rev) = i64::try_from(token) else {
                    return Ok(false);
                };
                let mut kv = e.kv.clone();
                let r = e
                    .call(kv.txn(pb::TxnRequest {
                        compare: vec![
                            pb::Compare {
                                result: compare::CompareResult::Equal as i32,
                                target: compare::CompareTarget::Create as i32,
                                key: LEADER_KEY.into(),
                                target_union: Some(compare::TargetUnion::CreateRevision(rev)),
                                ..Default::default()
                            },
                            pb::Compare {
                                result: compare::CompareResult::Equal as i32,
                                target: compare::CompareTarget::Value as i32,
                                key: LEADER_KEY.into(),
                                target_union: Some(compare::TargetUnion::Value(
                                    self.this.clone().into_bytes(),
                                )),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }))
                    .await?;
                Ok(r.succeeded)
            }
        }
    }
}

/// One coordinator's campaign for the etcd lease (run by its `p2p_backend`).
pub struct Campaign {
    etcd: Etcd,
    node: String,
    lease: Option<i64>,
}

impl Campaign {
    /// The campaign of this node: `None` under static leadership, or when this node is
    /// not a coordinator (only coordinators stand).
    pub fn new(leadership: &Leadership, cluster: &ClusterConfig) -> Option<Campaign> {
        let Kind::Etcd(etcd) = &leadership.kind else {
            return None;
        };
        let stands = cluster.this_node().roles.contains(&Role::Coordinator);
        stands.then(|| Campaign {
            etcd: (**etcd).clone(),
            node: leadership.this.clone(),
            lease: None,
        })
    }

    /// How often [`Campaign::round`] should run: a quarter of the TTL (keepalives well
    /// inside it, and a vacant key is taken within TTL/4).
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.etcd.ttl_s) / 4.0).max(Duration::from_millis(100))
    }

    /// The lease this campaign holds, if any.
    pub fn lease(&self) -> Option<i64> {
        self.lease
    }

    /// One round: keep the lease alive (a new one if it expired), take the key if it is
    /// vacant, and return who leads now.
    pub async fn round(&mut self) -> Result<Option<Leader>, LeaderError> {
        if let Some(id) = self.lease {
            let mut lc = self.etcd.lease.clone();
            let req = pb::LeaseKeepAliveRequest { id };
            let mut stream = self
                .etcd
                .call(lc.lease_keep_alive(tokio_stream::once(req)))
                .await?;
            let alive = match tokio::time::timeout(self.etcd.rpc_timeout, stream.message()).await {
                Ok(Ok(Some(r))) => r.ttl > 0,
                Ok(Ok(None)) => false,
                Ok(Err(s)) => {
                    return Err(LeaderError::Etcd {
                        endpoints: self.etcd.endpoints.clone(),
                        message: format!("keepalive: {}", s.message()),
                    });
                }
                Err(_) => {
                    return Err(LeaderError::Timeout {
                        endpoints: self.etcd.endpoints.clone(),
                        secs: self.etcd.rpc_timeout.as_secs_f64(),
                    });
                }
            };
            if !alive {
                tracing::warn!(lease = id, "etcd lease expired; granting a new one");
                self.lease = None;
            }
        }
        let lease = match self.lease {
            Some(id) => id,
            None => {
                let mut lc = self.etcd.lease.clone();
                let r = self
                    .etcd
                    .call(lc.lease_grant(pb::LeaseGrantRequest {
                        ttl: i64::from(self.etcd.ttl_s),
                        id: 0,
                    }))
                    .await?;
                if !r.error.is_empty() {
                    return Err(LeaderError::Etcd {
                        endpoints: self.etcd.endpoints.clone(),
                        message: format!("lease grant: {}", r.error),
                    });
                }
                self.lease = Some(r.id);
                r.id
            }
        };
        let mut kv = self.etcd.kv.clone();
        let r = self
            .etcd
            .call(kv.txn(pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Create as i32,
                    key: LEADER_KEY.into(),
                    target_union: Some(compare::TargetUnion::CreateRevision(0)),
                    ..Default::default()
                }],
                success: vec![pb::RequestOp {
                    request: Some(request_op::Request::RequestPut(pb::PutRequest {
                        key: LEADER_KEY.into(),
                        value: self.node.clone().into_bytes(),
                        lease,
                        ..Default::default()
                    })),
                }],
                failure: vec![pb::RequestOp {
                    request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                        key: LEADER_KEY.into(),
                        ..Default::default()
                    })),
                }],
            }))
            .await?;
        if r.succeeded {
            // A created key's create_revision is the revision of the Txn that created it.
            let rev = r.header.map(|h| h.revision).unwrap_or(0);
            return Ok(u64::try_from(rev).ok().map(|token| Leader {
                node: self.node.clone(),
                token,
            }));
        }
        let kv = r.responses.into_iter().find_map(|op| match op.response {
            Some(pb::response_op::Response::ResponseRange(rr)) => rr.kvs.into_iter().next(),
            _ => None,
        });
        Ok(kv.as_ref().and_then(Etcd::leader_of))
    }

    /// Gives the lease back (on a clean stop), so another node takes over at once
    /// instead of after the TTL.
    pub async fn resign(&mut self) {
        if let Some(id) = self.lease.take() {
            let mut lc = self.etcd.lease.clone();
            if let Err(e) = self
                .etcd
                .call(lc.lease_revoke(pb::LeaseRevokeRequest { id }))
                .await
            {
                tracing::warn!(error = %e, "revoking the etcd lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(mode: &str) -> ClusterConfig {
        let text = format!(
            "[leader]\n{mode}\n[[node]]\nname = \"a\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = 9001 }}\n[[node]]\nname = \"b\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = 9002 }}\n"
        );
        ClusterConfig::parse(&text, std::path::Path::new("cluster.toml"), "b").expect("parse")
    }

    #[tokio::test]
    async fn static_leader_is_the_coordinator_with_a_constant_token() {
        let l = Leadership::new(&cluster("mode = \"static\"")).expect("leadership");
        assert_eq!(l.mode(), "static");
        assert_eq!(
            l.current().await.expect("current"),
            Some(Leader {
                node: "a".into(),
                token: STATIC_TOKEN
            })
        );
        assert_eq!(
            l.mine().await.expect("mine"),
            None,
            "b is not the coordinator"
        );
        assert!(!l.confirm(STATIC_TOKEN).await.expect("confirm"));
        let a = Leadership::fixed(
            "a",
            Some(Leader {
                node: "a".into(),
                token: STATIC_TOKEN,
            }),
        );
        assert!(a.confirm(STATIC_TOKEN).await.expect("confirm"));
        assert!(!a.confirm(STATIC_TOKEN + 1).await.expect("confirm"));
    }

    /// A CA certificate, only parsed (never used to verify: no handshake completes).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBeTCCASCgAwIBAgIUdq0mE800xPdZn+zCFc8n+JKESugwCgYIKoZIzj0EAwIw\nGzEZMBcGA1UEAwwQcmluZ3JpZnQtdGVzdC1jYTAeFw0yNjEyMDcxNTM5MjJaFw0y\nNjEyMDkxNTM5MjJaMBsxGTAXBgNVBAMMEHJpbmdyaWZ0LXRlc3QtY2EwWTATBgcq\nhkjOPQIBBggqhkjOPQMBBwNCAAQ7Acy5TrRvimB7vSirtMXKVAkGkZ5aOnDXLcGt\nHEOYKA4c1/E5KvYnbX4rTP9W79C+hfM8bmmz1gfrcTQZ0CBQo0IwQDAPBgNVHRMB\nAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4EFgQUUbE/EPVuTlnj19Ac\n39FJmo0FlEwwCgYIKoZIzj0EAwIDRwAwRAIgL3guWCFJDulb0skNJAaaD1n2n3fq\n0FQEdjdCY1BS+QUCIA/HvF8jdZXSxhLISlOum5iRfCOD3lLAxOGboeIZDhdJ\n-----END CERTIFICATE-----\n";

    #[tokio::test]
    async fn an_https_endpoint_is_never_spoken_to_in_plaintext() {
        // Without a CA: an error, not a plaintext client.
        let e = Etcd::connect(
            &["https://127.0.0.1:1".into()],
            &EtcdAuth::default(),
            Duration::from_secs(1),
            2,
        )
        .err()
        .expect("https without a CA");
        assert!(e.to_string().contains("[leader] ca"), "{e}");
        // With one: the first bytes on the wire are a TLS handshake record (0x16), not
        // the HTTP/2 preface of a plaintext call ("PRI * HTTP/2.0").
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, TEST_CA).expect("ca");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let first = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut s, _) = listener.accept().await.ok()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()?;
            Some(b[0])
        });
        let c = cluster(&format!(
            "mode = \"etcd\"\nendpoints = [\"https://127.0.0.1:{port}\"]\nca = {:?}\nttl_s = 2",
            ca.display().to_string()
        ));
        let l = Leadership::new(&c).expect("leadership");
        assert!(l.current().await.is_err(), "no etcd answered");
        let b = tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .expect("a connection came")
            .expect("task");
        assert_eq!(b, Some(0x16), "the client spoke plaintext");
        assert!(!format!("{l:?}").contains("ca.pem"));
    }

    #[tokio::test]
    async fn only_coordinators_campaign_and_an_unreachable_etcd_is_an_error() {
        let c = cluster("mode = \"etcd\"\nendpoints = [\"http://127.0.0.1:1\"]\nttl_s = 2");
        let l = Leadership::new(&c).expect("leadership");
        assert_eq!(l.mode(), "etcd");
        assert!(Campaign::new(&l, &c).is_none(), "b is not a coordinator");
        let err = l.current().await.expect_err("nothing listens on port 1");
        assert!(err.to_string().contains("etcd http://127.0.0.1:1"), "{err}");
    }
}
