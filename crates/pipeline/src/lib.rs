//! Shared pieces of the training-loop daemons (auto_export, training_trigger,
//! continuous_training_loop, evaluation, unified_promotion, ...): running workload jobs
//! through command templates ([`jobs`]), persisted decision state ([`state`]), leased
//! work-queue claims ([`claim`]), which config keys a daemon works on ([`configs`]) and
//! the leadership of leader-only duties ([`leadership`], [`duty`]), the pause held per
//! source ([`pause`]).
//! Policy stays in the daemon crates.

pub mod alloc;
pub mod claim;
pub mod convert;
pub mod duty;
pub mod emit;
pub mod gate;
pub mod jobs;
pub mod models;
pub mod pause;
pub mod state;
pub mod status;

use handler_base::Context;
use ringrift_store::ConfigKey;

/// The leadership of this node's cluster (`ringrift_cluster::leader`): leader-only
/// duties (queue population, promotion, tournaments) run only while
/// [`Leadership::mine`](ringrift_cluster::Leadership::mine) says so and carry its token.
/// A bad cluster.toml is a config error (exit 64).
pub fn leadership(ctx: &handler_base::Context) -> anyhow::Result<ringrift_cluster::Leadership> {
    let cluster = ringrift_cluster::ClusterConfig::load(&ctx.home, &ctx.node)
        .map_err(handler_base::ConfigError::from)?;
    Ok(ringrift_cluster::Leadership::new(&cluster)
        .map_err(|e| handler_base::ConfigError::Invalid(e.to_string()))?)
}

/// Opens the node's work queue (`data/work_queue.db`), creating `data/` if needed.
pub fn open_queue(
    home: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn ringrift_store::work_queue::WorkQueue>> {
    std::fs::create_dir_all(home.join("data"))?;
    Ok(std::sync::Arc::new(
        ringrift_store::work_queue::SqliteWorkQueue::open(&ringrift_store::paths::work_queue_db(
            home,
        ))?,
    ))
}

/// The node's work queue as cluster.toml says: the shared JetStream queue (one stream
/// and bucket for the cluster, `[events] replicas` copies) when `[events] backend =
/// "jetstream"`, else this node's SQLite file ([`open_queue`]).
pub fn open_node_queue(
    ctx: &Context,
) -> anyhow::Result<std::sync::Arc<dyn ringrift_store::work_queue::WorkQueue>> {
    let cluster = ringrift_cluster::ClusterConfig::load(&ctx.home, &ctx.node)
        .map_err(handler_base::ConfigError::from)?;
    match ringrift_nats::JetStreamWorkQueue::for_cluster(&cluster, &ctx.source()) {
        None => open_queue(&ctx.home),
        Some(q) => Ok(std::sync::Arc::new(q?)),
    }
}

/// The config keys this daemon works on: `--configs`, else `pipeline.configs`
/// (comma-separated), else `hex8_2p`. An invalid key is a configuration error.
pub fn configs(ctx: &Context) -> anyhow::Result<Vec<ConfigKey>> {
    let raw: Vec<String> = if !ctx.configs.is_empty() {
        ctx.configs.clone()
    } else if let Some(s) = ctx.settings.string("pipeline.configs") {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    } else {
        vec!["hex8_2p".to_owned()]
    };
    raw.iter()
        .map(|k| {
            k.parse::<ConfigKey>().map_err(|e| {
                handler_base::ConfigError::Invalid(format!("config key {k:?}: {e}")).into()
            })
        })
        .collect()
}
