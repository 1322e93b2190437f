//! Tidy checks of the source tree: the mechanical house rules of docs/style.md.

use std::path::{Path, PathBuf};

mod daemon_info;
mod layers;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "target" || name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            files(&p, ext, out);
        } else if name.ends_with(ext) {
            out.push(p);
        }
    }
}

fn all(ext: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    files(&root().join("crates"), ext, &mut v);
    files(&root().join("tests"), ext, &mut v);
    v
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let bad: Vec<_> = all(".rs")
        .into_iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim_start()
                .starts_with("//!")
        })
        .collect();
    assert!(bad.is_empty(), "files without a leading //! line: {bad:#?}");
}

#[test]
fn every_manifest_inherits_workspace_lints_and_version() {
    let bad: Vec<_> = all("Cargo.toml")
        .into_iter()
        .filter(|p| {
            let s = std::fs::read_to_string(p).unwrap_or_default();
            !(s.contains("[lints]\nworkspace = true") && s.contains("version.workspace = true"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "manifests not inheriting [lints] / version from the workspace: {bad:#?}"
    );
}

/// No empty test binaries or doc-test runs (docs/style.md, "Test targets").
#[test]
fn no_empty_test_targets() {
    let bad: Vec<_> = all("Cargo.toml")
        .into_iter()
        .filter(|p| p.parent() != Some(root().as_path()))
        .filter(|p| {
            let s = std::fs::read_to_string(p).unwrap_or_default();
            let dir = p.parent().unwrap_or(Path::new("."));
            let lib = dir.join("src/lib.rs").exists() || s.contains("[lib]");
            let bins = s.matches("[[bin]]").count();
            (lib && !s.contains("doctest = false")) || s.matches("\ntest = false").count() < bins
        })
        .collect();
    assert!(
        bad.is_empty(),
        "set [lib] doctest = false and test = false on every [[bin]]: {bad:#?}"
    );
}

#[test]
fn no_should_panic_tests() {
    let needle = ["#[should", "_panic"].concat();
    let bad: Vec<_> = all(".rs")
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(&needle)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "tests must check errors, not panics: {bad:#?}"
    );
}

#[test]
fn daemon_crates_are_named_after_their_folder_with_a_thin_main() {
    let dir = root().join("crates/daemons");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let folder = e.file_name().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(e.path().join("Cargo.toml")).unwrap();
        let want = format!("ringrift-{folder}");
        assert!(
            manifest.contains(&format!("name = \"{want}\"")),
            "{folder}: package and binary must be named {want}"
        );
        assert!(
            manifest.contains("[[bin]]")
                && manifest.matches(&format!("name = \"{want}\"")).count() == 2,
            "{folder}: binary must be named {want}"
        );
        let main = std::fs::read_to_string(e.path().join("src/main.rs")).unwrap();
        assert!(
            main.lines().count() <= 10,
            "{folder}/src/main.rs is {} lines: logic belongs in lib.rs",
            main.lines().count()
        );
    }
}

#[test]
fn registry_matches_crates_units_and_the_full_profile() {
    let reg = ringrift_registry::Registry::builtin();
    let root = root();
    let full = ringrift_registry::load_profile("full", None, &reg).unwrap();
    for s in reg.daemons() {
        let folder = root.join("crates/daemons").join(s.folder());
        assert_eq!(
            folder.is_dir(),
            s.implemented,
            "{}: implemented = {} but crates/daemons/{} {}",
            s.name,
            s.implemented,
            s.folder(),
            if folder.is_dir() {
                "exists"
            } else {
                "is missing"
            }
        );
        assert_eq!(
            s.binary(),
            format!("ringrift-{}", s.folder()),
            "{}: one name everywhere",
            s.name
        );
        assert!(
            root.join("systemd").join(s.unit()).is_file(),
            "{}: systemd/{} missing (run `ringrift-launcher systemd-units`)",
            s.name,
            s.unit()
        );
        assert!(
            full.daemons.contains(&s.name),
            "{} is not in profiles/full.toml",
            s.name
        );
    }
    for e in std::fs::read_dir(root.join("crates/daemons"))
        .unwrap()
        .flatten()
    {
        let key = e.file_name().to_string_lossy().replace('-', "_");
        assert!(
            reg.get(&key)
                .is_some_and(|s| s.implemented && !s.is_alias()),
            "crates/daemons/{} has no implemented registry entry {key}",
            e.file_name().to_string_lossy()
        );
    }
    for p in ringrift_registry::builtin_profile_names() {
        ringrift_registry::load_profile(p, None, &reg)
            .unwrap_or_else(|e| panic!("profile {p}: {e}"));
    }
}

#[test]
fn committed_systemd_units_match_the_generator() {
    let reg = ringrift_registry::Registry::builtin();
    let want = ringrift_launcher::systemd::generate(&reg, "/usr/local/bin").unwrap();
    let dir = root().join("systemd");
    let mut have: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    let names: Vec<String> = want.keys().cloned().collect();
    assert_eq!(
        have, names,
        "systemd/ differs from the generator: run `ringrift-launcher systemd-units --out systemd`"
    );
    for (name, text) in &want {
        let got = std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(
            &got, text,
            "systemd/{name} drifted: run `ringrift-launcher systemd-units --out systemd`"
        );
    }
}

#[test]
fn systemd_analyze_verifies_units_of_implemented_daemons_and_targets() {
    let present = ringrift_system_tests::command_works("systemd-analyze", &["--version"]);
    if !ringrift_system_tests::require_tool("systemd-analyze", present) {
        return;
    }
    let reg = ringrift_registry::Registry::builtin();
    let bindir = ringrift_system_tests::bin_dir();
    let units = ringrift_launcher::systemd::generate(&reg, bindir.to_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut check = Vec::new();
    for (name, text) in &units {
        std::fs::write(dir.path().join(name), text).unwrap();
        let implemented = reg.daemons().any(|s| s.implemented && &s.unit() == name);
        if implemented || name.ends_with(".target") {
            check.push(dir.path().join(name));
        }
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&check)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Offsets in `text` where a JSON value is read by key and converted by hand
/// (`r["rows"].as_u64()`, also across a line break) or a work-item payload is indexed.
fn keyed_json_reads(text: &str) -> Vec<usize> {
    const CASTS: [&str; 7] = [
        ".as_f64()",
        ".as_u64()",
        ".as_i64()",
        ".as_str()",
        ".as_bool()",
        ".as_array()",
        ".as_object()",
    ];
    let mut out: Vec<usize> = text
        .match_indices("\"]")
        .filter(|(i, _)| {
            let after = text[i + 2..].trim_start();
            CASTS.iter().any(|c| after.starts_with(c))
        })
        .map(|(i, _)| i)
        .collect();
    out.extend(text.match_indices(".payload[").map(|(i, _)| i));
    out
}

#[test]
fn job_results_and_payloads_are_read_only_through_the_contracts() {
    // The detector itself: both forms are caught, typed reads are not.
    assert_eq!(
        keyed_json_reads("let n = r[\"rows\"]\n    .as_u64();").len(),
        1
    );
    assert_eq!(keyed_json_reads("item.payload[\"games\"]").len(), 1);
    assert!(keyed_json_reads("let n = report.rows; let s = k.as_str();").is_empty());
    // Job results and payloads are read in crates (daemons, pipeline, workload); the one
    // conversion module is `ringrift_contracts::wire`. System tests read launcher and
    // health JSON, which are not job contracts.
    let wire = root().join("crates/contracts/src/wire.rs");
    let mut rs = Vec::new();
    files(&root().join("crates"), ".rs", &mut rs);
    let bad: Vec<String> = rs
        .into_iter()
        .filter(|p| *p != wire)
        .flat_map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            keyed_json_reads(&text)
                .into_iter()
                .map(|i| format!("{}:{}", p.display(), text[..i].lines().count()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        bad.is_empty(),
        "job results and work-item payloads are read through ringrift_contracts::wire, \
         not by key: {bad:#?}"
    );
}

/// docs/bad-input.md names a test per row (`file::function`): each must exist, and a
/// row without one must say so ("no test yet").
#[test]
fn every_test_named_in_the_bad_input_catalogue_exists() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/bad-input.md")).expect("docs/bad-input.md");
    let mut named = 0;
    let mut missing = Vec::new();
    let mut untested = Vec::new();
    for row in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Input"))
    {
        let refs: Vec<(&str, &str)> = row
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|r| r.split_once(".rs::"))
            .collect();
        if refs.is_empty() && !row.contains("no test yet") {
            untested.push(row.to_owned());
        }
        for (file, function) in refs {
            named += 1;
            let path = root.join(format!("{file}.rs"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let defined = [format!("fn {function}("), format!("fn {function}<")]
                .iter()
                .any(|d| text.contains(d.as_str()));
            if !defined {
                missing.push(format!("{file}.rs::{function}"));
            }
        }
    }
    assert!(named > 50, "only {named} tests named in docs/bad-input.md");
    assert!(
        missing.is_empty(),
        "tests named in docs/bad-input.md that do not exist: {missing:#?}"
    );
    assert!(
        untested.is_empty(),
        "rows of docs/bad-input.md with neither a test nor \"no test yet\": {untested:#?}"
    );
}

/// The dependencies a Cargo.toml lists: `(section, package)` for every entry of
/// `[dependencies]`, `[dev-dependencies]`, `[build-dependencies]` (also under
/// `[target.'…'.…]` and as `[dependencies.name]` tables), an inline rename resolved
/// through its `package = "…"`.
fn manifest_deps(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = h.to_owned();
            // `[dependencies.name]`: one dependency as a table.
            for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(name) = h.strip_prefix(&format!("{kind}.")) {
                    out.push((kind.to_owned(), name.to_owned()));
                }
            }
            continue;
        }
        let kind = section.rsplit('.').next().unwrap_or("");
        let in_deps = ["dependencies", "dev-dependencies", "build-dependencies"].contains(&kind);
        if !in_deps || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let name = key
            .strip_suffix(".workspace")
            .unwrap_or(key)
            .trim_matches('"');
        let renamed = value
            .split_once("package =")
            .and_then(|(_, r)| r.split('"').nth(1))
            .unwrap_or(name);
        out.push((kind.to_owned(), renamed.to_owned()));
    }
    out
}

/// Every workspace package below `crates/`: name → manifest text.
fn workspace_packages() -> std::collections::BTreeMap<String, (PathBuf, String)> {
    all("Cargo.toml")
        .into_iter()
        .filter(|p| p.starts_with(root().join("crates")))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            let name = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = \""))?
                .trim_end_matches('"')
                .to_owned();
            Some((name, (p, text)))
        })
        .collect()
}

