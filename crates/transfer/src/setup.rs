//! What every transfer daemon starts from: this node's cluster view, the token, and an
//! [`Engine`] with the limits of its `[<daemon>]` section.

use crate::files::{Engine, Limits};
use crate::{DataClient, Peer, peers};
use handler_base::{ConfigError, Context};
use ringrift_cluster::ClusterConfig;
use std::time::Duration;

/// The transfer settings every sync daemon's section may hold (flattened into it).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct TransferSettings {
    /// Downloads in flight per peer.
    pub per_host: usize,
    /// Bytes per second over this daemon's downloads; 0 = unlimited.
    pub bandwidth_bytes_per_s: u64,
    /// Connect / stalled-read timeout of a peer, seconds.
    pub timeout_s: f64,
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            per_host: 2,
            bandwidth_bytes_per_s: 0,
            timeout_s: 30.0,
        }
    }
}

/// A daemon's transfer context.
pub struct Setup {
    pub cluster: ClusterConfig,
    pub engine: Engine,
}

impl Setup {
    /// Validates `t` (errors name `<section>.<key>`), loads cluster.toml and the token
    /// (required when cluster.toml says so) and builds the engine; its quarantine is
    /// `data/quarantine/<section>`.
    pub fn new(ctx: &Context, section: &str, t: TransferSettings) -> Result<Setup, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        if t.per_host == 0 || t.per_host > 64 {
            return Err(bad(format!(
                "{section}.per_host = {} must be 1..=64",
                t.per_host
            )));
        }
        if !(t.timeout_s.is_finite() && t.timeout_s > 0.0 && t.timeout_s <= 3600.0) {
            return Err(bad(format!(
                "{section}.timeout_s = {} must be a number of seconds in (0, 3600]",
                t.timeout_s
            )));
        }
        let cluster = ClusterConfig::load(&ctx.home, &ctx.node).map_err(|e| bad(e.to_string()))?;
        let token = handler_base::auth::load(&ctx.settings)?;
        if cluster.require_token && token.is_none() {
            return Err(bad(format!(
                "{} says [auth] require_token = true: set [auth] token in ringrift.toml or RINGRIFT_TOKEN",
                cluster.source()
            )));
        }
        let client = DataClient::new(
            token.as_ref().map(|t| t.secret()),
            Duration::from_secs_f64(t.timeout_s),
        )
        .map_err(|e| bad(e.to_string()))?;
        let limits = Limits {
            per_host: t.per_host,
            bytes_per_s: t.bandwidth_bytes_per_s,
        };
        let quarantine = ringrift_store::paths::quarantine_dir(&ctx.home).join(section);
        let engine =
            Engine::new(client, quarantine, limits).map_err(|e| bad(format!("{section}: {e}")))?;
        Ok(Setup { cluster, engine })
    }

    /// Every other node.
    pub fn peers(&self) -> Vec<Peer> {
        peers::peers(&self.cluster)
    }

    /// The other node named `name`.
    pub fn peer(&self, name: &str) -> Option<Peer> {
        self.peers().into_iter().find(|p| p.name == name)
    }
}
