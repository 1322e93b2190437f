//! In-process tests of the game routes with the transfer client: pages and their
//! SHA-256, filters, summary, pushes (hash, validation, size, excluded node, token),
//! and `push_new` / `pull_new` with watermarks between two homes.

use handler_base::Context;
use ringrift_store::ConfigKey;
use ringrift_store::games::{GameFilter, GameRecord};
use ringrift_test_support::data_server::{self as testing, HOUR, server, server_with, store};
use ringrift_transfer::games::{
    self, Direction, GamesPage, Link, SHA256_HEADER, SyncEvents, Watermarks,
};
use ringrift_transfer::{DataClient, Peer, TransferError};
use std::time::Duration;

fn key() -> ConfigKey {
    "hex8_2p".parse().expect("key")
}

fn game(id: &str, node: &str, created_at: i64, quality: f64) -> GameRecord {
    GameRecord {
        created_at,
        quality_score: quality,
        ..testing::game(id, node, key())
    }
}

fn client(token: Option<&str>) -> DataClient {
    DataClient::new(token, Duration::from_secs(10)).expect("client")
}

async fn raw_post(url: &str, body: Vec<u8>, sha: Option<&str>) -> (u16, String) {
    let mut rb = client(None)
        .http()
        .post(format!("{url}/games"))
        .header("content-type", "application/json");
    if let Some(s) = sha {
        rb = rb.header(SHA256_HEADER, s);
    }
    let r = rb.body(body).send().await.expect("post");
    let code = r.status().as_u16();
    (code, r.text().await.unwrap_or_default())
}

