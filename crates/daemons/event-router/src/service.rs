//! The tonic `EventRouter` service: validates at the edge, then hands to the broker.

use crate::backend::Backend;
use crate::log::build_filter;
use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};
use ringrift_proto::{Event, wire};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct RouterService {
    pub broker: Arc<dyn Backend>,
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
            self.broker.metrics().rejected.inc();
            Status::invalid_argument(e.to_string())
        })
    }
}

fn ack(s: crate::log::Stored) -> wire::PublishAck {
    wire::PublishAck {
        seq: s.seq,
        duplicate: s.duplicate,
        id: s.id,
        error: String::new(),
    }
}

/// The acks of one PublishStream batch, in order, once its commit is done.
type AckBatch = Pin<Box<dyn Future<Output = Result<Vec<wire::PublishAck>, Status>> + Send>>;

/// Validates one batch read from a PublishStream and hands the valid events to the log;
/// the future resolves to one ack per event (rejections in place) after the commit.
fn stream_batch(broker: &Arc<dyn Backend>, events: Vec<wire::Event>) -> AckBatch {
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
                broker.metrics().rejected.inc();
                slots.push(Some(wire::PublishAck {
                    seq: 0,
                    duplicate: false,
                    id,
                    error: e.to_string(),
                }));
            }
        }
    }
    if valid.is_empty() {
        let acks = slots.into_iter().flatten().collect();
        return Box::pin(std::future::ready(Ok(acks)));
    }
    let broker = broker.clone();
    Box::pin(async move {
        let stored = broker.publish(valid).await?;
        let mut stored = stored.into_iter();
        let mut acks = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot {
                Some(rejected) => acks.push(rejected),
                None => acks.push(ack(stored
                    .next()
                    .ok_or_else(|| Status::internal("store returned too few acks"))?)),
            }
        }
        Ok(acks)
    })
}

/// Drives one PublishStream: reads events while earlier batches commit, keeps their
/// commits in an ordered queue and sends the acks in the order the events came.
async fn run_publish_stream(
    broker: Arc<dyn Backend>,
    mut input: Streaming<wire::Event>,
    out: mpsc::Sender<Result<Vec<wire::PublishAck>, Status>>,
) {
    let mut inflight: FuturesOrdered<AckBatch> = FuturesOrdered::new();
    let mut queued = 0usize;
    let mut reading = true;
    let mut stop: Option<Status> = None;
    loop {
        tokio::select! {
            biased;
            Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                Ok(acks) => {
                    queued -= acks.len();
                    if out.send(Ok(acks)).await.is_err() {
                        return; // the client went away
                    }
                }
                Err(status) => {
                    // A commit failed: acks after it would arrive out of order, so end here.
                    let _ = out.send(Err(status)).await;
                    return;
                }
            },
            _ = broker.closing().cancelled(), if reading => {
                reading = false;
                stop = Some(Status::unavailable("router is shutting down; resend the events that were not acked"));
            }
            msg = input.next(), if reading && queued < STREAM_IN_FLIGHT => match msg {
                Some(Ok(first)) => {
                    let mut batch = vec![first];
                    // Take whatever else has already arrived, without waiting.
                    while batch.len() < STREAM_BATCH && queued + batch.len() < STREAM_IN_FLIGHT {
                        match input.next().now_or_never() {
                            Some(Some(Ok(ev))) => batch.push(ev),
                            Some(Some(Err(status))) => {
                                reading = false;
                                stop = Some(status);
                                break;
                            }
                            Some(None) => {
                                reading = false;
                                break;
                            }
                            None => break,
                        }
                    }
                    queued += batch.len();
                    inflight.push_back(stream_batch(&broker, batch));
                }
                Some(Err(status)) => {
                    // The client reset the stream or sent something undecodable.
                    reading = false;
                    stop = Some(status);
                }
                None => reading = false,
            },
            else => break,
        }
    }
    if let Some(status) = stop {
        let _ = out.send(Err(status)).await;
    }
}

#[tonic::async_trait]
impl wire::event_router_server::EventRouter for RouterService {
    async fn publish(
        &self,
        req: Request<wire::Event>,
    ) -> Result<Response<wire::PublishAck>, Status> {
        let ev = self.validate(req.into_inner())?;
        let mut stored = self.broker.publish(vec![ev]).await?;
        let s = stored
            .pop()
            .ok_or_else(|| Status::internal("store returned no ack"))?;
        Ok(Response::new(ack(s)))
    }

