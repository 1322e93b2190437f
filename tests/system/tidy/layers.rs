//! The layer table (`docs/layers.toml`) against every workspace Cargo.toml, and
//! handler-base's own dependencies: proto and sqlite, nothing else of ours.

use super::root;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    fn section(self) -> &'static str {
        match self {
            Kind::Normal => "[dependencies]",
            Kind::Build => "[build-dependencies]",
            Kind::Dev => "[dev-dependencies]",
        }
    }
}

/// A dependency of one workspace crate on another, by manifest folder (relative to the
/// workspace root, e.g. `crates/handler-base`).
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    kind: Kind,
}

#[derive(Debug, Default)]
struct Workspace {
    /// Manifest folder -> package name.
    packages: BTreeMap<String, String>,
    edges: Vec<Edge>,
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()))
}

fn rel(root: &Path, p: &Path) -> String {
    let p = p
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p.strip_prefix(root)
        .unwrap_or_else(|_| panic!("{} is outside the workspace", p.display()))
        .to_string_lossy()
        .into_owned()
}

/// Folders named by a members / layer entry: `a/b`, or `a/*` (every folder below `a`
/// holding a Cargo.toml).
fn expand(root: &Path, entry: &str) -> Vec<String> {
    match entry.strip_suffix("/*") {
        Some(dir) => {
            let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .flatten()
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                .collect();
            v.sort();
            v
        }
        None => vec![entry.to_owned()],
    }
}

fn strings(v: Option<&toml::Value>, what: &str) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("{what} must be an array of strings"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what}: {s} is not a string"))
                .to_owned()
        })
        .collect()
}

/// Every workspace crate and every dependency edge between them, read from the
/// Cargo.toml files (`[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`,
/// also under `[target.*]`; `x.workspace = true` resolved through
/// `[workspace.dependencies]`).
fn workspace(root: &Path) -> Workspace {
    let top = read_toml(&root.join("Cargo.toml"));
    let ws = top["workspace"].as_table().expect("[workspace]");
    let members: Vec<String> = strings(ws.get("members"), "workspace.members")
        .iter()
        .flat_map(|m| expand(root, m))
        .collect();
    let shared: BTreeMap<String, String> = ws
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| {
                    let path = v.get("path")?.as_str()?;
                    Some((k.clone(), rel(root, &root.join(path))))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Workspace::default();
    for m in &members {
        let manifest = read_toml(&root.join(m).join("Cargo.toml"));
        let name = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_else(|| panic!("{m}/Cargo.toml has no package name"));
        out.packages.insert(m.clone(), name.to_owned());
        let mut tables = vec![&manifest];
        if let Some(t) = manifest.get("target").and_then(|t| t.as_table()) {
            tables.extend(t.values().filter_map(|v| v.as_table()));
        }
        for t in tables {
            for (section, kind) in [
                ("dependencies", Kind::Normal),
                ("build-dependencies", Kind::Build),
                ("dev-dependencies", Kind::Dev),
            ] {
                let Some(deps) = t.get(section).and_then(|d| d.as_table()) else {
                    continue;
                };
                for (key, v) in deps {
                    let to = if v.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
                        shared.get(key).cloned()
                    } else {
                        v.get("path")
                            .and_then(|p| p.as_str())
                            .map(|p| rel(root, &root.join(m).join(p)))
                    };
                    if let Some(to) = to {
                        out.edges.push(Edge {
                            from: m.clone(),
                            to,
                            kind,
                        });
                    }
                }
            }
        }
    }
    for e in &out.edges {
        assert!(
            out.packages.contains_key(&e.to),
            "{}/Cargo.toml depends on {}, which is not a workspace member",
            e.from,
            e.to
        );
    }
    out
}

#[derive(Debug)]
struct Layer {
    name: String,
    uses: Vec<String>,
    dev_uses: Vec<String>,
}

/// The layer table: the layers, and the layer of every crate (by folder). Panics with
/// the problem named on a table that does not hold together.
fn layers(root: &Path, ws: &Workspace) -> (Vec<Layer>, BTreeMap<String, String>) {
    let path = root.join("docs/layers.toml");
    let table = read_toml(&path);
    let entries = table
        .get("layer")
        .and_then(|l| l.as_array())
        .expect("docs/layers.toml: [[layer]] entries");
    let mut out = Vec::new();
    let mut of = BTreeMap::new();
    for l in entries {
        let name = l
            .get("name")
            .and_then(|n| n.as_str())
            .expect("docs/layers.toml: a [[layer]] without a name")
            .to_owned();
        for c in strings(l.get("crates"), &format!("layer {name}: crates")) {
            let found = expand(root, &c);
            assert!(!found.is_empty(), "layer {name}: {c} names no crate");
            for f in found {
                assert!(
                    ws.packages.contains_key(&f),
                    "layer {name}: {f} is not a workspace member"
                );
                if let Some(other) = of.insert(f.clone(), name.clone()) {
                    panic!("{f} is in two layers: {other} and {name}");
                }
            }
        }
        out.push(Layer {
            uses: strings(l.get("uses"), &format!("layer {name}: uses")),
            dev_uses: strings(l.get("dev_uses"), &format!("layer {name}: dev_uses")),
            name,
        });
    }
    let names: BTreeSet<&str> = out.iter().map(|l| l.name.as_str()).collect();
    for l in &out {
        for u in l.uses.iter().chain(&l.dev_uses) {
            assert!(
                names.contains(u.as_str()),
                "layer {}: uses unknown layer {u}",
                l.name
            );
        }
    }
    let unplaced: Vec<&String> = ws
        .packages
        .keys()
        .filter(|p| !of.contains_key(*p))
        .collect();
    assert!(
        unplaced.is_empty(),
        "crates in no layer of docs/layers.toml: {unplaced:?}"
    );
    (out, of)
}

