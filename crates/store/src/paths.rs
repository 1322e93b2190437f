//! Where each store lives under `$RINGRIFT_HOME` (DESIGN.md section 6).

use crate::{ConfigKey, StoreError};
use std::path::{Path, PathBuf};

pub fn games_dir(home: &Path) -> PathBuf {
    home.join("data").join("games")
}

/// The local game store of a config: `data/games/{config}.db`.
pub fn game_db(home: &Path, config: ConfigKey) -> PathBuf {
    games_dir(home).join(format!("{config}.db"))
}

/// Every game store of a config: files matching `data/games/{config}*.db`, sorted.
pub fn game_dbs(home: &Path, config: ConfigKey) -> Result<Vec<PathBuf>, StoreError> {
    let dir = games_dir(home);
    let prefix = config.to_string();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list game stores in", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list game stores in", &dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // `hex8_2p.db` or `hex8_2p_<suffix>.db`, but not `hex8_2pfoo.db` of another key.
        let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".db"))
        else {
            continue;
        };
        if rest.is_empty() || rest.starts_with('_') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

pub fn elo_db(home: &Path) -> PathBuf {
    home.join("data").join("unified_elo.db")
}

pub fn work_queue_db(home: &Path) -> PathBuf {
    home.join("data").join("work_queue.db")
}

pub fn training_dir(home: &Path) -> PathBuf {
    home.join("data").join("training")
}

pub fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

pub fn quarantine_dir(home: &Path) -> PathBuf {
    home.join("data").join("quarantine")
}

pub fn logs_dir(home: &Path) -> PathBuf {
    home.join("logs")
}

pub fn run_dir(home: &Path) -> PathBuf {
    home.join("run")
}
