//! The one storage seam of the router: [`Backend`], implemented by the SQLite log
//! ([`crate::broker::Broker`]) and by NATS JetStream ([`crate::jetstream::JetStreamBroker`]),
//! so the gRPC service (`service.rs`) is written once and daemons never know which runs.

use crate::log::{Filter, Stored};
use crate::metrics::Metrics;
use ringrift_proto::{Event, wire};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// What an `Ack` request asks of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOp {
    /// Acks `seq`; `cumulative`: also the lower seqs its session delivered before it,
    /// never a redelivery sent after it.
    Ack { cumulative: bool },
    /// Not an ack: the consumer still holds `seq`, whose ack wait restarts. `started`:
    /// it is working on it, so a session that ends holding it counts a failed delivery;
    /// otherwise it is still queued at the consumer, and a session that ends holding it
    /// (a daemon restart, a router stop) counts nothing. Started stays started for the
    /// session.
    Progress { started: bool },
}

impl AckOp {
    pub fn of(r: &wire::AckRequest) -> AckOp {
        if r.in_progress {
            AckOp::Progress { started: !r.queued }
        } else {
            AckOp::Ack {
                cumulative: r.cumulative,
            }
        }
    }
}

/// The receiving end of one delivery session.
pub type Deliveries = mpsc::Receiver<Result<wire::Event, Status>>;

/// Everything the `EventRouter` service asks of a log. Errors are gRPC statuses because
/// the only caller is the service, which returns them unchanged.
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stores validated events; one [`Stored`] per event, in order, each durable (or a
    /// duplicate of a stored one) when this returns.
    async fn publish(&self, events: Vec<Event>) -> Result<Vec<Stored>, Status>;
    /// Starts a delivery session (durable when `req.consumer` is set).
    async fn subscribe(
        self: Arc<Self>,
        req: wire::SubscribeRequest,
        filter: Filter,
    ) -> Result<Deliveries, Status>;
    /// Acks `seq`, or reports progress on it ([`AckOp`]); returns the consumer's ack
    /// floor.
    async fn ack(&self, consumer: &str, seq: u64, op: AckOp) -> Result<u64, Status>;
    async fn nack(
        &self,
        consumer: &str,
        seq: u64,
        reason: &str,
    ) -> Result<wire::NackResponse, Status>;
    async fn list_dead_letters(
        &self,
        consumer: String,
        include_resolved: bool,
    ) -> Result<Vec<wire::DeadLetter>, Status>;
    async fn retry_dead_letter(&self, id: u64) -> Result<wire::DeadLetter, Status>;
    async fn resolve_dead_letter(&self, id: u64, state: i32) -> Result<wire::DeadLetter, Status>;
    async fn purge_dead_letters(&self, consumer: String) -> Result<u64, Status>;
    /// Which of `ids` the log holds (stored at or after `since_unix_ms`), with their seq.
    async fn lookup(
        &self,
        ids: Vec<String>,
        since_unix_ms: i64,
    ) -> Result<HashMap<String, u64>, Status>;
    async fn stats(&self) -> Result<wire::StatsResponse, Status>;
    /// `Err(why)` while the log cannot take writes (health, heartbeat, watchdog).
    fn health(&self) -> Result<(), String>;
    fn metrics(&self) -> &Metrics;
    /// Cancelled at shutdown: ends every session and publish stream.
    fn closing(&self) -> &tokio_util::sync::CancellationToken;
    /// Subscription sessions that have not yet handed back what they hold (a stopping
    /// router waits for them, bounded). The SQLite log keeps nothing outside its file.
    fn open_sessions(&self) -> usize {
        0
    }
}
