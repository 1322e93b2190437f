//! The daemon registry (`registry.toml`, embedded) and the node profiles
//! (`profiles/*.toml`, embedded): which daemons exist, what they depend on, whether they
//! are implemented, and which run together. Data, not code paths: the launcher, the
//! systemd generator and the tidy test all read it; nothing else lists daemons.

mod profile;

pub use profile::{Override, Profile, builtin_profile_names, load_profile};

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistryError {
    #[error("registry: {0}")]
    Parse(String),
    #[error("unknown daemon {0:?} (see `ringrift-launcher --list`)")]
    Unknown(String),
    #[error("daemon {name:?} is an alias of unknown daemon {target:?}")]
    BadAlias { name: String, target: String },
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("daemon {daemon:?} depends on unknown daemon {dep:?}")]
    UnknownDependency { daemon: String, dep: String },
    #[error("profile {name:?}: {error}")]
    Profile { name: String, error: String },
}

/// Delivery scope of a daemon (defined with the wire types, declared again by each
/// daemon's `DaemonInfo`; the tidy test keeps them equal).
pub use ringrift_proto::Scope;

fn yes() -> bool {
    true
}
fn five() -> u32 {
    5
}
fn thirty() -> f64 {
    30.0
}

/// The event bus's registry name: every daemon not `standalone` depends on it, and the
/// launcher gives the others its address, keeps its listen address across its restarts
/// and reads the heartbeat feed from it. The one place that names it.
pub const ROUTER: &str = "event_router";

/// One daemon as the registry describes it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    /// Registry key, e.g. `auto_sync`.
    pub name: String,
    pub category: String,
    #[serde(default)]
    pub about: String,
    /// Binary name; default `ringrift-<name with dashes>`.
    #[serde(default)]
    binary: Option<String>,
    /// Extra dependencies; the router ([`ROUTER`]) is implicit unless `standalone`.
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default = "yes")]
    pub auto_restart: bool,
    #[serde(default = "five")]
    pub max_restarts: u32,
    #[serde(default = "thirty")]
    pub health_check_interval_s: f64,
    /// The default cycle interval: the bottom config layer of the daemon's
    /// `<name>.cycle_interval_s`. The daemon's crate declares the same value in its
    /// `DaemonInfo`, which its binary runs with; the tidy test keeps the two equal.
    #[serde(default)]
    pub cycle_interval_s: Option<f64>,
    /// Deprecated name: resolves to this daemon with a warning.
    #[serde(default)]
    pub alias_of: Option<String>,
    /// False: registered but not built yet; the launcher refuses it.
    #[serde(default)]
    pub implemented: bool,
    /// Extra arguments the launcher passes.
    #[serde(default)]
    pub args: Vec<String>,
    /// True: does not need the event router (test daemons, benches).
    #[serde(default)]
    pub standalone: bool,
    /// True: the launcher passes `<name>.expect=<every daemon of the plan>` (the health
    /// server: the daemons it should see).
    #[serde(default)]
    pub expects_plan: bool,
    /// Delivery scope of the daemon's events; required on every daemon (not on an
    /// alias, which has its target's): [`Registry::validate`] reports a missing one.
    #[serde(default)]
    pub scope: Option<Scope>,
}

impl DaemonSpec {
    pub fn binary(&self) -> String {
        self.binary
            .clone()
            .unwrap_or_else(|| format!("ringrift-{}", self.name.replace('_', "-")))
    }
    /// Crate folder under `crates/daemons/`.
    pub fn folder(&self) -> String {
        self.name.replace('_', "-")
    }
    pub fn unit(&self) -> String {
        format!("{}.service", self.binary())
    }
    pub fn is_alias(&self) -> bool {
        self.alias_of.is_some()
    }
    /// All dependencies, the implicit router first.
    pub fn deps(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.standalone && self.name != ROUTER {
            v.push(ROUTER.to_owned());
        }
        v.extend(
            self.depends_on
                .iter()
                .filter(|d| d.as_str() != ROUTER)
                .cloned(),
        );
        v
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    daemon: Vec<DaemonSpec>,
}

/// Something `validate` found wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    UnknownDependency {
        daemon: String,
        dep: String,
    },
    BadAlias {
        daemon: String,
        target: String,
    },
    Cycle(Vec<String>),
    MissingBinary {
        daemon: String,
        binary: String,
    },
    /// A daemon without `scope`: which consumer its copies share must be decided.
    MissingScope {
        daemon: String,
    },
    /// An alias with its own `scope` (it has its target's).
    AliasScope {
        daemon: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::UnknownDependency { daemon, dep } => {
                write!(f, "{daemon}: depends on unknown daemon {dep}")
            }
            Problem::BadAlias { daemon, target } => {
                write!(f, "{daemon}: alias of unknown daemon {target}")
            }
            Problem::Cycle(c) => write!(f, "dependency cycle: {}", c.join(" -> ")),
            Problem::MissingBinary { daemon, binary } => write!(
                f,
                "{daemon}: binary {binary} not found beside the launcher or on PATH"
            ),
            Problem::MissingScope { daemon } => write!(
                f,
                "{daemon}: no scope (scope = \"node\": a consumer per node, or \"cluster\": one for the cluster)"
            ),
            Problem::AliasScope { daemon } => {
                write!(f, "{daemon}: an alias has its target's scope, not its own")
            }
        }
    }
}

/// The set of known daemons.
#[derive(Debug, Clone)]
pub struct Registry {
    specs: Vec<DaemonSpec>,
    index: BTreeMap<String, usize>,
}

pub const BUILTIN: &str = include_str!("../registry.toml");

impl Registry {
    /// The registry shipped in the binary.
    pub fn builtin() -> Registry {
        match Registry::from_toml(BUILTIN) {
            Ok(r) => r,
            Err(e) => panic!("embedded registry.toml is invalid (a unit test guards this): {e}"),
        }
    }

