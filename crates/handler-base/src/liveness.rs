//! Loop liveness: each loop marks when it is inside a handler call, and the daemon counts
//! as progressing (watchdog ping, healthy heartbeat) only while no loop has been stuck in
//! one call longer than `stuck_after`. A loop waiting for its next tick or event is
//! progressing; a loop that died ends the process instead (see `run_daemon`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One loop's state: `Some(since)` while inside a handler call.
#[derive(Default)]
pub(crate) struct Pulse(Mutex<Option<Instant>>);

/// Marks the loop busy until dropped.
pub(crate) struct Busy<'a>(&'a Pulse);

impl Pulse {
    pub fn busy(&self) -> Busy<'_> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Busy(self)
    }

    fn busy_since(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The loops of one daemon.
pub(crate) struct Liveness {
    stuck_after: Duration,
    loops: Mutex<Vec<(&'static str, Arc<Pulse>)>>,
}

impl Liveness {
    pub fn new(stuck_after: Duration) -> Liveness {
        Liveness {
            stuck_after,
            loops: Mutex::new(Vec::new()),
        }
    }

    /// A new loop's pulse.
    pub fn register(&self, name: &'static str) -> Arc<Pulse> {
        let p = Arc::new(Pulse::default());
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, p.clone()));
        p
    }

    /// Why the daemon is not progressing at `now`, if it is not.
    pub fn stalled(&self, now: Instant) -> Option<String> {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.iter().find_map(|(name, p)| {
            let since = p.busy_since()?;
            let busy = now.saturating_duration_since(since);
            (busy > self.stuck_after).then(|| {
                format!(
                    "{name} loop stuck in one call for {:.0} s (limit {:.0} s)",
                    busy.as_secs_f64(),
                    self.stuck_after.as_secs_f64()
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_busy_longer_than_the_limit_is_stalled_and_recovers_when_the_call_ends() {
        let l = Liveness::new(Duration::from_secs(60));
        let cycle = l.register("cycle");
        let _events = l.register("event");
        let now = Instant::now();
        assert_eq!(
            l.stalled(now + Duration::from_secs(3600)),
            None,
            "idle loops progress"
        );
        let busy = cycle.busy();
        assert_eq!(l.stalled(now + Duration::from_secs(30)), None);
        let why = l.stalled(now + Duration::from_secs(61)).expect("stalled");
        assert!(why.starts_with("cycle loop stuck"), "{why}");
        drop(busy);
        assert_eq!(l.stalled(now + Duration::from_secs(3600)), None);
    }
}
