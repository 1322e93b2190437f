//! File integrity: SHA-256 manifests, atomic writes, quarantine of corrupt files.
//!
//! A manifest is a JSON file listing, per relative path, the SHA-256, size and mtime of a
//! file. [`verify`] re-hashes a file and reports exactly what differs; a file that fails
//! goes to [`quarantine`] and is never used. Every shared file is written with
//! [`atomic_write`] (temp file in the same directory, fsync, rename, fsync directory), so
//! a reader sees either the old or the new content, never a torn one.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What a manifest records about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
    /// Modification time, Unix milliseconds (informational; the hash decides).
    pub mtime_ms: i64,
}

/// A set of files relative to a root directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, FileEntry>,
}

/// Why a file does not match its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{path}: missing")]
    Missing { path: PathBuf },
    #[error("{path}: size {actual} bytes, manifest says {expected} (truncated or extended)")]
    Size {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: sha256 {actual}, manifest says {expected}")]
    Hash {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// SHA-256 (lower-case hex) and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64), StoreError> {
    let mut f = File::open(path).map_err(|e| StoreError::io("open for hashing", path, e))?;
    hash_reader(path, &mut f)
}

/// SHA-256 (lower-case hex) and length of everything `r` yields, streamed in 64 KiB
/// reads (`path` names the source in errors): for callers that already hold the open
/// file, e.g. a server hashing exactly the inode it serves.
pub fn hash_reader(path: &Path, r: &mut impl Read) -> Result<(String, u64), StoreError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| StoreError::io("read for hashing", path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// SHA-256 (lower-case hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Describes a file as it is now.
pub fn entry_for(path: &Path) -> Result<FileEntry, StoreError> {
    let (sha256, size) = hash_file(path)?;
    let meta = std::fs::metadata(path).map_err(|e| StoreError::io("stat", path, e))?;
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(FileEntry {
        sha256,
        size,
        mtime_ms,
    })
}

/// Checks a file against its entry: missing, wrong size, then wrong hash.
pub fn verify(path: &Path, entry: &FileEntry) -> Result<Result<(), Mismatch>, StoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(Mismatch::Missing {
                path: path.to_path_buf(),
            }));
        }
        Err(e) => return Err(StoreError::io("stat", path, e)),
    };
    if meta.len() != entry.size {
        return Ok(Err(Mismatch::Size {
            path: path.to_path_buf(),
            expected: entry.size,
            actual: meta.len(),
        }));
    }
    let (actual, _) = hash_file(path)?;
    if actual != entry.sha256 {
        return Ok(Err(Mismatch::Hash {
            path: path.to_path_buf(),
            expected: entry.sha256.clone(),
            actual,
        }));
    }
    Ok(Ok(()))
}

impl Manifest {
    /// Builds a manifest of `files` (paths relative to `root`).
    pub fn build(root: &Path, files: &[&str]) -> Result<Self, StoreError> {
        let mut m = Manifest::default();
        for rel in files {
            m.files
                .insert((*rel).to_string(), entry_for(&root.join(rel))?);
        }
        Ok(m)
    }

    /// Verifies every file under `root`; returns the mismatches (empty = all good).
    pub fn verify_all(&self, root: &Path) -> Result<Vec<Mismatch>, StoreError> {
        let mut bad = Vec::new();
        for (rel, entry) in &self.files {
            if let Err(m) = verify(&root.join(rel), entry)? {
                bad.push(m);
            }
        }
        Ok(bad)
    }

    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let bytes = std::fs::read(path).map_err(|e| StoreError::io("read manifest", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::Invalid(e.to_string()))?;
        atomic_write(path, &bytes)
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

fn parent_of(path: &Path) -> Result<&Path, StoreError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        Some(_) => Ok(Path::new(".")),
        None => Err(StoreError::Invalid(format!(
            "{} has no parent directory",
            path.display()
        ))),
    }
}

