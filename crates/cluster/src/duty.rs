//! Leader-only duties (promotion, tournaments): act only while this node leads, confirm
//! the token right before each side effect, pass it to the write (whose store refuses a
//! stale one), watch it while a long job runs ([`LeaderDuty::until_lost`]), pull events
//! only while leading, and give back an event that arrives while this node does not lead.
//!
//! These daemons are cluster-scoped (registry `scope = "cluster"`): one durable consumer
//! `<daemon>` serves every copy. [`LeaderDuty::pull_gate`] keeps it closed on a follower,
//! so only the leader's copy pulls; the others open no session and take nothing. An event
//! that still reaches a non-leader (the gate lags a leadership change by up to
//! [`GATE_POLL`], or the token is refused at the side effect) is nacked, never acked: on
//! a shared JetStream log it returns to the consumer for the leader's copy; on a
//! node-local SQLite log it stays in this node's log. Why not per-node consumers whose
//! followers ack and ignore their copy (the design before scopes): an event delivered to
//! a node while it was not yet the leader (a failover) was then dropped by every node.
//! Why not followers that pull and nack: every nack counts toward the router's
//! `max_deliver`, so with k pullers an event is dead-lettered with probability about
//! ((k-1)/k)^max_deliver.

use crate::{Leader, Leadership};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many watch intervals without an answer from the leadership (etcd unreachable)
/// [`LeaderDuty::until_lost`] tolerates before it takes the leadership as lost.
pub const UNANSWERED_POLLS: u32 = 3;

/// How often the pull gate reads the leadership again (etcd: one linearizable read; a
/// static leadership is read once).
pub const GATE_POLL: Duration = Duration::from_secs(1);

/// The leadership of this node's cluster ([`crate::leader`]): leader-only duties (queue
/// population, promotion, tournaments) run only while [`Leadership::mine`] says so and
/// carry its token. A bad cluster.toml is a config error (exit 64).
pub fn leadership(ctx: &handler_base::Context) -> anyhow::Result<Leadership> {
    let cluster = crate::ClusterConfig::load(&ctx.home, &ctx.node)
        .map_err(handler_base::ConfigError::from)?;
    Ok(Leadership::new(&cluster).map_err(|e| handler_base::ConfigError::Invalid(e.to_string()))?)
}

/// The leadership of a leader-only daemon and its counts.
pub struct LeaderDuty {
    pub leadership: Leadership,
    /// Side effects skipped because [`Leadership::confirm`] refused the token.
    refused: AtomicU64,
}

impl LeaderDuty {
    pub fn new(leadership: Leadership) -> LeaderDuty {
        LeaderDuty {
            leadership,
            refused: AtomicU64::new(0),
        }
    }

    /// The duty of this node as cluster.toml configures it (a bad file is exit 64).
    pub fn from_ctx(ctx: &handler_base::Context) -> anyhow::Result<LeaderDuty> {
        Ok(LeaderDuty::new(leadership(ctx)?))
    }

    /// The leadership if this node leads now.
    pub async fn mine(&self) -> anyhow::Result<Option<Leader>> {
        Ok(self.leadership.mine().await?)
    }

    /// For an event: `Ok(Some(leader))` to act on it, `Err` to nack it (this node does
    /// not lead: the event goes back for the leader). `what` names the event in logs.
    pub async fn for_event(&self, what: &str) -> anyhow::Result<Leader> {
        match self.mine().await? {
            Some(l) => Ok(l),
            None => Err(self.not_leading(what)),
        }
    }

