//! The network side of replication: every node's batch counts (`GET /games/summary` of
//! its `data_server`, this node's included) and copying one batch from a holder to
//! another node (`GET /games` filtered by source node and hour, `POST /games`), with
//! DATA_SYNC_* for each copy.

use super::{BatchKey, BatchStatus, Counts, Executed, Holdings, NodeInfo, RateWindow, Repair};
use crate::games::{self, GameFilter, MAX_PAGE, SyncEvents};
use crate::{DataClient, Peer, TransferError};
use ringrift_cluster::ClusterConfig;
use std::time::{Duration, Instant};

/// A node of the cluster: what replication needs to know and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub info: NodeInfo,
    pub peer: Peer,
}

/// Every node of `cluster`, this one included (reached through its own data server).
pub fn members(cluster: &ClusterConfig) -> Vec<Member> {
    cluster
        .nodes
        .iter()
        .map(|n| Member {
            info: NodeInfo {
                name: n.name.clone(),
                ephemeral: n.ephemeral,
                exclude_from_sync: n.exclude_from_sync,
            },
            peer: Peer::from(n),
        })
        .collect()
}

/// Asks every member for its batch counts, concurrently. Returns the holdings of the
/// members that answered and, per member that did not, the error.
pub async fn gather(client: &DataClient, members: &[Member]) -> (Holdings, Vec<(String, String)>) {
    let answers = futures_util::future::join_all(
        members
            .iter()
            .map(|m| async move { (m, games::summary(client, &m.peer).await) }),
    )
    .await;
    let mut h = Holdings::default();
    let mut errors = Vec::new();
    for (m, r) in answers {
        match r {
            Ok(s) => {
                h.answered(&m.info.name);
                for b in s.batches {
                    h.add(
                        &m.info.name,
                        BatchKey {
                            config: b.config,
                            source_node: b.source_node,
                            hour: b.hour,
                        },
                        b.count,
                    );
                }
            }
            Err(e) => errors.push((m.info.name.clone(), e.to_string())),
        }
    }
    (h, errors)
}

/// Copies the games of `batch` from `from` to `to`, page by page (merged there by
/// `game_id`). Returns the games sent and how many were new to `to`.
pub async fn copy_batch(
    client: &DataClient,
    from: &Peer,
    to: &Peer,
    batch: &BatchKey,
) -> Result<(u64, u64, u64), TransferError> {
    let filter = GameFilter {
        min_quality: None,
        source_node: Some(batch.source_node.clone()),
        hour: Some(batch.hour),
    };
    let (mut after, mut sent, mut new, mut bytes) = (0i64, 0u64, 0u64, 0u64);
    loop {
        let (page, _) = games::fetch(client, from, batch.config, after, MAX_PAGE, &filter).await?;
        let records: Vec<_> = page.games.into_iter().map(|g| g.game).collect();
        if !records.is_empty() {
            let (ack, n) = games::push(client, to, &records).await?;
            sent += ack.received;
            new += ack.new;
            bytes += n;
        }
        if !page.more || page.next_after <= after {
            break;
        }
        after = page.next_after;
    }
    Ok((sent, new, bytes))
}

/// Runs one repair between members (by name), reporting it as DATA_SYNC_*.
pub async fn run_repair(
    client: &DataClient,
    members: &[Member],
    events: &SyncEvents,
    r: &Repair,
) -> Result<u64, TransferError> {
    let find = |name: &str| {
        members
            .iter()
            .find(|m| m.info.name == name)
            .map(|m| m.peer.clone())
            .ok_or_else(|| TransferError::Invalid(format!("{name} is not in cluster.toml")))
    };
    let (from, to) = (find(&r.from)?, find(&r.to)?);
    let since = Instant::now();
    events.started(r.batch.config, &r.from, &r.to).await;
    match copy_batch(client, &from, &to, &r.batch).await {
        Ok((sent, new, bytes)) => {
            events
                .completed(r.batch.config, &r.from, &r.to, sent, bytes, since)
                .await;
            Ok(new)
        }
        Err(e) => {
            events
                .failed(r.batch.config, &r.from, &r.to, &e, since)
                .await;
            Err(e)
        }
    }
}

/// One look at the cluster's game batches: who answered, who holds what, and each
/// settled batch's copies against `target_copies`.
pub struct Survey {
    pub holdings: Holdings,
    /// Per member that did not answer, the error.
    pub unreachable: Vec<(String, String)>,
    pub nodes: Vec<NodeInfo>,
    /// The settled batches ([`super::settled`]) only.
    pub statuses: Vec<BatchStatus>,
    pub counts: Counts,
    /// Batches not judged yet: their hour is running or ended less than `settle` ago.
    pub open: usize,
}

/// The cluster as a replication daemon sees it: every member through one client, and
/// each settled batch judged against `target_copies`.
pub struct Replication {
    pub client: DataClient,
    pub members: Vec<Member>,
    pub target_copies: usize,
    /// A batch is judged once its hour ended this long ago ([`super::settled`]).
    pub settle: Duration,
}

impl Replication {
    /// [`gather`]s every member's counts and classifies the settled batches.
    pub async fn survey(&self) -> Survey {
        let (holdings, unreachable) = gather(&self.client, &self.members).await;
        let nodes: Vec<NodeInfo> = self.members.iter().map(|m| m.info.clone()).collect();
        let mut statuses = super::classify(&holdings, nodes.len(), self.target_copies);
        let (now, settle_ms) = (
            ringrift_store::now_ms(),
            i64::try_from(self.settle.as_millis()).unwrap_or(i64::MAX),
        );
        let all = statuses.len();
        statuses.retain(|s| super::settled(&s.batch, now, settle_ms));
        let counts = super::counts(&statuses);
        Survey {
            holdings,
            unreachable,
            nodes,
            open: all - statuses.len(),
            statuses,
            counts,
        }
    }

    /// [`super::execute`]s `plan` with [`run_repair`] between members: within `window` at
    /// `clock()`, at most `max_concurrent` at once, each reported as DATA_SYNC_*.
    pub async fn repair_all(
        &self,
        events: &SyncEvents,
        plan: Vec<Repair>,
        window: &std::sync::Mutex<RateWindow>,
        clock: &(dyn Fn() -> Instant + Sync),
        max_concurrent: usize,
    ) -> Executed {
        super::execute(plan, window, clock, max_concurrent, |r| async move {
            run_repair(&self.client, &self.members, events, &r)
                .await
                .map(|_| ())
        })
        .await
    }
}
