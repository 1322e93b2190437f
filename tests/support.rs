//! Helpers for system tests: locate the built binaries, give each test a temp home, start
//! daemons on port 0 and read their addresses from `run/*.addr`, poll with deadlines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `target/debug` (or whichever profile built the tests).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with the command to build it when missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the system tests",
        p.display()
    );
    p
}

/// Polls `f` every 10 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `f` every 10 ms until it returns a value; `None` once `limit` has passed (for
/// callers whose timeout message needs more than [`wait_for`]'s).
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async version of [`wait_for`].
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn term(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        wait_for(&format!("{} to exit", self.name), limit, || {
            self.child.try_wait().ok().flatten()
        })
    }

    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A temp `$RINGRIFT_HOME` with its own logs folder for child output.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

/// A failing test shows the end of every log of its home (the temp home itself is
/// removed), so a failure seen once in a loaded CI run names its cause.
impl Drop for Home {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(dir) = std::fs::read_dir(self.path().join("test-logs")) else {
            return;
        };
        let mut logs: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!("---- last {} lines of {} ----", tail.len(), log.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// Lines of each log a failing test prints.
const LOG_TAIL: usize = 60;

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("ringrift-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("test-logs")).expect("logs dir");
        Home { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `binary` with `--home` and `args`; stderr goes to `test-logs/<name>.log`.
    pub fn spawn(&self, binary: &str, args: &[&str]) -> Proc {
        self.spawn_env(binary, args, &[])
    }

    /// [`Home::spawn`] with extra environment variables.
    pub fn spawn_env(&self, binary: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        self.spawn_wrapped(&[], binary, args, env)
    }

    /// [`Home::spawn_env`] run through `wrapper` (e.g. `ip netns exec <ns>`).
    pub fn spawn_wrapped(
        &self,
        wrapper: &[&str],
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("test-logs").join(format!("{binary}.log")))
            .expect("log file");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin(binary));
                c
            }
            None => Command::new(bin(binary)),
        };
        let child = cmd
            .arg("--home")
            .arg(self.path())
            .args(args)
            .env_remove("RINGRIFT_HOME")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        Proc {
            name: binary.to_owned(),
            child,
        }
    }

    /// A home whose `ringrift.toml` holds `[auth] token = token`, then `extra`.
    pub fn with_token(token: &str, extra: &str) -> Home {
        let home = Home::new();
        std::fs::write(
            home.path().join("ringrift.toml"),
            format!("[auth]\ntoken = \"{token}\"\n{extra}"),
        )
        .expect("ringrift.toml");
        home
    }

    /// Writes `profiles/<name>.toml` listing `daemons` (a profile of this home only).
    pub fn write_profile(&self, name: &str, daemons: &[&str]) {
        let dir = self.path().join("profiles");
        std::fs::create_dir_all(&dir).expect("profiles dir");
        let list: Vec<String> = daemons.iter().map(|d| format!("{d:?}")).collect();
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "description = \"test profile {name}\"\ndaemons = [{}]\n",
                list.join(", ")
            ),
        )
        .expect("profile");
    }

    /// The launcher on profile `name` for config hex8_2p (control on port 0), once it
    /// and its event router are up; returns it with the router's address.
    pub fn launch_profile(&self, name: &str) -> (Proc, String) {
        let mut l = self.spawn(
            "ringrift-launcher",
            &[
                "--profile",
                name,
                "--configs",
                "hex8_2p",
                "--control",
                "127.0.0.1:0",
            ],
        );
        self.wait_addr("launcher", &mut l);
        let router = self.wait_addr("event_router", &mut l);
        (l, router)
    }

    /// Waits for the daemon to write `run/<name>.addr`. The deadline is generous (60 s):
    /// under the whole suite's load on 2 cores a launcher restarted after a kill -9 once
    /// took more than 20 s to bring its p2p_backend up; a timeout shows the log.
    pub fn wait_addr(&self, name: &str, proc_: &mut Proc) -> String {
        let path = self.path().join("run").join(format!("{name}.addr"));
        let limit = Duration::from_secs(60);
        let addr = poll_until(limit, || {
            if let Some(st) = proc_.try_exit() {
                panic!(
                    "{} exited early with {st}; log: {}",
                    proc_.name,
                    self.log(&proc_.name)
                );
            }
            std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        });
        addr.unwrap_or_else(|| {
            panic!(
                "timed out after {limit:?} waiting for run/{name}.addr; log of {}: {}",
                proc_.name,
                self.log(&proc_.name)
            )
        })
    }

    /// Starts the router on `listen` (e.g. `127.0.0.1:0`) and returns it with its address.
    pub fn start_router(&self, listen: &str, extra: &[&str]) -> (Proc, String) {
        let _ = std::fs::remove_file(self.path().join("run/event_router.addr"));
        let set = format!("event_router.listen={listen}");
        // Tests count events: keep the router's own heartbeat out of their way.
        let mut args = vec!["--set", set.as_str(), "--set", "heartbeat_interval_s=3600"];
        args.extend_from_slice(extra);
        let mut p = self.spawn("ringrift-event-router", &args);
        let addr = self.wait_addr("event_router", &mut p);
        (p, addr)
    }

    pub fn log(&self, binary: &str) -> String {
        std::fs::read_to_string(self.path().join("test-logs").join(format!("{binary}.log")))
            .unwrap_or_default()
    }
}

/// Whether a test may use an outside tool: `present` as probed by the caller. Without the
/// tool a test skips visibly, except under `CI=true`, where a missing tool fails the test
/// (a suite that skips its checks must not pass by accident; `scripts/test` installs them).
pub fn require_tool(tool: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    assert!(
        !ci,
        "{tool} is required under CI=true but is not installed (scripts/test installs it)"
    );
    eprintln!("SKIP: {tool} not installed (scripts/test installs it; under CI=true this fails)");
    false
}

/// Whether `program args...` runs and exits 0.
pub fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
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
