//! Files moved between nodes: planned from a peer's manifest, fetched by HTTP ranges
//! (a crash resumes where the partial file ends), SHA-256-verified, installed by atomic
//! rename, quarantined on mismatch.
//!
//! A download goes to a hidden partial file next to its destination,
//! `.{name}.part-{sha256 prefix}` (hidden: data_server never serves it; named after the
//! content, so a resume only ever continues the same version). Bytes arrive on the
//! runtime and are written and hashed on a blocking thread. When the last byte is in,
//! size and SHA-256 must match what the manifest (or event) announced: then fsync,
//! rename over the destination, fsync the directory. A mismatch (a byte flipped on the
//! wire or on the peer's disk, a truncated source) moves the partial file to the
//! quarantine directory; nothing is installed. [`LocalIndex`] remembers the hash of
//! every file installed or checked (by size and mtime), so a re-sync where nothing
//! changed reads no file.

use crate::{DataClient, Peer, TransferError};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::num::NonZeroU32;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One manifest line of a data_server: the SHA-256, size and mtime of a file, plus the
/// generation for `.rrm` models. Its fields are `ringrift_store::manifest::FileEntry`'s.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    pub sha256: String,
    pub size: u64,
    pub mtime_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

/// A data_server's `GET /manifest?root=...` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestDoc {
    pub root: String,
    pub files: BTreeMap<String, ManifestEntry>,
}

/// The two trees a data_server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    Data,
    Models,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Data => "data",
            Root::Models => "models",
        }
    }

    /// This root's directory in `home`.
    pub fn dir(self, home: &Path) -> PathBuf {
        match self {
            Root::Data => home.join("data"),
            Root::Models => ringrift_store::paths::models_dir(home),
        }
    }
}

/// `peer`'s manifest of `root`, every path checked by [`check_rel`] (a peer cannot make
/// us write outside our root).
pub async fn manifest(
    client: &DataClient,
    peer: &Peer,
    root: Root,
) -> Result<ManifestDoc, TransferError> {
    manifest_under(client, peer, root, "").await
}

/// [`manifest`] of the directory (or the one file) `prefix` of `root` only (empty: all).
pub async fn manifest_under(
    client: &DataClient,
    peer: &Peer,
    root: Root,
    prefix: &str,
) -> Result<ManifestDoc, TransferError> {
    let query = if prefix.is_empty() {
        format!("/manifest?root={}", root.as_str())
    } else {
        check_rel(prefix.trim_end_matches('/'))
            .map_err(|why| TransferError::Invalid(format!("prefix {prefix:?}: {why}")))?;
        format!(
            "/manifest?root={}&prefix={}",
            root.as_str(),
            encode_path(prefix)
        )
    };
    let doc: ManifestDoc = client.get_json(peer, &query).await?;
    for (path, e) in &doc.files {
        check_rel(path).map_err(|why| TransferError::BadAnswer {
            url: format!("{}/manifest?root={}", peer.url, root.as_str()),
            why: format!("path {path:?}: {why}"),
        })?;
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TransferError::BadAnswer {
                url: format!("{}/manifest?root={}", peer.url, root.as_str()),
                why: format!("path {path:?}: sha256 {:?} is not 64 hex digits", e.sha256),
            });
        }
    }
    Ok(doc)
}

/// A relative path a peer may name: plain components, none hidden, no `..`, no
/// absolute path, no NUL or backslash.
pub fn check_rel(rel: &str) -> Result<(), &'static str> {
    if rel.is_empty() || rel.contains('\0') || rel.contains('\\') {
        return Err("empty, NUL or backslash");
    }
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(s) if !s.to_string_lossy().starts_with('.') => {}
            Component::Normal(_) => return Err("hidden component"),
            _ => return Err("not a plain relative path"),
        }
    }
    Ok(())
}

