//! Fuzz targets of the data server's HTTP requests (see `ringrift-fuzz`), sent raw to a
//! server started in process (so paths reach it exactly as written): request targets
//! and headers of every route (files, manifests, game pages, ranges, ETags) and
//! `POST /games` bodies (game records). Every request gets an answer below 500 that never
//! carries a byte from outside the served roots, and the server keeps answering; a push
//! is stored whole (200 with what it counted) or refused whole (4xx).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use ringrift_store::ConfigKey;
use ringrift_test_support::data_server::{HOUR, game, store};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";

/// A home with files, links in and out of the roots, a model and a game store.
fn populate(h: &Path) {
    let w = |p: &str, b: &[u8]| {
        let p = h.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, b).expect("write");
    };
    w("outside.txt", SECRET.as_bytes());
    w("data/ok.bin", b"fine");
    w("data/training/hex8_2p.npz", &[1u8; 5000]);
    w("data/sub/deep/x.txt", b"x");
    w("models/canonical_hex8_2p.rrm", b"not really a model");
    std::os::unix::fs::symlink(h.join("outside.txt"), h.join("data/escape")).expect("link");
    std::os::unix::fs::symlink("../outside.txt", h.join("data/escape_rel")).expect("link");
    std::os::unix::fs::symlink(h, h.join("data/sub/up")).expect("dir link");
    std::os::unix::fs::symlink(
        "canonical_hex8_2p.rrm",
        h.join("models/ringrift_best_hex8_2p"),
    )
    .expect("link");
    let key: ConfigKey = "hex8_2p".parse().expect("key");
    let games: Vec<_> = (0..5)
        .map(|i| ringrift_store::games::GameRecord {
            created_at: 1_700_000_000_000 + i * HOUR,
            ..game(
                &format!("00000000-0000-4000-8000-00000000000{i}"),
                "n1",
                key,
            )
        })
        .collect();
    store(h, key).insert_games(&games).expect("games");
}

struct Server {
    rt: tokio::runtime::Runtime,
    addr: String,
    _home: tempfile::TempDir,
    _handler: std::sync::Arc<dyn handler_base::Handler>,
    ctx: handler_base::Context,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

fn server() -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let home = tempfile::tempdir().expect("tempdir");
    populate(home.path());
    let (handler, ctx, url) = rt
        .block_on(ringrift_test_support::data_server::start(
            home.path(),
            "n1",
            "",
        ))
        .expect("start");
    let addr = url.trim_start_matches("http://").to_owned();
    Server {
        rt,
        addr,
        _home: home,
        _handler: handler,
        ctx,
    }
}

/// Sends `head` (ended by `Connection: close` and a blank line) and `body`; returns the
/// status and the whole answer, `None` when the server closed without one.
async fn send(addr: &str, head: &[u8], body: &[u8]) -> Result<Option<(u16, Vec<u8>)>, String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(head).await?;
        s.write_all(b"Connection: close\r\n\r\n").await?;
        s.write_all(body).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = match tokio::time::timeout(Duration::from_secs(30), io).await {
        Err(_) => return Err("no answer in 30 s".into()),
        // A reset after an answer the server judged final is an answer; before, none.
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            return Ok(None);
        }
        Ok(Err(e)) => return Err(format!("io: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.is_empty() {
        return Ok(None);
    }
    let code = out
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|r| std::str::from_utf8(r.get(..3)?).ok())
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&out)))?;
    Ok(Some((code, out)))
}

fn alive(s: &Server) -> Result<(), TestCaseError> {
    match s
        .rt
        .block_on(send(&s.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n", b""))
    {
        Ok(Some((200, _))) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "server stopped answering: {other:?}"
        ))),
    }
}

const TARGETS: &[&str] = &[
    "/files/data/ok.bin",
    "/files/data/training/hex8_2p.npz",
    "/files/models/ringrift_best_hex8_2p",
    "/files/data/sub/deep/x.txt",
    "/files/data/escape",
    "/files/data/sub/up/outside.txt",
    "/files/data/..%2f..%2foutside.txt",
    "/files/data/%2e%2e/outside.txt",
    "/files/data/games/hex8_2p.db",
    "/manifest?root=data&prefix=training/",
    "/manifest?root=models",
    "/games?config=hex8_2p&after=0&limit=3&min_quality=0.2&source_node=n1&hour=472222",
    "/games/summary",
    "/health",
];

const HEADERS: &[&str] = &[
    "Range: bytes=0-3",
    "Range: bytes=100-",
    "Range: bytes=-5",
    "Range: bytes=5-1, 9-9",
    "If-None-Match: \"abc\"",
    "If-None-Match: *",
    "Authorization: Bearer x",
    "Accept-Encoding: gzip",
];