/// Every edge the table forbids, as one line each.
fn violations(ws: &Workspace, table: &[Layer], of: &BTreeMap<String, String>) -> Vec<String> {
    let mut bad = Vec::new();
    for e in &ws.edges {
        let (from, to) = (&of[&e.from], &of[&e.to]);
        let layer = table
            .iter()
            .find(|l| &l.name == from)
            .expect("every layer of a crate is in the table");
        let allowed =
            layer.uses.contains(to) || (e.kind == Kind::Dev && layer.dev_uses.contains(to));
        if !allowed {
            bad.push(format!(
                "{} (layer {from}) depends on {} (layer {to}) in {}: layer {from} may use {:?}{}",
                e.from,
                e.to,
                e.kind.section(),
                layer.uses,
                if layer.dev_uses.is_empty() {
                    String::new()
                } else {
                    format!(", and {:?} in [dev-dependencies]", layer.dev_uses)
                }
            ));
        }
    }
    bad
}

/// Every workspace crate the normal and build dependencies of `from` reach, each with
/// the chain that reaches it (`a -> b -> c`).
fn reach(ws: &Workspace, from: &str) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let mut queue = VecDeque::from([(from.to_owned(), ws.packages[from].clone())]);
    while let Some((dir, chain)) = queue.pop_front() {
        for e in ws
            .edges
            .iter()
            .filter(|e| e.from == dir && e.kind != Kind::Dev)
        {
            if seen.contains_key(&e.to) || e.to == from {
                continue;
            }
            let chain = format!("{chain} -> {}", ws.packages[&e.to]);
            seen.insert(e.to.clone(), chain.clone());
            queue.push_back((e.to.clone(), chain));
        }
    }
    seen
}

/// What handler-base may reach, by package name: the wire types and the sqlite crate.
const HANDLER_BASE_MAY_REACH: [&str; 2] = ["ringrift-proto", "ringrift-sqlite"];

fn handler_base_problems(ws: &Workspace) -> Vec<String> {
    reach(ws, "crates/handler-base")
        .into_iter()
        .filter(|(dir, _)| !HANDLER_BASE_MAY_REACH.contains(&ws.packages[dir].as_str()))
        .map(|(_, chain)| chain)
        .collect()
}

/// A workspace of the real crates plus one planted edge.
fn planted(ws: &Workspace, from: &str, to: &str, kind: Kind) -> Workspace {
    let mut edges = ws.edges.clone();
    edges.push(Edge {
        from: from.to_owned(),
        to: to.to_owned(),
        kind,
    });
    Workspace {
        packages: ws.packages.clone(),
        edges,
    }
}

#[test]
fn every_dependency_follows_the_layer_table() {
    let root: PathBuf = root();
    let ws = workspace(&root);
    assert!(
        ws.packages.len() > 50,
        "only {} crates found",
        ws.packages.len()
    );
    let (table, of) = layers(&root, &ws);
    let bad = violations(&ws, &table, &of);
    assert!(
        bad.is_empty(),
        "dependencies the layer table (docs/layers.toml, ARCHITECTURE.md) forbids: {bad:#?}"
    );
    // The check itself: a planted upward edge and a daemon using another daemon are
    // caught, each named.
    let up = planted(&ws, "crates/handler-base", "crates/store", Kind::Normal);
    let v = violations(&up, &table, &of);
    assert!(
        v.len() == 1 && v[0].contains("crates/handler-base (layer handler-base) depends on crates/store (layer domain) in [dependencies]"),
        "{v:#?}"
    );
    let sideways = planted(
        &ws,
        "crates/daemons/maintenance",
        "crates/daemons/auto-export",
        Kind::Normal,
    );
    assert_eq!(violations(&sideways, &table, &of).len(), 1);
}

#[test]
fn handler_base_reaches_only_proto_and_sqlite() {
    let ws = workspace(&root());
    let bad = handler_base_problems(&ws);
    assert!(
        bad.is_empty(),
        "handler-base must depend on ringrift-proto and ringrift-sqlite only (no registry, \
         store or router client: editing a profile or a store must not rebuild every \
         daemon): {bad:#?}"
    );
    // The check itself: a dependency two steps away is found, with its chain.
    let two_steps = planted(&ws, "crates/sqlite", "crates/registry", Kind::Normal);
    assert_eq!(
        handler_base_problems(&two_steps),
        ["handler-base -> ringrift-sqlite -> ringrift-registry"]
    );
}
