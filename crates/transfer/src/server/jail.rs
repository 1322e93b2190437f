//! Opening a requested path so that nothing outside a root can be served.
//!
//! Three layers, each enough for the cases it names: (1) the request path (already
//! percent-decoded by the router, so `%2e%2e%2f` arrives as `../`) is checked
//! lexically: no empty, `.` or `..` component, no absolute path, no NUL or backslash,
//! no hidden name (atomic writes stage `.name.tmp-*` files: never serve half a file),
//! no SQLite side file (`-wal`, `-shm`, `-journal`); (2) the joined path is
//! canonicalised (symlinks resolved) and must stay under the canonical root; (3) the
//! open itself is done by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from the root's directory handle on the canonical relative path, so a symlink swapped
//! in between the check and the open cannot lead out either. Symlinks inside the root
//! that stay inside it (`models/ringrift_best_*`) are served. Only regular files are.

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a request is not served; each maps to one HTTP status and a message that never
/// contains file content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("bad path: {0}")]
    BadPath(&'static str),
    #[error("outside the served root")]
    Outside,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Io(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadPath(_) => 400,
            Refusal::Outside => 403,
            Refusal::NotFound => 404,
            Refusal::Io(_) => 500,
        }
    }

    /// What resolving a requested path met: a missing name, a file used as a directory
    /// (`a.txt/b`) or a link loop is not found; a name too long is a bad path; only
    /// other failures (permissions, I/O) are the server's (500).
    fn io(e: &std::io::Error) -> Refusal {
        use nix::errno::Errno;
        match (e.kind(), e.raw_os_error().map(Errno::from_raw)) {
            (std::io::ErrorKind::NotFound, _)
            | (_, Some(Errno::ENOTDIR | Errno::ELOOP | Errno::ENOENT)) => Refusal::NotFound,
            (_, Some(Errno::ENAMETOOLONG)) => Refusal::BadPath("name too long"),
            _ => Refusal::Io(e.to_string()),
        }
    }
}

/// One served directory (`data` or `models`), canonicalised at start, with a directory
/// handle the kernel resolves requests beneath.
#[derive(Debug)]
pub struct Root {
    pub name: &'static str,
    pub path: PathBuf,
    dir: File,
}

/// SQLite side files are never served (a game DB is served as a snapshot).
const SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The lexical check of a decoded request path (layer 1).
pub fn check_relative(rel: &str) -> Result<(), Refusal> {
    if rel.is_empty() {
        return Err(Refusal::BadPath("empty path"));
    }
    if rel.starts_with('/') {
        return Err(Refusal::BadPath("absolute path"));
    }
    if rel.contains('\0') || rel.contains('\\') {
        return Err(Refusal::BadPath("NUL or backslash in path"));
    }
    for c in rel.split('/') {
        match c {
            "" => return Err(Refusal::BadPath("empty path component")),
            "." | ".." => return Err(Refusal::BadPath("dot component")),
            _ if c.starts_with('.') => return Err(Refusal::BadPath("hidden file")),
            _ => {}
        }
    }
    if SIDE_SUFFIXES.iter().any(|s| rel.ends_with(s)) {
        return Err(Refusal::BadPath("SQLite side file"));
    }
    Ok(())
}

impl Root {
    /// Creates the directory if missing and canonicalises it.
    pub fn open(name: &'static str, dir: &Path) -> std::io::Result<Root> {
        std::fs::create_dir_all(dir)?;
        let path = std::fs::canonicalize(dir)?;
        let handle = File::open(&path)?;
        Ok(Root {
            name,
            path,
            dir: handle,
        })
    }