/// A file to fetch: where it is on the peer and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub root: Root,
    /// Relative to the root, `/`-separated.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// What one fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes received over the network (less than the size after a resume).
    pub downloaded: u64,
    /// Where the download resumed (0: from the start).
    pub resumed_from: u64,
}

/// Limits of an [`Engine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Downloads in flight per peer.
    pub per_host: usize,
    /// Bytes per second over all downloads of this engine; 0 = unlimited.
    pub bytes_per_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_host: 4,
            bytes_per_s: 0,
        }
    }
}

/// Progress of the downloads of an engine (for a bar or an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress<'a> {
    pub peer: &'a str,
    pub path: &'a str,
    /// Bytes that just arrived.
    pub bytes: u64,
}

type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// Fetches files from peers' data servers within [`Limits`].
pub struct Engine {
    client: DataClient,
    quarantine: PathBuf,
    limits: Limits,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    bandwidth: Option<Arc<DefaultDirectRateLimiter>>,
    burst: u32,
    progress: Option<ProgressFn>,
}

/// Files up to this size are received whole and written in one step (no partial file
/// to resume, one blocking call instead of three).
pub const SMALL_FILE: u64 = 256 * 1024;

/// The largest piece handed to the writer thread at once.
const PIECE: usize = 256 * 1024;

impl Engine {
    /// `quarantine`: where files that fail verification go (e.g. `data/quarantine`).
    pub fn new(
        client: DataClient,
        quarantine: PathBuf,
        limits: Limits,
    ) -> Result<Engine, TransferError> {
        if limits.per_host == 0 {
            return Err(TransferError::Invalid(
                "per-host concurrency must be at least 1".into(),
            ));
        }
        let rate = u32::try_from(limits.bytes_per_s).map_err(|_| {
            TransferError::Invalid(format!(
                "bandwidth {} bytes/s is over {} (0 = unlimited)",
                limits.bytes_per_s,
                u32::MAX
            ))
        })?;
        let burst = rate.max(PIECE as u32);
        let bandwidth = NonZeroU32::new(rate)
            .zip(NonZeroU32::new(burst))
            .map(|(r, b)| Arc::new(RateLimiter::direct(Quota::per_second(r).allow_burst(b))));
        Ok(Engine {
            client,
            quarantine,
            limits,
            hosts: Mutex::new(HashMap::new()),
            bandwidth,
            burst,
            progress: None,
        })
    }

