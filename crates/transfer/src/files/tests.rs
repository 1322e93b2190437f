//! Tests of the file engine against a fake data server (axum on port 0) that can flip a
//! byte, cut a body short or serve a truncated file.

use super::*;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Default)]
struct Fake {
    /// What the manifest announces, per path.
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    /// What is served instead (a corrupt or truncated source), per path.
    served: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Flip the byte at this offset on the wire (u64::MAX: none).
    flip_at: AtomicU64,
    /// End every body after this many bytes (u64::MAX: none).
    cut_after: AtomicU64,
    requests: AtomicUsize,
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

async fn manifest_route(State(f): State<Arc<Fake>>) -> Response {
    let files = f.files.lock().unwrap().clone();
    let doc = ManifestDoc {
        root: "data".into(),
        files: files
            .iter()
            .map(|(p, b)| {
                (
                    p.clone(),
                    ManifestEntry {
                        sha256: sha(b),
                        size: b.len() as u64,
                        mtime_ms: 0,
                        generation: None,
                    },
                )
            })
            .collect(),
    };
    axum::Json(doc).into_response()
}

async fn file_route(
    State(f): State<Arc<Fake>>,
    UrlPath((_root, rel)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    f.requests.fetch_add(1, Ordering::SeqCst);
    let body = {
        let served = f.served.lock().unwrap();
        match served.get(&rel) {
            Some(b) => b.clone(),
            None => match f.files.lock().unwrap().get(&rel) {
                Some(b) => b.clone(),
                None => return StatusCode::NOT_FOUND.into_response(),
            },
        }
    };
    let start: usize = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut part = body[start.min(body.len())..].to_vec();
    let flip = f.flip_at.load(Ordering::SeqCst);
    if flip != u64::MAX && (flip as usize) >= start && (flip as usize) < body.len() {
        part[flip as usize - start] ^= 0x40;
    }
    let cut = f.cut_after.load(Ordering::SeqCst);
    let status = if start > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let range = format!("bytes {start}-{}/{}", body.len().max(1) - 1, body.len());
    let len = part.len();
    let stream_body = if cut != u64::MAX && (cut as usize) < len {
        // Content-Length promises more than is sent: the client sees the body end early.
        let head = part[..cut as usize].to_vec();
        axum::body::Body::from_stream(futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(axum::body::Bytes::from(head)),
            Err(std::io::Error::other("cut")),
        ]))
    } else {
        axum::body::Body::from(part)
    };
    let mut resp = Response::new(stream_body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.to_string().parse().unwrap());
    if start > 0 {
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, range.parse().unwrap());
    }
    resp
}

async fn serve(fake: Arc<Fake>) -> Peer {
    fake.flip_at.store(u64::MAX, Ordering::SeqCst);
    fake.cut_after.store(u64::MAX, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/manifest", axum::routing::get(manifest_route))
        .route("/files/{root}/{*path}", axum::routing::get(file_route))
        .with_state(fake);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    Peer::at("fake", &format!("http://{addr}"))
}

fn engine(dir: &Path, limits: Limits) -> Engine {
    let client = DataClient::new(None, Duration::from_secs(5)).unwrap();
    Engine::new(client, dir.join("quarantine"), limits).unwrap()
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn wanted(path: &str, b: &[u8]) -> Wanted {
    Wanted {
        root: Root::Data,
        path: path.into(),
        sha256: sha(b),
        size: b.len() as u64,
    }
}

fn quarantined(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("quarantine"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".reason"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn fetch_installs_a_verified_file_and_leaves_no_partial() {
    let fake = Arc::new(Fake::default());
    let b = data(1_000_000, 1);
    fake.files
        .lock()
        .unwrap()
        .insert("a/b.bin".into(), b.clone());
    let peer = serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Limits::default());
    let dest = dir.path().join("out/a/b.bin");
    let f = e.fetch(&peer, &wanted("a/b.bin", &b), &dest).await.unwrap();
    assert_eq!(f.downloaded, b.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), b);
    let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the file, no partial: {left:?}");
}

#[tokio::test]
async fn a_cut_transfer_resumes_from_where_it_stopped() {
    let fake = Arc::new(Fake::default());
    let b = data(3_000_000, 2);
    fake.files.lock().unwrap().insert("x.bin".into(), b.clone());
    let peer = serve(fake.clone()).await;
    fake.cut_after.store(1_200_000, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Limits::default());
    let dest = dir.path().join("x.bin");
    let err = e
        .fetch(&peer, &wanted("x.bin", &b), &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Http { .. }), "{err}");
    assert!(!dest.exists(), "nothing installed from a cut transfer");
    fake.cut_after.store(u64::MAX, Ordering::SeqCst);
    let f = e.fetch(&peer, &wanted("x.bin", &b), &dest).await.unwrap();
    assert!(f.resumed_from >= 1_000_000, "resumed at {}", f.resumed_from);
    assert_eq!(f.downloaded + f.resumed_from, b.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), b);
}

