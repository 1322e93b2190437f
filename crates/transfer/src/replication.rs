//! Replication of game batches across nodes, as pure code (no I/O, an injected clock) so
//! `replication_monitor` and `replication_repair` share one definition and tests drive
//! time.
//!
//! A **batch** is the games of one config generated on one node (its source node) in one
//! hour. Each node reports how many games of each batch it holds (`GET /games/summary`).
//! A batch's expected size is its source's count, or the largest count seen when the
//! source does not report it (gone, or it lost the games). Its **copies** are the nodes
//! other than the source holding at least that many. With `target` = min(target_copies,
//! nodes − 1): **zero-copy** (only the source holds it), **single-copy** (one copy, target
//! above 1), **under-replicated** (fewer copies than target).
//!
//! [`plan`] turns the classification into repairs (copy a batch from a holder to a node
//! lacking it), zero before single before under, oldest hour first; targets are nodes
//! that answered, are not excluded from sync and are not the source, durable nodes
//! before ephemeral ones, least loaded first. (A node of the shipped `ephemeral` profile
//! runs no data_server, so it never answers and is never a target; pushes skip ephemeral
//! nodes altogether, `crate::peers::targets`.) [`RateWindow`] bounds repairs per sliding
//! hour; [`execute`] runs a plan with at most `max_concurrent` repairs in flight within
//! the window. [`net`] gathers the counts from every node's `data_server` and copies a
//! batch between two of them.

pub mod net;

use ringrift_store::ConfigKey;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The games of one config generated on one node in one hour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchKey {
    pub config: ConfigKey,
    pub source_node: String,
    /// `created_at` milliseconds / 3 600 000.
    pub hour: i64,
}

/// A cluster node as replication sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub ephemeral: bool,
    /// Never a target of data.
    pub exclude_from_sync: bool,
}

/// What the nodes that answered hold: node → batch → games.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings(pub BTreeMap<String, BTreeMap<BatchKey, u64>>);

impl Holdings {
    /// Records that `node` answered and holds `count` games of `batch`.
    pub fn add(&mut self, node: &str, batch: BatchKey, count: u64) {
        *self
            .0
            .entry(node.to_owned())
            .or_default()
            .entry(batch)
            .or_insert(0) += count;
    }

    /// Records that `node` answered (maybe holding nothing).
    pub fn answered(&mut self, node: &str) {
        self.0.entry(node.to_owned()).or_default();
    }

    pub fn count(&self, node: &str, batch: &BatchKey) -> u64 {
        self.0
            .get(node)
            .and_then(|b| b.get(batch))
            .copied()
            .unwrap_or(0)
    }
}

/// How badly a batch lacks copies (ordered: most urgent first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    ZeroCopy,
    SingleCopy,
    UnderReplicated,
}

/// One batch's replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatus {
    pub batch: BatchKey,
    /// Games a full copy holds.
    pub expected: u64,
    /// Nodes other than the source with a full copy.
    pub copies: Vec<String>,
    /// Copies wanted.
    pub target: usize,
    /// `None`: enough copies.
    pub level: Option<Level>,
}

/// Batch counts per level (the REPLICATION_ALERT payload and health).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub zero_copy: u64,
    pub single_copy: u64,
    pub under_replicated: u64,
}

impl Counts {
    pub fn any(&self) -> bool {
        self.zero_copy + self.single_copy + self.under_replicated > 0
    }
}

/// Whether `batch` is judged at `now_ms`: its hour ended at least `settle_ms` ago. The
/// running hour's batch grows with every game its node plays, so its copies elsewhere
/// always lag behind it (the sync daemons' work, not a replication fault); counted, it
/// would keep every alert non-zero and be copied again every cycle.
pub fn settled(batch: &BatchKey, now_ms: i64, settle_ms: i64) -> bool {
    let end = (batch.hour + 1).saturating_mul(ringrift_store::games::MS_PER_HOUR);
    end.saturating_add(settle_ms) <= now_ms
}

/// Classifies every batch any answering node holds. `nodes`: how many nodes the cluster
/// has (answering or not), which caps the target at `nodes - 1`.
pub fn classify(holdings: &Holdings, nodes: usize, target_copies: usize) -> Vec<BatchStatus> {
    let target = target_copies.min(nodes.saturating_sub(1));
    let batches: BTreeSet<&BatchKey> = holdings.0.values().flat_map(|b| b.keys()).collect();
    batches
        .into_iter()
        .map(|batch| {
            let source_count = holdings
                .0
                .get(&batch.source_node)
                .and_then(|b| b.get(batch))
                .copied();
            let expected = source_count.unwrap_or_else(|| {
                holdings
                    .0
                    .values()
                    .filter_map(|b| b.get(batch))
                    .copied()
                    .max()
                    .unwrap_or(0)
            });
            let copies: Vec<String> = holdings
                .0
                .iter()
                .filter(|(node, b)| {
                    **node != batch.source_node && b.get(batch).is_some_and(|&c| c >= expected)
                })
                .map(|(node, _)| node.clone())
                .collect();
            let n = copies.len();
            let level = if n >= target {
                None
            } else if n == 0 {
                Some(Level::ZeroCopy)
            } else if n == 1 {
                Some(Level::SingleCopy)
            } else {
                Some(Level::UnderReplicated)
            };
            BatchStatus {
                batch: batch.clone(),
                expected,
                copies,
                target,
                level,
            }
        })
        .collect()
}

