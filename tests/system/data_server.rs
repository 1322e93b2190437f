//! `ringrift-data-server` as a process: 200 concurrent range requests on a 64 MiB file
//! keep its memory bounded (VmRSS sampled from `/proc/<pid>/status`), every answer has
//! the right bytes, and the token is required.

use ringrift_system_tests::{Home, http_get_with};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "tok-data-7c1e";
const SIZE: usize = 64 << 20;
const CLIENTS: usize = 200;
const RANGE: usize = 2 << 20;

/// Deterministic, incompressible-looking content: byte i of the file.
fn byte_at(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i as u8)
}

fn vm(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One range request on its own connection; returns the body's length after checking
/// its status and its first and last bytes.
async fn fetch_range(addr: String, start: usize) -> usize {
    let end = start + RANGE - 1;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /files/data/big.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nRange: bytes={start}-{end}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut body = 0usize;
    let (mut first, mut last) = (None, 0u8);
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if first.is_none() {
            head.extend_from_slice(chunk);
            let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let text = String::from_utf8_lossy(&head[..at]).into_owned();
            assert!(text.starts_with("HTTP/1.1 206"), "{text}");
            let rest = head[at + 4..].to_vec();
            first = Some(rest.first().copied());
            body += rest.len();
            if let Some(b) = rest.last() {
                last = *b;
            }
            head.clear();
            continue;
        }
        body += chunk.len();
        if let Some(b) = chunk.last() {
            last = *b;
        }
    }
    if let Some(Some(b)) = first {
        assert_eq!(b, byte_at(start));
    }
    assert_eq!(last, byte_at(end));
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ranges_on_a_large_file_keep_memory_bounded() {
    let home = Home::new();
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!("[auth]\ntoken = \"{TOKEN}\"\n[data_server]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let content: Vec<u8> = (0..SIZE).map(byte_at).collect();
    std::fs::write(data.join("big.bin"), &content).unwrap();
    drop(content);
    let mut p = home.spawn("ringrift-data-server", &[]);
    let addr = home.wait_addr("data_server", &mut p);
    let pid = p.pid();

    assert_eq!(
        http_get_with(&addr, "/files/data/big.bin", None)
            .await
            .unwrap()
            .0,
        401
    );
    assert_eq!(http_get_with(&addr, "/health", None).await.unwrap().0, 200);
    // Warm up: the first request hashes the file (once), then measure the baseline.
    let t = Instant::now();
    assert_eq!(fetch_range(addr.clone(), 0).await, RANGE);
    let hash_time = t.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = vm(pid, "VmRSS:");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(vm(pid, "VmRSS:"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let start = (i * 317 * 1024) % (SIZE - RANGE);
        set.spawn(fetch_range(addr.clone(), start));
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        let n = r.unwrap();
        assert_eq!(n, RANGE);
        total += n;
    }
    let took = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap().max(vm(pid, "VmRSS:"));
    let hwm = vm(pid, "VmHWM:");
    eprintln!(
        "data_server: hash of 64 MiB + first range {hash_time:?}; {CLIENTS} x {} MiB ranges = {} MiB in {took:?} ({:.0} MiB/s); VmRSS baseline {} KiB, peak {} KiB (+{} KiB), VmHWM {} KiB",
        RANGE >> 20,
        total >> 20,
        (total >> 20) as f64 / took.as_secs_f64(),
        baseline,
        peak,
        peak.saturating_sub(baseline),
        hwm
    );
    // 200 responses x one 64 KiB chunk in flight, plus hyper's and the socket's buffers,
    // blocking-pool threads and allocator slack: well under 64 MiB; a server that held
    // whole ranges (400 MiB) or the whole file per request would be far above.
    assert!(
        peak.saturating_sub(baseline) < 64 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
}
