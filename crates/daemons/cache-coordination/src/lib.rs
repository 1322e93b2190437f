//! `cache_coordination`: which node caches which model, and this node's model cache
//! kept within a budget; every 300 s by default and on MODEL_PROMOTED.
//!
//! Each cycle: local LRU eviction first ([`cache`]: while the model files under
//! `models/` exceed `budget_bytes`, the least recently used unprotected one is deleted;
//! canonical models, `ringrift_best_*` link targets, the newest `keep_newest` candidates
//! of each folder and the newest backup of each config are never deleted), then the view:
//! this node's models (SHA-256 computed off the runtime, remembered per size and mtime)
//! and each peer's `GET /manifest?root=models` through `DataClient::get_json` (its
//! `files` read as `ringrift_store::manifest::Manifest`). The view goes to health
//! details and to `run/cache_coordination.json` (`CacheView`: per node its models and
//! bytes or the error asking it, per SHA-256 the nodes holding it).
//!
//! MODEL_PROMOTED (config from the event): the models the promotion superseded are
//! evicted here at once (the config's older backups, all but the newest, which is the
//! previous canonical kept as a backup; its candidates older than the promoted file when
//! that file is on this node; never a protected file), then the view is refreshed.
//!
//! `[cache_coordination]`: `budget_bytes` (20 GiB), `keep_newest` (3), `timeout_s` (30).

pub mod cache;

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::manifest::{self, FileEntry, Manifest};
use ringrift_store::models::ModelFormat;
use ringrift_store::paths;
use ringrift_transfer::{DataClient, Peer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "cache_coordination",
    about: "Model cache across nodes: who holds which model, LRU eviction, invalidation on promotion",
    cycle_interval_s: Some(300.0),
    scope: Some(Scope::Node),
};

/// `[cache_coordination]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes of model files `models/` may hold.
    pub budget_bytes: u64,
    /// Newest candidates per folder never evicted.
    pub keep_newest: usize,
    pub timeout_s: f64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            budget_bytes: 20 << 30,
            keep_newest: 3,
            timeout_s: 30.0,
        }
    }
}

/// One node's models in the view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCache {
    /// The error asking it (its other fields are then empty).
    pub error: Option<String>,
    pub bytes: u64,
    /// Path under `models/` → SHA-256, size, mtime.
    pub models: BTreeMap<String, FileEntry>,
}

/// `run/cache_coordination.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheView {
    pub updated_ms: i64,
    pub this_node: String,
    pub budget_bytes: u64,
    pub nodes: BTreeMap<String, NodeCache>,
    /// SHA-256 → the nodes holding a file with it.
    pub by_sha256: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Clone)]
struct Status {
    cycles: u64,
    local_bytes: u64,
    local_models: usize,
    evicted_total: u64,
    evicted_bytes_total: u64,
    invalidated_total: u64,
    distinct_models: usize,
    /// Node → "N models, B bytes" or its error.
    nodes: BTreeMap<String, String>,
    unreachable: usize,
    over_budget: bool,
    last_error: Option<String>,
}

type HashCache = HashMap<PathBuf, (u64, i64, String)>;

/// Chooses the files to delete (by path under `models/`) from the listing and the
/// protected set.
type Choose =
    dyn Fn(&[cache::LocalModel], &std::collections::BTreeSet<String>) -> Vec<String> + Send;

pub struct CacheCoordination {
    cfg: CacheConfig,
    models: PathBuf,
    view_path: PathBuf,
    peers: Vec<Peer>,
    client: DataClient,
    hashes: Arc<Mutex<HashCache>>,
    /// One refresh at a time (cycle and event).
    busy: tokio::sync::Mutex<()>,
    status: Mutex<Status>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: CacheConfig = ctx.settings.section("cache_coordination")?;
    handler_base::ensure_config!(
        cfg.budget_bytes >= 1,
        "cache_coordination.budget_bytes = {} must be at least 1",
        cfg.budget_bytes
    );
    let (cluster, client) =
        ringrift_transfer::setup::connect(ctx, "cache_coordination", cfg.timeout_s)?;
    Ok(Arc::new(CacheCoordination {
        cfg,
        models: paths::models_dir(&ctx.home),
        view_path: paths::run_dir(&ctx.home).join("cache_coordination.json"),
        peers: ringrift_transfer::peers::peers(&cluster),
        client,
        hashes: Arc::new(Mutex::new(HashMap::new())),
        busy: tokio::sync::Mutex::new(()),
        status: Mutex::new(Status::default()),
    }))
}