/// How many batches are at each level.
pub fn counts(statuses: &[BatchStatus]) -> Counts {
    let mut c = Counts::default();
    for s in statuses {
        match s.level {
            Some(Level::ZeroCopy) => c.zero_copy += 1,
            Some(Level::SingleCopy) => c.single_copy += 1,
            Some(Level::UnderReplicated) => c.under_replicated += 1,
            None => {}
        }
    }
    c
}

/// Copy `batch` from node `from` (which holds all of it) to node `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repair {
    pub batch: BatchKey,
    pub from: String,
    pub to: String,
    pub level: Level,
    /// Games expected in a full copy.
    pub games: u64,
}

/// The repairs that bring every batch to its target, most urgent first. Only nodes in
/// `holdings` (they answered) take part; `nodes` says which are ephemeral or excluded.
/// `accept(status)` filters batches (e.g. the monitor's emergency sync takes zero-copy
/// batches of ephemeral sources only).
pub fn plan(
    statuses: &[BatchStatus],
    holdings: &Holdings,
    nodes: &[NodeInfo],
    accept: impl Fn(&BatchStatus) -> bool,
) -> Vec<Repair> {
    let info = |name: &str| nodes.iter().find(|n| n.name == name);
    let mut todo: Vec<&BatchStatus> = statuses
        .iter()
        .filter(|s| s.level.is_some() && accept(s))
        .collect();
    todo.sort_by(|a, b| (a.level, a.batch.hour, &a.batch).cmp(&(b.level, b.batch.hour, &b.batch)));
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for s in todo {
        let Some(level) = s.level else { continue };
        let full = |node: &str| holdings.count(node, &s.batch) >= s.expected;
        // Read from the source when it has it all, else from a copy.
        let from = if full(&s.batch.source_node) && holdings.0.contains_key(&s.batch.source_node) {
            Some(s.batch.source_node.clone())
        } else {
            s.copies.first().cloned()
        };
        let Some(from) = from else { continue };
        let mut candidates: Vec<(&str, bool)> = holdings
            .0
            .keys()
            .map(String::as_str)
            .filter(|n| *n != s.batch.source_node && !full(n))
            .filter_map(|n| match info(n) {
                Some(i) if !i.exclude_from_sync => Some((n, i.ephemeral)),
                _ => None,
            })
            .collect();
        candidates.sort_by_key(|(n, eph)| (*eph, load.get(n).copied().unwrap_or(0), *n));
        let need = s.target.saturating_sub(s.copies.len());
        for (to, _) in candidates.into_iter().take(need) {
            *load.entry(to).or_insert(0) += 1;
            out.push(Repair {
                batch: s.batch.clone(),
                from: from.clone(),
                to: to.to_owned(),
                level,
                games: s.expected,
            });
        }
    }
    out
}

/// At most `max` events per sliding `window` (repairs per hour). Time is passed in.
#[derive(Debug, Clone)]
pub struct RateWindow {
    max: usize,
    window: Duration,
    started: VecDeque<Instant>,
}

impl RateWindow {
    pub fn new(max: usize, window: Duration) -> RateWindow {
        RateWindow {
            max,
            window,
            started: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.started.pop_front();
        }
    }

    /// How many may start at `now`.
    pub fn available(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.max.saturating_sub(self.started.len())
    }

    /// Takes one slot at `now`; false (nothing taken) when the window is full.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.available(now) == 0 {
            return false;
        }
        self.started.push_back(now);
        true
    }

    /// When the next slot frees (`None`: one is free now).
    pub fn next_free(&mut self, now: Instant) -> Option<Instant> {
        if self.available(now) > 0 {
            return None;
        }
        self.started.front().map(|t| *t + self.window)
    }

    /// Slots taken in the window ending at `now`.
    pub fn used(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.started.len()
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    pub repaired: u64,
    pub failed: u64,
    /// Repairs left for a later cycle: the hourly window was full.
    pub deferred: u64,
    pub errors: Vec<String>,
}

/// Runs `repairs` in order, at most `max_concurrent` at once, each taking a slot of
/// `window` at `clock()` when it starts (failures count: they used the link). Repairs
/// that find the window full are deferred, not waited for. `run(repair)` does one repair
/// (fetch from `from`, push to `to`).
pub async fn execute<F, Fut, E>(
    repairs: Vec<Repair>,
    window: &std::sync::Mutex<RateWindow>,
    clock: &(dyn Fn() -> Instant + Sync),
    max_concurrent: usize,
    run: F,
) -> Executed
where
    F: Fn(Repair) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let mut out = Executed::default();
    let mut admitted = Vec::new();
    for r in repairs {
        let ok = window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(clock());
        if ok {
            admitted.push(r);
        } else {
            out.deferred += 1;
        }
    }
    let results: Vec<(Repair, Result<(), E>)> = futures_util::stream::iter(admitted)
        .map(|r| {
            let fut = run(r.clone());
            async move { (r, fut.await) }
        })
        .buffer_unordered(max_concurrent.max(1))
        .collect()
        .await;
    for (r, res) in results {
        match res {
            Ok(()) => out.repaired += 1,
            Err(e) => {
                out.failed += 1;
                out.errors.push(format!(
                    "{}/{}/{} {} -> {}: {e}",
                    r.batch.config, r.batch.source_node, r.batch.hour, r.from, r.to
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
