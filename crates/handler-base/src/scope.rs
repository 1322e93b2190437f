//! Delivery scope: which durable consumer a daemon's copy on this node reads its events
//! through, and when it pulls.
//!
//! The scope is declared by the daemon's crate in its [`DaemonInfo`] (equal to its
//! registry entry's `scope = "node" | "cluster"`, checked by the tidy test):
//! * `node`: consumer `<daemon>@<node>`, so on a shared log (JetStream) every node's copy
//!   gets every event. On a node-local SQLite log that name is new for a home whose
//!   router already has the consumer `<daemon>` of an older build: the first subscribe
//!   then starts where `<daemon>` stands (its ack floor), not at the head, so the events
//!   published while the daemon was being upgraded are not skipped ([`inherit`]).
//! * `cluster`: consumer `<daemon>`, one for the cluster: each event reaches one copy.
//!   A leader duty also hands over a [`Handler::pull_gate`]: its copy pulls only while
//!   this node leads, so a follower never takes (and acks or burns a delivery of) an event
//!   the leader must handle.
//!
//! A daemon that declares no scope (the test daemon, tools: the registry does not know
//! them) reads `<daemon>.scope` instead, default `cluster`: its consumer keeps the bare
//! name it always had (one process per home). A declared scope is not a setting.

use crate::router_client::{Backoff, Refusal, Subscription};
use crate::{ConfigError, Context, DaemonInfo, Handler, Settings};
use ringrift_proto::wire::{self, subscribe_request::Start};
use std::time::Duration;

pub use ringrift_proto::Scope;

/// The delivery scope of daemon `info` (see the module doc).
pub fn scope_of(settings: &Settings, info: &DaemonInfo) -> Result<Scope, ConfigError> {
    let key = format!("{}.scope", info.name);
    let set = settings.get::<String>(&key)?;
    match (info.scope, set) {
        (Some(_), Some(v)) => Err(ConfigError::Invalid(format!(
            "{key} = {v:?}: the scope of a registered daemon is its registry entry's (declared in its DaemonInfo), not a setting"
        ))),
        (Some(s), None) => Ok(s),
        (None, None) => Ok(Scope::Cluster),
        (None, Some(v)) => match v.as_str() {
            "node" => Ok(Scope::Node),
            "cluster" => Ok(Scope::Cluster),
            _ => Err(ConfigError::Invalid(format!(
                "{key} = {v:?}: one of \"node\", \"cluster\""
            ))),
        },
    }
}

/// The durable consumer of daemon `name` on node `node`: `<name>@<node>` for a
/// node-scoped daemon, `<name>` for a cluster-scoped one.
pub fn consumer_name(name: &str, node: &str, scope: Scope) -> String {
    match scope {
        Scope::Node => format!("{name}@{node}"),
        Scope::Cluster => name.to_owned(),
    }
}

/// The event loop's consumer name for this context.
pub(crate) fn consumer(ctx: &Context) -> String {
    consumer_name(ctx.name, &ctx.node, ctx.lifecycle.scope)
}

/// Where a new consumer `consumer` starts when the router (`stats` of it) has no
/// consumer of that name but has `predecessor`, the name the daemon's consumer had
/// before scopes: after the predecessor's ack floor. `None`: keep the request's start
/// (the consumer exists already, and the router ignores a start then; or there is no
/// predecessor).
pub fn inherit(stats: &wire::StatsResponse, consumer: &str, predecessor: &str) -> Option<Start> {
    if consumer == predecessor || stats.consumers.iter().any(|c| c.name == consumer) {
        return None;
    }
    let old = stats.consumers.iter().find(|c| c.name == predecessor)?;
    Some(Start::FromSeq(old.ack_floor + 1))
}

