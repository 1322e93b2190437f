//! The wire types of `ringrift.v1` (generated) and the validated domain [`Event`].
//!
//! Wire types stop at the edge: a received `wire::Event` becomes an [`Event`] through
//! `TryFrom`, which rejects unknown types, missing or mismatched payloads, JSON that does
//! not fit the type's payload message, and oversized events.

pub mod wire {
    //! Code generated from `proto/ringrift/v1` by `build.rs`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ringrift.v1");
}

mod event;
mod scope;

pub use event::{Event, EventError, MAX_EVENT_BYTES, event_id_of, payload_to_json, type_name};
pub use scope::Scope;
pub use wire::{EventType, HealthStatus};

/// How a router's RESOURCE_EXHAUSTED message starts when its event log's disk is full:
/// the router's refusal of every publish until space returns, not a judgement of the
/// event (a publisher keeps such events and retries; RESOURCE_EXHAUSTED without it is
/// a message too large).
pub const STORAGE_FULL: &str = "router storage full";

/// Encoded `FileDescriptorSet` of every ringrift proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ringrift_descriptor.bin"));
