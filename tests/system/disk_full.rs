//! Disk full (issue 28): the router's event log on a small tmpfs that fills up. The
//! router refuses publishes with RESOURCE_EXHAUSTED naming its full storage, the
//! publisher keeps every event in its outbox and reports why (a daemon's DEGRADED
//! reason), nothing acked before is lost, and everything arrives once space returns.
//! Needs root for the mount; skips with a message otherwise.

use ringrift_proto::Event;
use ringrift_proto::wire::event::Payload;
use ringrift_system_tests::{Home, router_log, wait_for_async};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `8m`) on `dir`; `None` (with a message) when this
    /// process may not mount.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("SKIP: disk-full test needs root to mount a tmpfs");
            return None;
        }
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "SKIP: mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with `path` until a write fails for want of space
/// (bounded: a tmpfs of megabytes takes a few hundred 64 KiB writes).
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    for _ in 0..100_000 {
        if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
            return;
        }
    }
    panic!("{} never filled up", path.display());
}

fn padded(id: &str) -> Event {
    Event::new(Payload::Json(format!(
        "{{\"pad\": \"{}\"}}",
        "x".repeat(8 << 10)
    )))
    .with_id(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_router_keeps_events_in_the_outbox_until_space_returns() {
    let home = Home::new();
    let events = home.path().join("events");
    let Some(_mount) = Tmpfs::mount(&events, "8m") else {
        return;
    };
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    let p = handler_base::router_client::Publisher::spawn(
        handler_base::router_client::connect_lazy(&addr).unwrap(),
        "disk-full-test@local",
        10_000,
    );
    const N: usize = 200;
    for i in 0..N {
        p.publish(padded(&format!("before:{i}"))).unwrap();
    }
    wait_for_async("the first events acked", Duration::from_secs(60), || {
        let n = p.buffered();
        async move { (n == 0).then_some(()) }
    })
    .await;

    let filler = events.join("filler");
    fill(&filler);
    // More than the log's existing pages and WAL can take: the disk must grow.
    for i in 0..N {
        p.publish(padded(&format!("during:{i}"))).unwrap();
    }
    let why = wait_for_async(
        "the publisher to report the router's full disk",
        Duration::from_secs(60),
        || {
            let r = p.refused();
            async move { r }
        },
    )
    .await;
    eprintln!(
        "disk full: the publisher says: {why}; {} events wait",
        p.buffered()
    );
    assert!(
        why.contains("ResourceExhausted") && why.contains(ringrift_proto::STORAGE_FULL),
        "{why}"
    );
    assert!(
        p.buffered() > 0,
        "events wait in the outbox while the disk is full"
    );
    assert_eq!(p.rejected(), 0, "no event left the outbox as malformed");
    assert!(
        router.try_exit().is_none(),
        "the router stays up on a full disk"
    );

    std::fs::remove_file(&filler).expect("remove filler");
    wait_for_async("the outbox drained", Duration::from_secs(120), || {
        let n = p.buffered();
        async move { (n == 0).then_some(()) }
    })
    .await;
    assert_eq!(p.refused(), None, "the report clears once a send succeeds");
    assert_eq!(p.rejected(), 0);
    let ids: HashSet<String> = router_log(&addr).await.into_iter().map(|e| e.id).collect();
    for i in 0..N {
        for k in ["before", "during"] {
            assert!(ids.contains(&format!("{k}:{i}")), "{k}:{i} lost");
        }
    }
    router.kill9();
}

/// A download onto a file system that fills up (issue 30 pt 6): the fetch stops at the
/// first failed write with an error naming it, and leaves no part file (nothing is
/// installed, the space is given back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_onto_a_full_disk_stops_and_leaves_no_part_file() {
    use ringrift_transfer::files::{Engine, Limits, Root, Wanted};
    let peer = ringrift_test_support::data_server::server("b").await;
    let body: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    let rel = "training/big.npz";
    let src = peer.home.path().join("data").join(rel);
    std::fs::create_dir_all(src.parent().expect("parent")).expect("dir");
    std::fs::write(&src, &body).expect("source file");
    let here = tempfile::tempdir().expect("tempdir");
    let small = here.path().join("small");
    let Some(_fs) = Tmpfs::mount(&small, "2m") else {
        return;
    };
    let client = ringrift_transfer::DataClient::new(None, Duration::from_secs(10)).expect("client");
    let engine =
        Engine::new(client, here.path().join("quarantine"), Limits::default()).expect("engine");
    let wanted = Wanted {
        root: Root::Data,
        path: rel.into(),
        sha256: ringrift_store::manifest::sha256_hex(&body),
        size: body.len() as u64,
    };
    let dest = small.join("big.npz");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        engine.fetch(&ringrift_transfer::Peer::at("b", &peer.url), &wanted, &dest),
    )
    .await
    .expect("the fetch ends")
    .expect_err("no room for 6 MB on a 2 MB file system");
    assert!(err.to_string().contains("write"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&small)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