/// The subscription of the event loop for `req` (its consumer named by [`consumer`]):
/// a node-scoped consumer new at the router inherits its predecessor's position
/// ([`inherit`]; asked once, retried with backoff until the router answers or the daemon
/// stops), and the handler's [`Handler::pull_gate`], if any, gates the pulling. The
/// router's refusals (of that question, then of the subscribe calls) are reported in
/// `refusal`; `Err(why)` once they have lasted `subscribe_refused_exit_s`.
pub(crate) async fn subscription(
    h: &dyn Handler,
    ctx: &Context,
    mut req: wire::SubscribeRequest,
    refusal: &Refusal,
) -> Result<Subscription, String> {
    if ctx.lifecycle.scope == Scope::Node {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut client = ctx.client.clone();
        loop {
            let stats = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                r = client.stats(wire::StatsRequest {}) => r,
            };
            match stats {
                Ok(s) => {
                    refusal.clear();
                    if let Some(start) = inherit(s.get_ref(), &req.consumer, ctx.name) {
                        tracing::info!(consumer = %req.consumer, predecessor = ctx.name, ?start, "new node-scoped consumer starts where its predecessor stands");
                        req.start = Some(start);
                    }
                    break;
                }
                Err(e) if !crate::router_client::retriable(&e) => {
                    refusal.set(format!(
                        "router stats (consumer position): {:?}: {}",
                        e.code(),
                        e.message()
                    ));
                    if let Some(why) = refused_too_long(ctx, refusal) {
                        return Err(why);
                    }
                    ctx.errors.record("router stats (consumer position)", &e);
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.step()) => {}
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "router stats (consumer position) failed; retrying");
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.step()) => {}
                    }
                }
            }
        }
    }
    let sub = Subscription::new(ctx.client.clone(), req).reporting(refusal.clone());
    Ok(match h.pull_gate() {
        Some(gate) => sub.gated(gate),
        None => sub,
    })
}

/// `Some(why)` once the router's refusals recorded in `refusal` have lasted
/// `subscribe_refused_exit_s`: the daemon should exit so its supervisor acts.
pub(crate) fn refused_too_long(ctx: &Context, refusal: &Refusal) -> Option<String> {
    let (lasted, why) = refusal.get()?;
    let bound = ctx.lifecycle.subscribe_refused_exit;
    (lasted >= bound).then(|| {
        format!(
            "the router has refused the subscription of consumer {:?} for {:.1} s \
             (subscribe_refused_exit_s = {}): {why}",
            consumer(ctx),
            lasted.as_secs_f64(),
            bound.as_secs_f64()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(consumers: &[(&str, u64)]) -> wire::StatsResponse {
        wire::StatsResponse {
            consumers: consumers
                .iter()
                .map(|(n, f)| wire::ConsumerStats {
                    name: (*n).to_owned(),
                    ack_floor: *f,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    const MODEL_SYNC: DaemonInfo = DaemonInfo {
        scope: Some(Scope::Node),
        ..DaemonInfo::unregistered("model_sync", "")
    };
    const PROMOTION: DaemonInfo = DaemonInfo {
        scope: Some(Scope::Cluster),
        ..DaemonInfo::unregistered("unified_promotion", "")
    };

    #[test]
    fn consumer_names_follow_the_declared_scope() {
        let s = Settings::from_toml("").unwrap();
        let name = |d: DaemonInfo| consumer_name(d.name, "n2", scope_of(&s, &d).unwrap());
        assert_eq!(name(MODEL_SYNC), "model_sync@n2");
        assert_eq!(name(PROMOTION), "unified_promotion");
        assert_eq!(
            name("test_daemon".into()),
            "test_daemon",
            "unregistered: cluster"
        );
    }

    #[test]
    fn only_an_unregistered_daemon_sets_its_scope() {
        let td = DaemonInfo::from("test_daemon");
        let s = Settings::from_toml("[test_daemon]\nscope = \"node\"\n").unwrap();
        assert_eq!(scope_of(&s, &td).unwrap(), Scope::Node);
        let s = Settings::from_toml("[test_daemon]\nscope = \"everywhere\"\n").unwrap();
        let e = scope_of(&s, &td).unwrap_err().to_string();
        assert!(
            e.contains("test_daemon.scope") && e.contains("everywhere"),
            "{e}"
        );
        let s = Settings::from_toml("[model_sync]\nscope = \"cluster\"\n").unwrap();
        let e = scope_of(&s, &MODEL_SYNC).unwrap_err().to_string();
        assert!(
            e.contains("model_sync.scope") && e.contains("registry"),
            "{e}"
        );
    }

    #[test]
    fn a_new_node_consumer_starts_after_its_predecessors_floor() {
        let both = stats(&[("model_sync", 41), ("model_sync@n1", 7)]);
        assert_eq!(inherit(&both, "model_sync@n1", "model_sync"), None);
        let old = stats(&[("auto_sync", 3), ("model_sync", 41)]);
        assert_eq!(
            inherit(&old, "model_sync@n1", "model_sync"),
            Some(Start::FromSeq(42))
        );
        assert_eq!(inherit(&stats(&[]), "model_sync@n1", "model_sync"), None);
        assert_eq!(inherit(&old, "model_sync", "model_sync"), None);
    }
}
