//! The training loop's shared policy, used by the loop daemons (auto_export,
//! training_trigger, continuous_training_loop, evaluation, unified_promotion,
//! tournament_daemon, distillation, job_scheduler, data_pipeline, quality_monitor and the
//! selfplay suppliers queue_populator, selfplay_coordinator, idle_resource): leased
//! work-queue claims and the job that stops when its lease is lost ([`claim`]), the
//! promotion gate's settings and the scores it reads ([`gate`], [`convert`]), pauses held
//! per source ([`pause`]), selfplay spread over configs under a cap ([`alloc`]) and the
//! config keys a daemon works on ([`configs`]). It runs no jobs and opens no NATS
//! connection: jobs through command templates are `ringrift-jobs`, the node's work queue
//! `ringrift_nats::open_node_queue`, records `ringrift-ledger`, leader duties
//! `ringrift_cluster::duty`, model files `ringrift_store::model_files`, and events go out
//! through `handler_base::Publish`. Policy of one daemon stays in its crate.

pub mod alloc;
pub mod claim;
pub mod convert;
pub mod gate;
pub mod pause;

use handler_base::Context;
use ringrift_store::ConfigKey;

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