/// What a local pass did.
struct Local {
    models: BTreeMap<String, FileEntry>,
    bytes: u64,
    evicted: Vec<(String, u64)>,
    over_budget: bool,
    errors: Vec<String>,
}

/// SHA-256 of a model file read with `O_NOATIME` where the kernel allows it (the owner),
/// so this daemon hashing a model does not count as a use for the LRU order.
fn hash_without_use(path: &std::path::Path) -> Result<String, ringrift_store::StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    let mut f = open(nix::fcntl::OFlag::O_NOATIME.bits())
        .or_else(|_| open(0))
        .map_err(|e| ringrift_store::StoreError::Io {
            action: "open for hashing",
            path: path.to_owned(),
            source: e,
        })?;
    Ok(manifest::hash_reader(path, &mut f)?.0)
}

/// Deletes `victims` (chosen by `choose` from the listing and the protected set), then
/// lists and hashes what is left. Blocking.
fn local_pass(
    models: &std::path::Path,
    keep_newest: usize,
    budget: u64,
    hashes: &Mutex<HashCache>,
    choose: &Choose,
) -> Local {
    let listed = cache::list(models);
    let keep = cache::protected(models, &listed, keep_newest);
    let victims = choose(&listed, &keep);
    let mut evicted = Vec::new();
    let mut errors = Vec::new();
    for rel in victims {
        let Some(m) = listed.iter().find(|m| m.rel == rel) else {
            continue;
        };
        match cache::delete(m) {
            Ok(n) => evicted.push((rel, n)),
            Err(e) => errors.push(format!("delete {}: {e}", m.path.display())),
        }
    }
    let listed = cache::list(models);
    let mut out = BTreeMap::new();
    let mut cache = hashes.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|p, _| listed.iter().any(|m| &m.path == p));
    for m in &listed {
        let sha = match cache.get(&m.path) {
            Some((size, mtime, sha)) if *size == m.size && *mtime == m.mtime_ms => sha.clone(),
            _ => match hash_without_use(&m.path) {
                Ok(sha) => {
                    cache.insert(m.path.clone(), (m.size, m.mtime_ms, sha.clone()));
                    sha
                }
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            },
        };
        out.insert(
            m.rel.clone(),
            FileEntry {
                sha256: sha,
                size: m.size,
                mtime_ms: m.mtime_ms,
            },
        );
    }
    let bytes = listed.iter().map(|m| m.size).sum();
    Local {
        models: out,
        bytes,
        evicted,
        over_budget: bytes > budget,
        errors,
    }
}

