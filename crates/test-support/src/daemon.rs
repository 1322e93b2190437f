//! The in-process prologue of a daemon test: a context from `Context::for_test` (the
//! daemon's registry defaults under `toml`, a recording publisher) as node `node`, and
//! the daemon's handler built from it; or settings it must refuse as a configuration
//! error ([`refused`]).

pub use handler_base::Recorded;
use handler_base::{Context, Handler};
use std::path::Path;
use std::sync::Arc;

/// A daemon's handler, its context and what it published.
pub type Daemon = (Arc<dyn Handler>, Context, Recorded);

/// The daemon `name` built by `build` over `home` as node `node`; `toml` is its settings.
/// Panics naming the daemon when its context or `build` fails (a test of a refused
/// configuration calls `Context::for_test` and `build` itself).
pub fn daemon(
    name: &'static str,
    build: impl Fn(&Context) -> anyhow::Result<Arc<dyn Handler>>,
    home: &Path,
    node: &str,
    toml: &str,
) -> Daemon {
    let (mut ctx, rec) = Context::for_test(name, home, toml)
        .unwrap_or_else(|e| panic!("{name}: test context: {e:#}"));
    ctx.node = node.to_owned();
    let h = build(&ctx).unwrap_or_else(|e| panic!("{name}: build: {e:#}"));
    (h, ctx, rec)
}

/// What `build` says of settings `toml` for the daemon `name` over `home`, which must be
/// a refusal as a configuration error (exit 64); panics naming the daemon and the
/// settings when they are accepted or refused otherwise. The caller checks the message.
pub fn refused(
    name: &'static str,
    build: impl Fn(&Context) -> anyhow::Result<Arc<dyn Handler>>,
    home: &Path,
    toml: &str,
) -> anyhow::Error {
    let (ctx, _) = Context::for_test(name, home, toml)
        .unwrap_or_else(|e| panic!("{name}: test context of {toml:?}: {e:#}"));
    let Err(e) = build(&ctx) else {
        panic!("{name}: {toml:?} was accepted");
    };
    assert!(
        handler_base::is_config_error(&e),
        "{name}: {toml:?} was refused, but not as a configuration error: {e:#}"
    );
    e
}