#[tokio::test]
async fn a_flipped_byte_on_the_wire_is_quarantined_never_installed() {
    let fake = Arc::new(Fake::default());
    let b = data(500_000, 3);
    fake.files.lock().unwrap().insert("m.bin".into(), b.clone());
    let peer = serve(fake.clone()).await;
    fake.flip_at.store(123_456, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Limits::default());
    let dest = dir.path().join("m.bin");
    let err = e
        .fetch(&peer, &wanted("m.bin", &b), &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(!dest.exists());
    assert_eq!(quarantined(dir.path()), 1);
    // The next attempt starts clean (the bad partial is gone) and succeeds.
    fake.flip_at.store(u64::MAX, Ordering::SeqCst);
    e.fetch(&peer, &wanted("m.bin", &b), &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b);
}

#[tokio::test]
async fn a_truncated_or_rotten_source_is_detected_and_quarantined() {
    let fake = Arc::new(Fake::default());
    let b = data(400_000, 4);
    fake.files.lock().unwrap().insert("t.bin".into(), b.clone());
    fake.served
        .lock()
        .unwrap()
        .insert("t.bin".into(), b[..300_000].to_vec());
    let mut rotten = b.clone();
    rotten[7] ^= 1;
    fake.files.lock().unwrap().insert("r.bin".into(), b.clone());
    fake.served.lock().unwrap().insert("r.bin".into(), rotten);
    let peer = serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Limits::default());
    let err = e
        .fetch(&peer, &wanted("t.bin", &b), &dir.path().join("t.bin"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("300000 bytes, expected 400000"),
        "{err}"
    );
    let err = e
        .fetch(&peer, &wanted("r.bin", &b), &dir.path().join("r.bin"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Corrupt { .. }), "{err}");
    assert!(!dir.path().join("t.bin").exists() && !dir.path().join("r.bin").exists());
    assert_eq!(quarantined(dir.path()), 2);
}

#[tokio::test]
async fn mirror_fetches_what_differs_and_a_second_pass_reads_nothing() {
    let fake = Arc::new(Fake::default());
    for i in 0..20 {
        fake.files
            .lock()
            .unwrap()
            .insert(format!("d/f{i}.bin"), data(10_000 + i, i as u8));
    }
    fake.files
        .lock()
        .unwrap()
        .insert("skip.db".into(), data(10, 0));
    let peer = serve(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("mirror");
    // One file already there with the right content: not fetched.
    std::fs::create_dir_all(local.join("d")).unwrap();
    std::fs::write(local.join("d/f3.bin"), data(10_003, 3)).unwrap();
    let e = engine(
        dir.path(),
        Limits {
            per_host: 3,
            bytes_per_s: 0,
        },
    );
    let mut idx = LocalIndex::default();
    let select = |p: &str| p.ends_with(".bin");
    let r = e
        .mirror(&peer, Root::Data, "", &select, &local, &mut idx)
        .await
        .unwrap();
    assert_eq!((r.listed, r.fetched, r.failed.len()), (20, 19, 0), "{r:?}");
    assert_eq!(fake.requests.load(Ordering::SeqCst), 19);
    for i in 0..20 {
        assert_eq!(
            std::fs::read(local.join(format!("d/f{i}.bin"))).unwrap(),
            data(10_000 + i, i as u8)
        );
    }
    assert!(!local.join("skip.db").exists());
    let path = dir.path().join("index.json");
    idx.save(&path).unwrap();
    let mut idx = LocalIndex::load(&path).unwrap();
    assert_eq!(idx.len(), 20);
    let r = e
        .mirror(&peer, Root::Data, "", &select, &local, &mut idx)
        .await
        .unwrap();
    assert_eq!((r.fetched, fake.requests.load(Ordering::SeqCst)), (0, 19));
    // A changed source file is fetched again.
    fake.files
        .lock()
        .unwrap()
        .insert("d/f5.bin".into(), data(777, 9));
    let r = e
        .mirror(&peer, Root::Data, "", &select, &local, &mut idx)
        .await
        .unwrap();
    assert_eq!(r.fetched, 1);
    assert_eq!(std::fs::read(local.join("d/f5.bin")).unwrap(), data(777, 9));
}

#[tokio::test]
async fn a_manifest_naming_a_path_outside_the_root_is_refused() {
    let fake = Arc::new(Fake::default());
    fake.files
        .lock()
        .unwrap()
        .insert("../evil".into(), data(5, 0));
    let peer = serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Limits::default());
    let err = manifest(e.client(), &peer, Root::Data).await.unwrap_err();
    assert!(err.to_string().contains("../evil"), "{err}");
    for bad in ["/etc/passwd", "a/../b", ".hidden", "a/.x", "", "a\\b"] {
        assert!(check_rel(bad).is_err(), "{bad}");
    }
    assert!(check_rel("games/hex8_2p.db").is_ok());
}

#[tokio::test]
async fn the_bandwidth_limit_holds() {
    let fake = Arc::new(Fake::default());
    let b = data(1_500_000, 5);
    fake.files
        .lock()
        .unwrap()
        .insert("bw.bin".into(), b.clone());
    let peer = serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        Limits {
            per_host: 1,
            bytes_per_s: 1_000_000,
        },
    );
    let t0 = Instant::now();
    e.fetch(&peer, &wanted("bw.bin", &b), &dir.path().join("bw.bin"))
        .await
        .unwrap();
    // 1 MB of burst, then 0.5 MB at 1 MB/s: at least ~0.5 s.
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        Engine::new(
            e.client().clone(),
            dir.path().into(),
            Limits {
                per_host: 0,
                bytes_per_s: 0
            }
        )
        .is_err()
    );
}