impl CacheCoordination {
    /// Local eviction by `choose`, then the view (peers asked), written and reported.
    async fn refresh(&self, ctx: &Context, choose: Box<Choose>) -> anyhow::Result<Local> {
        let _one = self.busy.lock().await;
        let (models, keep_newest, budget, hashes) = (
            self.models.clone(),
            self.cfg.keep_newest,
            self.cfg.budget_bytes,
            self.hashes.clone(),
        );
        let local = tokio::task::spawn_blocking(move || {
            local_pass(&models, keep_newest, budget, &hashes, &*choose)
        })
        .await?;
        for (rel, n) in &local.evicted {
            tracing::info!(model = %rel, bytes = n, "evicted from the model cache");
        }
        let answers = futures_util::future::join_all(self.peers.iter().map(|p| async move {
            (
                p,
                self.client
                    .get_json::<Manifest>(p, "/manifest?root=models")
                    .await,
            )
        }))
        .await;
        let mut view = CacheView {
            updated_ms: ringrift_store::now_ms(),
            this_node: ctx.node.clone(),
            budget_bytes: self.cfg.budget_bytes,
            ..Default::default()
        };
        view.nodes.insert(
            ctx.node.clone(),
            NodeCache {
                error: None,
                bytes: local.bytes,
                models: local.models.clone(),
            },
        );
        for (p, r) in answers {
            let entry = match r {
                Ok(m) => NodeCache {
                    error: None,
                    bytes: m
                        .files
                        .iter()
                        .filter(|(rel, _)| ModelFormat::of(rel).is_some())
                        .map(|(_, e)| e.size)
                        .sum(),
                    models: m
                        .files
                        .into_iter()
                        .filter(|(rel, _)| ModelFormat::of(rel).is_some())
                        .collect(),
                },
                Err(e) => NodeCache {
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            };
            view.nodes.insert(p.name.clone(), entry);
        }
        for (node, c) in &view.nodes {
            for e in c.models.values() {
                let holders = view.by_sha256.entry(e.sha256.clone()).or_default();
                if !holders.contains(node) {
                    holders.push(node.clone());
                }
            }
        }
        let bytes = serde_json::to_vec_pretty(&view)?;
        let path = self.view_path.clone();
        tokio::task::spawn_blocking(move || manifest::atomic_write(&path, &bytes)).await??;
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.local_bytes = local.bytes;
        st.local_models = local.models.len();
        st.evicted_total += local.evicted.len() as u64;
        st.evicted_bytes_total += local.evicted.iter().map(|(_, n)| n).sum::<u64>();
        st.distinct_models = view.by_sha256.len();
        st.over_budget = local.over_budget;
        st.unreachable = view.nodes.values().filter(|c| c.error.is_some()).count();
        st.nodes = view
            .nodes
            .iter()
            .map(|(n, c)| {
                let s = match &c.error {
                    Some(e) => format!("error: {e}"),
                    None => format!("{} models, {} bytes", c.models.len(), c.bytes),
                };
                (n.clone(), s)
            })
            .collect();
        st.last_error = local.errors.first().cloned();
        Ok(local)
    }
}

#[async_trait::async_trait]
impl Handler for CacheCoordination {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::ModelPromoted]
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let budget = self.cfg.budget_bytes;
        let local = self
            .refresh(
                ctx,
                Box::new(move |listed, keep| {
                    cache::lru_victims(listed, keep, budget)
                        .into_iter()
                        .map(|m| m.rel.clone())
                        .collect()
                }),
            )
            .await?;
        self.status.lock().unwrap_or_else(|p| p.into_inner()).cycles += 1;
        if !local.errors.is_empty() {
            anyhow::bail!("model cache: {}", local.errors.join("; "));
        }
        Ok(())
    }

    async fn handle_event(&self, ctx: &Context, event: &Event) -> anyhow::Result<()> {
        let wire::event::Payload::ModelPromoted(p) = &event.payload else {
            return Ok(());
        };
        let config = if event.config_key.is_empty() {
            // `.../canonical_<config>.<ext>`
            std::path::Path::new(&p.canonical_path)
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("canonical_"))
                .unwrap_or_default()
                .to_owned()
        } else {
            event.config_key.clone()
        };
        if config.parse::<ringrift_store::ConfigKey>().is_err() {
            tracing::warn!(config = %config, canonical = %p.canonical_path, "MODEL_PROMOTED without a config key; nothing invalidated");
            return Ok(());
        }
        // The promoted file's age, if it is one of this node's models.
        let promoted = std::path::PathBuf::from(&p.model_path);
        let models = self.models.clone();
        let promoted_mtime = tokio::task::spawn_blocking(move || {
            let canon_models = std::fs::canonicalize(&models).ok()?;
            let canon = std::fs::canonicalize(&promoted).ok()?;
            canon.starts_with(&canon_models).then_some(())?;
            let m = std::fs::metadata(&canon).ok()?;
            use std::os::unix::fs::MetadataExt;
            Some(m.mtime().saturating_mul(1000) + m.mtime_nsec() / 1_000_000)
        })
        .await?;
        let c = config.clone();
        let local = self
            .refresh(
                ctx,
                Box::new(move |listed, keep| {
                    cache::superseded(listed, keep, &c, promoted_mtime)
                        .into_iter()
                        .map(|m| m.rel.clone())
                        .collect()
                }),
            )
            .await?;
        tracing::info!(config = %config, invalidated = local.evicted.len(), "MODEL_PROMOTED: superseded models evicted");
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .invalidated_total += local.evicted.len() as u64;
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let st = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let msg = format!(
            "{} local models, {} of {} bytes; {} distinct models on {} nodes",
            st.local_models,
            st.local_bytes,
            self.cfg.budget_bytes,
            st.distinct_models,
            st.nodes.len()
        );
        let mut h = if st.over_budget {
            HealthCheckResult::degraded(format!(
                "{msg}; over budget with only protected models left"
            ))
        } else if st.unreachable > 0 {
            HealthCheckResult::degraded(format!("{msg}; {} node(s) not answering", st.unreachable))
        } else {
            HealthCheckResult::running(msg)
        }
        .detail("cycles", st.cycles)
        .detail("local_models", st.local_models)
        .detail("local_bytes", st.local_bytes)
        .detail("budget_bytes", self.cfg.budget_bytes)
        .detail("evicted_total", st.evicted_total)
        .detail("evicted_bytes_total", st.evicted_bytes_total)
        .detail("invalidated_total", st.invalidated_total)
        .detail("distinct_models", st.distinct_models);
        for (n, s) in &st.nodes {
            h = h.detail(format!("node.{n}"), s);
        }
        match st.last_error {
            Some(e) => h.detail("last_error", e),
            None => h,
        }
    }
}

#[cfg(test)]
mod tests;
