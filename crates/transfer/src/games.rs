//! Games moved between nodes as batches of records, merged by `game_id`.
//!
//! The wire types of the data server's game routes ([`GamesPage`], [`GamesPush`],
//! [`PushAck`], [`GamesSummary`]; the server in `ringrift-data-server` uses these same
//! types), the client calls [`fetch`], [`push`] and [`summary`], the per-link
//! [`Watermarks`] (so each game crosses each link once and a restart resumes), the
//! higher-level [`push_new`] / [`pull_new`] that every game-sync daemon runs, the
//! DATA_SYNC_* reporting of such a run ([`SyncEvents`]) and the gossip view of the
//! cluster's data ([`GossipView`]).
//!
//! Integrity: every `GET /games` answer and every `POST /games` body carries
//! `x-ringrift-sha256`, the SHA-256 of the body bytes; a mismatch is refused on both
//! sides and nothing is stored.
//!
//! Rules: a game leaves a node only after the engine's referee replayed it
//! ([`quarantine_unplayable`]: one that breaks the rules is quarantined in its store and
//! never sent), and is stored only after the receiver replayed it too
//! ([`check_received`]: a batch holding one is refused whole, naming it). A bad game so
//! stops at its first hop, and export never meets it.

use crate::events::Transfer;
use crate::{DataClient, Peer, TransferError};
use ringrift_engine::game::Referee;
use ringrift_store::games::{GameRecord, GameStore};
use ringrift_store::{ConfigKey, OffRuntime, StoreError, paths};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub use ringrift_store::games::{BatchCount, GameFilter, StoredGame};

/// The header with the SHA-256 (lowercase hex) of a game route's body.
pub const SHA256_HEADER: &str = "x-ringrift-sha256";
/// The header of a `GET /games` answer with the identity of the serving node's store of
/// the config ([`GameStore::store_id`]), or [`NO_STORE`].
pub const STORE_HEADER: &str = "x-ringrift-store";
/// [`STORE_HEADER`]'s value when the node has no store of the config.
pub const NO_STORE: &str = "-";

/// Which store of a config a peer has, by its `GET /games` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerStore {
    /// A peer of a version before store identities (no header): nothing is concluded.
    Unknown,
    /// The peer has no store of the config.
    Absent,
    Id(String),
}

/// The identity of `peer`'s store of `config` (one `GET /games` past any sequence: an
/// empty page).
pub async fn peer_store(
    client: &DataClient,
    peer: &Peer,
    config: ConfigKey,
) -> Result<PeerStore, TransferError> {
    let q = games_query(config, i64::MAX, 1, &GameFilter::default());
    let resp = client
        .send(client.request(reqwest::Method::GET, peer, &q))
        .await?;
    let id = resp
        .headers()
        .get(STORE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    verified_body(resp).await?;
    Ok(match id.as_deref() {
        None => PeerStore::Unknown,
        Some(NO_STORE) => PeerStore::Absent,
        Some(id) => PeerStore::Id(id.to_owned()),
    })
}
/// Most games one `GET /games` answers (a larger `limit` is capped).
pub const MAX_PAGE: usize = 2000;
/// Largest `POST /games` body the server takes (413 beyond); [`push`] splits batches
/// to stay under it.
pub const MAX_PUSH_BYTES: usize = 64 * 1024 * 1024;
/// A `GET /games` answer stops adding games once its body passes this (then `more`).
pub const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;

/// Checks games received from another node before any is stored: each record's fields
/// ([`GameRecord::validate`]), then the engine's referee (every move legal in turn, the
/// recorded winner, policy cells on the board). The error names the first bad game and
/// why. Blocking (a replay per game): call off the runtime.
pub fn check_received(games: &[GameRecord]) -> Result<(), StoreError> {
    let mut referee = Referee::default();
    for g in games {
        g.validate()?;
        referee.check(g).map_err(|e| {
            StoreError::Invalid(format!(
                "game {:?}: unplayable: {e}",
                g.game_id.chars().take(64).collect::<String>()
            ))
        })?;
    }
    Ok(())
}

/// [`Referee::quarantine_unplayable`] on games read from `store` to be sent, each one
/// left out logged: a bad game stored before games were checked never leaves this node.
/// Blocking.
pub fn quarantine_unplayable(
    store: &GameStore,
    games: &mut Vec<StoredGame>,
) -> Result<usize, StoreError> {
    let bad = Referee::default().quarantine_unplayable(store, games)?;
    for (id, why) in &bad {
        tracing::warn!(store = %store.path().display(), game = %id, %why,
            "unplayable game quarantined; it is not sent, served or exported");
    }
    Ok(bad.len())
}

/// `GET /games` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GamesPage {
    pub games: Vec<StoredGame>,
    /// Ask `after=next_after` for the next page.
    pub next_after: i64,
    /// Whether more games may follow `next_after`.
    pub more: bool,
    /// The highest sequence of the serving store; below a caller's watermark means the
    /// store was recreated (the caller starts again from 0).
    #[serde(default)]
    pub max_seq: i64,
}

