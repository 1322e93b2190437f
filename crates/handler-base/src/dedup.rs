//! Hash-based event dedup with a TTL, so handlers see each event once per window.

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

    /// True if `id` is new (and remembers it); false if seen within the TTL.
    pub fn first_time(&mut self, id: &str, now: Instant) -> bool {
        while let Some((t, old)) = self.order.front() {
            if now.duration_since(*t) < self.ttl && self.order.len() < self.max {
                break;
            }
            if self.seen.get(old) == Some(t) {
                self.seen.remove(old);
            }
            self.order.pop_front();
        }
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_owned(), now);
        self.order.push_back((now, id.to_owned()));
        true
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
        assert!(d.first_time("a", t0));
        assert!(!d.first_time("a", t0 + Duration::from_secs(299)));
        assert!(d.first_time("a", t0 + Duration::from_secs(301)));
    }

    #[test]
    fn bounded_by_max_entries() {
        let mut d = Dedup::new(Duration::from_secs(300), 3);
        let t0 = Instant::now();
        for id in ["a", "b", "c", "d", "e"] {
            assert!(d.first_time(id, t0));
        }
        assert!(d.len() <= 3, "{}", d.len());
    }
}
