//! The tonic `EventRouter` service: validates at the edge, then hands to the broker.

use crate::broker::{Broker, build_filter};
use futures_util::stream::{FuturesOrdered, StreamExt};
use ringrift_proto::{Event, wire};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct RouterService {
    pub broker: Arc<Broker>,
}

/// Most events one batch may carry.
pub const MAX_BATCH: usize = 10_000;

/// PublishStream: most events handed to the log in one piece.
pub const STREAM_BATCH: usize = 256;
/// PublishStream: most events read from the stream and not yet acked; past this the
/// router stops reading (HTTP/2 flow control then holds the client back).
pub const STREAM_IN_FLIGHT: usize = 4096;

impl RouterService {
    fn validate(&self, w: wire::Event) -> Result<Event, Status> {
        Event::try_from(w).map_err(|e| {
            self.broker.metrics.rejected.inc();
            Status::invalid_argument(e.to_string())
        })
    }
}

fn ack(s: crate::store::Stored) -> wire::PublishAck {
    wire::PublishAck { seq: s.seq, duplicate: s.duplicate, id: s.id, error: String::new() }
}

/// The acks of one PublishStream batch, in order, once its commit is done.
type AckBatch = Pin<Box<dyn Future<Output = Result<Vec<wire::PublishAck>, Status>> + Send>>;

/// Validates one batch read from a PublishStream and hands the valid events to the log;
/// the future resolves to one ack per event (rejections in place) after the commit.
fn stream_batch(broker: &Arc<Broker>, events: Vec<wire::Event>) -> AckBatch {
    let mut valid = Vec::with_capacity(events.len());
    // One slot per event: None = stored (ack comes from the log), Some = rejected.
    let mut slots: Vec<Option<wire::PublishAck>> = Vec::with_capacity(events.len());
    for w in events {
        let id = w.id.clone();
        match Event::try_from(w) {
            Ok(ev) => {
                valid.push(ev);
                slots.push(None);
            }
            Err(e) => {
                broker.metrics.rejected.inc();
                slots.push(Some(wire::PublishAck { seq: 0, duplicate: false, id, error: e.to_string() }));
            }
        }
    }
    if valid.is_empty() {
        let acks = slots.into_iter().flatten().collect();
        return Box::pin(std::future::ready(Ok(acks)));
    }
    let broker = broker.clone();
    Box::pin(async move {
        let stored = broker.publish(valid).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let mut stored = stored.into_iter();
        let mut acks = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot {
                Some(rejected) => acks.push(rejected),
                None => acks.push(ack(stored.next().ok_or_else(|| Status::internal("store returned too few acks"))?)),
            }
        }
        Ok(acks)
    })
}

/// The ack stream of one PublishStream, driven by the response body itself (no task or
/// channel in between): each poll reads whatever events have arrived (while earlier
/// batches commit), hands them to the log as one batch, and yields the acks of finished
/// commits in the order the events came.
struct AckStream {
    broker: Arc<Broker>,
    input: Streaming<wire::Event>,
    inflight: FuturesOrdered<AckBatch>,
    /// Events read and not yet acked.
    queued: usize,
    reading: bool,
    ready: VecDeque<wire::PublishAck>,
    /// Sent after the last ack: why the stream ends early.
    stop: Option<Status>,
    closing: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    finished: bool,
}

impl AckStream {
    fn new(broker: Arc<Broker>, input: Streaming<wire::Event>) -> AckStream {
        let closing = Box::pin(broker.closing.clone().cancelled_owned());
        AckStream { broker, input, inflight: FuturesOrdered::new(), queued: 0, reading: true, ready: VecDeque::new(), stop: None, closing, finished: false }
    }

    /// Reads every event already available into batches of at most STREAM_BATCH.
    fn pump_input(&mut self, cx: &mut Context<'_>) {
        if self.reading && self.closing.as_mut().poll(cx).is_ready() {
            self.reading = false;
            self.stop = Some(Status::unavailable("router is shutting down; resend the events that were not acked"));
        }
        let mut batch = Vec::new();
        while self.reading && self.queued + batch.len() < STREAM_IN_FLIGHT {
            match self.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(ev))) => {
                    batch.push(ev);
                    if batch.len() >= STREAM_BATCH {
                        self.queued += batch.len();
                        self.inflight.push_back(stream_batch(&self.broker, std::mem::take(&mut batch)));
                    }
                }
                Poll::Ready(Some(Err(status))) => {
                    // The client reset the stream or sent something undecodable.
                    self.reading = false;
                    self.stop = Some(status);
                }
                Poll::Ready(None) => self.reading = false,
                Poll::Pending => break,
            }
        }
        if !batch.is_empty() {
            self.queued += batch.len();
            self.inflight.push_back(stream_batch(&self.broker, batch));
        }
    }
}

impl Stream for AckStream {
    type Item = Result<wire::PublishAck, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        this.pump_input(cx);
        // Also starts the batches just queued (their first poll sends them to the writer).
        while let Poll::Ready(Some(done)) = this.inflight.poll_next_unpin(cx) {
            match done {
                Ok(acks) => {
                    this.queued -= acks.len();
                    this.ready.extend(acks);
                }
                Err(status) => {
                    // A commit failed: later acks would break the order, so end here.
                    this.reading = false;
                    this.inflight = FuturesOrdered::new();
                    this.stop = Some(status);
                    break;
                }
            }
        }
        if let Some(a) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(a)));
        }
        if this.reading || !this.inflight.is_empty() {
            return Poll::Pending;
        }
        this.finished = true;
        Poll::Ready(this.stop.take().map(Err))
    }
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

    type PublishStreamStream = Pin<Box<dyn Stream<Item = Result<wire::PublishAck, Status>> + Send>>;

    async fn publish_stream(&self, req: Request<Streaming<wire::Event>>) -> Result<Response<Self::PublishStreamStream>, Status> {
        Ok(Response::new(Box::pin(AckStream::new(self.broker.clone(), req.into_inner()))))
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
