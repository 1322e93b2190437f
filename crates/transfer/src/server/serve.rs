//! The HTTP side: `GET /manifest?root=data|models`, `GET /files/{root}/{*path}` (single
//! `Range`, `ETag`, `If-None-Match`, `If-Range`) and the streaming body with the
//! per-peer bandwidth limit.
//!
//! A file is opened once ([`super::jail`]); a database under `data/` is replaced by its
//! snapshot ([`super::snapshot`]); the ETag is the quoted SHA-256 of what is served
//! ([`super::digest`]); the body is read from that same handle in 64 KiB `pread`s on the
//! blocking pool, one chunk in flight per response, so memory per request is bounded
//! whatever the file's size. With a bandwidth limit each chunk first takes its bytes
//! from the peer's `governor` bucket (keyed by remote IP, burst one second's worth or
//! one chunk, whichever is larger).

use super::digest::{Digest, DigestCache};
use super::jail::{Refusal, Root};
use super::snapshot::{Snapshots, is_database};

/// Whether `rel` of `root` is a game store's (`data/games/`): games move only as records
/// (the game routes), never as files, so these are neither listed nor served.
fn game_store(root: &str, rel: &str) -> bool {
    root == "data" && (rel == "games" || rel.starts_with("games/"))
}
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes read and sent per step of a response body.
pub const CHUNK: usize = 64 * 1024;

/// The step of an unlimited response of at least [`BIG_BODY`] bytes: a quarter of the
/// blocking-pool round trips per byte for whole large files (models, NPZ), while
/// ranges and small files keep [`CHUNK`] (memory under many concurrent requests).
pub const BIG_CHUNK: usize = 256 * 1024;
pub const BIG_BODY: u64 = 4 << 20;

pub type Limiter = DefaultKeyedRateLimiter<IpAddr>;

/// Everything a request needs; shared by all connections.
pub struct Files {
    pub data: Root,
    pub models: Root,
    pub digests: DigestCache,
    pub snapshots: Snapshots,
    pub limiter: Option<Arc<Limiter>>,
}

/// A keyed limiter of `bytes_per_s` (0 = none).
pub fn limiter(bytes_per_s: u32) -> Option<Arc<Limiter>> {
    let rate = NonZeroU32::new(bytes_per_s)?;
    let burst = NonZeroU32::new(bytes_per_s.max(CHUNK as u32))?;
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    )))
}

/// The manifest types are the transfer engine's (its client reads what this serves).
pub use crate::files::{ManifestDoc, ManifestEntry};

fn refuse(r: &Refusal) -> Response {
    let code = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(error = %r, "file not served");
    } else {
        tracing::debug!(refusal = %r, "request refused");
    }
    (code, format!("{r}\n")).into_response()
}

impl Files {
    fn root(&self, name: &str) -> Option<&Root> {
        match name {
            "data" => Some(&self.data),
            "models" => Some(&self.models),
            _ => None,
        }
    }

    /// Opens what is served for `rel` under `root` (a snapshot for a database) and its
    /// digest.
    async fn resolve(
        self: &Arc<Self>,
        root: &'static str,
        rel: String,
    ) -> Result<(Arc<File>, Digest), Refusal> {
        if game_store(root, &rel) {
            return Err(Refusal::NotFound);
        }
        let me = self.clone();
        let rel2 = rel.clone();
        let (file, canonical) = tokio::task::spawn_blocking(move || {
            let r = me.root(root).ok_or(Refusal::NotFound)?;
            r.open_file(&rel2)
        })
        .await
        .map_err(|e| Refusal::Io(format!("open task: {e}")))??;
        // A link elsewhere in data/ that leads into data/games/ is not a way around it.
        if root == "data" && canonical.starts_with(self.data.path.join("games")) {
            return Err(Refusal::NotFound);
        }
        let (file, path): (File, PathBuf) = if root == "data" && is_database(&rel) {
            drop(file);
            self.snapshots.open(canonical).await?
        } else {
            (file, canonical)
        };
        let file = Arc::new(file);
        // Any file under models/ (a `ringrift_best_*` link too: it shares the digest of
        // the inode it points at, whichever name is resolved first) gets its header read.
        let model = root == "models";
        let mut digest = self.digests.get(file.clone(), path, model).await?;
        if root == "data" && is_database(&rel) {
            // The source's change time, not the copy's (informational; the hash decides).
            if let Ok(m) = std::fs::metadata(self.data.path.join(&rel)) {
                use std::os::unix::fs::MetadataExt;
                digest.mtime_ms = m.mtime() * 1000 + m.mtime_nsec() / 1_000_000;
            }
        }
        Ok((file, digest))
    }

