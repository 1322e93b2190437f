//! In-process tests of the data server (real listener on port 0, raw HTTP/1.1 so paths
//! reach the server exactly as written): every refusal of the acceptance, the token,
//! ranges, ETags, manifests, snapshots of a database being written, the bandwidth limit
//! and the configuration errors.

use super::*;
use handler_base::{Context, Handler};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";

struct Server {
    home: tempfile::TempDir,
    addr: String,
    handler: Arc<dyn Handler>,
    _ctx: Context,
}

async fn start(toml: &str) -> Server {
    let home = tempfile::tempdir().expect("tempdir");
    let (handler, ctx, _) =
        ringrift_test_support::daemon("data_server", build, home.path(), "test", toml);
    let _ = std::fs::remove_file(home.path().join("run/data_server.addr"));
    handler.on_start(&ctx).await.expect("start");
    let addr = handler_base::read_addr_file(home.path(), "data_server").expect("addr file");
    Server {
        home,
        addr,
        handler,
        _ctx: ctx,
    }
}

const LOCAL: &str = "[data_server]\nlisten = \"127.0.0.1:0\"\n";

struct Answer {
    code: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        code,
        headers,
        body: out[split + 4..].to_vec(),
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn quoted_sha(bytes: &[u8]) -> String {
    format!("\"{}\"", ringrift_store::manifest::sha256_hex(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_absolute_encoded_and_escaping_links_are_refused_without_content() {
    let s = start(LOCAL).await;
    let h = s.home.path();
    std::fs::write(h.join("outside.txt"), SECRET).expect("outside");
    std::fs::create_dir_all(h.join("data/sub")).expect("sub");
    std::fs::write(h.join("data/ok.bin"), b"fine").expect("ok");
    std::os::unix::fs::symlink(h.join("outside.txt"), h.join("data/escape")).expect("link");
    std::os::unix::fs::symlink("../outside.txt", h.join("data/escape_rel")).expect("link");
    std::os::unix::fs::symlink(h, h.join("data/sub/up")).expect("dir link");
    std::os::unix::fs::symlink("ok.bin", h.join("data/inner")).expect("inner link");
    let cases: [(&str, u16); 14] = [
        ("/files/data/../outside.txt", 400),
        ("/files/data/sub/../../outside.txt", 400),
        ("/files/data/..%2foutside.txt", 400),
        ("/files/data/%2e%2e%2foutside.txt", 400),
        ("/files/data/%2E%2E/outside.txt", 400),
        ("/files/data/%2fetc%2fpasswd", 400),
        ("/files/data//etc/passwd", 400),
        ("/files/data/./ok.bin", 400),
        ("/files/data/.ok.bin.tmp-1", 400),
        ("/files/data/escape", 403),
        ("/files/data/escape_rel", 403),
        ("/files/data/sub/up/outside.txt", 403),
        ("/files/etc/passwd", 404),
        ("/files/%2e%2e/outside.txt", 404),
    ];
    for (path, want) in cases {
        let a = get(&s.addr, path, &[]).await;
        assert_eq!(a.code, want, "{path}: {}", String::from_utf8_lossy(&a.body));
        let body = String::from_utf8_lossy(&a.body);
        assert!(
            !body.contains(SECRET) && !body.contains("root:"),
            "{path} leaked: {body}"
        );
    }
    let a = get(&s.addr, "/files/data/inner", &[]).await;
    assert_eq!((a.code, a.body.as_slice()), (200, &b"fine"[..]));
    let a = get(&s.addr, "/manifest?root=data", &[]).await;
    let doc: serve::ManifestDoc = serde_json::from_slice(&a.body).expect("manifest json");
    let names: Vec<&str> = doc.files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["inner", "ok.bin"],
        "links out of the root are not offered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_only_health_is_open() {
    let s = start(&format!("{LOCAL}[auth]\ntoken = \"s3cret\"\n")).await;
    std::fs::write(s.home.path().join("data/f.bin"), SECRET).expect("file");
    for (auth, want) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("s3cret"), 401),
        (Some("Bearer s3cret"), 200),
    ] {
        let hs: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        for path in ["/files/data/f.bin", "/manifest?root=data"] {
            let a = get(&s.addr, path, &hs).await;
            assert_eq!(a.code, want, "{path} with {auth:?}");
            if want == 401 {
                let body = String::from_utf8_lossy(&a.body);
                assert!(!body.contains(SECRET) && !body.contains("sha256"), "{body}");
            }
        }
    }
    assert_eq!(get(&s.addr, "/health", &[]).await.code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_answer_206_or_416_with_the_right_bytes() {
    let s = start(LOCAL).await;
    let content = pattern(1000);
    std::fs::write(s.home.path().join("data/r.bin"), &content).expect("file");
    let a = get(&s.addr, "/files/data/r.bin", &[]).await;
    assert_eq!((a.code, a.body.len()), (200, 1000));
    assert_eq!(a.headers["accept-ranges"], "bytes");
    assert_eq!(a.body, content);
    for (range, from, to) in [
        ("bytes=0-9", 0, 9),
        ("bytes=100-199", 100, 199),
        ("bytes=-10", 990, 999),
        ("bytes=990-", 990, 999),
        ("bytes=995-5000", 995, 999),
    ] {
        let a = get(&s.addr, "/files/data/r.bin", &[("Range", range)]).await;
        assert_eq!(a.code, 206, "{range}");
        assert_eq!(a.body, &content[from..=to], "{range}");
        assert_eq!(
            a.headers["content-range"],
            format!("bytes {from}-{to}/1000")
        );
        assert_eq!(a.headers["content-length"], (to - from + 1).to_string());
    }
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=20-10"] {
        let a = get(&s.addr, "/files/data/r.bin", &[("Range", range)]).await;
        assert_eq!(a.code, 416, "{range}");
        assert_eq!(a.headers["content-range"], "bytes */1000");
    }
    // If-Range with another ETag: the whole (changed) file instead of a part.
    let a = get(
        &s.addr,
        "/files/data/r.bin",
        &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
    )
    .await;
    assert_eq!((a.code, a.body.len()), (200, 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_is_the_sha256_hashed_once_per_version_and_304_when_unchanged() {
    let s = start(LOCAL).await;
    let path = s.home.path().join("data/e.bin");
    let v1 = pattern(300_000);
    std::fs::write(&path, &v1).expect("file");
    let a = get(&s.addr, "/files/data/e.bin", &[]).await;
    let etag = a.headers["etag"].clone();
    assert_eq!(etag, quoted_sha(&v1));
    let a = get(&s.addr, "/files/data/e.bin", &[("If-None-Match", &etag)]).await;
    assert_eq!((a.code, a.body.len()), (304, 0));
    let a = get(&s.addr, "/files/data/e.bin", &[("Range", "bytes=0-0")]).await;
    assert_eq!(a.headers["etag"], etag);
    let h = s.handler.health_check();
    assert_eq!(
        h.details["files_hashed"], "1",
        "one hash for three requests"
    );
    // A new version (atomic write: new inode) gets a new ETag; the old one no longer matches.
    let v2 = pattern(300_001);
    ringrift_store::manifest::atomic_write(&path, &v2).expect("rewrite");
    let a = get(&s.addr, "/files/data/e.bin", &[("If-None-Match", &etag)]).await;
    assert_eq!((a.code, a.body.len()), (200, v2.len()));
    assert_eq!(a.headers["etag"], quoted_sha(&v2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_read_as_store_manifests_with_model_generations() {
    let s = start(LOCAL).await;
    let h = s.home.path();
    std::fs::create_dir_all(h.join("data/training")).expect("dir");
    std::fs::write(h.join("data/training/hex8_2p.npz"), pattern(5000)).expect("npz");
    let (_, model) =
        ringrift_store::models::example("hex8_2p".parse().expect("key"), 12, &pattern(4096))
            .expect("model");
    std::fs::write(h.join("models/gen12.rrm"), &model).expect("model");
    std::os::unix::fs::symlink("gen12.rrm", h.join("models/ringrift_best_hex8_2p")).expect("link");
    let a = get(&s.addr, "/manifest?root=models", &[]).await;
    assert_eq!(a.code, 200);
    let doc: serve::ManifestDoc = serde_json::from_slice(&a.body).expect("json");
    assert_eq!(doc.files["gen12.rrm"].generation, Some(12));
    assert_eq!(doc.files["gen12.rrm"].size, model.len() as u64);
    assert!(doc.files.contains_key("ringrift_best_hex8_2p"));
    // The link and the file share one digest (one inode), whichever name is resolved
    // first: both carry the generation (the link once hid it from the file's entry).
    assert_eq!(doc.files["ringrift_best_hex8_2p"].generation, Some(12));
    // The same JSON is a store manifest, so clients verify downloads with the store.
    let m: ringrift_store::manifest::Manifest =
        serde_json::from_slice(&a.body).expect("store manifest");
    assert!(m.verify_all(&h.join("models")).expect("verify").is_empty());
    let a = get(&s.addr, "/manifest?root=data", &[]).await;
    let m: ringrift_store::manifest::Manifest = serde_json::from_slice(&a.body).expect("data");
    assert!(m.files.contains_key("training/hex8_2p.npz"));
    assert_eq!(get(&s.addr, "/manifest?root=etc", &[]).await.code, 400);
    assert_eq!(get(&s.addr, "/manifest", &[]).await.code, 400);
}

/// `prefix` limits a manifest to one directory (a sync of models or NPZ files does not
/// make the server stat, hash or snapshot everything else); a bad one is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_prefix_lists_one_directory_and_bad_ones_are_refused() {
    let s = start(LOCAL).await;
    let h = s.home.path();
    std::fs::create_dir_all(h.join("data/training")).expect("dir");
    std::fs::create_dir_all(h.join("data/other")).expect("dir");
    std::fs::write(h.join("data/training/a.npz"), pattern(10)).expect("npz");
    std::fs::write(h.join("data/other/b.bin"), pattern(10)).expect("bin");
    let a = get(&s.addr, "/manifest?root=data&prefix=training", &[]).await;
    assert_eq!(a.code, 200);
    let doc: serve::ManifestDoc = serde_json::from_slice(&a.body).expect("json");
    assert_eq!(doc.files.keys().collect::<Vec<_>>(), vec!["training/a.npz"]);
    let a = get(&s.addr, "/manifest?root=data&prefix=other/b.bin", &[]).await;
    let doc: serve::ManifestDoc = serde_json::from_slice(&a.body).expect("json");
    assert_eq!(doc.files.keys().collect::<Vec<_>>(), vec!["other/b.bin"]);
    let a = get(&s.addr, "/manifest?root=data&prefix=nothing-here", &[]).await;
    assert_eq!(
        (a.code, a.body.as_slice()),
        (200, &br#"{"root":"data","files":{}}"#[..])
    );
    for bad in [
        "prefix=..%2F..",
        "prefix=%2Fetc",
        "prefix=.hidden",
        "bogus=1",
        "",
    ] {
        let a = get(&s.addr, &format!("/manifest?root=data&{bad}"), &[]).await;
        let want = if bad.is_empty() { 200 } else { 400 };
        assert_eq!(a.code, want, "{bad}: {}", String::from_utf8_lossy(&a.body));
    }
    assert_eq!(get(&s.addr, "/manifest?prefix=x", &[]).await.code, 400);
}

fn game_db(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("db");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.execute_batch("CREATE TABLE IF NOT EXISTS games (game_id TEXT PRIMARY KEY, moves BLOB)")
        .expect("schema");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_being_written_is_served_as_a_valid_snapshot() {
    let s = start(LOCAL).await;
    let dir = s.home.path().join("data/stats");
    std::fs::create_dir_all(&dir).expect("stats dir");
    let db = dir.join("activity.db");
    let c = game_db(&db);
    for i in 0..200 {
        c.execute(
            "INSERT INTO games VALUES (?1, zeroblob(2000))",
            [format!("seed-{i}")],
        )
        .expect("insert");
    }
    drop(c);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = game_db(&db);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tx = c.transaction().expect("tx");
                for _ in 0..20 {
                    tx.execute(
                        "INSERT INTO games VALUES (?1, zeroblob(2000))",
                        [format!("w-{n}")],
                    )
                    .expect("insert");
                    n += 1;
                }
                tx.commit().expect("commit");
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    let out = tempfile::tempdir().expect("out");
    let mut seen = Vec::new();
    for i in 0..5 {
        let a = get(&s.addr, "/files/data/stats/activity.db", &[]).await;
        assert_eq!(a.code, 200);
        assert_eq!(
            a.headers["etag"],
            quoted_sha(&a.body),
            "the ETag is of the bytes served"
        );
        let copy = out.path().join(format!("copy{i}.db"));
        std::fs::write(&copy, &a.body).expect("write copy");
        let c = rusqlite::Connection::open(&copy).expect("open copy");
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        let rows: i64 = c
            .query_row("SELECT count(*) FROM games", [], |r| r.get(0))
            .expect("count");
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!((ok.as_str(), mode.as_str()), ("ok", "delete"));
        assert!(
            rows >= 200 && rows % 20 == 0,
            "whole transactions only: {rows}"
        );
        seen.push(rows);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(
        written > 0 && seen.windows(2).all(|w| w[0] <= w[1]),
        "{seen:?}"
    );
    for side in ["-wal", "-shm"] {
        let a = get(
            &s.addr,
            &format!("/files/data/stats/activity.db{side}"),
            &[],
        )
        .await;
        assert_eq!(a.code, 400, "{side}");
    }
    // Unchanged database: the manifest names the snapshot a download gets.
    let m = get(&s.addr, "/manifest?root=data", &[]).await;
    let doc: serve::ManifestDoc = serde_json::from_slice(&m.body).expect("json");
    let a = get(&s.addr, "/files/data/stats/activity.db", &[]).await;
    assert_eq!(
        quoted_sha(&a.body),
        format!("\"{}\"", doc.files["stats/activity.db"].sha256)
    );

    // Game stores move as records only: neither listed nor served as files, so no
    // request makes a copy of one.
    let games = s.home.path().join("data/games");
    std::fs::create_dir_all(&games).expect("games dir");
    std::fs::copy(&db, games.join("hex8_2p.db")).expect("a game store");
    assert_eq!(
        get(&s.addr, "/files/data/games/hex8_2p.db", &[]).await.code,
        404
    );
    let m = get(&s.addr, "/manifest?root=data", &[]).await;
    let doc: serve::ManifestDoc = serde_json::from_slice(&m.body).expect("json");
    assert!(
        doc.files.keys().all(|k| !k.starts_with("games/")),
        "{:?}",
        doc.files.keys()
    );
    let m = get(&s.addr, "/manifest?root=data&prefix=games", &[]).await;
    let doc: serve::ManifestDoc = serde_json::from_slice(&m.body).expect("json");
    assert!(doc.files.is_empty(), "{:?}", doc.files.keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_is_limited_per_peer() {
    let rate = 256 * 1024;
    let s = start(&format!("{LOCAL}bandwidth_bytes_per_s = {rate}\n")).await;
    let content = pattern(3 * rate);
    std::fs::write(s.home.path().join("data/big.bin"), &content).expect("file");
    let t = Instant::now();
    let a = get(&s.addr, "/files/data/big.bin", &[]).await;
    let took = t.elapsed();
    assert_eq!(a.body, content);
    // One second of burst, then two seconds at the rate.
    assert!(took >= Duration::from_millis(1700), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_config_errors_naming_the_key() {
    let home = tempfile::tempdir().expect("tempdir");
    for (toml, key) in [
        (
            "[data_server]\nlisten = \"nowhere\"\n",
            "data_server.listen",
        ),
        (
            "[data_server]\nbandwidth_bytes_per_s = 5000000000\n",
            "data_server.bandwidth_bytes_per_s",
        ),
        (
            "[data_server]\nhash_cache_entries = 0\n",
            "data_server.hash_cache_entries",
        ),
        (
            "[data_server]\nlisten = \"0.0.0.0:0\"\n",
            "data_server.listen",
        ),
    ] {
        let (ctx, _) = Context::for_test("data_server", home.path(), toml).expect("context");
        let Err(e) = build(&ctx) else {
            panic!("{toml} was accepted");
        };
        assert!(handler_base::is_config_error(&e), "{toml}: {e:#}");
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
}
