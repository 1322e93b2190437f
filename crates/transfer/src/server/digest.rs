//! The SHA-256 (and, for models, the generation) of each served file, computed
//! once per version of the file, off the async runtime.
//!
//! Keyed by the opened inode (device, inode number) and checked against its size and
//! mtime (nanoseconds): atomic writes give a new file a new inode, an in-place change
//! moves size or mtime, and either computes afresh. Concurrent requests for the same
//! uncomputed file wait on one computation (a `OnceCell` per entry), so 200 requests
//! for a new 64 MiB file hash it once. The hash is of the opened file itself (`pread`,
//! not a second open by path), so the ETag names the bytes served. The map is bounded:
//! past `max_entries` it is emptied and refills on demand.

use super::jail::Refusal;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// What the manifest and the ETag say about one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub sha256: String,
    pub size: u64,
    pub mtime_ms: i64,
    /// The `.rrm` header's generation (models only; `None` elsewhere or if unreadable).
    pub generation: Option<u32>,
}

struct Slot {
    size: u64,
    mtime_ns: i128,
    cell: Arc<OnceCell<Digest>>,
}

pub struct DigestCache {
    max_entries: usize,
    map: Mutex<HashMap<(u64, u64), Slot>>,
    /// Files hashed so far (a health detail; tests check the cache with it).
    computed: AtomicU64,
}

/// Reads a file through `pread` from a position, for [`std::io::Read`] consumers.
struct ReadAt<'a>(&'a File, u64);

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

fn compute(file: &File, path: &std::path::Path, model: bool) -> Result<Digest, Refusal> {
    let meta = file.metadata().map_err(|e| Refusal::Io(e.to_string()))?;
    let (sha256, size) = ringrift_store::manifest::hash_reader(path, &mut ReadAt(file, 0))
        .map_err(|e| Refusal::Io(e.to_string()))?;
    let generation = if !model {
        None
    } else if ringrift_store::models::ModelFormat::of(path)
        == Some(ringrift_store::models::ModelFormat::Onnx)
    {
        // ONNX keeps its generation in the metadata: the whole protobuf is decoded.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut ReadAt(file, 0), &mut bytes)
            .map_err(|e| Refusal::Io(e.to_string()))?;
        match ringrift_store::models::identify(path, &bytes) {
            Ok(i) => Some(i.generation),
            Err(e) => {
                tracing::debug!(error = %e, "no ONNX model metadata");
                None
            }
        }
    } else {
        match ringrift_store::models::read_header_prefix(path, &mut ReadAt(file, 0)) {
            Ok(h) => Some(h.generation),
            Err(e) => {
                tracing::debug!(error = %e, "no model header");
                None
            }
        }
    };
    Ok(Digest {
        sha256,
        size,
        mtime_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
        generation,
    })
}

impl DigestCache {
    pub fn new(max_entries: usize) -> DigestCache {
        DigestCache {
            max_entries,
            map: Mutex::new(HashMap::new()),
            computed: AtomicU64::new(0),
        }
    }

    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest of the file of `meta` if it is known for this version (no waiting,
    /// no hashing): the manifest's fast path.
    pub fn cached(&self, meta: &std::fs::Metadata) -> Option<Digest> {
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(meta.dev(), meta.ino()))
            .filter(|s| s.size == meta.len() && s.mtime_ns == mtime_ns)
            .and_then(|s| s.cell.get().cloned())
    }

    /// The digest of `file` (opened from `path`); `model` reads the model's generation too.
    pub async fn get(
        &self,
        file: Arc<File>,
        path: PathBuf,
        model: bool,
    ) -> Result<Digest, Refusal> {
        let meta = file.metadata().map_err(|e| Refusal::Io(e.to_string()))?;
        let key = (meta.dev(), meta.ino());
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let cell = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(s) if s.size == meta.len() && s.mtime_ns == mtime_ns => s.cell.clone(),
                _ => {
                    if map.len() >= self.max_entries {
                        map.clear();
                    }
                    let cell = Arc::new(OnceCell::new());
                    map.insert(
                        key,
                        Slot {
                            size: meta.len(),
                            mtime_ns,
                            cell: cell.clone(),
                        },
                    );
                    cell
                }
            }
        };
        let d = cell
            .get_or_try_init(|| async {
                self.computed.fetch_add(1, Ordering::Relaxed);
                tokio::task::spawn_blocking(move || compute(&file, &path, model))
                    .await
                    .map_err(|e| Refusal::Io(format!("hashing task: {e}")))?
            })
            .await?;
        Ok(d.clone())
    }
}