    /// Opens `rel` (a decoded request path) for reading, refused unless it is a regular
    /// file under the root. Returns the file and its canonical path. Blocking.
    pub fn open_file(&self, rel: &str) -> Result<(File, PathBuf), Refusal> {
        check_relative(rel)?;
        let canonical = std::fs::canonicalize(self.path.join(rel)).map_err(|e| Refusal::io(&e))?;
        let inner = canonical
            .strip_prefix(&self.path)
            .map_err(|_| Refusal::Outside)?
            .to_path_buf();
        if inner.as_os_str().is_empty() {
            return Err(Refusal::NotFound);
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let file = match nix::fcntl::openat2(&self.dir, inner.as_path(), how) {
            Ok(fd) => File::from(fd),
            // A kernel before 5.6: the canonical path, last component not followed.
            Err(nix::errno::Errno::ENOSYS) => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(OFlag::O_NOFOLLOW.bits())
                    .open(&canonical)
                    .map_err(|e| match e.raw_os_error() {
                        Some(code) if code == nix::errno::Errno::ELOOP as i32 => Refusal::Outside,
                        _ => Refusal::io(&e),
                    })?
            }
            Err(nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP) => {
                return Err(Refusal::Outside);
            }
            Err(nix::errno::Errno::ENOENT) => return Err(Refusal::NotFound),
            Err(e) => return Err(Refusal::Io(format!("open {}: {e}", canonical.display()))),
        };
        let meta = file.metadata().map_err(|e| Refusal::io(&e))?;
        if !meta.is_file() {
            return Err(Refusal::NotFound);
        }
        Ok((file, canonical))
    }

    /// Every file a client may ask for under the directory `prefix` (relative,
    /// checked; empty: the whole root), relative to the root, sorted: regular files and
    /// symlinks (resolved and checked when opened), walking real directories only (no
    /// loops through linked ones), hidden names and SQLite side files left out; a
    /// `prefix` naming a file lists that file, a missing one nothing. Each regular file
    /// found by the walk comes with its `lstat` (from the directory, no open): the
    /// manifest's fast path. Blocking.
    pub fn list_under(&self, prefix: &str) -> Result<Vec<Listed>, Refusal> {
        let prefix = prefix.trim_end_matches('/');
        let (start, rel_prefix) = if prefix.is_empty() {
            (self.path.clone(), String::new())
        } else {
            check_relative(prefix)?;
            (self.path.join(prefix), format!("{prefix}/"))
        };
        // A prefix naming one file lists it alone; one that is (or passes through) a
        // symlink is not followed (the open of each file is jailed anyway).
        match std::fs::symlink_metadata(&start) {
            Ok(m) if m.is_file() => {
                return Ok(vec![Listed {
                    rel: prefix.to_owned(),
                    meta: None,
                }]);
            }
            Ok(m) if m.is_dir() => {}
            _ => return Ok(Vec::new()),
        }
        // The walk starts inside the root (an intermediate link could lead out).
        let canonical = start.canonicalize().map_err(|e| Refusal::io(&e))?;
        if !canonical.starts_with(&self.path) {
            return Err(Refusal::Outside);
        }
        let mut out = Vec::new();
        let mut stack = vec![(start, rel_prefix, 0usize)];
        while let Some((dir, prefix, depth)) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| Refusal::io(&e))? {
                let entry = entry.map_err(|e| Refusal::io(&e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let rel = format!("{prefix}{name}");
                if check_relative(&rel).is_err() {
                    continue;
                }
                let kind = entry.file_type().map_err(|e| Refusal::io(&e))?;
                if kind.is_dir() && depth < 16 {
                    stack.push((entry.path(), format!("{rel}/"), depth + 1));
                } else if kind.is_file() {
                    let meta = entry.metadata().ok();
                    out.push(Listed { rel, meta });
                } else if kind.is_symlink() {
                    out.push(Listed { rel, meta: None });
                }
            }
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }
}

/// One file of [`Root::list_under`].
#[derive(Debug)]
pub struct Listed {
    pub rel: String,
    /// The `lstat` of a regular file met by the walk; `None` for links (and a prefix
    /// naming one file), which go through [`Root::open_file`].
    pub meta: Option<std::fs::Metadata>,
}
