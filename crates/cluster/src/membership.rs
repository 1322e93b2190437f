//! Membership by heartbeat: a pure state machine per peer, driven by "heard from" and
//! clock ticks, so it is tested without sleeping.
//!
//! ```text
//!   Unknown ──heard──▶ Alive ──silent ≥ suspect──▶ Suspect ──silent ≥ dead──▶ Dead
//!      │                 ▲  ◀────────heard (Recovered)──────┘                  │
//!      │                 └───────────────heard (Joined)────────────────────────┘
//!      └──never heard for ≥ dead since start (Left)──▶ Dead
//! ```
//!
//! Each transition yields exactly one [`Change`]: Joined (HOST_JOINED), Unhealthy
//! (NODE_UNHEALTHY), Recovered (NODE_RECOVERED), Left (HOST_LEFT). A peer heard from with
//! a new incarnation (its p2p_backend restarted between two heartbeats) yields Left then
//! Joined, so a restart is never silent.

use crate::config::Timeouts;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A peer's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Unknown,
    Alive,
    Suspect,
    Dead,
}

/// A transition worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Unknown or dead → alive (HOST_JOINED).
    Joined,
    /// Alive → suspect (NODE_UNHEALTHY).
    Unhealthy,
    /// Suspect → alive (NODE_RECOVERED).
    Recovered,
    /// → dead (HOST_LEFT).
    Left,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Joined => "joined",
            Change::Unhealthy => "unhealthy",
            Change::Recovered => "recovered",
            Change::Left => "left",
        }
    }
}

/// One peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub state: MemberState,
    pub last_seen: Option<Instant>,
    /// When it entered `state`.
    pub since: Instant,
    /// The peer's p2p_backend start time (ms since the epoch), 0 = unknown.
    pub incarnation: i64,
}

/// The peers of one node.
#[derive(Debug, Clone)]
pub struct Membership {
    timeouts: Timeouts,
    started: Instant,
    members: BTreeMap<String, Member>,
}

