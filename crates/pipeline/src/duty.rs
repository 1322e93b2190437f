//! Leader-only duties (promotion, tournaments): act only while this node leads, confirm
//! the token right before each side effect, pass it to the write (whose store refuses a
//! stale one), watch it while a long job runs ([`LeaderDuty::until_lost`]), and decide
//! what becomes of an event that arrives while this node does not lead.
//!
//! Such an event is never dropped where it is the only copy. With node-local SQLite event
//! logs (`[events] backend = "sqlite"`) the leader's router never sees this node's events,
//! so acknowledging one here would lose it: it is nacked, stays in this node's log, is
//! redelivered (then dead-lettered and retried by `dlq_retry`) and is handled once this
//! node leads. With one shared JetStream stream every node's durable consumer holds its
//! own copy and the leader's copy of the daemon handles it: the others acknowledge and
//! ignore theirs (a nack would only redeliver to the same follower and dead-letter every
//! event on every follower).

use ringrift_cluster::{EventBackend, Leader, Leadership};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many watch intervals without an answer from the leadership (etcd unreachable)
/// [`LeaderDuty::until_lost`] tolerates before it takes the leadership as lost.
pub const UNANSWERED_POLLS: u32 = 3;

/// What a leader-only daemon does with an event that arrives while it does not lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follower {
    /// Node-local event log: nack it, so this node's router keeps and redelivers it.
    Nack,
    /// Shared event log: the leader's consumer has its own copy; ack and ignore this one.
    Ignore,
}

impl Follower {
    /// The policy of an event backend.
    pub fn of(backend: &EventBackend) -> Follower {
        match backend {
            EventBackend::Sqlite => Follower::Nack,
            EventBackend::Jetstream { .. } => Follower::Ignore,
        }
    }
}

/// The leadership of a leader-only daemon and its counts.
pub struct LeaderDuty {
    pub leadership: Leadership,
    pub follower: Follower,
    /// Side effects skipped because [`Leadership::confirm`] refused the token.
    refused: AtomicU64,
}

impl LeaderDuty {
    pub fn new(leadership: Leadership, follower: Follower) -> LeaderDuty {
        LeaderDuty {
            leadership,
            follower,
            refused: AtomicU64::new(0),
        }
    }

    /// The duty of this node as cluster.toml configures it (a bad file is exit 64).
    pub fn from_ctx(ctx: &handler_base::Context) -> anyhow::Result<LeaderDuty> {
        let cluster = ringrift_cluster::ClusterConfig::load(&ctx.home, &ctx.node)
            .map_err(|e| handler_base::ConfigError::Invalid(e.to_string()))?;
        let leadership = Leadership::new(&cluster)
            .map_err(|e| handler_base::ConfigError::Invalid(e.to_string()))?;
        Ok(LeaderDuty::new(leadership, Follower::of(&cluster.events)))
    }

    /// The leadership if this node leads now.
    pub async fn mine(&self) -> anyhow::Result<Option<Leader>> {
        Ok(self.leadership.mine().await?)
    }

    /// For an event: `Ok(Some(leader))` to act on it, `Ok(None)` to ack and ignore it
    /// (shared log), `Err` to nack it (node-local log). `what` names the event in logs.
    pub async fn for_event(&self, what: &str) -> anyhow::Result<Option<Leader>> {
        match self.mine().await? {
            Some(l) => Ok(Some(l)),
            None => self.not_leading(what),
        }
    }

    /// The answer to an event this node cannot act on (not the leader, or deposed).
    pub fn not_leading(&self, what: &str) -> anyhow::Result<Option<Leader>> {
        match self.follower {
            Follower::Ignore => {
                tracing::info!(%what, "not the leader: the leader's copy handles it");
                Ok(None)
            }
            Follower::Nack => anyhow::bail!(
                "{what}: this node ({}) does not lead; left in its event log for redelivery",
                self.leadership.this()
            ),
        }
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
    async fn a_follower_nacks_on_a_local_log_and_ignores_on_a_shared_one() {
        let follower = |f| LeaderDuty::new(Leadership::fixed("me", leader("other", 3)), f);
        let err = follower(Follower::Nack)
            .for_event("EVALUATION_COMPLETED #4")
            .await
            .expect_err("nacked");
        assert!(err.to_string().contains("does not lead"), "{err}");
        assert_eq!(
            follower(Follower::Ignore)
                .for_event("EVALUATION_COMPLETED #4")
                .await
                .expect("acked"),
            None
        );
        let me = LeaderDuty::new(Leadership::fixed("me", leader("me", 3)), Follower::Nack);
        assert_eq!(me.for_event("x").await.expect("leads"), leader("me", 3));
    }

    #[tokio::test]
    async fn a_stale_token_is_refused_and_counted() {
        let d = LeaderDuty::new(Leadership::fixed("me", leader("me", 9)), Follower::Nack);
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
        let d = LeaderDuty::new(l, Follower::Nack);
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
        let cluster = ringrift_cluster::ClusterConfig::parse(
            text,
            std::path::Path::new("cluster.toml"),
            "me",
        )
        .expect("cluster");
        let silent = LeaderDuty::new(Leadership::new(&cluster).expect("etcd"), Follower::Nack);
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
