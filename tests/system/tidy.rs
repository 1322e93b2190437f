//! Tidy checks of the source tree: the mechanical house rules of docs/style.md.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
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
        .filter(|p| !std::fs::read_to_string(p).unwrap_or_default().trim_start().starts_with("//!"))
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
    assert!(bad.is_empty(), "manifests not inheriting [lints] / version from the workspace: {bad:#?}");
}

#[test]
fn no_should_panic_tests() {
    let needle = ["#[should", "_panic"].concat();
    let bad: Vec<_> = all(".rs").into_iter().filter(|p| std::fs::read_to_string(p).unwrap_or_default().contains(&needle)).collect();
    assert!(bad.is_empty(), "tests must check errors, not panics: {bad:#?}");
}

#[test]
fn daemon_crates_are_named_after_their_folder_with_a_thin_main() {
    let dir = root().join("crates/daemons");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let folder = e.file_name().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(e.path().join("Cargo.toml")).unwrap();
        let want = format!("ringrift-{folder}");
        assert!(manifest.contains(&format!("name = \"{want}\"")), "{folder}: package and binary must be named {want}");
        assert!(manifest.contains("[[bin]]") && manifest.matches(&format!("name = \"{want}\"")).count() == 2, "{folder}: binary must be named {want}");
        let main = std::fs::read_to_string(e.path().join("src/main.rs")).unwrap();
        assert!(main.lines().count() <= 6, "{folder}/src/main.rs is {} lines: logic belongs in lib.rs", main.lines().count());
    }
}