/// Small files take the whole-body path: a flipped byte, a truncated or an overlong
/// source are quarantined there too, and nothing is installed.
#[tokio::test]
async fn small_files_are_verified_and_quarantined_the_same_way() {
    let fake = Arc::new(Fake::default());
    let b = data(10_000, 6);
    for name in ["ok.bin", "flip.bin", "short.bin", "long.bin"] {
        fake.files.lock().unwrap().insert(name.into(), b.clone());
    }
    fake.served
        .lock()
        .unwrap()
        .insert("short.bin".into(), b[..9_000].to_vec());
    let mut long = b.clone();
    long.extend_from_slice(&[0u8; 100]);
    fake.served.lock().unwrap().insert("long.bin".into(), long);
    let mut flip = b.clone();
    flip[77] ^= 4;
    fake.served.lock().unwrap().insert("flip.bin".into(), flip);
    let peer = serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Limits::default());
    e.fetch(&peer, &wanted("ok.bin", &b), &dir.path().join("ok.bin"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("ok.bin")).unwrap(), b);
    for name in ["flip.bin", "short.bin", "long.bin"] {
        let err = e
            .fetch(&peer, &wanted(name, &b), &dir.path().join(name))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransferError::Corrupt { .. }),
            "{name}: {err}"
        );
        assert!(!dir.path().join(name).exists(), "{name} installed");
    }
    assert_eq!(quarantined(dir.path()), 3);
}

/// A peer that sends more than the manifest announced (a lying or broken peer) is cut
/// off at the announced size: nothing past it is written, the part is quarantined,
/// nothing is installed.
#[tokio::test]
async fn a_body_longer_than_announced_is_cut_off_and_quarantined() {
    let fake = Arc::new(Fake::default());
    let b = data(400_000, 5);
    fake.files.lock().unwrap().insert("l.bin".into(), b.clone());
    let mut long = b.clone();
    long.extend(data(8_000_000, 6));
    fake.served.lock().unwrap().insert("l.bin".into(), long);
    let peer = serve(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Limits::default());
    let dest = dir.path().join("l.bin");
    let err = e
        .fetch(&peer, &wanted("l.bin", &b), &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("more than the announced 400000 bytes"),
        "{err}"
    );
    assert!(!dest.exists());
    assert_eq!(quarantined(dir.path()), 1);
    let largest = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(
        largest <= 400_000,
        "{largest} bytes written for a 400000-byte file"
    );
}
