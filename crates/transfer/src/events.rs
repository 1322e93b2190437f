//! The events of a transfer: DATA_SYNC_STARTED / COMPLETED / FAILED, one shape for every
//! daemon that moves data.

use ringrift_proto::Event;
use ringrift_proto::wire::{self, event::Payload};
use std::time::Duration;

/// One transfer between two nodes (or a node and a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub source_node: String,
    pub target_node: String,
}

impl Transfer {
    pub fn new(source: &str, target: &str) -> Transfer {
        Transfer {
            source_node: source.to_owned(),
            target_node: target.to_owned(),
        }
    }

    fn payload(&self, files: u64, bytes: u64, error: &str, took: Duration) -> wire::DataSync {
        wire::DataSync {
            source_node: self.source_node.clone(),
            target_node: self.target_node.clone(),
            files,
            bytes,
            // Bounded: an event carries metadata (the router's limit is 64 KiB).
            error: error.chars().take(1000).collect(),
            duration_s: took.as_secs_f64(),
        }
    }

    pub fn started(&self, config: &str) -> Event {
        Event::new(Payload::DataSyncStarted(self.payload(
            0,
            0,
            "",
            Duration::ZERO,
        )))
        .with_config(config)
    }

    pub fn completed(&self, config: &str, files: u64, bytes: u64, took: Duration) -> Event {
        Event::new(Payload::DataSyncCompleted(
            self.payload(files, bytes, "", took),
        ))
        .with_config(config)
    }

    pub fn failed(&self, config: &str, error: &str, took: Duration) -> Event {
        Event::new(Payload::DataSyncFailed(self.payload(0, 0, error, took))).with_config(config)
    }
}
