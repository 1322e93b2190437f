//! `cross_process_poller`: rows written by another process reach the stream exactly once,
//! also when the poller is killed mid-way or dies between publishing and marking.

use ringrift_proto::wire::{self, subscribe_request::Start};
use ringrift_system_tests::{Home, Proc};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

fn insert_rows(db: &std::path::Path, from: usize, to: usize) {
    // A separate process (the sqlite3 module of Python, like a trainer would use).
    let script = format!(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1], timeout=10)\nfor i in range({from},{to}):\n    c.execute(\"INSERT INTO events (event_type, payload, config_key, source) VALUES ('WORK_QUEUED', ?, 'hex8_2p', 'test.py')\", ('{{\"work_id\": \"row-%d\"}}' % i,))\n    c.commit()\n"
    );
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(db)
        .status()
        .expect("python3");
    assert!(st.success());
}

fn start_poller(home: &Home, addr: &str) -> Proc {
    home.spawn(
        "ringrift-cross-process-poller",
        &[
            "--router",
            addr,
            "--set",
            "cross_process_poller.cycle_interval_s=0.02",
            "--set",
            "cross_process_poller.batch=7",
        ],
    )
}

fn db_path(home: &Home) -> std::path::PathBuf {
    home.path().join("data/cross_process_events.db")
}

async fn collect(addr: &str, want: usize) -> HashMap<String, usize> {
    let mut c = handler_base::router_client::connect(addr).await.unwrap();
    let head = crate::router::stats(&mut c).await.head_seq;
    let req = wire::SubscribeRequest {
        consumer: String::new(),
        types: vec![],
        prefixes: vec![],
        start: Some(Start::FromSeq(1)),
        ..Default::default()
    };
    let mut s = c.subscribe(req).await.unwrap().into_inner();
    let mut seen = HashMap::new();
    let mut n = 0;
    while n < head as usize {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(wire::event::Payload::WorkQueued(w)) = ev.payload {
            *seen.entry(w.work_id).or_insert(0) += 1;
        }
        n = ev.seq as usize;
    }
    assert!(
        seen.len() >= want,
        "expected at least {want} distinct rows, saw {}",
        seen.len()
    );
    seen
}

