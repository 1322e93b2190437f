//! The publishing seam of [`crate::Context`]: the router's outbox [`Publisher`] in a
//! daemon, a [`Recorded`] list in in-process tests (`Context::for_test`).

use ringrift_proto::{Event, wire::event::Payload};
use router_client::{ClientError, Publisher};
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