#[test]
fn fuzz_http_requests() {
    let s = server();
    let target = ringrift_fuzz::mutated_text(TARGETS);
    let headers = proptest::collection::vec(ringrift_fuzz::mutated_text(HEADERS), 0..3);
    let r = ringrift_fuzz::run(
        file!(),
        "data_server_request",
        (
            prop_oneof![Just("GET"), Just("HEAD"), Just("POST"), Just("PUT")],
            target,
            headers,
        ),
        |(method, target, headers)| {
            // Line breaks would start other headers (or a body this request does not
            // send, the server then rightly waiting for it): the framing stays ours.
            let target: String = target
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n'))
                .collect();
            let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", s.addr);
            for h in &headers {
                let h: String = h.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
                let name = h
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "expect" | "connection"
                ) {
                    continue;
                }
                head.push_str(&h);
                head.push_str("\r\n");
            }
            match s.rt.block_on(send(&s.addr, head.as_bytes(), b"")) {
                Err(e) => return Err(TestCaseError::fail(e)),
                Ok(None) => {}
                Ok(Some((code, out))) => {
                    prop_assert!(
                        code < 500,
                        "{} {:?}: {}",
                        code,
                        target,
                        String::from_utf8_lossy(&out)
                    );
                    let text = String::from_utf8_lossy(&out);
                    prop_assert!(!text.contains(SECRET), "{:?} leaked outside.txt", target);
                }
            }
            alive(&s)
        },
    );
    assert_eq!(r, Ok(()));
}

fn push_seeds() -> Vec<Vec<u8>> {
    let key: ConfigKey = "hex8_2p".parse().expect("key");
    let sq: ConfigKey = "square8_2p".parse().expect("key");
    let one = game("11111111-1111-4111-8111-111111111111", "n2", key);
    // Seat 0 plays 0..3 along row 0 and wins (a push is replayed before it is stored).
    let rich = ringrift_store::games::GameRecord {
        winner: Some(0),
        moves: vec![0, 8, 1, 9, 2, 10, 3],
        quality_score: 0.93,
        ..game("22222222-2222-4222-8222-222222222222", "n3", sq)
    };
    [vec![], vec![one.clone()], vec![one, rich]]
        .iter()
        .filter_map(|g| ringrift_transfer::games::push_body(g).ok())
        .collect()
}

#[test]
fn fuzz_game_pushes() {
    let s = server();
    let r = ringrift_fuzz::run(
        file!(),
        "post_games",
        (
            ringrift_fuzz::mutated(push_seeds()),
            prop::bool::weighted(0.9),
        ),
        |(body, right_hash)| {
            let sha = if right_hash {
                ringrift_transfer::games::sha256_hex(&body)
            } else {
                "0".repeat(64)
            };
            let head = format!(
                "POST /games HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{}: {sha}\r\nContent-Length: {}\r\n",
                s.addr,
                ringrift_transfer::games::SHA256_HEADER,
                body.len()
            );
            let answer =
                s.rt.block_on(send(&s.addr, head.as_bytes(), &body))
                    .map_err(TestCaseError::fail)?;
            let Some((code, out)) = answer else {
                return Err(TestCaseError::fail("no answer to a push"));
            };
            let text = String::from_utf8_lossy(&out);
            prop_assert!(
                code == 200 || (400..500).contains(&code),
                "{}: {}",
                code,
                text
            );
            if !right_hash {
                prop_assert!(code == 400 && text.contains("sha256 mismatch"), "{}", text);
            }
            if code == 200 {
                // Stored whole: what was received is what the body carries.
                #[derive(serde::Deserialize)]
                struct Count {
                    games: Vec<serde::de::IgnoredAny>,
                }
                let push: Count = serde_json::from_slice(&body).map_err(|e| {
                    TestCaseError::fail(format!("200 for a body that is not a push: {e}"))
                })?;
                let n = push.games.len();
                prop_assert!(text.contains(&format!("\"received\":{n}")), "{}", text);
            }
            alive(&s)
        },
    );
    assert_eq!(r, Ok(()));
}

#[test]
fn fuzz_games_query() {
    let r = ringrift_fuzz::run(
        file!(),
        "games_query",
        ringrift_fuzz::mutated_text(&[
            "config=hex8_2p&after=0&limit=3&min_quality=0.2&source_node=n1&hour=472222",
            "config=square19_4p&limit=1",
            "config=hex8%5F2p&after=99",
        ]),
        |q| {
            if let Err(e) = crate::games::parse_query(&q) {
                prop_assert!(!e.is_empty());
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}