/// `POST /games` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GamesPush {
    pub games: Vec<GameRecord>,
}

/// `POST /games` answer: how many records came, how many were new to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushAck {
    pub received: u64,
    pub new: u64,
}

/// One game batch of `GET /games/summary`: the games of one config made on one node in
/// one hour (`created_at` ms / 3 600 000).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSummary {
    pub config: ConfigKey,
    pub source_node: String,
    pub hour: i64,
    pub count: u64,
}

/// `GET /games/summary` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GamesSummary {
    /// The answering node's name.
    pub node: String,
    pub batches: Vec<BatchSummary>,
}

/// SHA-256 (lowercase hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ringrift_store::manifest::sha256_hex(bytes)
}

/// The path and query of `GET /games` for these arguments.
pub fn games_query(config: ConfigKey, after: i64, limit: usize, filter: &GameFilter) -> String {
    let mut q = format!("/games?config={config}&after={after}&limit={limit}");
    if let Some(m) = filter.min_quality {
        q.push_str(&format!("&min_quality={m}"));
    }
    if let Some(n) = &filter.source_node {
        q.push_str("&source_node=");
        q.push_str(&percent_encode(n));
    }
    if let Some(h) = filter.hour {
        q.push_str(&format!("&hour={h}"));
    }
    q
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space) of one query component; `None` for a bad
/// escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Reads a response body and checks it against its `x-ringrift-sha256` header.
async fn verified_body(resp: reqwest::Response) -> Result<(String, Vec<u8>), TransferError> {
    let url = resp.url().to_string();
    let announced = resp
        .headers()
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.bytes().await.map_err(|e| TransferError::Http {
        url: url.clone(),
        source: e,
    })?;
    let Some(announced) = announced else {
        return Err(TransferError::BadAnswer {
            url,
            why: format!("no {SHA256_HEADER} header"),
        });
    };
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(announced.trim()) {
        return Err(TransferError::BadAnswer {
            url,
            why: format!("sha256 mismatch: header {announced}, body {actual}"),
        });
    }
    Ok((url, bytes.to_vec()))
}

/// `GET /games` of `peer`: at most `limit` (capped at [`MAX_PAGE`]) games of `config`
/// after the peer's sequence `after` that pass `filter`, the body checked against its
/// SHA-256 header. Returns the page and the body's size in bytes.
pub async fn fetch(
    client: &DataClient,
    peer: &Peer,
    config: ConfigKey,
    after: i64,
    limit: usize,
    filter: &GameFilter,
) -> Result<(GamesPage, u64), TransferError> {
    let q = games_query(config, after, limit.clamp(1, MAX_PAGE), filter);
    let resp = client
        .send(client.request(reqwest::Method::GET, peer, &q))
        .await?;
    let (url, bytes) = verified_body(resp).await?;
    let page: GamesPage = serde_json::from_slice(&bytes).map_err(|e| TransferError::BadAnswer {
        url: url.clone(),
        why: e.to_string(),
    })?;
    for g in &page.games {
        if g.game.config_key != config {
            return Err(TransferError::BadAnswer {
                url,
                why: format!(
                    "game {} is of config {}, asked {config}",
                    g.game.game_id, g.game.config_key
                ),
            });
        }
    }
    Ok((page, bytes.len() as u64))
}

