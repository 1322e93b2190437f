//! The transfer engine through real binaries: `ringrift-data-server` serving a home,
//! `ringrift-fetch` pulling from it. A receiver killed with SIGKILL mid-transfer resumes
//! to a verified file; a byte rotten on the source's disk is quarantined, never
//! installed.

use ringrift_system_tests::{Home, bin, wait_for};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "tok-transfer-51d0";

fn serve(home: &Home) -> (ringrift_system_tests::Proc, String) {
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!("[auth]\ntoken = \"{TOKEN}\"\n[data_server]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut p = home.spawn("ringrift-data-server", &[]);
    let addr = home.wait_addr("data_server", &mut p);
    (p, format!("http://{addr}"))
}

fn fetch(url: &str, prefix: &str, to: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("ringrift-fetch"));
    c.args(["--from", url, "--prefix", prefix, "--to"])
        .arg(to)
        .args(["--quiet"])
        .args(extra)
        .env("RINGRIFT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn sha(path: &std::path::Path) -> String {
    ringrift_store::manifest::hash_file(path).unwrap().0
}

#[test]
fn a_receiver_killed_mid_transfer_resumes_to_a_verified_file() {
    let src = Home::new();
    let dir = src.path().join("data/big");
    std::fs::create_dir_all(&dir).unwrap();
    let content: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("blob.bin"), &content).unwrap();
    let (_server, url) = serve(&src);
    let dst = tempfile::tempdir().unwrap();
    // 8 MB/s: the 24 MiB file takes ~3 s, long enough to kill the receiver in the middle.
    let mut child = fetch(&url, "big", dst.path(), &["--bandwidth", "8000000"])
        .spawn()
        .unwrap();
    let part = dst.path().join("big/.blob.bin.part-").display().to_string();
    let partial = || {
        std::fs::read_dir(dst.path().join("big"))
            .ok()?
            .flatten()
            .find(|e| e.path().display().to_string().starts_with(&part))
            .and_then(|e| e.metadata().ok())
            .map(|m| m.len())
            .filter(|n| *n >= 4 << 20)
    };
    let at_kill = wait_for(
        "a partial download of 4 MiB",
        Duration::from_secs(30),
        partial,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dst.path().join("big/blob.bin").exists(),
        "nothing installed by a killed receiver"
    );
    let out = fetch(&url, "big", dst.path(), &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Fewer bytes than the file crossed the wire the second time: it resumed.
    let fetched: u64 = text
        .split(" bytes in ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {text:?}"));
    assert!(
        fetched <= content.len() as u64 - at_kill,
        "second run fetched {fetched} bytes; {at_kill} were there already"
    );
    assert_eq!(
        sha(&dst.path().join("big/blob.bin")),
        sha(&dir.join("blob.bin"))
    );
    assert!(partial().is_none(), "no partial file left");
    // Everything there: a third run fetches nothing.
    let out = fetch(&url, "big", dst.path(), &[]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(", 0 fetched, 0 bytes"));
}

#[test]
fn a_byte_rotten_on_the_source_disk_is_quarantined_not_installed() {
    let src = Home::new();
    let dir = src.path().join("data/set");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("a.bin");
    std::fs::write(&f, vec![5u8; 1 << 20]).unwrap();
    std::fs::write(dir.join("b.bin"), vec![6u8; 1000]).unwrap();
    let (_server, url) = serve(&src);
    // The server hashes the good file (a first pull), then one byte rots in place with
    // size and mtime unchanged: its manifest still names the good content.
    let first = tempfile::tempdir().unwrap();
    assert!(
        fetch(&url, "set", first.path(), &[])
            .status()
            .unwrap()
            .success()
    );
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[7u8], 777).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let dst = tempfile::tempdir().unwrap();
    let out = fetch(&url, "set", dst.path(), &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("set/a.bin") && err.contains("quarantined"),
        "{err}"
    );
    assert!(!dst.path().join("set/a.bin").exists());
    assert_eq!(
        std::fs::read(dst.path().join("set/b.bin")).unwrap(),
        vec![6u8; 1000]
    );
    let q: Vec<_> = std::fs::read_dir(dst.path().join(".quarantine"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        q.iter()
            .any(|e| e.file_name().to_string_lossy().contains("a.bin")),
        "{q:?}"
    );
}

#[test]
fn without_the_token_nothing_is_fetched() {
    let src = Home::new();
    std::fs::create_dir_all(src.path().join("data/x")).unwrap();
    std::fs::write(src.path().join("data/x/f"), b"secret").unwrap();
    let (_server, url) = serve(&src);
    let dst = tempfile::tempdir().unwrap();
    let out = fetch(&url, "x", dst.path(), &[])
        .env("RINGRIFT_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert!(!dst.path().join("x/f").exists());
}