    /// Calls `f` as bytes arrive.
    pub fn with_progress(mut self, f: impl Fn(&Progress<'_>) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    pub fn client(&self) -> &DataClient {
        &self.client
    }

    fn host(&self, peer: &Peer) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(peer.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_host)))
            .clone()
    }

    /// Fetches `w` from `peer` into `dest` (verified, atomic), resuming a partial
    /// download of the same content left by an earlier attempt.
    pub async fn fetch(
        &self,
        peer: &Peer,
        w: &Wanted,
        dest: &Path,
    ) -> Result<Fetched, TransferError> {
        self.fetch_inner(peer, w, dest, true).await
    }

    /// `durable`: fsync the file and its directory at install (else the caller syncs
    /// the filesystem once for a batch, before it reports the batch done).
    async fn fetch_inner(
        &self,
        peer: &Peer,
        w: &Wanted,
        dest: &Path,
        durable: bool,
    ) -> Result<Fetched, TransferError> {
        check_rel(&w.path).map_err(|why| TransferError::Invalid(format!("{}: {why}", w.path)))?;
        let host = self.host(peer);
        let _permit = host
            .acquire_owned()
            .await
            .map_err(|_| TransferError::Invalid("engine closed".into()))?;
        let part = part_path(dest, &w.sha256)?;
        let what = format!("{}:{}/{}", peer.name, w.root.as_str(), w.path);
        if w.size <= SMALL_FILE {
            return self.fetch_small(peer, w, dest, part, durable, what).await;
        }
        let (part2, size) = (part.clone(), w.size);
        let (mut file, hasher, have) = blocking(move || open_part(&part2, size)).await??;
        let mut downloaded = 0;
        let (hasher, total) = if have == w.size {
            (hasher, have)
        } else {
            let mut rb = self.client.request(
                reqwest::Method::GET,
                peer,
                &format!("/files/{}/{}", w.root.as_str(), encode_path(&w.path)),
            );
            if have > 0 {
                rb = rb
                    .header(reqwest::header::RANGE, format!("bytes={have}-"))
                    .header(reqwest::header::IF_RANGE, format!("\"{}\"", w.sha256));
            }
            let resp = self.client.send(rb).await?;
            let url = resp.url().to_string();
            let start = match resp.status() {
                reqwest::StatusCode::PARTIAL_CONTENT => content_range_start(&resp)
                    .filter(|s| *s == have)
                    .ok_or_else(|| TransferError::BadAnswer {
                        url: url.clone(),
                        why: format!("asked bytes from {have}, Content-Range does not start there"),
                    })?,
                _ => 0,
            };
            if let Some(etag) = resp.headers().get(reqwest::header::ETAG)
                && etag.as_bytes() != format!("\"{}\"", w.sha256).as_bytes()
            {
                tracing::debug!(file = %what, etag = ?etag, "the peer serves another version than its manifest named; verifying what arrives");
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
            let writer = tokio::task::spawn_blocking(move || {
                write_part(
                    &mut file,
                    if start == 0 { Sha256::new() } else { hasher },
                    start,
                    rx,
                )
                .map(|(h, n)| (file, h, n))
            });
            let mut resp = resp;
            let mut failed = None;
            // Bytes past the announced size are never written: a lying or broken peer
            // cannot fill the disk.
            let mut over = false;
            'receive: loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(TransferError::Http {
                            url: url.clone(),
                            source: e,
                        });
                        break;
                    }
                };
                // Pieces are slices of the received buffer (no copy).
                let mut rest = chunk;
                while !rest.is_empty() {
                    let piece = rest.split_to(rest.len().min(PIECE));
                    if start + downloaded + piece.len() as u64 > w.size {
                        over = true;
                        break 'receive;
                    }
                    if let Some(l) = &self.bandwidth {
                        let n = NonZeroU32::new(piece.len().min(self.burst as usize) as u32);
                        if let Some(n) = n {
                            // n <= burst, so this only waits.
                            let _ = l.until_n_ready(n).await;
                        }
                    }
                    downloaded += piece.len() as u64;
                    if let Some(p) = &self.progress {
                        p(&Progress {
                            peer: &peer.name,
                            path: &w.path,
                            bytes: piece.len() as u64,
                        });
                    }
                    // The writer stopped (a write failed, e.g. ENOSPC): stop receiving.
                    if tx.send(piece).await.is_err() {
                        break 'receive;
                    }
                }
            }
            drop(tx);
            let written = writer
                .await
                .map_err(|e| TransferError::Invalid(format!("writer task: {e}")))?;
            let (f, h, n) = match written {
                Ok(w) => w,
                Err(e) => {
                    // A failed write (a full disk) leaves no part file behind.
                    let part2 = part.clone();
                    let _ = blocking(move || std::fs::remove_file(part2)).await;
                    return Err(TransferError::io("write", &part, e));
                }
            };
            file = f;
            if over {
                drop(file);
                let why = format!("the peer sent more than the announced {} bytes", w.size);
                return Err(self.quarantine_part(&part, what, why).await);
            }
            if let Some(e) = failed {
                // The part stays for the next attempt to resume.
                return Err(e);
            }
            (h, n)
        };
        let sha = hex::encode(hasher.finalize());
        if total != w.size || sha != w.sha256 {
            let why = if total != w.size {
                format!("{total} bytes, expected {}", w.size)
            } else {
                format!("sha256 {sha}, expected {}", w.sha256)
            };
            drop(file);
            return Err(self.quarantine_part(&part, what, why).await);
        }
        let (dest2, part2) = (dest.to_owned(), part.clone());
        blocking(move || install(file, &part2, &dest2, durable)).await??;
        Ok(Fetched {
            downloaded,
            resumed_from: total.saturating_sub(downloaded),
        })
    }

    /// Moves a part file that failed verification (`why`) to quarantine; the error the
    /// fetch of `what` returns.
    async fn quarantine_part(&self, part: &Path, what: String, why: String) -> TransferError {
        let (part, q, why2) = (part.to_owned(), self.quarantine.clone(), why.clone());
        match blocking(move || ringrift_store::manifest::quarantine(&part, &q, &why2)).await {
            Ok(Ok(quarantined)) => TransferError::Corrupt {
                what,
                why,
                quarantined,
            },
            Ok(Err(e)) => e.into(),
            Err(e) => e,
        }
    }

    /// A file of at most [`SMALL_FILE`] bytes: received whole into memory (never more
    /// than its announced size + 1 byte), then checked, written and renamed in one
    /// blocking step. Not resumed (there is little to resume); a cut leaves nothing.
    async fn fetch_small(
        &self,
        peer: &Peer,
        w: &Wanted,
        dest: &Path,
        part: PathBuf,
        durable: bool,
        what: String,
    ) -> Result<Fetched, TransferError> {
        let rb = self.client.request(
            reqwest::Method::GET,
            peer,
            &format!("/files/{}/{}", w.root.as_str(), encode_path(&w.path)),
        );
        let mut resp = self.client.send(rb).await?;
        let url = resp.url().to_string();
        let limit = usize::try_from(w.size)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut body = Vec::with_capacity(limit.min(SMALL_FILE as usize + 1));
        while let Some(chunk) = resp.chunk().await.map_err(|e| TransferError::Http {
            url: url.clone(),
            source: e,
        })? {
            if let Some(l) = &self.bandwidth {
                let mut left = chunk.len();
                while left > 0 {
                    let n = left.min(self.burst as usize);
                    if let Some(n) = NonZeroU32::new(n as u32) {
                        let _ = l.until_n_ready(n).await;
                    }
                    left -= n;
                }
            }
            if let Some(p) = &self.progress {
                p(&Progress {
                    peer: &peer.name,
                    path: &w.path,
                    bytes: chunk.len() as u64,
                });
            }
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= limit {
                break;
            }
        }
        let (expected, size, q) = (w.sha256.clone(), w.size, self.quarantine.clone());
        let dest = dest.to_owned();
        let n = body.len() as u64;
        blocking(move || {
            let sha = hex::encode(Sha256::digest(&body));
            let write = |path: &Path| -> Result<File, TransferError> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| TransferError::io("create directory", dir, e))?;
                }
                let mut f = File::create(path)
                    .map_err(|e| TransferError::io("create partial file", path, e))?;
                f.write_all(&body)
                    .map_err(|e| TransferError::io("write", path, e))?;
                Ok(f)
            };
            let f = write(&part)?;
            if n != size || sha != expected {
                drop(f);
                let why = if n != size {
                    format!("{n} bytes, expected {size}")
                } else {
                    format!("sha256 {sha}, expected {expected}")
                };
                let quarantined = ringrift_store::manifest::quarantine(&part, &q, &why)?;
                return Err(TransferError::Corrupt {
                    what,
                    why,
                    quarantined,
                });
            }
            install(f, &part, &dest, durable)
        })
        .await??;
        Ok(Fetched {
            downloaded: n,
            resumed_from: 0,
        })
    }

    /// Makes `local_root` hold every file under `prefix` of `peer`'s `root` that
    /// `select` accepts, with the peer's content: files whose hash already matches (by
    /// [`LocalIndex`], else by hashing them) are left alone, the rest fetched,
    /// `per_host` at a time, each verified before its rename; the filesystem is synced
    /// once at the end (one `syncfs` instead of two fsyncs per file) before the report
    /// says done. Local files the peer does not have are kept. Failures are per file,
    /// in the report.
    pub async fn mirror(
        &self,
        peer: &Peer,
        root: Root,
        prefix: &str,
        select: &(dyn Fn(&str) -> bool + Sync),
        local_root: &Path,
        index: &mut LocalIndex,
    ) -> Result<MirrorReport, TransferError> {
        let t0 = Instant::now();
        let doc = manifest_under(&self.client, peer, root, prefix).await?;
        let wanted: Vec<Wanted> = doc
            .files
            .into_iter()
            .filter(|(p, _)| select(p))
            .map(|(path, e)| Wanted {
                root,
                path,
                sha256: e.sha256,
                size: e.size,
            })
            .collect();
        let mut report = MirrorReport {
            listed: wanted.len(),
            ..MirrorReport::default()
        };
        let todo = {
            let (lr, snapshot) = (local_root.to_owned(), std::mem::take(index));
            let (todo, idx) = blocking(move || {
                let mut idx = snapshot;
                let todo: Vec<Wanted> = wanted
                    .into_iter()
                    .filter(|w| idx.sha256_of(&lr, &w.path).as_deref() != Some(&w.sha256))
                    .collect();
                (todo, idx)
            })
            .await?;
            *index = idx;
            todo
        };
        use futures_util::StreamExt;
        let results: Vec<(Wanted, Result<Fetched, TransferError>)> =
            futures_util::stream::iter(todo.into_iter().map(|w| async move {
                let r = self
                    .fetch_inner(peer, &w, &local_root.join(&w.path), false)
                    .await;
                (w, r)
            }))
            .buffer_unordered(self.limits.per_host)
            .collect()
            .await;
        if results.iter().any(|(_, r)| r.is_ok()) {
            let dir = local_root.to_owned();
            blocking(move || {
                File::open(&dir)
                    .and_then(|d| nix::unistd::syncfs(&d).map_err(std::io::Error::from))
                    .map_err(|e| TransferError::io("syncfs", &dir, e))
            })
            .await??;
        }
        for (w, r) in results {
            match r {
                Ok(f) => {
                    report.fetched += 1;
                    report.bytes += f.downloaded;
                    index.record(local_root, &w.path, &w.sha256);
                }
                Err(e) => report.failed.push((w.path, e.to_string())),
            }
        }
        report.duration = t0.elapsed();
        Ok(report)
    }
}