/// The `POST /games` body of `games` (JSON).
pub fn push_body(games: &[GameRecord]) -> Result<Vec<u8>, TransferError> {
    #[derive(Serialize)]
    struct Body<'a> {
        games: &'a [GameRecord],
    }
    serde_json::to_vec(&Body { games })
        .map_err(|e| TransferError::Invalid(format!("encode games: {e}")))
}

/// `POST /games` to `peer` of an encoded body ([`push_body`]).
pub async fn push_bytes(
    client: &DataClient,
    peer: &Peer,
    body: Vec<u8>,
) -> Result<PushAck, TransferError> {
    let sha = sha256_hex(&body);
    let rb = client
        .request(reqwest::Method::POST, peer, "/games")
        .header(SHA256_HEADER, sha)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    client.send_json(rb).await
}

/// `POST /games` of `games` to `peer` (one request; the peer stores them by
/// `INSERT OR IGNORE` on `game_id`). Returns the acknowledgement and the body size.
pub async fn push(
    client: &DataClient,
    peer: &Peer,
    games: &[GameRecord],
) -> Result<(PushAck, u64), TransferError> {
    let body = push_body(games)?;
    let n = body.len() as u64;
    if body.len() > MAX_PUSH_BYTES {
        return Err(TransferError::Invalid(format!(
            "{} games encode to {n} bytes, over the {MAX_PUSH_BYTES} a push may carry",
            games.len()
        )));
    }
    let ack = push_bytes(client, peer, body).await?;
    if ack.received != games.len() as u64 {
        return Err(TransferError::BadAnswer {
            url: format!("{}/games", peer.url),
            why: format!("received {} of {} games", ack.received, games.len()),
        });
    }
    Ok((ack, n))
}

/// `GET /games/summary` of `peer`: its game count per batch.
pub async fn summary(client: &DataClient, peer: &Peer) -> Result<GamesSummary, TransferError> {
    client.get_json(peer, "/games/summary").await
}

fn store_io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Which way a watermark counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Local sequence up to which this node's games reached the peer.
    Push,
    /// The peer's sequence up to which its games reached this node.
    Pull,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
        }
    }
}

/// One stored watermark.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub peer: String,
    pub config: String,
    pub direction: String,
    pub seq: i64,
    /// When it last moved (ms since the epoch).
    pub updated_ms: i64,
}

const WATERMARK_MIGRATIONS: &[&str] = &[
    "CREATE TABLE watermarks (
        peer TEXT NOT NULL,
        config TEXT NOT NULL,
        direction TEXT NOT NULL,
        seq INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (peer, config, direction)
    );",
    // v2: the identity of the peer's store a push watermark counts in (NULL: not known).
    "ALTER TABLE watermarks ADD COLUMN peer_store TEXT;",
];

/// Per (peer, config, direction) the sequence a link has carried up to, in a small
/// SQLite file (`run/sync/<daemon>.db`), written after every acknowledged batch, so a
/// restart (even after kill -9) resumes where the last acknowledgement left it.
#[derive(Clone)]
pub struct Watermarks {
    path: Arc<PathBuf>,
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for Watermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarks")
            .field("path", &self.path)
            .finish()
    }
}

impl OffRuntime for Watermarks {}

impl Watermarks {
    /// The watermark file of `daemon` under `home`: `run/sync/<daemon>.db`.
    pub fn path_for(home: &Path, daemon: &str) -> PathBuf {
        paths::run_dir(home)
            .join("sync")
            .join(format!("{daemon}.db"))
    }

    /// Opens (creating) the watermark file of `daemon`.
    pub fn for_daemon(home: &Path, daemon: &str) -> Result<Watermarks, StoreError> {
        Self::open(&Self::path_for(home, daemon))
    }