    pub fn from_toml(text: &str) -> Result<Registry, RegistryError> {
        let f: RegistryFile =
            toml::from_str(text).map_err(|e| RegistryError::Parse(e.to_string()))?;
        let mut index = BTreeMap::new();
        for (i, s) in f.daemon.iter().enumerate() {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(RegistryError::Parse(format!(
                    "daemon name {:?} must be lower_snake_case",
                    s.name
                )));
            }
            if index.insert(s.name.clone(), i).is_some() {
                return Err(RegistryError::Parse(format!(
                    "daemon {:?} is listed twice",
                    s.name
                )));
            }
        }
        Ok(Registry {
            specs: f.daemon,
            index,
        })
    }

    pub fn get(&self, name: &str) -> Option<&DaemonSpec> {
        self.index.get(name).map(|&i| &self.specs[i])
    }

    /// Every entry, aliases included, in file order.
    pub fn all(&self) -> &[DaemonSpec] {
        &self.specs
    }

    /// Every real (non-alias) daemon.
    pub fn daemons(&self) -> impl Iterator<Item = &DaemonSpec> {
        self.specs.iter().filter(|s| !s.is_alias())
    }

    /// Follows aliases; returns the daemon and a deprecation warning if one was followed.
    pub fn resolve(&self, name: &str) -> Result<(&DaemonSpec, Option<String>), RegistryError> {
        let mut spec = self
            .get(name)
            .ok_or_else(|| RegistryError::Unknown(name.to_owned()))?;
        let mut warning = None;
        for _ in 0..8 {
            let Some(target) = &spec.alias_of else {
                return Ok((spec, warning));
            };
            let next = self.get(target).ok_or_else(|| RegistryError::BadAlias {
                name: spec.name.clone(),
                target: target.clone(),
            })?;
            warning = Some(format!(
                "daemon {name:?} is deprecated; using {:?}",
                next.name
            ));
            spec = next;
        }
        Err(RegistryError::BadAlias {
            name: name.to_owned(),
            target: "alias loop".into(),
        })
    }

    /// The named daemons plus everything they depend on, dependencies first.
    /// Aliases are resolved (warnings returned).
    pub fn closure(&self, names: &[String]) -> Result<(Vec<String>, Vec<String>), RegistryError> {
        let mut warnings = Vec::new();
        let mut order = Vec::new();
        let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false = visiting, true = done
        fn visit(
            r: &Registry,
            name: &str,
            stack: &mut Vec<String>,
            state: &mut BTreeMap<String, bool>,
            order: &mut Vec<String>,
        ) -> Result<(), RegistryError> {
            match state.get(name) {
                Some(true) => return Ok(()),
                Some(false) => {
                    let start = stack.iter().position(|s| s == name).unwrap_or(0);
                    let mut cyc: Vec<String> = stack[start..].to_vec();
                    cyc.push(name.to_owned());
                    return Err(RegistryError::Cycle(cyc));
                }
                None => {}
            }
            let spec = r
                .get(name)
                .ok_or_else(|| RegistryError::Unknown(name.to_owned()))?;
            state.insert(name.to_owned(), false);
            stack.push(name.to_owned());
            for d in spec.deps() {
                let (dspec, _) = r
                    .resolve(&d)
                    .map_err(|_| RegistryError::UnknownDependency {
                        daemon: name.to_owned(),
                        dep: d.clone(),
                    })?;
                let dname = dspec.name.clone();
                visit(r, &dname, stack, state, order)?;
            }
            stack.pop();
            state.insert(name.to_owned(), true);
            order.push(name.to_owned());
            Ok(())
        }
        for n in names {
            let (spec, w) = self.resolve(n)?;
            warnings.extend(w);
            let name = spec.name.clone();
            visit(self, &name, &mut Vec::new(), &mut state, &mut order)?;
        }
        Ok((order, warnings))
    }

    /// The delivery scope of daemon `name` (aliases followed); `None` for a name the
    /// registry does not know or an entry without a scope (a [`Problem::MissingScope`]).
    pub fn scope_of(&self, name: &str) -> Option<Scope> {
        self.resolve(name).ok().and_then(|(s, _)| s.scope)
    }

    /// Checks aliases, dependencies, cycles, scopes and (for implemented daemons) binaries.
    pub fn validate(&self, has_binary: &dyn Fn(&str) -> bool) -> Vec<Problem> {
        let mut out = Vec::new();
        for s in &self.specs {
            if let Some(t) = &s.alias_of {
                if self.get(t).is_none() {
                    out.push(Problem::BadAlias {
                        daemon: s.name.clone(),
                        target: t.clone(),
                    });
                }
                if s.scope.is_some() {
                    out.push(Problem::AliasScope {
                        daemon: s.name.clone(),
                    });
                }
                continue;
            }
            if s.scope.is_none() {
                out.push(Problem::MissingScope {
                    daemon: s.name.clone(),
                });
            }
            for d in s.deps() {
                if self.resolve(&d).is_err() {
                    out.push(Problem::UnknownDependency {
                        daemon: s.name.clone(),
                        dep: d,
                    });
                }
            }
            if s.implemented && !has_binary(&s.binary()) {
                out.push(Problem::MissingBinary {
                    daemon: s.name.clone(),
                    binary: s.binary(),
                });
            }
        }
        let mut seen_cycles = BTreeSet::new();
        for s in self.daemons() {
            if let Err(RegistryError::Cycle(c)) = self.closure(std::slice::from_ref(&s.name)) {
                let mut key = c.clone();
                key.sort();
                key.dedup();
                if seen_cycles.insert(key) {
                    out.push(Problem::Cycle(c));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
