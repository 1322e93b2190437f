//! Consistent snapshots of the SQLite databases under `data/` (game DBs first of all):
//! a client never gets a file that a writer is half-way through, nor a main file whose
//! newest pages still sit in its `-wal`.
//!
//! A snapshot is `VACUUM INTO` a private file under `run/data_server/snapshots/` from a
//! read-only connection: one read transaction, so it is the database as of one commit,
//! whatever other connections write meanwhile (WAL readers do not block writers). The
//! copy is then switched to `journal_mode=DELETE`, so the served file is one
//! self-contained SQLite file. A snapshot is reused while the database and its `-wal`
//! keep their size and mtime (stated before the copy, so a write during the copy makes
//! the next request copy again); a newer snapshot unlinks the older one, whose open
//! handles keep streaming it. One copy per database at a time: the copy runs in a task
//! of its own that holds the database's lock to the end and records what it made, so a
//! request given up half-way (a client that timed out) neither starts a second copy nor
//! leaves its copy behind; the next request gets the finished one. Game stores are never
//! snapshotted: games move as records (`super::games`), and `data/games/` is not served
//! as files. [`Snapshots::bytes`] is the disk the snapshots hold (a health detail).

use super::jail::Refusal;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Size and mtime (ns) of the database and of its `-wal` (zeros when absent).
type SourceState = [(u64, i128); 2];

struct Snap {
    state: SourceState,
    path: PathBuf,
}

pub struct Snapshots {
    dir: PathBuf,
    slots: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<Option<Snap>>>>>,
}

fn state_of(db: &Path) -> SourceState {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| {
                (
                    m.len(),
                    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                )
            })
            .unwrap_or((0, 0))
    };
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [one(db), one(Path::new(&wal))]
}

/// Whether a file under `data/` is served as a snapshot.
pub fn is_database(rel: &str) -> bool {
    rel.ends_with(".db")
}

fn copy(src: &Path, dst: &Path) -> Result<(), Refusal> {
    ringrift_store::db::snapshot(src, dst)
        .map_err(|e| Refusal::Io(format!("snapshot of {}: {e}", src.display())))
}

impl Snapshots {
    /// Snapshots live in `dir`, emptied here (they are caches, remade on demand).
    pub fn new(dir: PathBuf) -> std::io::Result<Snapshots> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Snapshots {
            dir,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// An open snapshot of the database at canonical path `db`, and the snapshot's path.
    pub async fn open(&self, db: PathBuf) -> Result<(File, PathBuf), Refusal> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(db.clone())
            .or_default()
            .clone();
        let dir = self.dir.clone();
        // Detached: dropping this request's future does not drop the copy's bookkeeping.
        tokio::spawn(Self::refresh(slot, dir, db))
            .await
            .map_err(|e| Refusal::Io(format!("snapshot task: {e}")))?
    }

    /// Under the database's lock: the current snapshot, or a new one recorded in `slot`.
    async fn refresh(
        slot: Arc<tokio::sync::Mutex<Option<Snap>>>,
        dir: PathBuf,
        db: PathBuf,
    ) -> Result<(File, PathBuf), Refusal> {
        let mut held = slot.lock_owned().await;
        let previous = held.as_ref().map(|s| (s.state, s.path.clone()));
        let (file, snap, stale) = tokio::task::spawn_blocking(move || {
            let state = state_of(&db);
            if let Some((st, path)) = &previous
                && *st == state
                && let Ok(f) = File::open(path)
            {
                return Ok((
                    f,
                    Snap {
                        state,
                        path: path.clone(),
                    },
                    None,
                ));
            }
            let name = db.file_name().and_then(|n| n.to_str()).unwrap_or("db");
            let path = dir.join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
            if let Err(e) = copy(&db, &path) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            let f = File::open(&path).map_err(|e| Refusal::Io(e.to_string()))?;
            Ok((f, Snap { state, path }, previous.map(|p| p.1)))
        })
        .await
        .map_err(|e| Refusal::Io(format!("snapshot task: {e}")))??;
        if let Some(old) = stale {
            let _ = std::fs::remove_file(old);
        }
        let path = snap.path.clone();
        *held = Some(snap);
        Ok((file, path))
    }

    /// Bytes of disk the current snapshots hold (one per database served; an older one
    /// is unlinked when its successor is made).
    pub fn bytes(&self) -> u64 {
        let slots: Vec<_> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .filter_map(|s| s.try_lock().ok())
            .filter_map(|s| s.as_ref().and_then(|s| std::fs::metadata(&s.path).ok()))
            .map(|m| m.len())
            .sum()
    }

    /// How many databases have a snapshot (a health detail).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
