//! Which model files the loop works with: the newest trained generations of a config
//! (`models/<config>/gen*.rrm` or `gen*.onnx`) and the "current" model — the canonical one once a
//! model was promoted, else the newest trained generation — which selfplay plays with
//! and training starts from, so the loop improves before its first promotion too.

use crate::{ConfigKey, paths};
use std::path::{Path, PathBuf};

/// The newest `n` files in `dir` (by modification time) whose name starts with `prefix`
/// and ends with one of `suffixes`, newest first; a missing folder has none.
pub fn newest_files(dir: &Path, prefix: &str, suffixes: &[&str], n: usize) -> Vec<PathBuf> {
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix) && suffixes.iter().any(|s| name.ends_with(s))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    v.into_iter().take(n).map(|x| x.1).collect()
}

/// The newest `n` trained generations in a config's model folder `dir`
/// (`gen*.rrm`, `gen*.onnx`), newest first.
pub fn newest_generations(dir: &Path, n: usize) -> Vec<PathBuf> {
    newest_files(dir, "gen", &[".rrm", ".onnx"], n)
}

/// The newest `n` trained models of `config` (either format), newest first.
pub fn recent_models(home: &Path, config: ConfigKey, n: usize) -> Vec<PathBuf> {
    newest_generations(&paths::models_dir(home).join(config.to_string()), n)
}

/// `models/canonical_<config>.<ext>` if there is one ([`crate::models`] owns the
/// folder's layout).
pub fn canonical(home: &Path, config: ConfigKey) -> Option<PathBuf> {
    crate::models::canonical_file(home, config)
}

/// The canonical model if there is one, else the newest trained generation.
pub fn current_model(home: &Path, config: ConfigKey) -> Option<PathBuf> {
    canonical(home, config).or_else(|| recent_models(home, config, 1).into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_wins_else_the_newest_generation() {
        let dir = tempfile::tempdir().unwrap();
        let k: ConfigKey = "hex8_2p".parse().unwrap();
        assert_eq!(current_model(dir.path(), k), None);
        let d = paths::models_dir(dir.path()).join("hex8_2p");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("gen0001_w1.rrm"), b"1").unwrap();
        std::fs::write(d.join("gen0002_w2.rrm"), b"2").unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("gen0001_w1.rrm"))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(current_model(dir.path(), k), Some(d.join("gen0002_w2.rrm")));
        assert_eq!(recent_models(dir.path(), k, 5).len(), 2);
        std::fs::write(d.join("gen0003_w3.onnx"), b"3").unwrap();
        assert_eq!(
            current_model(dir.path(), k),
            Some(d.join("gen0003_w3.onnx"))
        );
        let c = paths::models_dir(dir.path()).join("canonical_hex8_2p.onnx");
        std::fs::write(&c, b"c").unwrap();
        assert_eq!(canonical(dir.path(), k), Some(c.clone()));
        assert_eq!(current_model(dir.path(), k), Some(c));
    }
}
