//! NATS JetStream as the cluster's shared engine (cluster.toml `[events] backend =
//! "jetstream"`): connecting to the servers ([`connect`]) and the work queue behind
//! `ringrift_store::work_queue::WorkQueue` ([`work_queue`]). Replication, leases and
//! redelivery are JetStream's; nothing here votes or replicates by itself. The
//! connection carries cluster.toml's `[events] user`/`password` and, with `tls_ca`,
//! requires TLS verified against that CA (the password never shows in errors).

pub mod work_queue;

pub use work_queue::JetStreamWorkQueue;

/// The node's work queue as cluster.toml says: the shared JetStream queue (one stream
/// and bucket for the cluster, `[events] replicas` copies) when `[events] backend =
/// "jetstream"`, else this node's SQLite file (`ringrift_store::work_queue::open_home`).
/// A bad cluster.toml is a config error (exit 64).
pub fn open_node_queue(
    ctx: &handler_base::Context,
) -> anyhow::Result<std::sync::Arc<dyn ringrift_store::work_queue::WorkQueue>> {
    let cluster = ringrift_cluster::ClusterConfig::load(&ctx.home, &ctx.node)
        .map_err(handler_base::ConfigError::from)?;
    match JetStreamWorkQueue::for_cluster(&cluster, &ctx.source()) {
        None => Ok(ringrift_store::work_queue::open_home(&ctx.home)?),
        Some(q) => Ok(std::sync::Arc::new(q?)),
    }
}

/// Why the JetStream backend could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("no NATS server given (cluster.toml [events] servers)")]
    NoServers,
    #[error("connect to NATS {servers}: {reason}")]
    Connect { servers: String, reason: String },
    #[error("JetStream {what}: {reason}")]
    JetStream { what: String, reason: String },
}

/// Whether `server` is a `nats://` address of another machine (a password sent there
/// crosses the network in clear).
fn in_clear(server: &str) -> bool {
    let Some(rest) = server.strip_prefix("nats://") else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    !handler_base::router_client::tls::is_local_host(host)
}

/// How [`connect`] treats the first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstConnect {
    /// Fail now when no server answers (the caller retries with its own deadline).
    FailFast,
    /// Return at once and keep trying in the background (calls fail until connected).
    Background,
}

/// Connects to `servers` (`nats://host:port` or `tls://host:port`) as `auth` says: the
/// first is preferred (list this node's own nats-server first), the others are
/// fallbacks in order; after a first connection the client reconnects by itself.
/// `name` shows in the server's connection list. A server address that does not parse
/// is an error naming it.
pub async fn connect(
    servers: &[String],
    auth: &ringrift_cluster::NatsAuth,
    name: &str,
    first: FirstConnect,
) -> Result<async_nats::Client, NatsError> {
    if servers.is_empty() {
        return Err(NatsError::NoServers);
    }
    let joined = servers.join(",");
    let addrs = servers
        .iter()
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| NatsError::Connect {
                    servers: s.clone(),
                    reason: format!("not a NATS server address: {e}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .retain_servers_order()
        .connection_timeout(std::time::Duration::from_secs(5));
    if first == FirstConnect::Background {
        opts = opts.retry_on_initial_connect();
    }
    if let Some((user, password)) = &auth.user {
        opts = opts.user_and_password(user.clone(), password.expose().to_owned());
        if auth.tls_ca.is_none() && servers.iter().any(|s| in_clear(s)) {
            tracing::warn!(
                servers = %joined,
                "events.password goes to another machine in clear: set events.tls_ca (and serve TLS)"
            );
        }
    }
    if let Some(ca) = &auth.tls_ca {
        // Read off the runtime: a small file, but the rule holds.
        let path = ca.clone();
        let tls = tokio::task::spawn_blocking(move || {
            handler_base::router_client::tls::ClientTls::from_ca_file(&path)
        })
        .await
        .map_err(|e| NatsError::Connect {
            servers: joined.clone(),
            reason: e.to_string(),
        })?
        .map_err(|mut e| {
            e.key = "events.tls_ca";
            NatsError::Connect {
                servers: joined.clone(),
                reason: e.to_string(),
            }
        })?;
        opts = opts
            .tls_client_config((*tls.rustls()).clone())
            .require_tls(true);
    }
    opts.connect(addrs).await.map_err(|e| NatsError::Connect {
        servers: joined,
        reason: e.to_string(),
    })
}

/// Makes (or opens) a KV-shaped stream `KV_<name>`: one message per key, gets from the
/// stream leader (`allow_direct` off, so a lagging replica never answers), deletes
/// allowed (a removed key leaves no tombstone, so the stream's message count is the
/// number of keys), `max_age` zero for no expiry. An existing stream with another max
/// age or direct gets on is changed to this layout. Made directly, as
/// `create_key_value` would (it first asks for account limits in a shape a 2.9 server
/// does not answer). The work queue's buckets and the router's delivery counts use it.
pub async fn kv_bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: std::time::Duration,
) -> Result<
    (
        async_nats::jetstream::kv::Store,
        async_nats::jetstream::stream::Stream,
    ),
    NatsError,
> {
    use async_nats::jetstream::stream;
    let fail = |reason: String| NatsError::JetStream {
        what: format!("bucket {name}"),
        reason,
    };
    let two_min = std::time::Duration::from_secs(120);
    let cfg = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        duplicate_window: if max_age.is_zero() {
            two_min
        } else {
            max_age.min(two_min)
        },
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: false,
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let stream = js
        .get_or_create_stream(cfg.clone())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let have = &stream.cached_info().config;
    let stream = if have.max_age != cfg.max_age || have.allow_direct {
        // A changed retention (cluster.toml) or an older layout: the server applies it.
        js.update_stream(cfg)
            .await
            .map_err(|e| fail(format!("update: {e}")))?;
        js.get_stream(format!("KV_{name}"))
            .await
            .map_err(|e| fail(e.to_string()))?
    } else {
        stream
    };
    let kv = js
        .get_key_value(name)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok((kv, stream))
}