fn unpublished(db: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM events WHERE published_at IS NULL AND error IS NULL",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_from_another_process_appear_once_even_when_the_poller_is_killed() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let mut poller = start_poller(&home, &addr);
    ringrift_system_tests::wait_for("poller created the table", Duration::from_secs(10), || {
        db_path(&home).exists().then_some(())
    });
    // Three rounds: insert rows, kill the poller while it works, restart it.
    for round in 0..3 {
        let (a, b) = (round * 100, round * 100 + 100);
        insert_rows(&db_path(&home), a, b);
        ringrift_system_tests::wait_for("some rows bridged", Duration::from_secs(20), || {
            (unpublished(&db_path(&home)) < 100).then_some(())
        });
        poller.kill9();
        poller = start_poller(&home, &addr);
    }
    ringrift_system_tests::wait_for("all rows bridged", Duration::from_secs(30), || {
        (unpublished(&db_path(&home)) == 0).then_some(())
    });
    let seen = collect(&addr, 300).await;
    for i in 0..300 {
        assert_eq!(
            seen.get(&format!("row-{i}")),
            Some(&1),
            "row-{i} must appear exactly once"
        );
    }
    assert_eq!(seen.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_between_publish_and_mark_is_deduplicated() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    // Create the table and rows, then do what a poller that died after the router's ack
    // but before marking would have done: publish the rows under their ids, unmarked.
    let db = db_path(&home);
    let mut c = ringrift_cross_process_poller::open_db(&db).unwrap();
    drop(c);
    insert_rows(&db, 0, 20);
    c = ringrift_cross_process_poller::open_db(&db).unwrap();
    let rows = ringrift_cross_process_poller::pending_rows(&c, 100).unwrap();
    let events = rows
        .iter()
        .map(|r| wire::Event::from(r.to_event().unwrap()))
        .collect();
    let mut client = handler_base::router_client::connect(&addr).await.unwrap();
    client
        .publish_batch(wire::PublishBatchRequest { events })
        .await
        .unwrap();
    let _poller = start_poller(&home, &addr);
    ringrift_system_tests::wait_for("rows marked", Duration::from_secs(20), || {
        (unpublished(&db) == 0).then_some(())
    });
    let st = client
        .stats(wire::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.duplicates, 20,
        "republished rows acked as duplicates, not stored"
    );
    let seen = collect(&addr, 20).await;
    assert!(
        seen.values().all(|&n| n == 1) && seen.len() == 20,
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rows_are_marked_with_their_error_and_not_published() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let db = db_path(&home);
    let c = ringrift_cross_process_poller::open_db(&db).unwrap();
    c.execute_batch("INSERT INTO events (event_type, payload) VALUES ('NO_SUCH_TYPE', '{}'); INSERT INTO events (event_type, payload) VALUES ('WORK_QUEUED', 'not json'); INSERT INTO events (event_type, payload) VALUES ('WORK_QUEUED', '{\"work_id\": \"ok\"}');").unwrap();
    let _poller = start_poller(&home, &addr);
    ringrift_system_tests::wait_for("rows handled", Duration::from_secs(20), || {
        (unpublished(&db) == 0).then_some(())
    });
    let errors: Vec<String> = c
        .prepare("SELECT error FROM events WHERE error IS NOT NULL ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].contains("NO_SUCH_TYPE") && errors[1].contains("JSON"),
        "{errors:?}"
    );
    let seen = collect(&addr, 1).await;
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![("ok".to_owned(), 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_larger_in_total_than_the_routers_request_limit_are_published_in_byte_sized_batches() {
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let db = db_path(&home);
    // 200 rows of ~50 KB: 10 MB in the default batch of 500 rows, over the router's 8 MiB.
    let mut c = ringrift_cross_process_poller::open_db(&db).unwrap();
    let tx = c.transaction().unwrap();
    let payload = format!("{{\"blob\": \"{}\"}}", "x".repeat(50_000));
    for _ in 0..200 {
        tx.execute(
            "INSERT INTO events (event_type, payload) VALUES ('EXTERNAL', ?1)",
            [&payload],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let _poller = home.spawn(
        "ringrift-cross-process-poller",
        &[
            "--router",
            &addr,
            "--set",
            "cross_process_poller.cycle_interval_s=0.05",
        ],
    );
    ringrift_system_tests::wait_for("all rows bridged", Duration::from_secs(60), || {
        (unpublished(&db) == 0).then_some(())
    });
    let seqs: i64 = c
        .query_row("SELECT COUNT(DISTINCT router_seq) FROM events", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(seqs, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_between_ack_and_mark_is_reconciled_after_the_dedup_window() {
    let home = Home::new();
    let (_router, addr) =
        home.start_router("127.0.0.1:0", &["--set", "event_router.dedup_window_s=1"]);
    let db = db_path(&home);
    drop(ringrift_cross_process_poller::open_db(&db).unwrap());
    insert_rows(&db, 0, 10);
    let mut first = home.spawn(
        "ringrift-cross-process-poller",
        &[
            "--router",
            &addr,
            "--set",
            "cross_process_poller.cycle_interval_s=0.05",
            "--set",
            "cross_process_poller.crash_after_publish=true",
        ],
    );
    let st = ringrift_system_tests::wait_for(
        "poller died after the ack",
        Duration::from_secs(20),
        || first.try_exit(),
    );
    assert_eq!(
        st.code(),
        Some(1),
        "{}",
        home.log("ringrift-cross-process-poller")
    );
    assert_eq!(collect(&addr, 10).await.len(), 10, "acked by the router");
    assert_eq!(unpublished(&db), 10, "not marked");
    // Past the router's dedup window: a plain republish would now be stored again.
    let died = std::time::Instant::now();
    ringrift_system_tests::wait_for("dedup window over", Duration::from_secs(10), || {
        (died.elapsed() > Duration::from_millis(2500)).then_some(())
    });
    let _second = start_poller(&home, &addr);
    ringrift_system_tests::wait_for("rows marked", Duration::from_secs(20), || {
        (unpublished(&db) == 0).then_some(())
    });
    let seen = collect(&addr, 10).await;
    assert!(
        seen.len() == 10 && seen.values().all(|&n| n == 1),
        "{seen:?}"
    );
}
