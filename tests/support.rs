//! Helpers for system tests. What every test shares (the built binaries, temp homes,
//! daemons on port 0 and their `run/*.addr`, polling with deadlines, free ports, tool
//! checks) is `ringrift-test-support`, re-exported here; this file holds what only the
//! system tests use (the router's log, promtool, raw HTTP, nats-server, TLS files).

pub use ringrift_test_support::{
    Home, Proc, bin, bin_dir, command_works, free_port, poll_until, poll_until_async, require_tool,
    wait_for, wait_for_async,
};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every event in the router's log at `addr`, from seq 1 to the head at the call (fewer
/// if the router stops answering for 10 s; none if it does not answer at all).
pub async fn router_log(addr: &str) -> Vec<ringrift_proto::wire::Event> {
    router_log_with(addr, handler_base::router_client::Bearer::from_env()).await
}

/// [`router_log`] of a router that wants `bearer`.
pub async fn router_log_with(
    addr: &str,
    bearer: handler_base::router_client::Bearer,
) -> Vec<ringrift_proto::wire::Event> {
    use ringrift_proto::wire::{self, subscribe_request::Start};
    let Ok(mut c) = handler_base::router_client::connect_with(addr.trim(), bearer).await else {
        return Vec::new();
    };
    let Ok(head) = c.stats(wire::StatsRequest {}).await else {
        return Vec::new();
    };
    let head = head.into_inner().head_seq;
    let req = wire::SubscribeRequest {
        start: Some(Start::FromSeq(1)),
        ..Default::default()
    };
    let Ok(s) = c.subscribe(req).await else {
        return Vec::new();
    };
    let mut s = s.into_inner();
    let mut out = Vec::new();
    while out.last().is_none_or(|e: &wire::Event| e.seq < head) {
        match tokio::time::timeout(Duration::from_secs(10), s.message()).await {
            Ok(Ok(Some(ev))) => out.push(ev),
            _ => break,
        }
    }
    out
}

/// Lints Prometheus text with `promtool check metrics` (see [`require_tool`]).
pub fn promtool_check(metrics: &str) {
    if !require_tool("promtool", command_works("promtool", &["--version"])) {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.1 GET over a fresh TCP connection, with `authorization: Bearer <token>` when
/// given: `(status, body)`, or `None` when nothing answers.
pub async fn http_get_with(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(10), http_get_inner(addr, path, token))
        .await
        .ok()
        .flatten()
}

async fn http_get_inner(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// `nats-server` processes with JetStream on free loopback ports, in one temp dir: one
/// server, or a cluster of several (routes between all, JetStream R-ready), for the
/// router's JetStream backend. Killed when dropped.
pub struct Nats {
    /// Client URLs (`nats://127.0.0.1:<port>`), one per server.
    pub servers: Vec<String>,
    procs: Vec<Option<Proc>>,
    pub dir: tempfile::TempDir,
}

impl Nats {
    /// Starts `n` servers (a cluster when `n > 1`) and waits (bounded) until each accepts
    /// clients; `None` when nats-server is missing and the test may skip
    /// ([`require_tool`]). The JetStream cluster elects its leaders after that: the router
    /// retries creating its streams until they are.
    pub fn start(n: usize) -> Option<Nats> {
        if !require_tool("nats-server", command_works("nats-server", &["--version"])) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ringrift-nats-")
            .tempdir()
            .expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut nats = Nats {
            servers: ports
                .iter()
                .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
                .collect(),
            procs: Vec::new(),
            dir,
        };
        for (i, &(port, cport)) in ports.iter().enumerate() {
            let sd = nats.dir.path().join(format!("n{i}"));
            let mut cmd = Command::new("nats-server");
            cmd.args(["-js", "-a", "127.0.0.1", "-n", &format!("n{i}")])
                .args(["-p", &port.to_string(), "-sd"])
                .arg(&sd)
                .arg("-l")
                .arg(nats.dir.path().join(format!("n{i}.log")));
            if n > 1 {
                cmd.args(["--cluster_name", "ringrift-test"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{cport}")])
                    .args(["--routes", &routes.join(",")]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nats-server");
            nats.procs.push(Some(Proc {
                name: format!("nats-server n{i}"),
                child,
            }));
        }
        for (i, (port, _)) in ports.iter().enumerate() {
            wait_for(
                &format!("nats-server n{i} on port {port}"),
                Duration::from_secs(20),
                || std::net::TcpStream::connect(("127.0.0.1", *port)).ok(),
            );
        }
        Some(nats)
    }

    /// SIGKILLs server `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill9();
        }
    }

    /// Sends `sig` to server `i` (SIGSTOP freezes it: connections stay open, nothing is
    /// answered; SIGCONT thaws it).
    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(p) = &self.procs[i] {
            p.signal(sig);
        }
    }

    /// cluster.toml for a home whose node `node` uses these servers as its event log,
    /// server `own` first (the one its router prefers, as a node's own nats-server).
    pub fn cluster_toml(&self, node: &str, own: usize) -> String {
        let n = self.servers.len();
        let servers: Vec<String> = (0..n)
            .map(|k| format!("{:?}", self.servers[(own + k) % n]))
            .collect();
        format!(
            "[cluster]\nname = \"jetstream-test\"\n\n[events]\nbackend = \"jetstream\"\nservers = [{}]\n\n[[node]]\nname = \"{node}\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\n",
            servers.join(", ")
        )
    }

    /// Makes `home`'s router use these servers: its cluster.toml and its node name.
    pub fn configure(&self, home: &Home) {
        let node = "js-node";
        std::fs::write(home.path().join("cluster.toml"), self.cluster_toml(node, 0))
            .expect("cluster.toml");
        std::fs::write(
            home.path().join("ringrift.toml"),
            format!("node = \"{node}\"\n"),
        )
        .expect("ringrift.toml");
    }
}

/// `ringrift-launcher --status --json` of the launcher running in `home`, typed; `None`
/// while no launcher answers (starting, stopped, or holding another token). An answer
/// that is not a `LauncherStatus` fails the test naming the field.
pub fn launcher_status(home: &Home) -> Option<handler_base::status_body::LauncherStatus> {
    let out = std::process::Command::new(bin("ringrift-launcher"))
        .arg("--home")
        .arg(home.path())
        .args(["--status", "--json"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--status --json is not a LauncherStatus: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

/// Open file descriptors of process `pid` (0 when it is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Serialises the system tests that each keep both cores busy for minutes (whole
/// training loops, three nodes training, a JetStream cluster under load): run side by
/// side they starve one another past their deadlines. Hold the guard for the test.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A test CA and a server certificate it signed for `127.0.0.1` and `localhost` (PEM
/// files, made with the `openssl` CLI), for listeners that serve TLS.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsFiles {
    /// A fresh CA and server certificate; `None` when openssl is missing and the test
    /// may skip ([`require_tool`]).
    pub fn make() -> Option<TlsFiles> {
        if !require_tool("openssl", command_works("openssl", &["version"])) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ringrift-tls-")
            .tempdir()
            .expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(
            p("ca.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n[dn]\nCN = ringrift-test-ca\n[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        )
        .expect("ca.cnf");
        std::fs::write(
            p("ext.cnf"),
            "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("ext.cnf");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(dir.path())
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-config", "ca.cnf",
            ],
        ]
        .concat());
        run(&[
            &["req", "-new"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Some(TlsFiles {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            _dir: dir,
        })
    }

    /// The `[tls]` table of ringrift.toml that serves with these files.
    pub fn toml(&self) -> String {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            self.cert.display().to_string(),
            self.key.display().to_string(),
            self.ca.display().to_string()
        )
    }
}
