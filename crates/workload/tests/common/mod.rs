//! What the workload's integration tests share: the Python check (`ringrift-test-support`'s)
//! and a home with selfplay games exported to an NPZ file.

use ringrift_workload::export::ExportReport;
use ringrift_workload::selfplay::SelfplayReport;
use std::path::{Path, PathBuf};

pub use ringrift_test_support::require_python;

/// `games` depth-1 selfplay games of hex8_2p in `home`, exported to
/// `data/training/hex8_2p.npz` with the default value blend.
pub fn games_exported(home: &Path, games: usize) -> (SelfplayReport, ExportReport, PathBuf) {
    let config = "hex8_2p".parse().expect("key");
    let sp = ringrift_workload::selfplay::selfplay(&ringrift_workload::selfplay::SelfplayArgs {
        home: home.to_path_buf(),
        config,
        games,
        model: None,
        search: ringrift_workload::players::SearchConfig::selfplay(1, config),
        seed: 4,
        threads: 1,
        db: None,
        source_node: "test".into(),
        sparring_fraction: 0.0,
        quiet: true,
    })
    .expect("selfplay");
    let npz = home.join("data/training/hex8_2p.npz");
    let ex = ringrift_workload::export::export(&ringrift_workload::export::ExportArgs {
        home: home.to_path_buf(),
        config,
        since: 0,
        max_games: None,
        db: None,
        output: Some(npz.clone()),
        value_blend: ringrift_workload::export::DEFAULT_VALUE_BLEND,
        quiet: true,
    })
    .expect("export");
    (sp, ex, npz)
}