async fn raw_get(url: &str) -> (u16, String) {
    let r = client(None).http().get(url).send().await.expect("get");
    let code = r.status().as_u16();
    (code, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_their_sha256_and_follow_the_watermark() {
    let n = server("b").await;
    let store = store(n.home.path(), key());
    let gs: Vec<_> = (0..25)
        .map(|i| {
            game(
                &format!("g{i:02}"),
                if i % 2 == 0 { "a" } else { "c" },
                i * HOUR / 4,
                i as f64 / 25.0,
            )
        })
        .collect();
    store.insert_games(&gs).expect("insert");
    let c = client(None);

    // Raw answer: the header is the SHA-256 of the body.
    let r = c
        .http()
        .get(format!("{}/games?config=hex8_2p&after=0&limit=10", n.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let sha = r.headers()[SHA256_HEADER]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = r.bytes().await.expect("body");
    assert_eq!(sha, games::sha256_hex(&body));
    let page: GamesPage = serde_json::from_slice(&body).expect("page");
    assert_eq!(
        (page.games.len(), page.more, page.next_after),
        (10, true, 10)
    );
    assert_eq!(page.games[0].game, gs[0]);

    // Through the client, page by page: every game once, in order.
    let mut after = 0;
    let mut ids = Vec::new();
    loop {
        let (p, bytes) = games::fetch(&c, &n.peer(), key(), after, 7, &GameFilter::default())
            .await
            .expect("fetch");
        assert!(bytes > 0);
        ids.extend(p.games.into_iter().map(|g| g.game.game_id));
        after = p.next_after;
        if !p.more {
            break;
        }
    }
    let want: Vec<_> = gs.iter().map(|g| g.game_id.clone()).collect();
    assert_eq!(ids, want);

    // Filters: source node and hour (hour 1 = games 4..8), quality.
    let f = GameFilter {
        source_node: Some("a".into()),
        hour: Some(1),
        min_quality: None,
    };
    let (p, _) = games::fetch(&c, &n.peer(), key(), 0, 100, &f)
        .await
        .expect("fetch");
    let ids: Vec<_> = p.games.iter().map(|g| g.game.game_id.as_str()).collect();
    assert_eq!(ids, ["g04", "g06"]);
    let f = GameFilter {
        min_quality: Some(0.9),
        ..GameFilter::default()
    };
    let (p, _) = games::fetch(&c, &n.peer(), key(), 0, 100, &f)
        .await
        .expect("fetch");
    assert!(p.games.iter().all(|g| g.game.quality_score > 0.9));
    assert_eq!(p.games.len(), 2);

    // A config with no store: an empty page, no file created.
    let (p, _) = games::fetch(
        &c,
        &n.peer(),
        "square8_4p".parse().expect("k"),
        0,
        10,
        &GameFilter::default(),
    )
    .await
    .expect("fetch");
    assert!(p.games.is_empty() && !p.more);
    assert!(
        !ringrift_store::paths::game_db(n.home.path(), "square8_4p".parse().expect("k")).exists()
    );

    // The summary: per (config, source node, hour).
    let s = games::summary(&c, &n.peer()).await.expect("summary");
    assert_eq!(s.node, "b");
    assert_eq!(s.batches.iter().map(|b| b.count).sum::<u64>(), 25);
    let b = s
        .batches
        .iter()
        .find(|b| b.source_node == "a" && b.hour == 1)
        .expect("batch a/1");
    assert_eq!((b.config, b.count), (key(), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_the_parameter() {
    let n = server("b").await;
    let cases = [
        ("", "config"),
        ("config=hex9_2p", "config"),
        ("config=hex8_2p&after=-1", "after"),
        ("config=hex8_2p&after=x", "after"),
        ("config=hex8_2p&limit=0", "limit"),
        ("config=hex8_2p&min_quality=nan", "min_quality"),
        ("config=hex8_2p&hour=abc", "hour"),
        ("config=hex8_2p&source_node=", "source_node"),
        ("config=hex8_2p&bogus=1", "bogus"),
        ("config=hex8_2p&config=hex8_3p", "config"),
    ];
    for (q, name) in cases {
        let (code, body) = raw_get(&format!("{}/games?{q}", n.url)).await;
        assert_eq!(code, 400, "{q}: {body}");
        assert!(body.contains(name), "{q}: {body}");
    }
    // A limit over the cap is capped, not refused.
    let (code, _) = raw_get(&format!("{}/games?config=hex8_2p&limit=999999", n.url)).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_checked_whole_before_anything_is_stored() {
    let n = server("b").await;
    let c = client(None);
    let gs = vec![game("p1", "a", 0, 0.5), game("p2", "a", 1, 0.5)];

    let body = games::push_body(&gs).expect("body");
    // Wrong hash, missing hash: refused, nothing stored.
    let (code, text) = raw_post(&n.url, body.clone(), Some(&"0".repeat(64))).await;
    assert_eq!(
        (code, text.contains("sha256 mismatch")),
        (400, true),
        "{text}"
    );
    let (code, text) = raw_post(&n.url, body.clone(), None).await;
    assert_eq!(code, 400, "{text}");
    assert!(!ringrift_store::paths::game_db(n.home.path(), key()).exists());

    // One bad record refuses the whole body, naming the field.
    let mut bad = gs.clone();
    bad.push(GameRecord {
        winner: Some(5),
        ..game("p3", "a", 2, 0.5)
    });
    let body = games::push_body(&bad).expect("body");
    let sha = games::sha256_hex(&body);
    let (code, text) = raw_post(&n.url, body, Some(&sha)).await;
    assert_eq!(code, 400);
    assert!(text.contains("winner") && text.contains("p3"), "{text}");
    // An unknown field is refused too.
    let body = br#"{"games":[],"extra":1}"#.to_vec();
    let sha = games::sha256_hex(&body);
    let (code, text) = raw_post(&n.url, body, Some(&sha)).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("extra"), "{text}");

    // The good push: stored once, a second one is all known.
    let (ack, bytes) = games::push(&c, &n.peer(), &gs).await.expect("push");
    assert_eq!((ack.received, ack.new), (2, 2));
    assert!(bytes > 0);
    let (ack, _) = games::push(&c, &n.peer(), &gs).await.expect("push again");
    assert_eq!((ack.received, ack.new), (2, 0));
    assert_eq!(store(n.home.path(), key()).count().expect("count"), 2);

    // Over the body limit: 413.
    let big = vec![b' '; games::MAX_PUSH_BYTES + 1];
    let sha = games::sha256_hex(&big);
    let (code, _) = raw_post(&n.url, big, Some(&sha)).await;
    assert_eq!(code, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_node_refuses_pushes_and_the_token_is_required() {
    let home = tempfile::tempdir().expect("home");
    std::fs::write(
        home.path().join("cluster.toml"),
        "[[node]]\nname = \"spot\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nexclude_from_sync = true\n\n\
         [[node]]\nname = \"coord\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.2\"\n",
    )
    .expect("cluster.toml");
    let (_, ctx, url) = testing::start(home.path(), "spot", "[auth]\ntoken = \"s3cret\"\n")
        .await
        .expect("start");
    let peer = Peer::at("spot", &url);
    let gs = vec![game("x1", "spot", 0, 0.5)];

    // Without the token: 401 on every game route.
    let e = games::push(&client(None), &peer, &gs)
        .await
        .expect_err("refused");
    assert!(
        matches!(e, TransferError::Status { status: 401, .. }),
        "{e}"
    );
    let e = games::summary(&client(None), &peer)
        .await
        .expect_err("refused");
    assert!(
        matches!(e, TransferError::Status { status: 401, .. }),
        "{e}"
    );
    let e = games::fetch(&client(None), &peer, key(), 0, 1, &GameFilter::default())
        .await
        .expect_err("refused");
    assert!(
        matches!(e, TransferError::Status { status: 401, .. }),
        "{e}"
    );

    // With it: reads work, pushes are refused.
    let c = client(Some("s3cret"));
    let e = games::push(&c, &peer, &gs).await.expect_err("refused");
    match e {
        TransferError::Status { status, body, .. } => {
            assert_eq!(status, 403);
            assert!(body.contains("excluded from sync"), "{body}");
        }
        other => panic!("{other}"),
    }
    assert!(
        games::summary(&c, &peer)
            .await
            .expect("summary")
            .batches
            .is_empty()
    );
    ctx.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_new_and_pull_new_carry_each_game_once_and_resume_after_a_restart() {
    let a = tempfile::tempdir().expect("home a");
    let b = server("b").await;
    let b_peer = b.peer();
    let c = client(None);
    let store_a = store(a.path(), key());
    store_a
        .insert_games(
            &(0..30)
                .map(|i| game(&format!("a{i}"), "a", i, 0.5))
                .collect::<Vec<_>>(),
        )
        .expect("insert");

    let (ctx, rec) = Context::for_test("auto_sync", a.path(), "").expect("ctx");
    let events = SyncEvents::new(&ctx);
    let wm = Watermarks::for_daemon(a.path(), "auto_sync").expect("watermarks");
    let filter = GameFilter::default();
    fn mk<'a>(
        home: &'a std::path::Path,
        client: &'a DataClient,
        peer: &'a Peer,
        wm: &'a Watermarks,
        filter: &'a GameFilter,
        events: &'a SyncEvents,
    ) -> Link<'a> {
        Link {
            home,
            client,
            peer,
            config: key(),
            watermarks: wm,
            limit: 8,
            filter,
            events: Some(events),
            pacer: None,
        }
    }
    macro_rules! link {
        ($wm:expr) => {
            mk(a.path(), &c, &b_peer, $wm, &filter, &events)
        };
    }
    let out = games::push_new(link!(&wm)).await.expect("push");
    assert_eq!((out.sent, out.new, out.watermark), (30, 30, 30));
    assert!(out.bytes > 0);
    assert_eq!(store(b.home.path(), key()).count().expect("count"), 30);
    // Started then completed, naming both nodes, with the game count.
    let kinds: Vec<_> = rec.events().iter().map(|e| e.kind).collect();
    use ringrift_proto::EventType as T;
    assert_eq!(kinds, [T::DataSyncStarted, T::DataSyncCompleted]);
    match &rec.payloads()[1] {
        ringrift_proto::wire::event::Payload::DataSyncCompleted(d) => {
            assert_eq!(
                (d.source_node.as_str(), d.target_node.as_str(), d.files),
                ("test", "b", 30)
            );
            assert_eq!(d.bytes, out.bytes);
        }
        other => panic!("{other:?}"),
    }

    // Nothing new: nothing sent, no event.
    let out = games::push_new(link!(&wm)).await.expect("push");
    assert_eq!(out.sent, 0);
    assert_eq!(rec.events().len(), 2);

    // A restart (the file reopened) resumes after the watermark.
    drop(wm);
    let wm = Watermarks::for_daemon(a.path(), "auto_sync").expect("reopen");
    assert_eq!(wm.get("b", key(), Direction::Push).expect("get"), 30);
    store_a
        .insert_games(&[game("a30", "a", 30, 0.5)])
        .expect("insert");
    let out = games::push_new(link!(&wm)).await.expect("push");
    assert_eq!((out.sent, out.new), (1, 1));

    // Pull the other way: b's own games land on a once.
    store(b.home.path(), key())
        .insert_games(&[game("b0", "b", 0, 0.5), game("b1", "b", 1, 0.5)])
        .expect("insert b");
    let out = games::pull_new(link!(&wm)).await.expect("pull");
    assert_eq!(
        out.received, 33,
        "the first pull reads the peer's store from 0"
    );
    assert_eq!(out.new, 2);
    let out = games::pull_new(link!(&wm)).await.expect("pull again");
    assert_eq!((out.received, out.new), (0, 0));
    assert_eq!(store_a.count().expect("count"), 33);

    // A failure is reported, and the watermark does not move.
    let dead = Peer::at("dead", "http://127.0.0.1:1");
    let before = rec.events().len();
    let e = games::push_new(Link {
        peer: &dead,
        ..link!(&wm)
    })
    .await;
    assert!(e.is_err());
    assert_eq!(wm.get("dead", key(), Direction::Push).expect("get"), 0);
    // The ask for the peer's store identity fails before any games go: FAILED alone.
    let last = rec.events();
    assert_eq!(last.len(), before + 1);
    assert_eq!(last[before].kind, T::DataSyncFailed);
}

/// Issue 30's acceptance: a game with an illegal move injected into one node's store is
/// refused at the first hop (that node neither pushes nor serves it, and quarantines it
/// with the reason), a push carrying one is refused whole naming it, and the good games
/// around it flow on; a correct copy of the same id later replaces the quarantined one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_illegal_game_stops_at_its_first_hop_and_the_rest_flows() {
    let a = server("a").await;
    let b = server("b").await;
    let c = client(None);
    let store_a = store(a.home.path(), key());
    let mut bad = game("bad", "a", 2, 0.5);
    bad.moves = vec![0, 9, 0];
    let good: Vec<GameRecord> = (0..4)
        .map(|i| game(&format!("a{i}"), "a", i, 0.5))
        .collect();
    let mut all = good.clone();
    all.insert(2, bad.clone());
    store_a.insert_games(&all).expect("inject");

    // a pushes to b: the four good games arrive; the bad one stays on a, quarantined.
    let (ctx, _rec) = Context::for_test("auto_sync", a.home.path(), "").expect("ctx");
    let events = SyncEvents::new(&ctx);
    let wm = Watermarks::for_daemon(a.home.path(), "auto_sync").expect("watermarks");
    let filter = GameFilter::default();
    let b_peer = b.peer();
    let link = |wm| Link {
        home: a.home.path(),
        client: &c,
        peer: &b_peer,
        config: key(),
        watermarks: wm,
        limit: 100,
        filter: &filter,
        events: Some(&events),
        pacer: None,
    };
    let out = games::push_new(link(&wm)).await.expect("push");
    assert_eq!((out.sent, out.new, out.watermark), (4, 4, 5));
    assert_eq!(testing::ids(b.home.path(), key()), ["a0", "a1", "a2", "a3"]);
    assert_eq!(
        store_a.quarantined().expect("quarantined"),
        [("bad".to_string(), "ply 2: cell 0 is occupied".to_string())]
    );

    // A third node pulling from a gets the good games only, and no error.
    let (page, _) = games::fetch(&c, &a.peer(), key(), 0, 100, &GameFilter::default())
        .await
        .expect("fetch");
    let ids: Vec<_> = page.games.iter().map(|g| g.game.game_id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1", "a2", "a3"]);

    // A push holding the bad game (a node that does not check) is refused whole.
    let mut body = serde_json::to_vec(&games::GamesPush {
        games: vec![game("new", "x", 9, 0.5), bad.clone()],
    })
    .expect("json");
    let sha = games::sha256_hex(&body);
    let (code, text) = raw_post(&b.url, std::mem::take(&mut body), Some(&sha)).await;
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("\"bad\"") && text.contains("ply 2: cell 0 is occupied"),
        "{text}"
    );
    assert_eq!(
        testing::ids(b.home.path(), key()).len(),
        4,
        "nothing stored"
    );

    // A correct copy of "bad" arrives at a: it replaces the quarantined one and is sent.
    store_a
        .insert_games(&[game("bad", "a", 2, 0.5)])
        .expect("good copy");
    let out = games::push_new(link(&wm)).await.expect("push again");
    assert_eq!((out.sent, out.new), (1, 1));
    assert!(testing::ids(b.home.path(), key()).contains(&"bad".to_string()));
}

/// Issue 30's acceptance: 500 slow clients holding connections (each sent half a
/// request's headers, from 127.0.0.2) do not stop a normal peer's sync (from 127.0.0.1);
/// the connections over the per-IP cap are closed at once and the others when their
/// header deadline passes, so none is held for long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_do_not_stop_a_peers_sync() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 500;
    let b = server_with("b", "max_connections_per_ip = 64\nheader_timeout_s = 3\n").await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", b.port).parse().expect("addr");
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind("127.0.0.2:0".parse().expect("ip"))
            .expect("bind 127.0.0.2");
        let mut s = sock.connect(addr).await.expect("connect");
        // Half a request: never finished.
        s.write_all(b"GET /games/summary HTTP/1.1\r\nhost: b\r\n")
            .await
            .expect("write");
        slow.push(s);
    }
    let held = std::time::Instant::now();

    // A normal peer syncs meanwhile: 200 games pushed and pulled back, promptly.
    let a = tempfile::tempdir().expect("home a");
    let store_a = store(a.path(), key());
    let gs: Vec<GameRecord> = (0..200)
        .map(|i| game(&format!("p{i}"), "a", i, 0.5))
        .collect();
    store_a.insert_games(&gs).expect("insert");
    let (ctx, _rec) = Context::for_test("auto_sync", a.path(), "").expect("ctx");
    let events = SyncEvents::new(&ctx);
    let wm = Watermarks::for_daemon(a.path(), "auto_sync").expect("watermarks");
    let (c, filter, b_peer) = (client(None), GameFilter::default(), b.peer());
    let link = Link {
        home: a.path(),
        client: &c,
        peer: &b_peer,
        config: key(),
        watermarks: &wm,
        limit: 50,
        filter: &filter,
        events: Some(&events),
        pacer: None,
    };
    let t = std::time::Instant::now();
    let out = games::push_new(link)
        .await
        .expect("push while slow clients hold");
    assert_eq!(out.new, 200);
    let summary = games::summary(&c, &b_peer).await.expect("summary");
    let pushed_in = t.elapsed();
    assert_eq!(summary.batches.iter().map(|x| x.count).sum::<u64>(), 200);
    assert!(
        pushed_in < Duration::from_secs(5),
        "the sync took {pushed_in:?}"
    );

    // Every slow connection is closed: over the cap at once, the rest at their deadline
    // (3 s after their half request; read EOF or a reset, allowing 5 s more).
    let mut closed_at = Vec::with_capacity(SLOW);
    for mut s in slow {
        let mut buf = [0u8; 256];
        let deadline = Duration::from_secs(8).saturating_sub(held.elapsed());
        loop {
            match tokio::time::timeout(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                // A 408 or the like before the close.
                Ok(Ok(_)) => continue,
                Err(_) => panic!(
                    "a slow connection still open {:?} after its half request",
                    held.elapsed()
                ),
            }
        }
        closed_at.push(held.elapsed());
    }
    assert!(held.elapsed() < Duration::from_secs(8));
    eprintln!(
        "MEASURED: {SLOW} slow clients; a peer pushed 200 games and read the summary in {pushed_in:?}; all slow connections closed {:?} after they were held",
        closed_at.iter().max()
    );
}

/// Issue 30's acceptance: a node wiped and restarted under the same name gets every game
/// back. Push watermarks count in the receiver's store (its identity, made with the file):
/// a new store starts the link again from 0; the same store does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_wiped_and_restarted_under_its_name_gets_every_game_back() {
    let a = tempfile::tempdir().expect("home a");
    let store_a = store(a.path(), key());
    let gs: Vec<GameRecord> = (0..30)
        .map(|i| game(&format!("w{i}"), "a", i, 0.5))
        .collect();
    store_a.insert_games(&gs).expect("insert");
    let (ctx, _rec) = Context::for_test("auto_sync", a.path(), "").expect("ctx");
    let events = SyncEvents::new(&ctx);
    let wm = Watermarks::for_daemon(a.path(), "auto_sync").expect("watermarks");
    let (c, filter) = (client(None), GameFilter::default());
    let link = |peer| Link {
        home: a.path(),
        client: &c,
        peer,
        config: key(),
        watermarks: &wm,
        limit: 8,
        filter: &filter,
        events: Some(&events),
        pacer: None,
    };
    let b = server("b").await;
    let peer = b.peer();
    let out = games::push_new(link(&peer)).await.expect("push");
    assert_eq!((out.sent, out.new), (30, 30));
    let again = games::push_new(link(&peer)).await.expect("push again");
    assert_eq!(again.sent, 0, "the same store: nothing again");

    // b wiped: a new home, the same name (its address may change with it).
    drop(b);
    let b = server("b").await;
    let peer = b.peer();
    assert!(testing::ids(b.home.path(), key()).is_empty());
    let out = games::push_new(link(&peer))
        .await
        .expect("push to the new b");
    assert_eq!((out.sent, out.new, out.watermark), (30, 30, 30));
    assert_eq!(testing::ids(b.home.path(), key()).len(), 30);
    let again = games::push_new(link(&peer)).await.expect("push again");
    assert_eq!(again.sent, 0);
}
