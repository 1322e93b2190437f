//! What both event logs (the SQLite broker and the JetStream backend) and the service
//! share: the subscription filter, the dead-letter states, what a publish became, the
//! clock. Neither log imports the other; both import this.

use ringrift_proto::wire;
use std::collections::HashSet;
use std::sync::Arc;
use tonic::Status;

/// Dead-letter states, as stored (`wire::DeadLetterState` values).
pub const DL_DEAD: i32 = 1;
pub const DL_RETRYING: i32 = 2;
pub const DL_GIVEN_UP: i32 = 3;
pub const DL_DELIVERED: i32 = 4;

/// Which event types a subscriber wants; `None` = all.
pub type Filter = Option<Arc<HashSet<i32>>>;

pub fn matches(f: &Filter, t: i32) -> bool {
    f.as_ref().is_none_or(|s| s.contains(&t))
}

/// The name of a dead-letter state (`UNKNOWN` for a value the wire does not define).
pub fn state_name(s: i32) -> &'static str {
    wire::DeadLetterState::try_from(s)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// Builds the type filter of a subscription; prefixes must name at least one type.
pub fn build_filter(types: &[i32], prefixes: &[String]) -> Result<Filter, Status> {
    if types.is_empty() && prefixes.is_empty() {
        return Ok(None);
    }
    let mut set = HashSet::new();
    for &t in types {
        match wire::EventType::try_from(t) {
            Ok(wire::EventType::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown event type {t} in subscription"
                )));
            }
            Ok(_) => {
                set.insert(t);
            }
        }
    }
    for p in prefixes {
        let before = set.len();
        for t in all_types() {
            if t.as_str_name().starts_with(p.as_str()) {
                set.insert(t as i32);
            }
        }
        if set.len() == before && !all_types().any(|t| t.as_str_name().starts_with(p.as_str())) {
            return Err(Status::invalid_argument(format!(
                "prefix {p:?} matches no event type"
            )));
        }
    }
    Ok(Some(Arc::new(set)))
}

fn all_types() -> impl Iterator<Item = wire::EventType> {
    (1..=200).filter_map(|i| wire::EventType::try_from(i).ok())
}

/// What one publish became.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub id: String,
    pub duplicate: bool,
}

/// Milliseconds since the Unix epoch (0 before 1970).
pub fn router_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
