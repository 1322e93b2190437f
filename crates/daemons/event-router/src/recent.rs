//! The router's recent-events cache: the newest committed events in seq order, bounded by
//! count (`cache_events`) and by size (`cache_bytes`), whichever is reached first, so a
//! log of large events cannot hold gigabytes in memory (100 000 × 64 KiB ≈ 6.4 GiB by
//! count alone). Subscribers behind it read from the log.

use prost::Message;
use ringrift_proto::wire;
use std::collections::VecDeque;
use std::sync::Arc;

/// The bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most events kept.
    pub events: usize,
    /// Most bytes kept (encoded size plus a fixed per-event overhead, [`size`]).
    pub bytes: usize,
}

/// The bytes an event counts for: its encoded size plus 64 for the allocation around it
/// (the log's byte accounting counts the same way).
pub fn size(e: &wire::Event) -> usize {
    e.encoded_len() + 64
}

/// Newest events in seq order, within [`Bounds`]; read it as a `VecDeque`.
#[derive(Debug)]
pub struct Recent {
    events: VecDeque<Arc<wire::Event>>,
    bytes: usize,
    bounds: Bounds,
}

impl Recent {
    pub fn new(bounds: Bounds) -> Recent {
        Recent {
            events: VecDeque::new(),
            bytes: 0,
            bounds,
        }
    }

    /// Appends newer events, then drops the oldest until within the bounds (an event
    /// larger than the byte bound alone is not kept).
    pub fn extend(&mut self, events: impl IntoIterator<Item = Arc<wire::Event>>) {
        for e in events {
            self.bytes += size(&e);
            self.events.push_back(e);
        }
        while self.events.len() > self.bounds.events || self.bytes > self.bounds.bytes {
            if self.pop_front().is_none() {
                break;
            }
        }
    }

    /// Removes the oldest event.
    pub fn pop_front(&mut self) -> Option<Arc<wire::Event>> {
        let e = self.events.pop_front()?;
        self.bytes = self.bytes.saturating_sub(size(&e));
        Some(e)
    }

    /// The bytes held (see [`size`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl std::ops::Deref for Recent {
    type Target = VecDeque<Arc<wire::Event>>;
    fn deref(&self) -> &Self::Target {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, payload: usize) -> Arc<wire::Event> {
        Arc::new(wire::Event {
            seq,
            id: format!("e{seq:04}"),
            r#type: wire::EventType::External as i32,
            payload: Some(wire::event::Payload::Json("x".repeat(payload))),
            ..Default::default()
        })
    }

    #[test]
    fn bounded_by_bytes_as_well_as_by_count() {
        let one = size(&ev(1, 60 << 10));
        let mut r = Recent::new(Bounds {
            events: 100_000,
            bytes: 10 * one,
        });
        r.extend((1..=50).map(|s| ev(s, 60 << 10)));
        assert_eq!(r.len(), 10, "50 large events, room for 10 by bytes");
        assert_eq!(r.front().map(|e| e.seq), Some(41));
        assert_eq!(r.bytes(), 10 * one);
        assert_eq!(r.pop_front().map(|e| e.seq), Some(41));
        assert_eq!(r.bytes(), 9 * one);
        let mut r = Recent::new(Bounds {
            events: 3,
            bytes: usize::MAX,
        });
        r.extend((1..=5).map(|s| ev(s, 10)));
        assert_eq!(r.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        let mut r = Recent::new(Bounds {
            events: 10,
            bytes: 100,
        });
        r.extend([ev(1, 1000)]);
        assert!(
            r.is_empty() && r.bytes() == 0,
            "larger than the bound alone"
        );
    }
}
