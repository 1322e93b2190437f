//! Prometheus counters of the router, served at `/metrics` on the gRPC port.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone)]
pub struct Metrics {
    pub published: Counter,
    pub duplicates: Counter,
    pub delivered: Counter,
    pub dead_lettered: Counter,
    pub ack_wait_expired: Counter,
    pub expired_unacked: Family<Vec<(String, String)>, Counter>,
    pub retention_removed: Counter,
    pub rejected: Counter,
    pub consumer_lag: Family<Vec<(String, String)>, Gauge>,
    pub head: Gauge,
    /// The writer connection's effective `PRAGMA synchronous` (2 = FULL, 1 = NORMAL).
    pub synchronous: Gauge,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("ringrift_router");
        let m = Metrics {
            published: Counter::default(),
            duplicates: Counter::default(),
            delivered: Counter::default(),
            dead_lettered: Counter::default(),
            ack_wait_expired: Counter::default(),
            expired_unacked: Family::default(),
            retention_removed: Counter::default(),
            rejected: Counter::default(),
            consumer_lag: Family::default(),
            head: Gauge::default(),
            synchronous: Gauge::default(),
            registry: Arc::new(Registry::default()),
        };
        r.register(
            "events_published",
            "Events stored (duplicates excluded)",
            m.published.clone(),
        );
        r.register(
            "events_duplicate",
            "Publishes acked as duplicates and not stored",
            m.duplicates.clone(),
        );
        r.register(
            "events_delivered",
            "Events sent to subscribers, redeliveries included",
            m.delivered.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Events moved to the dead-letter queue",
            m.dead_lettered.clone(),
        );
        r.register(
            "ack_wait_expired",
            "Deliveries neither acked nor nacked within the consumer's ack wait",
            m.ack_wait_expired.clone(),
        );
        r.register(
            "events_expired_unacked",
            "Events removed by retention before this durable consumer acked them",
            m.expired_unacked.clone(),
        );
        r.register(
            "events_retention_removed",
            "Events removed by retention",
            m.retention_removed.clone(),
        );
        r.register(
            "events_rejected",
            "Publishes rejected as invalid",
            m.rejected.clone(),
        );
        r.register(
            "consumer_lag",
            "Events between a durable consumer's ack floor and the head",
            m.consumer_lag.clone(),
        );
        r.register(
            "head_seq",
            "Sequence number of the newest event",
            m.head.clone(),
        );
        r.register(
            "synchronous",
            "PRAGMA synchronous of the log's writer connection (2 = FULL: fsync before each ack)",
            m.synchronous.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        handler_base::metrics::to_text_format(&out)
    }
}
