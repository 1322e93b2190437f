//! Hash-based event dedup with a TTL, so handlers see each handled event once per window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Remembers ids for `ttl`; bounded by `max` entries (oldest forgotten first).
#[derive(Debug)]
pub struct Dedup {
    ttl: Duration,
    max: usize,
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Dedup {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Dedup {
            ttl,
            max,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// True if `id` was recorded within the TTL.
    pub fn seen(&mut self, id: &str, now: Instant) -> bool {
        self.expire(now);
        self.seen.contains_key(id)
    }

    /// Remembers `id` as handled (call it only after the handler succeeded, so a failed
    /// event is handled again when redelivered).
    pub fn record(&mut self, id: &str, now: Instant) {
        self.expire(now);
        self.seen.insert(id.to_owned(), now);
        self.order.push_back((now, id.to_owned()));
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, old)) = self.order.front() {
            if now.duration_since(*t) < self.ttl && self.order.len() < self.max {
                break;
            }
            if self.seen.get(old) == Some(t) {
                self.seen.remove(old);
            }
            self.order.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_within_ttl_is_caught_and_forgotten_after() {
        let mut d = Dedup::new(Duration::from_secs(300), 100);
        let t0 = Instant::now();
        assert!(!d.seen("a", t0));
        d.record("a", t0);
        assert!(d.seen("a", t0 + Duration::from_secs(299)));
        assert!(!d.seen("a", t0 + Duration::from_secs(301)));
    }

    #[test]
    fn an_id_checked_but_not_recorded_is_not_a_duplicate() {
        let mut d = Dedup::new(Duration::from_secs(300), 100);
        let t0 = Instant::now();
        assert!(!d.seen("failed", t0));
        assert!(
            !d.seen("failed", t0),
            "only a recorded (handled) id is a duplicate"
        );
    }

    #[test]
    fn bounded_by_max_entries() {
        let mut d = Dedup::new(Duration::from_secs(300), 3);
        let t0 = Instant::now();
        for id in ["a", "b", "c", "d", "e"] {
            assert!(!d.seen(id, t0));
            d.record(id, t0);
        }
        assert!(d.len() <= 3, "{}", d.len());
    }
}
