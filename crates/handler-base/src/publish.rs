//! The publishing seam of [`crate::Context`]: the router's outbox [`Publisher`] in a
//! daemon, a [`Recorded`] list in in-process tests (`Context::for_test`), and what the
//! publisher's state does to the daemon's health.

use crate::health::{HealthCheckResult, HealthStatus};
use crate::router_client::{ClientError, Publisher};
use ringrift_proto::{Event, wire::event::Payload};
use std::sync::{Arc, Mutex};

/// Where a daemon's events go.
#[async_trait::async_trait]
pub trait Publish: Send + Sync {
    /// Stores the event in the outbox (it survives router outages); returns once stored.
    async fn publish_stored(&self, event: Event) -> Result<(), ClientError>;
    /// Returns once the router has made the event durable.
    async fn publish_acked(&self, event: Event) -> Result<(), ClientError>;
    /// State (heartbeats): a newer event replaces one not sent yet.
    fn publish_latest(&self, event: Event);
    /// Events not yet acked by the router.
    fn buffered(&self) -> usize;
    /// Why the router refuses this daemon's publishes (its token), while it does.
    fn refused(&self) -> Option<String> {
        None
    }
    /// Events the router refused as malformed, kept in the outbox's rejected table.
    fn rejected(&self) -> u64 {
        0
    }
}

/// An event with a dedup id and config key, as a daemon decision publishes it:
/// re-publishing the same decision after a restart is recognised by the router (same
/// id) instead of stored twice.
pub fn event(payload: Payload, id: impl Into<String>, config: &str) -> Event {
    Event::new(payload).with_id(id).with_config(config)
}

/// A daemon whose publishes the router refuses is DEGRADED with the reason (its events
/// wait in the outbox); the count of events kept as rejected is a detail.
pub(crate) fn publisher_health(h: &mut HealthCheckResult, p: &dyn Publish) {
    if let Some(why) = p.refused() {
        if h.status == HealthStatus::Running {
            h.status = HealthStatus::Degraded;
            h.message = format!("{why}; {} events wait in the outbox", p.buffered());
        }
        h.details.insert("publish_refused".into(), why);
    }
    let rejected = p.rejected();
    if rejected > 0 {
        h.details
            .insert("outbox_rejected".into(), rejected.to_string());
    }
}

#[async_trait::async_trait]
impl Publish for Publisher {
    async fn publish_stored(&self, event: Event) -> Result<(), ClientError> {
        Publisher::publish_stored(self, event).await
    }
    async fn publish_acked(&self, event: Event) -> Result<(), ClientError> {
        Publisher::publish_acked(self, event).await.map(|_| ())
    }
    fn publish_latest(&self, event: Event) {
        Publisher::publish_latest(self, event)
    }
    fn buffered(&self) -> usize {
        Publisher::buffered(self)
    }
    fn refused(&self) -> Option<String> {
        Publisher::refused(self)
    }
    fn rejected(&self) -> u64 {
        Publisher::rejected(self)
    }
}

/// Records what a daemon published, in order (tests). Clones share the list.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<Event>>>);

impl Recorded {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Payloads only, for matching.
    pub fn payloads(&self) -> Vec<Payload> {
        self.events().into_iter().map(|e| e.payload).collect()
    }
    fn push(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

#[async_trait::async_trait]
impl Publish for Recorded {
    async fn publish_stored(&self, event: Event) -> Result<(), ClientError> {
        self.push(event);
        Ok(())
    }
    async fn publish_acked(&self, event: Event) -> Result<(), ClientError> {
        self.push(event);
        Ok(())
    }
    fn publish_latest(&self, event: Event) {
        self.push(event);
    }
    fn buffered(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publisher the router refuses, holding `buffered` events.
    struct Refused(usize);

    #[async_trait::async_trait]
    impl Publish for Refused {
        async fn publish_stored(&self, _event: Event) -> Result<(), ClientError> {
            Ok(())
        }
        async fn publish_acked(&self, _event: Event) -> Result<(), ClientError> {
            Ok(())
        }
        fn publish_latest(&self, _event: Event) {}
        fn buffered(&self) -> usize {
            self.0
        }
        fn refused(&self) -> Option<String> {
            Some("router refuses publishes (Unauthenticated): wrong token".into())
        }
        fn rejected(&self) -> u64 {
            2
        }
    }

    #[test]
    fn a_refused_publisher_turns_a_running_daemon_degraded_with_the_reason() {
        let mut h = HealthCheckResult::running("ok");
        publisher_health(&mut h, &Refused(300));
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(h.message.contains("wrong token"), "{}", h.message);
        assert!(h.message.contains("300 events"), "{}", h.message);
        assert_eq!(h.details["outbox_rejected"], "2");
        // Worse states stay as they are; the reason is still a detail.
        let mut e = HealthCheckResult::error("writer stuck");
        publisher_health(&mut e, &Refused(1));
        assert_eq!(e.status, HealthStatus::Error);
        assert!(e.details["publish_refused"].contains("wrong token"));
        // A publisher the router accepts changes nothing.
        let mut fine = HealthCheckResult::running("ok");
        publisher_health(&mut fine, &Recorded::default());
        assert_eq!(fine, HealthCheckResult::running("ok"));
    }
}