    /// The manifest of `root` (of the directory `prefix` in it; empty: all). One
    /// blocking pass lists and stats every file and takes the digests the cache knows; only new versions of files and databases are resolved
    /// one by one (hashed, snapshotted).
    pub async fn manifest(
        self: &Arc<Self>,
        root: &'static str,
        prefix: String,
    ) -> Result<ManifestDoc, Refusal> {
        let me = self.clone();
        let (mut files, slow) = tokio::task::spawn_blocking(move || {
            let r = me.root(root).ok_or(Refusal::NotFound)?;
            let names = r.list_under(&prefix)?;
            let mut files = BTreeMap::new();
            let mut slow = Vec::new();
            for super::jail::Listed { rel, meta } in names {
                if game_store(root, &rel) {
                    continue;
                }
                if root == "data" && is_database(&rel) {
                    slow.push(rel);
                    continue;
                }
                // A regular file met by the walk inside the root: its lstat is enough to
                // find a known digest; anything else is opened through the jail.
                let meta =
                    meta.or_else(|| r.open_file(&rel).ok().and_then(|(f, _)| f.metadata().ok()));
                let hit = meta.and_then(|m| me.digests.cached(&m));
                match hit {
                    Some(d) => {
                        files.insert(rel, entry(d));
                    }
                    None => slow.push(rel),
                }
            }
            Ok::<_, Refusal>((files, slow))
        })
        .await
        .map_err(|e| Refusal::Io(format!("list task: {e}")))??;
        // New versions are hashed (or snapshotted) a few at a time on the blocking pool.
        use futures_util::StreamExt;
        let mut resolved = futures_util::stream::iter(slow.into_iter().map(|rel| async move {
            let r = self.resolve(root, rel.clone()).await;
            (rel, r)
        }))
        .buffer_unordered(4);
        while let Some((rel, r)) = resolved.next().await {
            match r {
                Ok((_, d)) => {
                    files.insert(rel, entry(d));
                }
                // Gone since the listing, or a link out of the root: not offered.
                Err(Refusal::NotFound | Refusal::Outside | Refusal::BadPath(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ManifestDoc {
            root: root.to_owned(),
            files,
        })
    }
}

fn entry(d: Digest) -> ManifestEntry {
    ManifestEntry {
        sha256: d.sha256,
        size: d.size,
        mtime_ms: d.mtime_ms,
        generation: d.generation,
    }
}

fn static_root(name: &str) -> Option<&'static str> {
    match name {
        "data" => Some("data"),
        "models" => Some("models"),
        _ => None,
    }
}

/// `GET /manifest` parameters.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestQuery {
    /// `data` or `models`.
    root: String,
    /// Only the files under this directory of the root.
    #[serde(default)]
    prefix: String,
}

pub async fn manifest_route(
    State(files): State<Arc<Files>>,
    q: Result<axum::extract::Query<ManifestQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{e} (root=data|models[&prefix=dir])\n"),
            )
                .into_response();
        }
    };
    let Some(root) = static_root(&q.root) else {
        return (StatusCode::BAD_REQUEST, "root=data or root=models\n").into_response();
    };
    match files.manifest(root, q.prefix).await {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(e) => refuse(&e),
    }
}

/// Whether an `If-None-Match` / `If-Range` value names `etag` (`*` matches any).
fn matches(value: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

pub async fn file_route(
    State(files): State<Arc<Files>>,
    ConnectInfo(handler_base::tls::Remote(peer)): ConnectInfo<handler_base::tls::Remote>,
    UrlPath((root, rel)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(root) = static_root(&root) else {
        return refuse(&Refusal::NotFound);
    };
    let (file, digest) = match files.resolve(root, rel).await {
        Ok(x) => x,
        Err(e) => return refuse(&e),
    };
    let etag = format!("\"{}\"", digest.sha256);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches(headers.get(header::IF_NONE_MATCH), &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    let size = digest.size;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| {
            headers.get(header::IF_RANGE).is_none() || matches(headers.get(header::IF_RANGE), &etag)
        });
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match http_range_header::parse_range_header(r).and_then(|p| p.validate(size)) {
            Ok(v) if v.len() == 1 => {
                let (a, b) = (*v[0].start(), *v[0].end());
                (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
            }
            // Several ranges: answered whole (RFC 9110 lets a server ignore Range).
            Ok(_) => (StatusCode::OK, 0, size),
            Err(_) => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [
                        (header::CONTENT_RANGE, format!("bytes */{size}")),
                        (header::ETAG, etag.clone()),
                    ],
                )
                    .into_response();
            }
        },
    };
    let limit = files.limiter.clone().map(|l| (l, peer.ip()));
    let mut resp = Response::new(body(file, start, len, limit));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag_value);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// `len` bytes of `file` from `start`, one [`CHUNK`] read at a time ([`BIG_CHUNK`] for a
/// large body without a bandwidth limit), each after the peer's bandwidth bucket
/// allows it. A short read (the file shrank) ends the body with
/// an error, so the client sees fewer bytes than `Content-Length`, never wrong ones.
fn body(file: Arc<File>, start: u64, len: u64, limit: Option<(Arc<Limiter>, IpAddr)>) -> Body {
    let step = if limit.is_none() && len >= BIG_BODY {
        BIG_CHUNK
    } else {
        CHUNK
    };
    let state = (file, start, len, limit);
    let stream =
        futures_util::stream::try_unfold(state, move |(file, pos, left, limit)| async move {
            if left == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            let n = usize::try_from(left).map_or(step, |l| l.min(step));
            if let Some((l, ip)) = &limit {
                let cells = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))
                    .ok_or_else(|| std::io::Error::other("empty chunk"))?;
                l.until_key_n_ready(ip, cells)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            let f = file.clone();
            let buf = tokio::task::spawn_blocking(move || {
                let mut b = vec![0u8; n];
                f.read_exact_at(&mut b, pos).map(|()| b)
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(Some((
                Bytes::from(buf),
                (file, pos + n as u64, left - n as u64, limit),
            )))
        });
    Body::from_stream(stream)
}