/// Issue 29: no daemon crate depends (normal, dev or build) on another daemon crate,
/// neither directly nor through a library it depends on (`ringrift-test-support`
/// included): what a daemon's tests need of another daemon lives in a library
/// (`ringrift_transfer::server` for the data server) or runs as its binary (the router).
#[test]
fn no_daemon_crate_depends_on_another_daemon_crate() {
    let packages = workspace_packages();
    let daemons = root().join("crates/daemons");
    let is_daemon = |name: &str| {
        packages
            .get(name)
            .is_some_and(|(p, _)| p.starts_with(&daemons))
    };
    let daemon_names: Vec<&String> = packages.keys().filter(|n| is_daemon(n)).collect();
    assert!(
        daemon_names.len() > 30,
        "only {} daemon crates found",
        daemon_names.len()
    );
    let mut bad = Vec::new();
    for daemon in daemon_names {
        // Every workspace package this daemon reaches, with the path it took.
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![(daemon.clone(), daemon.clone())];
        while let Some((pkg, path)) = todo.pop() {
            let Some((_, text)) = packages.get(&pkg) else {
                continue;
            };
            for (kind, dep) in manifest_deps(text) {
                // Dev-dependencies of the libraries reached are not linked into the daemon.
                if kind == "dev-dependencies" && &pkg != daemon {
                    continue;
                }
                if !packages.contains_key(&dep) || !seen.insert(dep.clone()) {
                    continue;
                }
                let via = format!("{path} -({kind})-> {dep}");
                if is_daemon(&dep) {
                    bad.push(via);
                } else {
                    todo.push((dep, via));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "daemon crates depending on other daemon crates (move the shared code to a \
         library, or start the other daemon's binary): {bad:#?}"
    );
}

/// `ringrift-test-support` is test code: a dev-dependency of the crates under `crates/`,
/// never a normal or build dependency (the system tests' package, test code itself,
/// re-exports it from its support library).
#[test]
fn test_support_is_only_a_dev_dependency() {
    let bad: Vec<String> = workspace_packages()
        .into_iter()
        .flat_map(|(name, (_, text))| {
            manifest_deps(&text)
                .into_iter()
                .filter(|(kind, dep)| dep == "ringrift-test-support" && kind != "dev-dependencies")
                .map(move |(kind, _)| format!("{name}: [{kind}]"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "ringrift-test-support as a non-dev dependency: {bad:#?}"
    );
}

/// Where `text` (a file of the daemon crate whose registry name is `own`) could reach
/// another daemon's private state: a `StateStore` opened with anything but the crate's
/// own `INFO`, or a `DaemonInfo` literal naming another daemon (which could then be
/// passed to an opener). Each finding is `line: what`.
fn foreign_state_reads(text: &str, own: &str) -> Vec<String> {
    let line = |i: usize| text[..i].lines().count().max(1);
    let mut out = Vec::new();
    for (i, _) in text.match_indices("StateStore::open") {
        // A call: `StateStore::open(` or `StateStore::open_at(` (not a mention in a doc).
        let rest = &text[i + "StateStore::open".len()..];
        let Some(after) = rest.strip_prefix('(').or_else(|| rest.strip_prefix("_at(")) else {
            continue;
        };
        let open = text.len() - after.len();
        // The argument list up to the matching parenthesis (bounded by the text).
        let mut depth = 1usize;
        let mut end = open;
        for (j, c) in text[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = open + j;
                break;
            }
        }
        let args = text[open..end].trim().trim_end_matches(',');
        let who = args.rsplit(',').next().unwrap_or("").trim();
        if !matches!(who, "&INFO" | "&crate::INFO" | "&super::INFO") {
            out.push(format!("{}: StateStore opened for {who:?}", line(i)));
        }
    }
    for (i, _) in text.match_indices("DaemonInfo {") {
        let body = &text[i..text[i..].find('}').map_or(text.len(), |e| i + e)];
        if let Some(n) = body.find("name: \"") {
            let name = body[n + 7..].split('"').next().unwrap_or("");
            if name != own {
                out.push(format!("{}: DaemonInfo named {name:?}", line(i)));
            }
        }
    }
    out
}

/// Private state stays private (issue 29): a daemon opens only its own rows of the
/// state store; facts another daemon needs are in `ringrift_ledger::Ledger`.
#[test]
fn a_daemon_opens_only_its_own_state() {
    // The detector itself: a read of another daemon's state is caught in each form.
    let planted = [
        "let s = StateStore::open(home, &OTHER)?;",
        "let s = ringrift_ledger::StateStore::open_at(\n    &p,\n    &x::INFO,\n)?;",
        "const T: DaemonInfo = DaemonInfo { name: \"continuous_training_loop\", about: \"\" };",
    ];
    for p in planted {
        assert_eq!(foreign_state_reads(p, "maintenance").len(), 1, "{p}");
    }
    assert!(
        foreign_state_reads(
            "StateStore::open(&ctx.home, &INFO)?; StateStore::open(\n    dir.path(),\n    &crate::INFO,\n)",
            "maintenance"
        )
        .is_empty()
    );
    let mut bad = Vec::new();
    for e in std::fs::read_dir(root().join("crates/daemons"))
        .unwrap()
        .flatten()
    {
        let own = e.file_name().to_string_lossy().replace('-', "_");
        let mut rs = Vec::new();
        files(&e.path(), ".rs", &mut rs);
        for p in rs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            bad.extend(
                foreign_state_reads(&text, &own)
                    .into_iter()
                    .map(|f| format!("{}:{f}", p.display())),
            );
        }
    }
    // Libraries and tests name no daemon's state: the state store of a daemon is opened
    // only in its own crate, and nothing but the ledger crate opens the file directly.
    let mut rs = Vec::new();
    files(&root().join("crates"), ".rs", &mut rs);
    files(&root().join("tests"), ".rs", &mut rs);
    let (daemons, ledger) = (root().join("crates/daemons"), root().join("crates/ledger"));
    let tidy = root().join("tests/system/tidy.rs");
    for p in rs {
        if p.starts_with(&daemons) || p.starts_with(&ledger) || p == tidy {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if text.contains("StateStore::open") {
            bad.push(format!("{}: opens a daemon's StateStore", p.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "a daemon's state store is opened only with its own INFO (a fact another daemon \
         needs goes to ringrift_ledger::Ledger): {bad:#?}"
    );
}
