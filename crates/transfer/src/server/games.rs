//! The game routes: games move between nodes as records, never as database files.
//!
//! * `GET /games?config=K&after=SEQ&limit=N[&min_quality=Q][&source_node=NODE][&hour=H]`
//!   → [`GamesPage`] from this node's store `data/games/{K}.db`, in local sequence order,
//!   at most `limit` (capped at [`MAX_PAGE`]) games and about [`MAX_PAGE_BYTES`];
//!   header `x-ringrift-sha256` = SHA-256 of the body. A bad parameter → 400 naming it.
//!   A stored game the referee finds unplayable is quarantined and left out. Header
//!   `x-ringrift-store`: the store's identity, `-` when this node has no store of `K`.
//! * `GET /games/summary` → [`GamesSummary`]: per (config, source node, hour) batch the
//!   game count of this node's stores.
//! * `POST /games` with a [`GamesPush`] body and its SHA-256 in `x-ringrift-sha256`:
//!   hash checked (400 "sha256 mismatch", nothing stored), every record validated and
//!   replayed by the engine's referee (400 naming the game and the field or the illegal
//!   ply, nothing stored), then `INSERT OR IGNORE` by `game_id` per config, one
//!   transaction each, into `data/games/{config}.db` → [`PushAck`] (an id stored here with
//!   other moves is kept out and logged). A body
//!   over [`MAX_PUSH_BYTES`] → 413; a node with `exclude_from_sync = true` in
//!   cluster.toml → 403 "excluded from sync".
//!
//! Only `data/games/{config}.db` is served and written: other files of a config
//! (`{config}_*.db`) have their own sequences and are not part of the exchange.
//! SQLite work runs on the blocking pool.

use crate::games::{
    BatchSummary, GamesPage, GamesPush, GamesSummary, MAX_PAGE, MAX_PAGE_BYTES, MAX_PUSH_BYTES,
    NO_STORE, PushAck, SHA256_HEADER, STORE_HEADER, check_received, percent_decode,
    quarantine_unplayable, sha256_hex,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ringrift_store::games::{GameFilter, GameRecord, GameStore};
use ringrift_store::{ConfigKey, StoreError, paths};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What the game routes need; shared by all connections.
pub struct Games {
    pub home: PathBuf,
    /// This node's name (in the summary).
    pub node: String,
    /// This node is `exclude_from_sync`: it refuses pushes.
    pub exclude_from_sync: bool,
    stores: Mutex<HashMap<ConfigKey, GameStore>>,
}

impl Games {
    pub fn new(home: PathBuf, node: String, exclude_from_sync: bool) -> Games {
        Games {
            home,
            node,
            exclude_from_sync,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// The store of `config` (opened once); `None` when it does not exist and `create`
    /// is false. Blocking: call on the blocking pool.
    fn store(&self, config: ConfigKey, create: bool) -> Result<Option<GameStore>, StoreError> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&config) {
            return Ok(Some(s.clone()));
        }
        let path = paths::game_db(&self.home, config);
        if !path.exists() {
            if !create {
                return Ok(None);
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
                    action: "create",
                    path: dir.to_owned(),
                    source: e,
                })?;
            }
        }
        let s = GameStore::open(&path)?;
        stores.insert(config, s.clone());
        Ok(Some(s))
    }
}

/// The game routes with their state.
pub fn routes(games: Arc<Games>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/games", get(get_games).post(post_games))
        .route("/games/summary", get(get_summary))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
        .with_state(games)
}

fn bad(why: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "game route failed");
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// A JSON body with its SHA-256 header.
fn hashed_json(body: Vec<u8>) -> Response {
    let sha = sha256_hex(&body);
    let mut r = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&sha) {
        r.headers_mut().insert(SHA256_HEADER, v);
    }
    r
}

/// The parsed query of `GET /games`.
#[derive(Debug, PartialEq)]
pub struct GamesQuery {
    pub config: ConfigKey,
    pub after: i64,
    pub limit: usize,
    pub filter: GameFilter,
}

/// Parses `GET /games`'s query; the error names the parameter.
pub fn parse_query(q: &str) -> Result<GamesQuery, String> {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k).ok_or_else(|| format!("bad escape in parameter name {k:?}"))?;
        let v = percent_decode(v).ok_or_else(|| format!("{k}: bad escape in {v:?}"))?;
        if !matches!(
            k.as_str(),
            "config" | "after" | "limit" | "min_quality" | "source_node" | "hour"
        ) {
            return Err(format!("unknown parameter {k:?}"));
        }
        if kv.insert(k.clone(), v).is_some() {
            return Err(format!("{k}: given twice"));
        }
    }
    let config: ConfigKey = kv
        .get("config")
        .ok_or("config: missing (e.g. config=hex8_2p)")?
        .parse()
        .map_err(|e| format!("config: {e}"))?;
    let after = match kv.get("after") {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| format!("after: {a:?} is not a sequence (an integer >= 0)"))?,
    };
    let limit = match kv.get("limit") {
        None => MAX_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| format!("limit: {l:?} is not an integer >= 1"))?
            .min(MAX_PAGE),
    };
    let min_quality = match kv.get("min_quality") {
        None => None,
        Some(m) => Some(
            m.parse::<f64>()
                .ok()
                .filter(|m| m.is_finite())
                .ok_or_else(|| format!("min_quality: {m:?} is not a finite number"))?,
        ),
    };
    let source_node = match kv.get("source_node") {
        None => None,
        Some(n) if !n.is_empty() && n.len() <= 128 => Some(n.clone()),
        Some(n) => return Err(format!("source_node: {n:?} must be 1-128 characters")),
    };
    let hour = match kv.get("hour") {
        None => None,
        Some(h) => Some(
            h.parse::<i64>()
                .ok()
                .filter(|h| h.checked_mul(3_600_000).is_some())
                .ok_or_else(|| {
                    format!("hour: {h:?} is not an hour number (created_at ms / 3600000)")
                })?,
        ),
    };
    Ok(GamesQuery {
        config,
        after,
        limit,
        filter: GameFilter {
            min_quality,
            source_node,
            hour,
        },
    })
}

