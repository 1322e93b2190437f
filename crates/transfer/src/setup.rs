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
        let (cluster, client) = connect(ctx, section, t.timeout_s)?;
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

/// What every daemon that talks to peers' data servers needs: `<section>.timeout_s`
/// checked (a number of seconds in (0, 3600]), this node's cluster.toml, the token
/// (required when cluster.toml says so) and a client that sends it. Errors name the key
/// or the file.
pub fn connect(
    ctx: &Context,
    section: &str,
    timeout_s: f64,
) -> Result<(ClusterConfig, DataClient), ConfigError> {
    let bad = |m: String| ConfigError::Invalid(m);
    if !(timeout_s.is_finite() && timeout_s > 0.0 && timeout_s <= 3600.0) {
        return Err(bad(format!(
            "{section}.timeout_s = {timeout_s} must be a number of seconds in (0, 3600]"
        )));
    }
    let cluster = ClusterConfig::load(&ctx.home, &ctx.node)?;
    let token = handler_base::auth::load(&ctx.settings)?;
    if cluster.require_token && token.is_none() {
        return Err(bad(format!(
            "{} says [auth] require_token = true: set [auth] token in ringrift.toml or RINGRIFT_TOKEN",
            cluster.source()
        )));
    }
    let tls = handler_base::tls::Tls::load(&ctx.settings)?;
    let client = DataClient::with_tls(
        token.as_ref().map(|t| t.secret()),
        Duration::from_secs_f64(timeout_s),
        tls.client(),
        tls.allow_plaintext(),
    )
    .map_err(|e| bad(e.to_string()))?;
    if let Some(p) = client.refused_peer(&peers::peers(&cluster)) {
        return Err(ConfigError::Usage(format!(
            "peer {} at {}: the token is not sent in clear to another machine: set [tls] ca (the peers serve TLS with [tls] cert and key), or [tls] allow_plaintext = true",
            p.name, p.url
        )));
    }
    Ok((cluster, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every daemon that talks to data servers refuses to start without the token a
    /// cluster requires, and names a bad timeout (it used to be checked in five places,
    /// the token in two of them).
    #[tokio::test]
    async fn connect_requires_the_clusters_token_and_a_sane_timeout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cluster.toml"),
            "[auth]\nrequire_token = true\n[[node]]\nname = \"test\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\n",
        )
        .unwrap();
        let (ctx, _) = Context::for_test("gossip_sync", dir.path(), "").unwrap();
        let err = connect(&ctx, "gossip_sync", 30.0).unwrap_err();
        assert!(err.to_string().contains("require_token"), "{err}");
        let (ctx, _) = Context::for_test(
            "gossip_sync",
            dir.path(),
            "[auth]\ntoken = \"t0k3n-for-tests\"\n",
        )
        .unwrap();
        assert!(connect(&ctx, "gossip_sync", 30.0).is_ok());
        for bad in [0.0, -1.0, f64::NAN, 1e9] {
            let err = connect(&ctx, "gossip_sync", bad).unwrap_err();
            assert!(err.to_string().contains("gossip_sync.timeout_s"), "{err}");
        }
    }
}
