//! The tonic `EventRouter` service: validates at the edge, then hands to the broker.

use crate::broker::{Broker, build_filter};
use ringrift_proto::{Event, wire};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct RouterService {
    pub broker: Arc<Broker>,
}

/// Most events one batch may carry.
pub const MAX_BATCH: usize = 10_000;

impl RouterService {
    fn validate(&self, w: wire::Event) -> Result<Event, Status> {
        Event::try_from(w).map_err(|e| {
            self.broker.metrics.rejected.inc();
            Status::invalid_argument(e.to_string())
        })
    }
}

fn ack(s: crate::store::Stored) -> wire::PublishAck {
    wire::PublishAck { seq: s.seq, duplicate: s.duplicate, id: s.id }
}

#[tonic::async_trait]
impl wire::event_router_server::EventRouter for RouterService {
    async fn publish(&self, req: Request<wire::Event>) -> Result<Response<wire::PublishAck>, Status> {
        let ev = self.validate(req.into_inner())?;
        let mut stored = self.broker.publish(vec![ev]).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let s = stored.pop().ok_or_else(|| Status::internal("store returned no ack"))?;
        Ok(Response::new(ack(s)))
    }

    async fn publish_batch(&self, req: Request<wire::PublishBatchRequest>) -> Result<Response<wire::PublishBatchResponse>, Status> {
        let events = req.into_inner().events;
        if events.len() > MAX_BATCH {
            self.broker.metrics.rejected.inc();
            return Err(Status::invalid_argument(format!("batch of {} events is larger than {MAX_BATCH}", events.len())));
        }
        let mut valid = Vec::with_capacity(events.len());
        for (i, w) in events.into_iter().enumerate() {
            let ev = self.validate(w).map_err(|s| Status::invalid_argument(format!("event {i}: {}", s.message())))?;
            valid.push(ev);
        }
        let stored = self.broker.publish(valid).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(wire::PublishBatchResponse { acks: stored.into_iter().map(ack).collect() }))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<wire::Event, Status>> + Send>>;

    async fn subscribe(&self, req: Request<wire::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = req.into_inner();
        if req.consumer.len() > 200 || req.consumer.chars().any(|c| c.is_control()) {
            return Err(Status::invalid_argument("consumer name must be at most 200 printable characters"));
        }
        let filter = build_filter(&req.types, &req.prefixes)?;
        let rx = self.broker.subscribe(req, filter).await?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn ack(&self, req: Request<wire::AckRequest>) -> Result<Response<wire::AckResponse>, Status> {
        let r = req.into_inner();
        let floor = self.broker.ack(&r.consumer, r.seq, r.cumulative)?;
        Ok(Response::new(wire::AckResponse { ack_floor: floor }))
    }

    async fn nack(&self, req: Request<wire::NackRequest>) -> Result<Response<wire::NackResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.broker.nack(&r.consumer, r.seq, &r.reason).await?))
    }

    async fn list_dead_letters(&self, req: Request<wire::ListDeadLettersRequest>) -> Result<Response<wire::ListDeadLettersResponse>, Status> {
        let r = req.into_inner();
        let letters = self.broker.list_dead_letters(r.consumer, r.include_resolved).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(wire::ListDeadLettersResponse { letters }))
    }

    async fn retry_dead_letter(&self, req: Request<wire::RetryDeadLetterRequest>) -> Result<Response<wire::RetryDeadLetterResponse>, Status> {
        let letter = self.broker.retry_dead_letter(req.into_inner().id).await?;
        Ok(Response::new(wire::RetryDeadLetterResponse { letter: Some(letter) }))
    }

    async fn resolve_dead_letter(&self, req: Request<wire::ResolveDeadLetterRequest>) -> Result<Response<wire::ResolveDeadLetterResponse>, Status> {
        let r = req.into_inner();
        let letter = self.broker.resolve_dead_letter(r.id, r.state).await?;
        Ok(Response::new(wire::ResolveDeadLetterResponse { letter: Some(letter) }))
    }

    async fn purge_dead_letters(&self, req: Request<wire::PurgeDeadLettersRequest>) -> Result<Response<wire::PurgeDeadLettersResponse>, Status> {
        let purged = self.broker.purge_dead_letters(req.into_inner().consumer).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(wire::PurgeDeadLettersResponse { purged }))
    }

    async fn stats(&self, _req: Request<wire::StatsRequest>) -> Result<Response<wire::StatsResponse>, Status> {
        let m = &self.broker.metrics;
        Ok(Response::new(wire::StatsResponse {
            head_seq: self.broker.head(),
            first_seq: self.broker.first_cached(),
            published: m.published.get(),
            duplicates: m.duplicates.get(),
            delivered: m.delivered.get(),
            dead_lettered: m.dead_lettered.get(),
            consumers: self.broker.consumer_stats(),
        }))
    }
}
