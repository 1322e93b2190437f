//! Node and loop profiles: TOML files naming the daemons that run together, with
//! optional per-daemon overrides. The files under `profiles/` are embedded; a file of the
//! same name in a profile directory (e.g. `$RINGRIFT_HOME/profiles`) takes precedence.

use crate::{Registry, RegistryError};
use std::collections::BTreeMap;
use std::path::Path;

/// Per-daemon settings a profile may change. Lifecycle settings (the cycle interval) are
/// not among them: a daemon reads those from its config, so the launcher and a systemd
/// unit run it alike.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: String,
    #[serde(default)]
    include: Vec<String>,
    daemons: Vec<String>,
    #[serde(default)]
    daemon: BTreeMap<String, Override>,
    /// The config keys the loop works on when the launcher is given no `--configs`
    /// (inherited from an include when not set).
    #[serde(default)]
    configs: Vec<String>,
}

/// A loaded profile: includes expanded, names as written (aliases resolved later).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub daemons: Vec<String>,
    pub overrides: BTreeMap<String, Override>,
    /// Config keys for the daemons when the launcher has no `--configs` (empty: the
    /// daemons' own default).
    pub configs: Vec<String>,
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "coordinator",
        include_str!("../../../profiles/coordinator.toml"),
    ),
    ("training", include_str!("../../../profiles/training.toml")),
    ("selfplay", include_str!("../../../profiles/selfplay.toml")),
    (
        "ephemeral",
        include_str!("../../../profiles/ephemeral.toml"),
    ),
    ("minimal", include_str!("../../../profiles/minimal.toml")),
    ("standard", include_str!("../../../profiles/standard.toml")),
    ("full", include_str!("../../../profiles/full.toml")),
];

pub fn builtin_profile_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

fn text_of(name: &str, dir: Option<&Path>) -> Result<String, RegistryError> {
    let err = |e: String| RegistryError::Profile {
        name: name.to_owned(),
        error: e,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(err("profile names are letters, digits, '-' and '_'".into()));
    }
    if let Some(dir) = dir {
        let p = dir.join(format!("{name}.toml"));
        if p.is_file() {
            return std::fs::read_to_string(&p)
                .map_err(|e| err(format!("read {}: {e}", p.display())));
        }
    }
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| (*t).to_owned())
        .ok_or_else(|| {
            err(format!(
                "no such profile (built in: {})",
                builtin_profile_names().collect::<Vec<_>>().join(", ")
            ))
        })
}

/// Loads `name` (and what it includes), checking every daemon name against `registry`.
pub fn load_profile(
    name: &str,
    dir: Option<&Path>,
    registry: &Registry,
) -> Result<Profile, RegistryError> {
    load(name, dir, registry, 0)
}

fn load(
    name: &str,
    dir: Option<&Path>,
    registry: &Registry,
    depth: usize,
) -> Result<Profile, RegistryError> {
    let err = |e: String| RegistryError::Profile {
        name: name.to_owned(),
        error: e,
    };
    if depth > 8 {
        return Err(err("includes nest too deeply (a loop?)".into()));
    }
    let f: ProfileFile = toml::from_str(&text_of(name, dir)?).map_err(|e| err(e.to_string()))?;
    let mut daemons: Vec<String> = Vec::new();
    let mut overrides = BTreeMap::new();
    let mut configs = f.configs.clone();
    for inc in &f.include {
        let p = load(inc, dir, registry, depth + 1)?;
        if f.configs.is_empty() && configs.is_empty() {
            configs = p.configs.clone();
        }
        for d in p.daemons {
            if !daemons.contains(&d) {
                daemons.push(d);
            }
        }
        overrides.extend(p.overrides);
    }
    for d in &f.daemons {
        if registry.get(d).is_none() {
            return Err(err(format!("unknown daemon {d:?}")));
        }
        if !daemons.contains(d) {
            daemons.push(d.clone());
        }
    }
    for (d, o) in f.daemon {
        if registry.get(&d).is_none() {
            return Err(err(format!("override for unknown daemon {d:?}")));
        }
        overrides.insert(d, o);
    }
    Ok(Profile {
        name: name.to_owned(),
        description: f.description,
        daemons,
        overrides,
        configs,
    })
}