impl Membership {
    /// Every peer starts Unknown at `now`.
    pub fn new(peers: impl IntoIterator<Item = String>, timeouts: Timeouts, now: Instant) -> Self {
        let members = peers
            .into_iter()
            .map(|p| {
                (
                    p,
                    Member {
                        state: MemberState::Unknown,
                        last_seen: None,
                        since: now,
                        incarnation: 0,
                    },
                )
            })
            .collect();
        Membership {
            timeouts,
            started: now,
            members,
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn get(&self, peer: &str) -> Option<&Member> {
        self.members.get(peer)
    }

    pub fn members(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members.iter()
    }

    /// A heartbeat from `peer` (or its answer to ours). Unknown names are ignored (not
    /// members: empty result). `incarnation` 0 means "not told".
    pub fn heard_from(&mut self, peer: &str, incarnation: i64, now: Instant) -> Vec<Change> {
        let Some(m) = self.members.get_mut(peer) else {
            return Vec::new();
        };
        m.last_seen = Some(m.last_seen.map_or(now, |t| t.max(now)));
        let restarted = incarnation != 0 && m.incarnation != 0 && incarnation != m.incarnation;
        if incarnation != 0 {
            m.incarnation = incarnation;
        }
        let out = match m.state {
            MemberState::Unknown | MemberState::Dead => vec![Change::Joined],
            MemberState::Suspect if restarted => vec![Change::Left, Change::Joined],
            MemberState::Suspect => vec![Change::Recovered],
            MemberState::Alive if restarted => vec![Change::Left, Change::Joined],
            MemberState::Alive => return Vec::new(),
        };
        m.state = MemberState::Alive;
        m.since = now;
        out
    }

    /// Applies the timeouts at `now`: the changes, in peer-name order.
    pub fn tick(&mut self, now: Instant) -> Vec<(String, Change)> {
        let t = self.timeouts;
        let mut out = Vec::new();
        for (name, m) in &mut self.members {
            let silent = now.saturating_duration_since(m.last_seen.unwrap_or(self.started));
            let next = match m.state {
                MemberState::Alive if silent >= t.dead_after => {
                    Some((MemberState::Dead, Change::Left))
                }
                MemberState::Alive if silent >= t.suspect_after => {
                    Some((MemberState::Suspect, Change::Unhealthy))
                }
                MemberState::Suspect if silent >= t.dead_after => {
                    Some((MemberState::Dead, Change::Left))
                }
                MemberState::Unknown if silent >= t.dead_after => {
                    Some((MemberState::Dead, Change::Left))
                }
                _ => None,
            };
            if let Some((state, change)) = next {
                m.state = state;
                m.since = now;
                out.push((name.clone(), change));
            }
        }
        out
    }

    /// Seconds since `peer` was last heard from, at `now` (`None`: never).
    pub fn silent_for(&self, peer: &str, now: Instant) -> Option<Duration> {
        self.members
            .get(peer)?
            .last_seen
            .map(|t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timeouts {
        Timeouts {
            heartbeat_interval: Duration::from_secs(10),
            suspect_after: Duration::from_secs(90),
            dead_after: Duration::from_secs(180),
            rpc_timeout: Duration::from_secs(5),
        }
    }

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn alive_suspect_dead_alive_each_change_once() {
        let t0 = Instant::now();
        let mut m = Membership::new(["b".to_owned(), "c".to_owned()], t(), t0);
        assert_eq!(m.heard_from("b", 1, t0), vec![Change::Joined]);
        assert_eq!(m.heard_from("b", 1, t0 + s(1)), vec![], "alive stays quiet");
        assert_eq!(m.get("b").map(|x| x.state), Some(MemberState::Alive));
        // c heartbeats every 10 s: alive across many ticks while b is silent.
        let tick = |m: &mut Membership, at: u64| {
            m.heard_from("c", 7, t0 + s(at));
            m.tick(t0 + s(at))
        };
        for k in 1..9 {
            assert_eq!(tick(&mut m, 10 * k), vec![], "nothing before 90 s");
        }
        assert_eq!(tick(&mut m, 89), vec![]);
        assert_eq!(tick(&mut m, 91), vec![("b".to_owned(), Change::Unhealthy)]);
        assert_eq!(tick(&mut m, 120), vec![], "suspect is announced once");
        assert_eq!(m.get("b").map(|x| x.state), Some(MemberState::Suspect));
        assert_eq!(m.get("c").map(|x| x.state), Some(MemberState::Alive));
        // Dead once at 180 s.
        assert_eq!(tick(&mut m, 181), vec![("b".to_owned(), Change::Left)]);
        assert_eq!(tick(&mut m, 300), vec![], "dead is announced once");
        // c falls silent: suspect, then dead, once each.
        assert_eq!(
            m.tick(t0 + s(391)),
            vec![("c".to_owned(), Change::Unhealthy)]
        );
        assert_eq!(m.tick(t0 + s(481)), vec![("c".to_owned(), Change::Left)]);
        assert_eq!(m.tick(t0 + s(500)), vec![]);
        // Back: joined once.
        assert_eq!(m.heard_from("b", 2, t0 + s(501)), vec![Change::Joined]);
        assert_eq!(m.heard_from("b", 2, t0 + s(502)), vec![]);
        assert_eq!(m.get("b").map(|x| x.state), Some(MemberState::Alive));
    }

    #[test]
    fn suspect_recovers_and_a_quick_restart_is_left_then_joined() {
        let t0 = Instant::now();
        let mut m = Membership::new(["b".to_owned()], t(), t0);
        m.heard_from("b", 1, t0);
        assert_eq!(
            m.tick(t0 + s(95)),
            vec![("b".to_owned(), Change::Unhealthy)]
        );
        assert_eq!(m.heard_from("b", 1, t0 + s(96)), vec![Change::Recovered]);
        assert_eq!(m.tick(t0 + s(100)), vec![], "recovered: the clock restarts");
        assert_eq!(
            m.heard_from("b", 5, t0 + s(101)),
            vec![Change::Left, Change::Joined],
            "a new incarnation is a restart"
        );
        assert_eq!(m.heard_from("b", 0, t0 + s(102)), vec![], "0 = not told");
    }

    #[test]
    fn never_heard_is_dead_after_the_dead_timeout_and_strangers_are_ignored() {
        let t0 = Instant::now();
        let mut m = Membership::new(["b".to_owned()], t(), t0);
        assert_eq!(m.tick(t0 + s(100)), vec![], "unknown is not suspect");
        assert_eq!(m.tick(t0 + s(180)), vec![("b".to_owned(), Change::Left)]);
        assert_eq!(m.heard_from("zed", 1, t0), vec![]);
        assert!(m.get("zed").is_none());
    }

    #[test]
    fn alive_straight_to_dead_when_the_clock_jumps() {
        let t0 = Instant::now();
        let mut m = Membership::new(["b".to_owned()], t(), t0);
        m.heard_from("b", 1, t0);
        assert_eq!(m.tick(t0 + s(1000)), vec![("b".to_owned(), Change::Left)]);
    }
}