/// Writes `path` atomically through a caller-supplied writer: a temp file in the same
/// directory gets the content, is fsynced and renamed over `path`, then the directory is
/// fsynced. On any error the temp file is removed and `path` is untouched.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let dir = parent_of(path)?;
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::Invalid(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| StoreError::io("create temp file", &tmp, e))?;
        write(&mut f).map_err(|e| StoreError::io("write temp file", &tmp, e))?;
        f.flush().map_err(|e| StoreError::io("flush", &tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io("fsync", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| StoreError::io("rename into place", path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes to `path` atomically (see [`atomic_write_with`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    atomic_write_with(path, |f| f.write_all(bytes))
}

/// Copies `src` to `dst` atomically; returns the SHA-256 of what was written.
pub fn atomic_copy(src: &Path, dst: &Path) -> Result<String, StoreError> {
    let mut input = File::open(src).map_err(|e| StoreError::io("open for copy", src, e))?;
    let mut hasher = Sha256::new();
    atomic_write_with(dst, |out| {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// Copies `src` to `dst` the way a backup must: the bytes go to a temp file next to
/// `dst` while their SHA-256 is computed from the stream read, the temp file is fsynced,
/// read back and hashed again, and only a copy whose hash equals the source's is renamed
/// over `dst` (then the directory is fsynced). A mismatch leaves `dst` untouched and is
/// [`StoreError::Corrupt`]. Returns the SHA-256 and size.
pub fn copy_verified(src: &Path, dst: &Path) -> Result<(String, u64), StoreError> {
    let mut input = File::open(src).map_err(|e| StoreError::io("open for copy", src, e))?;
    let dir = parent_of(dst)?;
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    let name = dst
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::Invalid(format!("{} has no file name", dst.display())))?;
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut out =
            File::create(&tmp).map_err(|e| StoreError::io("create temp file", &tmp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|e| StoreError::io("read for copy", src, e))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| StoreError::io("write temp file", &tmp, e))?;
        }
        out.sync_all()
            .map_err(|e| StoreError::io("fsync", &tmp, e))?;
        drop(out);
        let source = hex::encode(hasher.finalize());
        let (copy, copy_size) = hash_file(&tmp)?;
        if copy != source || copy_size != size {
            return Err(StoreError::Corrupt {
                path: tmp.clone(),
                reason: format!(
                    "copy of {} reads back as sha256 {copy} ({copy_size} bytes), source was {source} ({size} bytes)",
                    src.display()
                ),
            });
        }
        std::fs::rename(&tmp, dst).map_err(|e| StoreError::io("rename into place", dst, e))?;
        fsync_dir(dir)?;
        Ok((source, size))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Points symlink `link` at `target` atomically (new link under a temp name, renamed over).
pub fn atomic_symlink(target: &Path, link: &Path) -> Result<(), StoreError> {
    let dir = parent_of(link)?;
    let name = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::Invalid(format!("{} has no file name", link.display())))?;
    let tmp = dir.join(format!(".{name}.link-{}", uuid::Uuid::new_v4().simple()));
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| StoreError::io("create symlink", &tmp, e))?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::io("rename symlink into place", link, e));
    }
    fsync_dir(dir)
}

/// Moves a corrupt file to `quarantine_dir` under a unique name (never deletes it, never
/// leaves it where it could be used). Returns its new path.
pub fn quarantine(path: &Path, quarantine_dir: &Path, reason: &str) -> Result<PathBuf, StoreError> {
    std::fs::create_dir_all(quarantine_dir)
        .map_err(|e| StoreError::io("create quarantine directory", quarantine_dir, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::Invalid(format!("{} has no file name", path.display())))?;
    let dest = quarantine_dir.join(format!(
        "{name}.{}.{}",
        crate::now_ms(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::rename(path, &dest).map_err(|e| StoreError::io("move to quarantine", path, e))?;
    let note = dest.with_extension(format!(
        "{}.reason",
        dest.extension().and_then(|e| e.to_str()).unwrap_or("file")
    ));
    atomic_write(&note, format!("{}\n{reason}\n", path.display()).as_bytes())?;
    Ok(dest)
}

#[cfg(test)]
mod tests;
