//! NATS JetStream as the cluster's shared engine (cluster.toml `[events] backend =
//! "jetstream"`): connecting to the servers ([`connect`]) and the work queue behind
//! `ringrift_store::work_queue::WorkQueue` ([`work_queue`]). Replication, leases and
//! redelivery are JetStream's; nothing here votes or replicates by itself.

pub mod work_queue;

pub use work_queue::JetStreamWorkQueue;

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

/// Connects to any of `servers` (`nats://host:port`; the client fails over between them
/// and reconnects by itself after a first connection). `name` shows in the server's
/// connection list.
pub async fn connect(servers: &[String], name: &str) -> Result<async_nats::Client, NatsError> {
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
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(addrs)
        .await
        .map_err(|e| NatsError::Connect {
            servers: joined,
            reason: e.to_string(),
        })
}