    pub fn open(path: &Path) -> Result<Watermarks, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| store_io("create", dir, e))?;
        }
        let conn = ringrift_store::db::open(path, WATERMARK_MIGRATIONS)?;
        Ok(Watermarks {
            path: Arc::new(path.to_owned()),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sql(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Invalid(format!("watermarks {}: {e}", self.path.display()))
    }

    /// The watermark of a link (0 = nothing carried yet).
    pub fn get(&self, peer: &str, config: ConfigKey, dir: Direction) -> Result<i64, StoreError> {
        Ok(self.get_with_store(peer, config, dir)?.0)
    }

    /// A link's watermark and the identity of the peer's store it counts in (`None`: not
    /// known), read together.
    pub fn get_with_store(
        &self,
        peer: &str,
        config: ConfigKey,
        dir: Direction,
    ) -> Result<(i64, Option<String>), StoreError> {
        use rusqlite::OptionalExtension;
        let row: Option<(i64, Option<String>)> = self
            .conn()
            .query_row(
                "SELECT seq, peer_store FROM watermarks
                 WHERE peer = ?1 AND config = ?2 AND direction = ?3",
                rusqlite::params![peer, config.to_string(), dir.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(row.unwrap_or((0, None)))
    }

    /// Sets a link's watermark and the identity of the peer's store it counts in.
    pub fn set_with_store(
        &self,
        peer: &str,
        config: ConfigKey,
        dir: Direction,
        seq: i64,
        store: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO watermarks (peer, config, direction, seq, updated_ms, peer_store)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (peer, config, direction)
                 DO UPDATE SET seq = excluded.seq, updated_ms = excluded.updated_ms,
                    peer_store = excluded.peer_store",
                rusqlite::params![
                    peer,
                    config.to_string(),
                    dir.as_str(),
                    seq,
                    ringrift_store::now_ms(),
                    store
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Sets a link's watermark (durably: the write commits before this returns).
    pub fn set(
        &self,
        peer: &str,
        config: ConfigKey,
        dir: Direction,
        seq: i64,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO watermarks (peer, config, direction, seq, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (peer, config, direction)
                 DO UPDATE SET seq = excluded.seq, updated_ms = excluded.updated_ms",
                rusqlite::params![
                    peer,
                    config.to_string(),
                    dir.as_str(),
                    seq,
                    ringrift_store::now_ms()
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every stored watermark, sorted by peer, config, direction.
    pub fn all(&self) -> Result<Vec<Watermark>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT peer, config, direction, seq, updated_ms FROM watermarks
                 ORDER BY peer, config, direction",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Watermark {
                    peer: r.get(0)?,
                    config: r.get(1)?,
                    direction: r.get(2)?,
                    seq: r.get(3)?,
                    updated_ms: r.get(4)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.map(|r| r.map_err(|e| self.sql(e))).collect()
    }

    /// The lowest push watermark of `config` over `peers` (0 for a peer with none).
    pub fn min_push(&self, peers: &[String], config: ConfigKey) -> Result<i64, StoreError> {
        let mut min: Option<i64> = None;
        for p in peers {
            let w = self.get(p, config, Direction::Push)?;
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        Ok(min.unwrap_or(0))
    }
}

/// What [`push_new`] carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Games sent and acknowledged.
    pub sent: u64,
    /// Of those, games the peer did not have.
    pub new: u64,
    /// Request body bytes sent.
    pub bytes: u64,
    /// The push watermark after the run.
    pub watermark: i64,
}

/// What [`pull_new`] carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullOutcome {
    /// Games received.
    pub received: u64,
    /// Of those, games this node did not have.
    pub new: u64,
    /// Answer body bytes received.
    pub bytes: u64,
    /// The pull watermark (the peer's sequence) after the run.
    pub watermark: i64,
}

/// One link's sync run: who, what, how much per request, and where to report.
#[derive(Clone, Copy)]
pub struct Link<'a> {
    pub home: &'a Path,
    pub client: &'a DataClient,
    pub peer: &'a Peer,
    pub config: ConfigKey,
    pub watermarks: &'a Watermarks,
    /// Games per request (capped at [`MAX_PAGE`]).
    pub limit: usize,
    pub filter: &'a GameFilter,
    /// DATA_SYNC_* of the run; `None` reports nothing.
    pub events: Option<&'a SyncEvents>,
    /// Bandwidth limit of pushes; `None` = unlimited.
    pub pacer: Option<&'a Pacer>,
}

/// A bandwidth limit for requests: each request of `n` bytes starts no earlier than the
/// previous ones' bytes allow at `bytes_per_s` (one request may be larger than a
/// second's worth; the next then waits longer). Shared by every link of a daemon.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_s: f64,
    next_free: tokio::sync::Mutex<Instant>,
}

impl Pacer {
    /// `None` for 0 (unlimited).
    pub fn new(bytes_per_s: u64) -> Option<Pacer> {
        (bytes_per_s > 0).then(|| Pacer {
            bytes_per_s: bytes_per_s as f64,
            next_free: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    /// Waits until `n` more bytes may go.
    pub async fn take(&self, n: u64) {
        let start = {
            let mut next = self.next_free.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + std::time::Duration::from_secs_f64(n as f64 / self.bytes_per_s);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// Opens the local store of `config` if it exists (a read never creates one).
async fn existing_store(home: &Path, config: ConfigKey) -> Result<Option<GameStore>, StoreError> {
    let path = paths::game_db(home, config);
    tokio::task::spawn_blocking(move || {
        if path.exists() {
            GameStore::open(&path).map(Some)
        } else {
            Ok(None)
        }
    })
    .await
    .map_err(|e| StoreError::Join(e.to_string()))?
}

/// Pushes this node's games of `config` after the link's push watermark to the peer,
/// in requests of at most `limit` games (halved while a body is over
/// [`MAX_PUSH_BYTES`]), advancing the watermark after each acknowledged request, until
/// none is left. A local store recreated below the watermark starts again from 0 (the
/// peer ignores games it has). Reports STARTED before the first request with games,
/// then COMPLETED or FAILED.
pub async fn push_new(link: Link<'_>) -> Result<PushOutcome, TransferError> {
    let started = Instant::now();
    let mut out = PushOutcome::default();
    let mut reported = false;
    let r = push_inner(&link, &mut out, &mut reported).await;
    if let Some(ev) = link.events {
        match &r {
            Ok(()) if reported => {
                ev.completed(
                    link.config,
                    &ev.node,
                    &link.peer.name,
                    out.sent,
                    out.bytes,
                    started,
                )
                .await
            }
            Ok(()) => {}
            Err(e) => {
                ev.failed(link.config, &ev.node, &link.peer.name, e, started)
                    .await
            }
        }
    }
    r.map(|()| out)
}

/// The push watermark of a link, keyed by the peer's store: a peer whose store of the
/// config is another than the one the watermark counts in (the node wiped, or the file
/// recreated) starts again from 0, so it gets back every game it lost.
async fn receiver_watermark(link: &Link<'_>) -> Result<i64, TransferError> {
    let current = peer_store(link.client, link.peer, link.config).await?;
    let (peer, config) = (link.peer.name.clone(), link.config);
    let current2 = current.clone();
    let (after, reset) = link
        .watermarks
        .off_runtime(move |w| {
            let (after, known) = w.get_with_store(&peer, config, Direction::Push)?;
            let id = match &current2 {
                PeerStore::Unknown => return Ok((after, None)),
                PeerStore::Absent => None,
                PeerStore::Id(id) => Some(id.as_str()),
            };
            let new_store = match (&known, id) {
                (Some(k), Some(c)) => k != c,
                (Some(_), None) => true,
                (None, None) => after > 0,
                (None, Some(_)) => false,
            };
            if new_store {
                w.set_with_store(&peer, config, Direction::Push, 0, id)?;
                return Ok((0, Some((known, after))));
            }
            if known.as_deref() != id {
                w.set_with_store(&peer, config, Direction::Push, after, id)?;
            }
            Ok((after, None))
        })
        .await?;
    if let Some((known, was)) = reset {
        tracing::warn!(peer = %link.peer.name, config = %link.config, watermark = was,
            known = known.as_deref().unwrap_or("none"), now = ?current,
            "the peer's game store is not the one pushed to before (wiped or recreated): pushing from 0");
    }
    Ok(after)
}

async fn push_inner(
    link: &Link<'_>,
    out: &mut PushOutcome,
    reported: &mut bool,
) -> Result<(), TransferError> {
    let Some(store) = existing_store(link.home, link.config).await? else {
        return Ok(());
    };
    let config = link.config;
    let mut after = receiver_watermark(link).await?;
    out.watermark = after;
    let limit = link.limit.clamp(1, MAX_PAGE);
    let mut restarted = false;
    loop {
        let filter = link.filter.clone();
        let page = store
            .off_runtime(move |s| {
                let mut page = s.page(after, limit, &filter)?;
                quarantine_unplayable(s, &mut page.games)?;
                Ok(page)
            })
            .await?;
        if page.max_seq < after && !restarted {
            tracing::warn!(peer = %link.peer.name, %config, watermark = after, max_seq = page.max_seq,
                "local game store is below the push watermark (recreated?): pushing from 0");
            restarted = true;
            after = 0;
            continue;
        }
        if page.games.is_empty() {
            if page.next_after != out.watermark {
                set_mark(link, Direction::Push, page.next_after).await?;
                out.watermark = page.next_after;
            }
            return Ok(());
        }
        let whole = page.games.len();
        let mut games: Vec<GameRecord> = Vec::with_capacity(whole);
        let mut seqs: Vec<i64> = Vec::with_capacity(whole);
        for g in page.games {
            seqs.push(g.seq);
            games.push(g.game);
        }
        // Encode, halving the batch while it is too big for one request.
        let body = loop {
            let (body, back) = tokio::task::spawn_blocking(move || {
                let b = push_body(&games);
                (b, games)
            })
            .await
            .map_err(|e| TransferError::Invalid(format!("encode task: {e}")))?;
            games = back;
            let body = body?;
            if body.len() <= MAX_PUSH_BYTES {
                break body;
            }
            if games.len() == 1 {
                return Err(TransferError::Invalid(format!(
                    "game {} alone encodes to {} bytes, over the {MAX_PUSH_BYTES} a push may carry",
                    games[0].game_id,
                    body.len()
                )));
            }
            games.truncate(games.len() / 2);
        };
        let sent = games.len();
        if !*reported {
            *reported = true;
            if let Some(ev) = link.events {
                ev.started(link.config, &ev.node, &link.peer.name).await;
            }
        }
        let bytes = body.len() as u64;
        if let Some(p) = link.pacer {
            p.take(bytes).await;
        }
        let ack = push_bytes(link.client, link.peer, body).await?;
        if ack.received != sent as u64 {
            return Err(TransferError::BadAnswer {
                url: format!("{}/games", link.peer.url),
                why: format!("received {} of {sent} games", ack.received),
            });
        }
        out.sent += ack.received;
        out.new += ack.new;
        out.bytes += bytes;
        // Acknowledged up to the last game sent; when the whole page went, up to the
        // page's watermark (past games the filter left out).
        let whole_page = sent == whole;
        let mark = if whole_page {
            page.next_after
        } else {
            seqs[sent - 1]
        };
        set_mark(link, Direction::Push, mark).await?;
        out.watermark = mark;
        after = mark;
        if whole_page && !page.more {
            return Ok(());
        }
    }
}

async fn set_mark(link: &Link<'_>, dir: Direction, seq: i64) -> Result<(), StoreError> {
    let (peer, config) = (link.peer.name.clone(), link.config);
    link.watermarks
        .off_runtime(move |w| w.set(&peer, config, dir, seq))
        .await
}

/// Pulls the peer's games of `config` after the link's pull watermark (the peer's
/// sequence) into this node's store `data/games/{config}.db` (`INSERT OR IGNORE` by
/// `game_id`), page by page, advancing the watermark after each stored page, until the
/// peer has none left. A peer store recreated below the watermark is read from 0.
/// Reports STARTED at the first page with games, then COMPLETED or FAILED.
pub async fn pull_new(link: Link<'_>) -> Result<PullOutcome, TransferError> {
    let started = Instant::now();
    let mut out = PullOutcome::default();
    let mut reported = false;
    let r = pull_inner(&link, &mut out, &mut reported).await;
    if let Some(ev) = link.events {
        match &r {
            Ok(()) if reported => {
                ev.completed(
                    link.config,
                    &link.peer.name,
                    &ev.node,
                    out.received,
                    out.bytes,
                    started,
                )
                .await
            }
            Ok(()) => {}
            Err(e) => {
                ev.failed(link.config, &link.peer.name, &ev.node, e, started)
                    .await
            }
        }
    }
    r.map(|()| out)
}

async fn pull_inner(
    link: &Link<'_>,
    out: &mut PullOutcome,
    reported: &mut bool,
) -> Result<(), TransferError> {
    let (peer, config) = (link.peer.name.clone(), link.config);
    let mut after = link
        .watermarks
        .off_runtime(move |w| w.get(&peer, config, Direction::Pull))
        .await?;
    out.watermark = after;
    let mut store: Option<GameStore> = None;
    let mut restarted = false;
    loop {
        let (page, bytes) = fetch(
            link.client,
            link.peer,
            link.config,
            after,
            link.limit,
            link.filter,
        )
        .await?;
        out.bytes += bytes;
        if page.max_seq < after && !restarted {
            tracing::warn!(peer = %link.peer.name, %config, watermark = after, max_seq = page.max_seq,
                "the peer's game store is below the pull watermark (recreated?): pulling from 0");
            restarted = true;
            after = 0;
            continue;
        }
        if !page.games.is_empty() {
            if !*reported {
                *reported = true;
                if let Some(ev) = link.events {
                    ev.started(link.config, &link.peer.name, &ev.node).await;
                }
            }
            let records: Vec<GameRecord> = page.games.into_iter().map(|g| g.game).collect();
            let records =
                tokio::task::spawn_blocking(move || check_received(&records).map(|()| records))
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))?
                    .map_err(|e| TransferError::BadAnswer {
                        url: format!("{}/games", link.peer.url),
                        why: format!("{e}; nothing of the page stored"),
                    })?;
            let n = records.len() as u64;
            let s = match &store {
                Some(s) => s.clone(),
                None => {
                    let path = paths::game_db(link.home, link.config);
                    let s = tokio::task::spawn_blocking(move || {
                        if let Some(dir) = path.parent() {
                            std::fs::create_dir_all(dir).map_err(|e| store_io("create", dir, e))?;
                        }
                        GameStore::open(&path)
                    })
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))??;
                    store = Some(s.clone());
                    s
                }
            };
            let ins = s.insert_games_reporting_async(records).await?;
            if !ins.conflicts.is_empty() {
                tracing::warn!(peer = %link.peer.name, %config, games = ?ins.conflicts,
                    "pulled games whose ids are stored here with other moves or winner; kept what is stored");
            }
            let new = ins.new;
            out.received += n;
            out.new += new as u64;
        }
        if page.more && page.next_after <= after {
            return Err(TransferError::BadAnswer {
                url: format!("{}/games", link.peer.url),
                why: format!(
                    "more games announced but next_after {} does not move past {after}",
                    page.next_after
                ),
            });
        }
        if page.next_after != after {
            set_mark(link, Direction::Pull, page.next_after).await?;
        }
        after = page.next_after;
        out.watermark = after;
        if !page.more {
            return Ok(());
        }
    }
}

/// Publishes DATA_SYNC_STARTED / COMPLETED / FAILED for game transfers (`files` = games,
/// `bytes` = body bytes, the config key on the event). A failure to publish is logged,
/// never a failed transfer.
#[derive(Clone)]
pub struct SyncEvents {
    publisher: Arc<dyn handler_base::Publish>,
    /// This node's name (source of pushes, target of pulls).
    pub node: String,
}

impl SyncEvents {
    pub fn new(ctx: &handler_base::Context) -> SyncEvents {
        SyncEvents {
            publisher: ctx.publisher.clone(),
            node: ctx.node.clone(),
        }
    }

    async fn emit(&self, ev: ringrift_proto::Event) {
        if let Err(e) = self.publisher.publish_stored(ev).await {
            tracing::warn!(error = %e, "DATA_SYNC event not published");
        }
    }

    pub async fn started(&self, config: ConfigKey, source: &str, target: &str) {
        self.emit(Transfer::new(source, target).started(&config.to_string()))
            .await
    }

    pub async fn completed(
        &self,
        config: ConfigKey,
        source: &str,
        target: &str,
        games: u64,
        bytes: u64,
        since: Instant,
    ) {
        self.emit(Transfer::new(source, target).completed(
            &config.to_string(),
            games,
            bytes,
            since.elapsed(),
        ))
        .await
    }

    pub async fn failed(
        &self,
        config: ConfigKey,
        source: &str,
        target: &str,
        error: &(dyn std::fmt::Display + Sync),
        since: Instant,
    ) {
        self.emit(Transfer::new(source, target).failed(
            &config.to_string(),
            &error.to_string(),
            since.elapsed(),
        ))
        .await
    }
}

/// What gossip_sync last learned of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeView {
    /// When the node last answered (ms since the epoch); `None` if never.
    pub seen_ms: Option<i64>,
    /// The last error asking it, if the last attempt failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Files and bytes under `data/` and `models/` (from its manifests).
    pub data_files: u64,
    pub data_bytes: u64,
    pub model_files: u64,
    pub model_bytes: u64,
    /// Its game count per batch.
    pub batches: Vec<BatchSummary>,
}

/// The cluster's data as gossip_sync sees it: `data/gossip/view.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipView {
    /// When the view was written (ms since the epoch).
    pub updated_ms: i64,
    pub nodes: BTreeMap<String, NodeView>,
}

/// Asks `peer` for its `data/` and `models/` manifests and its game summary: the view of
/// it as of now (`seen_ms` = now).
pub async fn node_view(client: &DataClient, peer: &Peer) -> Result<NodeView, TransferError> {
    use ringrift_store::manifest::Manifest;
    let data: Manifest = client.get_json(peer, "/manifest?root=data").await?;
    let models: Manifest = client.get_json(peer, "/manifest?root=models").await?;
    let games = summary(client, peer).await?;
    Ok(NodeView {
        seen_ms: Some(ringrift_store::now_ms()),
        error: None,
        data_files: data.files.len() as u64,
        data_bytes: data.files.values().map(|f| f.size).sum(),
        model_files: models.files.len() as u64,
        model_bytes: models.files.values().map(|f| f.size).sum(),
        batches: games.batches,
    })
}

impl GossipView {
    pub fn path(home: &Path) -> PathBuf {
        home.join("data").join("gossip").join("view.json")
    }

    /// The view of `home` (an empty view when none was written yet).
    pub fn load(home: &Path) -> Result<GossipView, StoreError> {
        let path = Self::path(home);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GossipView::default()),
            Err(e) => Err(store_io("read", &path, e)),
        }
    }

    /// Writes the view atomically (temp + fsync + rename).
    pub fn save(&self, home: &Path) -> Result<(), StoreError> {
        let path = Self::path(home);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| store_io("create", dir, e))?;
        }
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::Invalid(e.to_string()))?;
        ringrift_store::manifest::atomic_write(&path, &bytes)
    }

    /// Copies per batch across the nodes of the view: (config, source node, hour) →
    /// how many nodes hold at least one game of it, and the most games any holds.
    pub fn replication(&self) -> BTreeMap<(ConfigKey, String, i64), (u32, u64)> {
        let mut out: BTreeMap<(ConfigKey, String, i64), (u32, u64)> = BTreeMap::new();
        for v in self.nodes.values() {
            for b in &v.batches {
                let e = out
                    .entry((b.config, b.source_node.clone(), b.hour))
                    .or_default();
                if b.count > 0 {
                    e.0 += 1;
                }
                e.1 = e.1.max(b.count);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
