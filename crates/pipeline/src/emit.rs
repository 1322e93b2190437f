//! Where daemon decisions publish their events: the router in production, a recorder in
//! tests (dependency injection instead of a live router).

use ringrift_proto::{Event, wire::event::Payload};
use std::sync::Mutex;

#[async_trait::async_trait]
pub trait Emit: Send + Sync {
    /// Publishes and waits until the router has made the event durable.
    async fn emit(&self, ev: Event) -> anyhow::Result<()>;
}

/// A daemon's `Context::publisher`.
#[async_trait::async_trait]
impl Emit for std::sync::Arc<dyn handler_base::Publish> {
    async fn emit(&self, ev: Event) -> anyhow::Result<()> {
        self.publish_acked(ev).await?;
        Ok(())
    }
}

/// Records emitted events (tests).
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Payloads only, for matching.
    pub fn payloads(&self) -> Vec<Payload> {
        self.events().into_iter().map(|e| e.payload).collect()
    }
}

#[async_trait::async_trait]
impl Emit for Recorder {
    async fn emit(&self, ev: Event) -> anyhow::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(ev);
        Ok(())
    }
}

/// An event with a dedup id and config key: re-emitting the same decision after a
/// restart is recognised by the router instead of stored twice.
pub fn event(payload: Payload, id: impl Into<String>, config: &str) -> Event {
    Event::new(payload).with_id(id).with_config(config)
}