    async fn publish_batch(
        &self,
        req: Request<wire::PublishBatchRequest>,
    ) -> Result<Response<wire::PublishBatchResponse>, Status> {
        let events = req.into_inner().events;
        if events.len() > MAX_BATCH {
            self.broker.metrics().rejected.inc();
            return Err(Status::invalid_argument(format!(
                "batch of {} events is larger than {MAX_BATCH}",
                events.len()
            )));
        }
        let mut valid = Vec::with_capacity(events.len());
        for (i, w) in events.into_iter().enumerate() {
            let ev = self
                .validate(w)
                .map_err(|s| Status::invalid_argument(format!("event {i}: {}", s.message())))?;
            valid.push(ev);
        }
        let stored = self.broker.publish(valid).await?;
        Ok(Response::new(wire::PublishBatchResponse {
            acks: stored.into_iter().map(ack).collect(),
        }))
    }

    type PublishStreamStream = Pin<Box<dyn Stream<Item = Result<wire::PublishAck, Status>> + Send>>;

    async fn publish_stream(
        &self,
        req: Request<Streaming<wire::Event>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run_publish_stream(
            self.broker.clone(),
            req.into_inner(),
            tx,
        ));
        let acks = tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(|batch| {
            let items: Vec<Result<wire::PublishAck, Status>> = match batch {
                Ok(acks) => acks.into_iter().map(Ok).collect(),
                Err(status) => vec![Err(status)],
            };
            futures_util::stream::iter(items)
        });
        Ok(Response::new(Box::pin(acks)))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<wire::Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<wire::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = req.into_inner();
        if req.consumer.len() > 200 || req.consumer.chars().any(|c| c.is_control()) {
            return Err(Status::invalid_argument(
                "consumer name must be at most 200 printable characters",
            ));
        }
        let filter = build_filter(&req.types, &req.prefixes)?;
        let rx = self.broker.clone().subscribe(req, filter).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack(
        &self,
        req: Request<wire::AckRequest>,
    ) -> Result<Response<wire::AckResponse>, Status> {
        let r = req.into_inner();
        let floor = self
            .broker
            .ack(&r.consumer, r.seq, crate::backend::AckOp::of(&r))
            .await?;
        Ok(Response::new(wire::AckResponse { ack_floor: floor }))
    }

    async fn nack(
        &self,
        req: Request<wire::NackRequest>,
    ) -> Result<Response<wire::NackResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.broker.nack(&r.consumer, r.seq, &r.reason).await?,
        ))
    }

    async fn list_dead_letters(
        &self,
        req: Request<wire::ListDeadLettersRequest>,
    ) -> Result<Response<wire::ListDeadLettersResponse>, Status> {
        let r = req.into_inner();
        let letters = self
            .broker
            .list_dead_letters(r.consumer, r.include_resolved)
            .await?;
        Ok(Response::new(wire::ListDeadLettersResponse { letters }))
    }

    async fn retry_dead_letter(
        &self,
        req: Request<wire::RetryDeadLetterRequest>,
    ) -> Result<Response<wire::RetryDeadLetterResponse>, Status> {
        let letter = self.broker.retry_dead_letter(req.into_inner().id).await?;
        Ok(Response::new(wire::RetryDeadLetterResponse {
            letter: Some(letter),
        }))
    }

    async fn resolve_dead_letter(
        &self,
        req: Request<wire::ResolveDeadLetterRequest>,
    ) -> Result<Response<wire::ResolveDeadLetterResponse>, Status> {
        let r = req.into_inner();
        let letter = self.broker.resolve_dead_letter(r.id, r.state).await?;
        Ok(Response::new(wire::ResolveDeadLetterResponse {
            letter: Some(letter),
        }))
    }

    async fn purge_dead_letters(
        &self,
        req: Request<wire::PurgeDeadLettersRequest>,
    ) -> Result<Response<wire::PurgeDeadLettersResponse>, Status> {
        let purged = self
            .broker
            .purge_dead_letters(req.into_inner().consumer)
            .await?;
        Ok(Response::new(wire::PurgeDeadLettersResponse { purged }))
    }

    async fn lookup(
        &self,
        req: Request<wire::LookupRequest>,
    ) -> Result<Response<wire::LookupResponse>, Status> {
        let r = req.into_inner();
        if r.ids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "lookup of {} ids is larger than {MAX_BATCH}",
                r.ids.len()
            )));
        }
        let seqs = self.broker.lookup(r.ids, r.since_unix_ms).await?;
        Ok(Response::new(wire::LookupResponse { seqs }))
    }

    async fn stats(
        &self,
        _req: Request<wire::StatsRequest>,
    ) -> Result<Response<wire::StatsResponse>, Status> {
        Ok(Response::new(self.broker.stats().await?))
    }
}