/// Serialises a page, stopping after the game that passes [`MAX_PAGE_BYTES`].
fn encode_page(mut page: ringrift_store::games::GamePage) -> Result<Vec<u8>, serde_json::Error> {
    let mut size = 0usize;
    let mut keep = page.games.len();
    for (i, g) in page.games.iter().enumerate() {
        size += serde_json::to_vec(g)?.len() + 1;
        if size > MAX_PAGE_BYTES && i + 1 < page.games.len() {
            keep = i + 1;
            break;
        }
    }
    if keep < page.games.len() {
        page.games.truncate(keep);
        page.more = true;
        page.next_after = page.games.last().map_or(page.next_after, |g| g.seq);
    }
    serde_json::to_vec(&GamesPage {
        games: page.games,
        next_after: page.next_after,
        more: page.more,
        max_seq: page.max_seq,
    })
}

async fn get_games(State(games): State<Arc<Games>>, uri: Uri) -> Response {
    let q = match parse_query(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(why) => return bad(why),
    };
    let r = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, String), String> {
        let (page, id) = match games.store(q.config, false).map_err(|e| e.to_string())? {
            Some(s) => {
                let mut page = s
                    .page(q.after, q.limit, &q.filter)
                    .map_err(|e| e.to_string())?;
                quarantine_unplayable(&s, &mut page.games).map_err(|e| e.to_string())?;
                (page, s.store_id().map_err(|e| e.to_string())?)
            }
            None => (
                ringrift_store::games::GamePage {
                    games: Vec::new(),
                    next_after: q.after,
                    more: false,
                    max_seq: 0,
                },
                NO_STORE.to_owned(),
            ),
        };
        Ok((encode_page(page).map_err(|e| e.to_string())?, id))
    })
    .await;
    match r {
        Ok(Ok((body, id))) => {
            let mut r = hashed_json(body);
            if let Ok(v) = HeaderValue::from_str(&id) {
                r.headers_mut().insert(STORE_HEADER, v);
            }
            r
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(format!("games task: {e}")),
    }
}

async fn get_summary(State(games): State<Arc<Games>>) -> Response {
    let r = tokio::task::spawn_blocking(move || -> Result<GamesSummary, StoreError> {
        let mut batches = Vec::new();
        for config in ConfigKey::all() {
            let Some(s) = games.store(config, false)? else {
                continue;
            };
            for b in s.batch_counts()? {
                batches.push(BatchSummary {
                    config,
                    source_node: b.source_node,
                    hour: b.hour,
                    count: b.count,
                });
            }
        }
        batches.sort();
        Ok(GamesSummary {
            node: games.node.clone(),
            batches,
        })
    })
    .await;
    match r {
        Ok(Ok(s)) => axum::Json(s).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(format!("summary task: {e}")),
    }
}

async fn post_games(State(games): State<Arc<Games>>, headers: HeaderMap, body: Bytes) -> Response {
    if games.exclude_from_sync {
        return (
            StatusCode::FORBIDDEN,
            "excluded from sync: this node takes no games (exclude_from_sync = true in cluster.toml)\n",
        )
            .into_response();
    }
    let Some(announced) = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
    else {
        return bad(format!("{SHA256_HEADER}: missing (SHA-256 of the body)"));
    };
    let r = tokio::task::spawn_blocking(move || -> Result<PushAck, (StatusCode, String)> {
        let refuse = |why: String| (StatusCode::BAD_REQUEST, why);
        let fail = |e: StoreError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        if sha256_hex(&body) != announced {
            return Err(refuse(
                "sha256 mismatch: the body is not what was sent; nothing stored".into(),
            ));
        }
        let push: GamesPush =
            serde_json::from_slice(&body).map_err(|e| refuse(format!("body: {e}")))?;
        check_received(&push.games).map_err(|e| {
            refuse(format!(
                "{}; nothing stored",
                e.to_string().trim_start_matches("invalid argument: ")
            ))
        })?;
        let mut by_config: BTreeMap<ConfigKey, Vec<GameRecord>> = BTreeMap::new();
        for g in push.games {
            by_config.entry(g.config_key).or_default().push(g);
        }
        let received: usize = by_config.values().map(Vec::len).sum();
        let mut new = 0usize;
        for (config, list) in by_config {
            let store = games.store(config, true).map_err(fail)?.ok_or_else(|| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("no store for {config}"),
                )
            })?;
            let ins = store.insert_games_reporting(&list).map_err(fail)?;
            if !ins.conflicts.is_empty() {
                tracing::warn!(%config, games = ?ins.conflicts,
                    "pushed games whose ids are stored here with other moves or winner; kept what is stored");
            }
            new += ins.new;
        }
        Ok(PushAck {
            received: received as u64,
            new: new as u64,
        })
    })
    .await;
    match r {
        Ok(Ok(ack)) => {
            if ack.new > 0 {
                tracing::debug!(received = ack.received, new = ack.new, "games pushed here");
            }
            axum::Json(ack).into_response()
        }
        Ok(Err((code, why))) => {
            if code == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::warn!(error = %why, "games push not stored");
            }
            (code, format!("{why}\n")).into_response()
        }
        Err(e) => internal(format!("push task: {e}")),
    }
}