/// What [`Engine::mirror`] did.
#[derive(Debug, Default)]
pub struct MirrorReport {
    /// Files of the peer that matched the selection.
    pub listed: usize,
    pub fetched: usize,
    pub bytes: u64,
    /// Path and reason, per file that could not be fetched.
    pub failed: Vec<(String, String)>,
    pub duration: Duration,
}

/// The SHA-256 of local files as of a size and mtime: a file unchanged since it was
/// installed or hashed is not read again. Saved as JSON (atomically).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct LocalIndex {
    files: BTreeMap<String, IndexEntry>,
    /// Changed since loaded (a no-op sync writes nothing).
    #[serde(skip)]
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct IndexEntry {
    size: u64,
    mtime_ns: i128,
    sha256: String,
}

fn stat_key(path: &Path) -> Option<(u64, i128)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| {
        (
            m.len(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        )
    })
}

impl LocalIndex {
    /// The index saved at `path`; empty when there is none. A corrupt file is an error
    /// naming it (delete it to rebuild by hashing).
    pub fn load(path: &Path) -> Result<LocalIndex, TransferError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                TransferError::Invalid(format!("transfer index {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalIndex::default()),
            Err(e) => Err(TransferError::io("read transfer index", path, e)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), TransferError> {
        let bytes = serde_json::to_vec(self).map_err(|e| TransferError::Invalid(e.to_string()))?;
        Ok(ringrift_store::manifest::atomic_write(path, &bytes)?)
    }

    /// The SHA-256 of `root/rel` now: from the index when size and mtime are those it
    /// recorded, else hashed (and recorded); `None` when the file is missing or
    /// unreadable. Blocking.
    pub fn sha256_of(&mut self, root: &Path, rel: &str) -> Option<String> {
        let path = root.join(rel);
        let (size, mtime_ns) = stat_key(&path)?;
        if let Some(e) = self.files.get(rel)
            && e.size == size
            && e.mtime_ns == mtime_ns
        {
            return Some(e.sha256.clone());
        }
        let (sha256, _) = ringrift_store::manifest::hash_file(&path).ok()?;
        self.dirty = true;
        self.files.insert(
            rel.to_owned(),
            IndexEntry {
                size,
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
        Some(sha256)
    }

    /// Records that `root/rel`, as it is now on disk, hashes to `sha256` (just
    /// installed and verified).
    pub fn record(&mut self, root: &Path, rel: &str, sha256: &str) {
        if let Some((size, mtime_ns)) = stat_key(&root.join(rel)) {
            self.dirty = true;
            self.files.insert(
                rel.to_owned(),
                IndexEntry {
                    size,
                    mtime_ns,
                    sha256: sha256.to_owned(),
                },
            );
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether anything was recorded since it was loaded.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransferError::Invalid(format!("blocking task: {e}")))
}

/// `dir/.{name}.part-{sha256[..16]}` next to `dest`.
fn part_path(dest: &Path, sha256: &str) -> Result<PathBuf, TransferError> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TransferError::Invalid(format!("{} has no file name", dest.display())))?;
    let dir = dest
        .parent()
        .ok_or_else(|| TransferError::Invalid(format!("{} has no directory", dest.display())))?;
    let tag: String = sha256.chars().take(16).collect();
    Ok(dir.join(format!(".{name}.part-{tag}")))
}

/// Opens (creating) the partial file; returns it positioned at its end, the hash of
/// what it holds and its length. A part longer than `size` starts over.
fn open_part(part: &Path, size: u64) -> Result<(File, Sha256, u64), TransferError> {
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TransferError::io("create directory", dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(|e| TransferError::io("open partial file", part, e))?;
    let len = f
        .metadata()
        .map_err(|e| TransferError::io("stat partial file", part, e))?
        .len();
    if len > size {
        f.set_len(0)
            .map_err(|e| TransferError::io("truncate partial file", part, e))?;
        return Ok((f, Sha256::new(), 0));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| TransferError::io("read partial file", part, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    Ok((f, hasher, read))
}

/// Writes the pieces from `rx` at `start` (0: the file is truncated first), hashing
/// them into `hasher`; returns the hash state and the file's length.
fn write_part(
    f: &mut File,
    mut hasher: Sha256,
    start: u64,
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> std::io::Result<(Sha256, u64)> {
    if start == 0 {
        f.set_len(0)?;
    }
    f.seek(SeekFrom::Start(start))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut *f);
    let mut len = start;
    while let Some(piece) = rx.blocking_recv() {
        hasher.update(&piece);
        out.write_all(&piece)?;
        len += piece.len() as u64;
    }
    out.flush()?;
    Ok((hasher, len))
}

/// fsync the verified part (when `durable`), rename it over `dest`, fsync the directory.
fn install(file: File, part: &Path, dest: &Path, durable: bool) -> Result<(), TransferError> {
    if durable {
        file.sync_all()
            .map_err(|e| TransferError::io("fsync", part, e))?;
    }
    drop(file);
    std::fs::rename(part, dest).map_err(|e| TransferError::io("rename into place", dest, e))?;
    if durable && let Some(dir) = dest.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| TransferError::io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// The start of a `Content-Range: bytes a-b/n` header.
fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    v.strip_prefix("bytes ")?.split('-').next()?.parse().ok()
}

/// Percent-encodes each segment of a checked relative path for a URL.
fn encode_path(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
