//! `dlq_retry`: redelivers dead letters to their consumers with exponential backoff
//! (60 s doubling to 1 h by default) and gives up after 5 retries, leaving the letter in
//! the router as GIVEN_UP so an operator can still inspect it (`ringrift-events dlq list --all`).
//!
//! The backoff state (retries, last retry time) lives in the router's dead-letter table,
//! so a restart of this daemon neither forgets nor repeats a retry. One letter's failed
//! call (its consumer is gone, the letter changed state meanwhile) is logged and counted
//! and the pass goes on with the others; the letter is tried again next pass. A letter
//! stuck in RETRYING because its consumer never reconnected is returned to DEAD by the
//! router after `event_router.dlq_retrying_timeout_s`, and then retried here again.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::wire;
use std::sync::Arc;
use std::sync::Mutex;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "dlq_retry",
    about: "Redeliver dead-lettered events with backoff",
    cycle_interval_s: Some(10.0),
    scope: Some(Scope::Node),
};

/// `[dlq_retry]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub base_delay_s: f64,
    pub max_delay_s: f64,
    pub max_retries: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            base_delay_s: 60.0,
            max_delay_s: 3600.0,
            max_retries: 5,
        }
    }
}

/// What to do with one DEAD letter now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Retry,
    GiveUp,
    /// Not yet due; due at this time (ms).
    Wait(i64),
}

impl Policy {
    /// Delay before retry number `retries + 1`.
    pub fn delay_ms(&self, retries: u32) -> i64 {
        let d = self.base_delay_s * 2f64.powi(retries.min(30) as i32);
        (d.min(self.max_delay_s) * 1000.0) as i64
    }

    pub fn decide(&self, l: &wire::DeadLetter, now_ms: i64) -> Action {
        if l.retries >= self.max_retries {
            return Action::GiveUp;
        }
        let since = if l.retries == 0 {
            l.dead_at_unix_ms
        } else {
            l.last_retry_unix_ms.max(l.dead_at_unix_ms)
        };
        let due = since + self.delay_ms(l.retries);
        if now_ms >= due {
            Action::Retry
        } else {
            Action::Wait(due)
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        handler_base::ensure_config!(
            self.base_delay_s > 0.0,
            "dlq_retry.base_delay_s must be > 0"
        );
        handler_base::ensure_config!(
            self.max_delay_s >= self.base_delay_s,
            "dlq_retry.max_delay_s must be >= base_delay_s"
        );
        Ok(())
    }
}

#[derive(Default, Debug, Clone)]
struct Tally {
    dead: usize,
    retried: u64,
    given_up: u64,
    failed_calls: u64,
    last_failure: String,
    next_due_ms: Option<i64>,
}

pub struct DlqRetry {
    policy: Policy,
    tally: Mutex<Tally>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let policy: Policy = ctx.settings.section("dlq_retry")?;
    policy.validate()?;
    Ok(Arc::new(DlqRetry {
        policy,
        tally: Mutex::new(Tally::default()),
    }))
}

#[async_trait::async_trait]
impl Handler for DlqRetry {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let mut client = ctx.client.clone();
        let letters = client
            .list_dead_letters(wire::ListDeadLettersRequest {
                consumer: String::new(),
                include_resolved: false,
            })
            .await?
            .into_inner()
            .letters;
        let now = handler_base::router_client::now_ms();
        let (mut retried, mut given_up, mut next_due) = (0u64, 0u64, None::<i64>);
        let mut failures: Vec<String> = Vec::new();
        let dead: Vec<_> = letters
            .into_iter()
            .filter(|l| l.state == wire::DeadLetterState::Dead as i32)
            .collect();
        for l in &dead {
            match self.policy.decide(l, now) {
                Action::Retry => {
                    match client
                        .retry_dead_letter(wire::RetryDeadLetterRequest { id: l.id })
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(letter = l.id, consumer = %l.consumer, seq = l.seq, retry = l.retries + 1, "redelivering dead letter");
                            retried += 1;
                        }
                        Err(e) => {
                            tracing::warn!(letter = l.id, consumer = %l.consumer, seq = l.seq, error = %e.message(), "retry of dead letter failed; next pass tries again");
                            failures.push(format!("retry letter {}: {}", l.id, e.message()));
                        }
                    }
                }
                Action::GiveUp => {
                    match client
                        .resolve_dead_letter(wire::ResolveDeadLetterRequest {
                            id: l.id,
                            state: wire::DeadLetterState::GivenUp as i32,
                        })
                        .await
                    {
                        Ok(_) => {
                            tracing::warn!(letter = l.id, consumer = %l.consumer, seq = l.seq, retries = l.retries, reason = %l.reason, "giving up on dead letter; kept for inspection");
                            given_up += 1;
                        }
                        Err(e) => {
                            tracing::warn!(letter = l.id, consumer = %l.consumer, seq = l.seq, error = %e.message(), "giving up on dead letter failed; next pass tries again");
                            failures.push(format!("give up letter {}: {}", l.id, e.message()));
                        }
                    }
                }
                Action::Wait(due) => next_due = Some(next_due.map_or(due, |d: i64| d.min(due))),
            }
        }
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        t.dead = dead.len();
        t.retried += retried;
        t.given_up += given_up;
        t.failed_calls += failures.len() as u64;
        if let Some(last) = failures.last() {
            t.last_failure.clone_from(last);
        }
        t.next_due_ms = next_due;
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let t = self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let h = if t.dead > 0 {
            HealthCheckResult::degraded(format!("{} dead letters waiting", t.dead))
        } else {
            HealthCheckResult::running("no dead letters")
        };
        h.detail("dead", t.dead)
            .detail("retried_total", t.retried)
            .detail("given_up_total", t.given_up)
            .detail("failed_calls_total", t.failed_calls)
            .detail("last_failed_call", &t.last_failure)
            .detail("next_due_unix_ms", t.next_due_ms.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(retries: u32, dead_at: i64, last_retry: i64) -> wire::DeadLetter {
        wire::DeadLetter {
            retries,
            dead_at_unix_ms: dead_at,
            last_retry_unix_ms: last_retry,
            state: wire::DeadLetterState::Dead as i32,
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_from_60s_to_one_hour() {
        let p = Policy::default();
        let delays: Vec<i64> = (0..8).map(|r| p.delay_ms(r) / 1000).collect();
        assert_eq!(delays, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn first_retry_waits_a_base_delay_after_death() {
        let p = Policy::default();
        assert_eq!(
            p.decide(&letter(0, 1_000, 0), 1_000 + 59_999),
            Action::Wait(61_000)
        );
        assert_eq!(p.decide(&letter(0, 1_000, 0), 61_000), Action::Retry);
    }

    #[test]
    fn later_retries_count_from_the_last_retry() {
        let p = Policy::default();
        assert_eq!(
            p.decide(&letter(2, 0, 100_000), 100_000 + 239_999),
            Action::Wait(340_000)
        );
        assert_eq!(p.decide(&letter(2, 0, 100_000), 340_000), Action::Retry);
    }

    #[test]
    fn gives_up_after_max_retries() {
        let p = Policy::default();
        assert_eq!(p.decide(&letter(5, 0, 0), i64::MAX / 2), Action::GiveUp);
        assert_eq!(p.decide(&letter(4, 0, 0), i64::MAX / 2), Action::Retry);
    }
}

#[cfg(test)]
mod in_process;