    /// The error for an event this node cannot act on (not the leader, or deposed): the
    /// handler returns it, so the event is nacked and goes back for the leader.
    pub fn not_leading(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{what}: this node ({}) does not lead; nacked for the leader",
            self.leadership.this()
        )
    }

    /// A gate that is open while this node leads, read every [`GATE_POLL`] (under a
    /// static leadership once) until every receiver is gone; a failed read keeps the
    /// last state. For [`handler_base::Handler::pull_gate`]. Call within a tokio runtime.
    pub fn pull_gate(&self) -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let leadership = self.leadership.clone();
        tokio::spawn(async move {
            loop {
                match leadership.mine().await {
                    Ok(l) => {
                        let leads = l.is_some();
                        tx.send_if_modified(|open| std::mem::replace(open, leads) != leads);
                        if leadership.mode() == "static" {
                            // Never changes: the receivers keep the value.
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "leadership unknown; the pull gate stays as it is")
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(GATE_POLL) => {}
                }
            }
        });
        rx
    }

    /// Whether this node still leads under `leader`'s token, asked right before a side
    /// effect; a refusal is logged as a warning and counted.
    pub async fn confirm(&self, leader: &Leader, what: &str) -> anyhow::Result<bool> {
        if self.leadership.confirm(leader.token).await? {
            return Ok(true);
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(token = leader.token, %what, "leadership not confirmed: skipped");
        Ok(false)
    }

    /// A write its resource refused for a stale token (the store's fence, e.g.
    /// `StoreError::Fenced`, which names both tokens): logged as a warning and counted
    /// with the refusals of [`LeaderDuty::confirm`].
    pub fn refused_by_store(&self, what: &str, err: &dyn std::fmt::Display) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%what, error = %err, "the store refused the leader's token: not written");
    }

    /// Resolves once this node no longer leads under `leader`'s token: asks
    /// [`Leadership::confirm`] every `every` (the first time at once), and returns why.
    /// An unanswered question (etcd unreachable) is logged and asked again; after
    /// [`UNANSWERED_POLLS`] intervals without a confirmation the leadership counts as
    /// lost, since a leader that cannot reach etcd may have lost its lease. Run beside a
    /// long leader-only job and cancel the job when it resolves; each loss is counted.
    pub async fn until_lost(&self, leader: &Leader, every: Duration) -> String {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut confirmed = Instant::now();
        let why = loop {
            tick.tick().await;
            match self.leadership.confirm(leader.token).await {
                Ok(true) => confirmed = Instant::now(),
                Ok(false) => {
                    break format!(
                        "this node ({}) no longer leads under token {}",
                        self.leadership.this(),
                        leader.token
                    );
                }
                Err(e) if confirmed.elapsed() >= every * UNANSWERED_POLLS => {
                    break format!(
                        "leadership under token {} unconfirmed for {:.1} s: {e}",
                        leader.token,
                        confirmed.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    tracing::warn!(token = leader.token, error = %e, "leadership not answered; asking again");
                }
            }
        };
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(token = leader.token, %why, "leadership lost while a leader-only job ran");
        why
    }

    /// Side effects skipped because the token was refused (health `fence_refused`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(node: &str, token: u64) -> Option<Leader> {
        Some(Leader {
            node: node.into(),
            token,
        })
    }

    #[tokio::test]
    async fn a_follower_nacks_and_its_gate_stays_closed() {
        let follower = LeaderDuty::new(Leadership::fixed("me", leader("other", 3)));
        let err = follower
            .for_event("EVALUATION_COMPLETED #4")
            .await
            .expect_err("nacked");
        assert!(err.to_string().contains("does not lead"), "{err}");
        let mut gate = follower.pull_gate();
        // The first read decides; a static leadership is never read again.
        let _ = gate.changed().await;
        assert!(!*gate.borrow(), "a follower does not pull");
        let me = LeaderDuty::new(Leadership::fixed("me", leader("me", 3)));
        assert_eq!(
            me.for_event("x").await.expect("leads"),
            leader("me", 3).expect("some")
        );
        let mut gate = me.pull_gate();
        tokio::time::timeout(Duration::from_secs(10), gate.wait_for(|open| *open))
            .await
            .expect("the leader's gate opens")
            .ok();
    }

    #[tokio::test]
    async fn a_stale_token_is_refused_and_counted() {
        let d = LeaderDuty::new(Leadership::fixed("me", leader("me", 9)));
        let stale = Leader {
            node: "me".into(),
            token: 7,
        };
        assert!(!d.confirm(&stale, "promote").await.expect("answer"));
        assert_eq!(d.refused(), 1);
        assert!(
            d.confirm(&leader("me", 9).expect("some"), "promote")
                .await
                .expect("answer")
        );
    }
    /// The watch resolves once another node leads, and once etcd has not answered for
    /// [`UNANSWERED_POLLS`] intervals; each loss is counted.
    #[tokio::test]
    async fn the_watch_resolves_when_leadership_is_lost_or_unanswered() {
        let (l, switch) = Leadership::manual("me", leader("me", 9));
        let d = LeaderDuty::new(l);
        let me = leader("me", 9).expect("some");
        assert!(d.confirm(&me, "job").await.expect("answer"));
        switch.set(leader("other", 10));
        let why = tokio::time::timeout(
            Duration::from_secs(30),
            d.until_lost(&me, Duration::from_millis(20)),
        )
        .await
        .expect("resolved");
        assert!(why.contains("no longer leads under token 9"), "{why}");
        assert_eq!(d.refused(), 1);

        let text = "[leader]\nmode = \"etcd\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
                    [[node]]\nname = \"me\"\nroles = [\"coordinator\"]\n\
                    address = \"127.0.0.1\"\nports = { p2p = 9001 }\n";
        let cluster = crate::ClusterConfig::parse(text, std::path::Path::new("cluster.toml"), "me")
            .expect("cluster");
        let silent = LeaderDuty::new(Leadership::new(&cluster).expect("etcd"));
        let why = tokio::time::timeout(
            Duration::from_secs(60),
            silent.until_lost(&me, Duration::from_millis(20)),
        )
        .await
        .expect("resolved");
        assert!(why.contains("unconfirmed"), "{why}");
        assert_eq!(silent.refused(), 1);
    }
}
