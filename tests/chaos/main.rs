//! The chaos suite (issue 28): 8 publishers (test daemons on handler-base, each in its
//! own home, publishing through its outbox) send a fixed number of events while a chaos
//! loop kill -9s, at random, the router, the subscribers and pipeline daemons under the
//! launcher (and the publishers, which the test restarts), rotates the token once (the
//! router takes the new one first; everything else keeps the old one for 30 s, then
//! restarts with the new one) and stalls one handler past its ack_wait. At the end every
//! event accepted by an outbox has reached every durable consumer that subscribes to it,
//! no process handled one event twice (handler-base dedups), nothing is in the DLQ, no
//! daemon is FAILED without crashing more than max_restarts, and the launcher's fds,
//! zombies and temp files are where they were.
//!
//! The 60 s versions run in the suite's chaos stage (`scripts/test`); `scripts/chaos` runs the full size (100,000
//! events, 5 min) through the ignored `full_*` tests, sized by `RINGRIFT_CHAOS_EVENTS`
//! and `RINGRIFT_CHAOS_SECS` (and `RINGRIFT_CHAOS_SEED` to repeat a run's kill order).

use handler_base::status_body::{DaemonState, LauncherDaemon};
use ringrift_proto::wire;
use ringrift_system_tests::{Home, Nats, Proc, bin, fd_count, poll_until};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PUBLISHERS: usize = 8;
/// Durable consumers of EXTERNAL (test daemons under the launcher, node-scoped by name);
/// the last one stalls one handling past its ack_wait.
const SUBSCRIBERS: [&str; 3] = ["sub_a", "sub_b", "sub_stall"];
const STALLER: &str = "sub_stall";
/// The stalling subscriber's ack_wait, and how long its one stalled handling takes.
const STALL_ACK_WAIT_S: f64 = 4.0;
const STALL_S: f64 = 12.0;
/// Real pipeline daemons killed with the rest (they subscribe to no EXTERNAL event).
const PIPELINE: [&str; 2] = ["data_pipeline", "auto_export"];
/// How long the old token stays in use after the router has the new one.
const OLD_TOKEN_S: u64 = 30;
/// Restarts allowed per daemon: the chaos kills a daemon far more often than the
/// default 5; the launcher's counter resets after `RESET_AFTER_S` ready.
const MAX_RESTARTS: u32 = 1000;
const RESET_AFTER_S: f64 = 2.0;
const OLD_TOKEN: &str = "chaos-token-one";
const NEW_TOKEN: &str = "chaos-token-two";

/// Size of one run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub events: u64,
    pub secs: u64,
    pub jetstream: bool,
    pub seed: u64,
}

impl Params {
    /// `events` and `secs` unless `RINGRIFT_CHAOS_EVENTS` / `_SECS` / `_SEED` say otherwise.
    fn from_env(events: u64, secs: u64, jetstream: bool) -> Params {
        let env = |k: &str| {
            std::env::var(k).ok().map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{k} = {v:?}: not a whole number"))
            })
        };
        let seed = env("RINGRIFT_CHAOS_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
        let p = Params {
            events: env("RINGRIFT_CHAOS_EVENTS").unwrap_or(events),
            secs: env("RINGRIFT_CHAOS_SECS").unwrap_or(secs),
            jetstream,
            seed,
        };
        assert!(
            p.events >= PUBLISHERS as u64 && p.secs >= 20,
            "chaos run too small: {p:?} (at least {PUBLISHERS} events and 20 s)"
        );
        p
    }
}

/// xorshift64*: the kill order, repeatable from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

#[test]
fn chaos_sqlite_60s() {
    run(Params::from_env(4_000, 60, false));
}

#[test]
fn chaos_jetstream_60s() {
    let _heavy = ringrift_system_tests::heavy();
    run(Params::from_env(4_000, 60, true));
}

/// The full run of `scripts/chaos` (SQLite backend).
#[test]
#[ignore = "minutes long: scripts/chaos runs it"]
fn full_chaos_sqlite() {
    run(Params::from_env(100_000, 300, false));
}

/// The full run of `scripts/chaos` (3-node JetStream cluster).
#[test]
#[ignore = "minutes long: scripts/chaos runs it"]
fn full_chaos_jetstream() {
    run(Params::from_env(100_000, 300, true));
}

/// One publisher: a test daemon in its own home (its own outbox), supervised by the test.
struct Publisher {
    home: Home,
    instance: String,
    proc_: Option<Proc>,
    starts: u32,
}

impl Publisher {
    fn config(&self, token: &str, per_cycle: u64, limit: u64) {
        std::fs::write(
            self.home.path().join("chaos.toml"),
            format!(
                "[auth]\ntoken = \"{token}\"\n[test_daemon]\ninstance = \"{}\"\ncycle_interval_s = 0.25\npublish_per_cycle = {per_cycle}\ntick_limit = {limit}\n",
                self.instance
            ),
        )
        .expect("publisher config");
    }

    fn start(&mut self, router: &str) {
        let cfg = self.home.path().join("chaos.toml");
        self.proc_ = Some(self.home.spawn(
            "ringrift-test-daemon",
            &[
                "--router",
                router,
                "--config",
                cfg.to_str().expect("utf-8 path"),
            ],
        ));
        self.starts += 1;
    }

    /// Ticks accepted into the outbox so far.
    fn ticks(&self) -> u64 {
        std::fs::read_to_string(
            self.home
                .path()
                .join(format!("run/{}.ticks", self.instance)),
        )
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Events still in the outbox (`None` while it cannot be read).
    fn outbox_len(&self) -> Option<u64> {
        let db = self.home.path().join("run/outbox/test_daemon.db");
        let c =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        c.busy_timeout(Duration::from_secs(2)).ok()?;
        c.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .ok()
            .map(|n| n.max(0) as u64)
    }
}

/// The test daemons' record, read incrementally (it grows to millions of lines).
struct Records {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// subscriber -> event id -> first handling (unix ms) and publish time.
    first: HashMap<String, HashMap<String, (i64, i64)>>,
    /// (subscriber, pid, event id) handled more than once in one process.
    twice: Vec<String>,
    seen_in_pid: HashSet<(String, u32, String)>,
    stalls: Vec<String>,
}

impl Records {
    fn new(path: PathBuf) -> Records {
        Records {
            path,
            offset: 0,
            partial: String::new(),
            first: HashMap::new(),
            twice: Vec::new(),
            seen_in_pid: HashSet::new(),
            stalls: Vec::new(),
        }
    }

    fn refresh(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(end) = self.partial.rfind('\n') else {
            return;
        };
        let complete: String = self.partial.drain(..=end).collect();
        for line in complete.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match (f.first().copied(), f.len()) {
                (Some("handle"), 6) => {
                    let (sub, id) = (f[1].to_owned(), f[4].to_owned());
                    let pid: u32 = f[2].parse().unwrap_or(0);
                    let at: i64 = f[3].parse().unwrap_or(0);
                    let time: i64 = f[5].parse().unwrap_or(0);
                    if !self.seen_in_pid.insert((sub.clone(), pid, id.clone())) {
                        self.twice.push(line.to_owned());
                    }
                    self.first
                        .entry(sub)
                        .or_default()
                        .entry(id)
                        .or_insert((at, time));
                }
                // A stall begun (the process may be killed before it ends).
                (Some("stall"), _) => self.stalls.push(line.to_owned()),
                _ => {}
            }
        }
    }

    fn missing(&self, sub: &str, ids: &[String]) -> usize {
        let got = self.first.get(sub);
        ids.iter()
            .filter(|id| !got.is_some_and(|g| g.contains_key(*id)))
            .count()
    }
}

/// Pids of the launcher's children, by registry name (read from their command lines).
fn children(launcher: u32) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 2 || f[1] != launcher.to_string() || f[0] == "Z" {
            continue;
        }
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&str> = cmd.split('\0').collect();
        let name = if let Some(c) = args.iter().find(|a| a.ends_with(".chaos.toml")) {
            Path::new(c)
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".chaos.toml"))
                .unwrap_or("?")
                .to_owned()
        } else {
            Path::new(args[0])
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("ringrift-"))
                .unwrap_or("?")
                .replace('-', "_")
        };
        out.insert(name, pid);
    }
    out
}

/// Zombies among the children of `parents`.
fn zombies(parents: &[u32]) -> usize {
    let parents: HashSet<String> = parents.iter().map(|p| p.to_string()).collect();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|stat| {
                    let f: Vec<&str> = stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect();
                    f.len() > 1 && f[0] == "Z" && parents.contains(f[1])
                })
                .count()
        })
        .unwrap_or(0)
}

/// Files under `dir` that look like temp files left behind (the test daemon's own
/// count files excepted) and notify sockets of the launcher.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut budget = 100_000usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return out;
            }
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
                continue;
            }
            let n = e.file_name().to_string_lossy().into_owned();
            let ours = n.ends_with(".ticks.tmp") || n.ends_with(".burst.tmp");
            if !ours && (n.contains(".tmp") || n.contains(".notify") || n.starts_with(".tmp")) {
                out.push(p);
            }
        }
    }
    out
}

/// `--status --json` of the running launcher, by daemon name (`None` while it does not
/// answer, e.g. while it holds the old token).
fn status(home: &Home) -> Option<BTreeMap<String, LauncherDaemon>> {
    let s = ringrift_system_tests::launcher_status(home)?;
    Some(s.daemons.into_iter().map(|d| (d.name.clone(), d)).collect())
}

fn all_ready(home: &Home, names: &[String]) -> Option<BTreeMap<String, LauncherDaemon>> {
    let s = status(home)?;
    names
        .iter()
        .all(|n| s.get(n).is_some_and(|d| d.state == DaemonState::Ready))
        .then_some(s)
}

fn registry(home: &Home) -> String {
    let mut reg = format!(
        "[[daemon]]\nname = \"event_router\"\ncategory = \"event\"\nimplemented = true\nmax_restarts = {MAX_RESTARTS}\n\n"
    );
    for p in PIPELINE {
        reg.push_str(&format!(
            "[[daemon]]\nname = \"{p}\"\ncategory = \"pipeline\"\nimplemented = true\nmax_restarts = {MAX_RESTARTS}\n\n"
        ));
    }
    let links = home.path().join("bin");
    std::fs::create_dir_all(&links).expect("bin dir");
    for s in SUBSCRIBERS {
        // Run through a link of its own, the test daemon is `test_daemon_<s>`: its own
        // consumer, outbox and lifecycle section.
        let link = links.join(format!("ringrift-test-daemon-{}", s.replace('_', "-")));
        std::os::unix::fs::symlink(bin("ringrift-test-daemon"), &link).expect("link");
        let cfg = home.path().join(format!("{s}.chaos.toml"));
        let (stall, ack_wait) = if s == STALLER {
            (
                format!("stall_s = {STALL_S}\n"),
                format!("ack_wait_s = {STALL_ACK_WAIT_S}\n"),
            )
        } else {
            (String::new(), String::new())
        };
        std::fs::write(
            &cfg,
            format!(
                "[test_daemon]\ninstance = \"{s}\"\nsubscribe = [\"EXTERNAL\"]\nrecord_time = true\n{stall}[test_daemon_{s}]\ncycle_interval_s = 0.5\n{ack_wait}"
            ),
        )
        .expect("subscriber config");
        reg.push_str(&format!(
            "[[daemon]]\nname = \"{s}\"\ncategory = \"test\"\nbinary = {:?}\nimplemented = true\nmax_restarts = {MAX_RESTARTS}\nargs = [\"--config\", {:?}]\n\n",
            link.display().to_string(),
            cfg.display().to_string()
        ));
    }
    reg
}

fn start_launcher(home: &Home, names: &[String]) -> Proc {
    let reg = home.path().join("registry.toml");
    let _ = std::fs::remove_file(home.path().join("run/launcher.addr"));
    let reset = format!("launcher.reset_after_s={RESET_AFTER_S}");
    let mut args = vec![
        "--registry",
        reg.to_str().expect("utf-8 path"),
        "--control",
        "127.0.0.1:0",
        "--set",
        "launcher.backoff_base_s=0.2",
        "--set",
        "launcher.backoff_max_s=2",
        "--set",
        reset.as_str(),
        "--set",
        "launcher.stop_grace_s=5",
    ];
    for n in names {
        args.push("--daemon");
        args.push(n);
    }
    let mut l = home.spawn("ringrift-launcher", &args);
    home.wait_addr("launcher", &mut l);
    l
}

fn wait_ready(home: &Home, names: &[String], what: &str) -> BTreeMap<String, LauncherDaemon> {
    poll_until(Duration::from_secs(120), || all_ready(home, names)).unwrap_or_else(|| {
        panic!(
            "{what}: not all of {names:?} READY within 120 s: {:?}",
            status(home)
        )
    })
}

/// The home's settings: `token`, and the router on `port` (fixed: the publishers keep
/// its address across launcher restarts).
fn write_home_toml(home: &Home, token: &str, jetstream: bool, port: u16) {
    let node = if jetstream {
        "node = \"js-node\"\n"
    } else {
        ""
    };
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!(
            "{node}heartbeat_interval_s = 1\n[event_router]\nlisten = \"127.0.0.1:{port}\"\n[auth]\ntoken = \"{token}\"\n"
        ),
    )
    .expect("ringrift.toml");
}

async fn dead_letters(addr: &str, token: &str) -> Result<Vec<wire::DeadLetter>, String> {
    let bearer =
        handler_base::router_client::Bearer::new(Some(token)).map_err(|e| e.to_string())?;
    let mut c = handler_base::router_client::connect_with(addr, bearer)
        .await
        .map_err(|e| e.to_string())?;
    let r = c
        .list_dead_letters(wire::ListDeadLettersRequest::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.into_inner().letters)
}

/// One chaos run; panics naming what failed, prints the numbers either way.
pub(crate) fn run(p: Params) {
    eprintln!("chaos: {p:?}");
    let nats = if p.jetstream {
        match Nats::start(3) {
            Some(n) => Some(n),
            None => return,
        }
    } else {
        None
    };
    let home = Home::new();
    let port = ringrift_system_tests::free_port();
    write_home_toml(&home, OLD_TOKEN, p.jetstream, port);
    if let Some(n) = &nats {
        std::fs::write(
            home.path().join("cluster.toml"),
            n.cluster_toml("js-node", 0),
        )
        .expect("cluster.toml");
    }
    std::fs::write(home.path().join("registry.toml"), registry(&home)).expect("registry");
    let mut names: Vec<String> = vec!["event_router".into()];
    names.extend(PIPELINE.iter().map(|s| (*s).to_owned()));
    names.extend(SUBSCRIBERS.iter().map(|s| (*s).to_owned()));

    let mut launcher = start_launcher(&home, &names);
    let router = home.wait_addr("event_router", &mut launcher);
    let first = wait_ready(&home, &names, "start");
    let fds_before = fd_count(launcher.pid() as u32);
    let temp_before = temp_files(home.path()).len();
    eprintln!(
        "chaos: all READY; launcher fds {fds_before}, temp files {temp_before}, router {router}"
    );
    let _ = first;

    // Publishers: an even share each, spread over the chaos window (done by ~80 % of it).
    let per_pub = p.events / PUBLISHERS as u64;
    let total = per_pub * PUBLISHERS as u64;
    let cycles = (p.secs as f64 * 0.8 / 0.25).max(1.0);
    let per_cycle = ((per_pub as f64 / cycles).ceil() as u64).max(1);
    let mut pubs: Vec<Publisher> = (0..PUBLISHERS)
        .map(|i| Publisher {
            home: Home::new(),
            instance: format!("p{i}"),
            proc_: None,
            starts: 0,
        })
        .collect();
    for pb in &mut pubs {
        pb.config(OLD_TOKEN, per_cycle, per_pub);
        pb.start(&router);
    }
    let ids: Vec<String> = pubs
        .iter()
        .flat_map(|pb| (0..per_pub).map(move |n| format!("tick:{}:{n}", pb.instance)))
        .collect();

    // The chaos loop.
    let mut rng = Rng(p.seed);
    let t0 = Instant::now();
    let window = Duration::from_secs(p.secs);
    let rotate_at = Duration::from_secs(p.secs / 6);
    let stall_at = Duration::from_secs(p.secs / 2);
    let kill_every = Duration::from_millis(if p.secs >= 120 { 2_500 } else { 2_000 });
    let mut next_kill = t0 + Duration::from_secs(3);
    let mut kills: BTreeMap<String, u32> = BTreeMap::new();
    let mut rotated: Option<Instant> = None;
    let mut token_everywhere: Option<Duration> = None;
    let mut stalled = false;
    let mut old_launchers = Vec::new();
    let mut steps = 0u64;
    while t0.elapsed() < window && steps < 1_000_000 {
        steps += 1;
        std::thread::sleep(Duration::from_millis(100));
        for pb in &mut pubs {
            if pb.proc_.as_mut().is_some_and(|c| c.try_exit().is_some()) {
                pb.start(&router);
            }
        }
        if !stalled && t0.elapsed() >= stall_at {
            std::fs::write(home.path().join(format!("run/{STALLER}.stall")), "").expect("stall");
            stalled = true;
        }
        if rotated.is_none() && t0.elapsed() >= rotate_at {
            // The router takes the new token first; everyone else holds the old one.
            write_home_toml(&home, NEW_TOKEN, p.jetstream, port);
            if let Some(pid) = children(launcher.pid() as u32).get("event_router") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                *kills.entry("event_router (rotation)".into()).or_default() += 1;
            }
            rotated = Some(Instant::now());
            eprintln!(
                "chaos: {:?} router restarted with the new token",
                t0.elapsed()
            );
        }
        if let Some(r) = rotated
            && token_everywhere.is_none()
            && r.elapsed() >= Duration::from_secs(OLD_TOKEN_S)
        {
            // The new token everywhere: the launcher restarts (and its daemons with it),
            // the publishers restart with the new token in their config.
            let st = launcher.term(Duration::from_secs(60));
            eprintln!("chaos: {:?} old launcher exited {st}", t0.elapsed());
            old_launchers.push(launcher.pid() as u32);
            launcher = start_launcher(&home, &names);
            for pb in &mut pubs {
                pb.config(NEW_TOKEN, per_cycle, per_pub);
                if let Some(mut c) = pb.proc_.take() {
                    c.kill9();
                }
                pb.start(&router);
            }
            token_everywhere = Some(t0.elapsed());
            eprintln!("chaos: {:?} the new token everywhere", t0.elapsed());
            next_kill = Instant::now() + kill_every;
        }
        if Instant::now() < next_kill {
            continue;
        }
        next_kill = Instant::now() + kill_every;
        // Targets: the launcher's children, and the publishers (restarted by the test).
        let kids = children(launcher.pid() as u32);
        let n = kids.len() + PUBLISHERS;
        let pick = rng.below(n.max(1));
        if pick < kids.len() {
            let (name, pid) = kids.iter().nth(pick).expect("in range");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            *kills.entry(name.clone()).or_default() += 1;
        } else {
            let pb = &mut pubs[pick - kids.len()];
            if let Some(mut c) = pb.proc_.take() {
                c.kill9();
                *kills.entry("publisher".into()).or_default() += 1;
            }
            pb.start(&router);
        }
    }
    let chaos_end = t0.elapsed();
    eprintln!("chaos: loop over after {chaos_end:?}; kills {kills:?}");

    // Quiesce: the publishers finish, their outboxes drain, every consumer catches up.
    let drain_limit = Duration::from_secs(120 + p.secs);
    let done = poll_until(drain_limit, || {
        for pb in &mut pubs {
            if pb.proc_.as_mut().is_some_and(|c| c.try_exit().is_some()) {
                pb.start(&router);
            }
        }
        pubs.iter()
            .all(|pb| pb.ticks() >= per_pub && pb.outbox_len() == Some(0))
            .then_some(())
    });
    let accepted: u64 = pubs.iter().map(|pb| pb.ticks().min(per_pub)).sum();
    let publishers = format!(
        "ticks {:?}, outboxes {:?}",
        pubs.iter().map(Publisher::ticks).collect::<Vec<_>>(),
        pubs.iter().map(Publisher::outbox_len).collect::<Vec<_>>()
    );
    let mut rec = Records::new(home.path().join("test_daemon.log"));
    // The consumers work through the backlog at their own pace (each handles one event at
    // a time, ~100/s here under load): wait while they make progress, and give up after
    // STALL_LIMIT without any (or at the cap).
    const STALL_LIMIT: Duration = Duration::from_secs(120);
    let cap = Duration::from_secs(3_600);
    let (mut handled, mut progress_at) = (0usize, Instant::now());
    let caught_up = poll_until(if done.is_some() { cap } else { Duration::ZERO }, || {
        std::thread::sleep(Duration::from_millis(500));
        rec.refresh();
        let now: usize = rec.first.values().map(HashMap::len).sum();
        if now > handled {
            (handled, progress_at) = (now, Instant::now());
        }
        let all = SUBSCRIBERS.iter().all(|s| rec.missing(s, &ids) == 0);
        (all || progress_at.elapsed() > STALL_LIMIT).then_some(all)
    })
    .filter(|all| *all);
    let drained_at = t0.elapsed();
    let missing: BTreeMap<&str, usize> = SUBSCRIBERS
        .iter()
        .map(|s| (*s, rec.missing(s, &ids)))
        .collect();

    // The numbers.
    let mut delays: Vec<i64> = rec
        .first
        .values()
        .flat_map(|m| m.values().map(|(at, time)| at - time))
        .collect();
    delays.sort_unstable();
    let pct = |q: f64| {
        delays
            .get(((delays.len() as f64 * q) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let final_status = wait_ready(&home, &names, "end");
    let restarts: BTreeMap<String, u64> = final_status
        .iter()
        .map(|(n, d)| (n.clone(), u64::from(d.restarts)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let letters = rt.block_on(dead_letters(&router, NEW_TOKEN));
    let mut parents = vec![launcher.pid() as u32, std::process::id()];
    parents.extend(&old_launchers);
    let zombies_after = zombies(&parents);
    // Let the restarted daemons settle before counting the launcher's fds.
    let fds_after = fd_count(launcher.pid() as u32);
    let mut temp_after = temp_files(home.path());
    for pb in &pubs {
        temp_after.extend(temp_files(pb.home.path()));
    }
    let failed: Vec<String> = final_status
        .iter()
        .filter(|(_, d)| d.state == DaemonState::Failed)
        .filter(|(_, d)| d.restarts < MAX_RESTARTS)
        .map(|(n, d)| format!("{n}: {d:?}"))
        .collect();
    let publisher_starts: u32 = pubs.iter().map(|pb| pb.starts).sum();
    // Restarts by the launchers (their counters reset after RESET_AFTER_S ready).
    let launcher_log = home.log("ringrift-launcher");
    let restarts_total = launcher_log
        .lines()
        .filter(|l| l.contains("restarting after backoff"))
        .count();
    eprintln!(
        "CHAOS REPORT backend={} seed={} events={accepted}/{total} subscribers={} chaos={:.0}s \
         drained_at={:.0}s kills={:?} (total {}) restarts={restarts_total} counters_at_end={restarts:?} publisher_starts={publisher_starts} \
         rotation: router at {:.0}s, new token everywhere at {:.0}s \
         delay_ms p50={} p99={} max={} stalls={:?} dlq={} twice_in_one_process={} \
         zombies={zombies_after} launcher_fds before={fds_before} after={fds_after} \
         temp_files before={temp_before} after={} publishers: {publishers}",
        if p.jetstream { "jetstream" } else { "sqlite" },
        p.seed,
        SUBSCRIBERS.len(),
        chaos_end.as_secs_f64(),
        drained_at.as_secs_f64(),
        kills,
        kills.values().sum::<u32>(),
        rotate_at.as_secs_f64(),
        token_everywhere.map_or(-1.0, |d| d.as_secs_f64()),
        pct(0.5),
        pct(0.99),
        delays.last().copied().unwrap_or(0),
        rec.stalls,
        letters.as_ref().map_or(-1, |l| l.len() as i64),
        rec.twice.len(),
        temp_after.len(),
    );

    let per_sub: BTreeMap<&String, i64> = rec
        .first
        .iter()
        .map(|(sub, m)| (sub, m.values().map(|(at, t)| at - t).max().unwrap_or(0)))
        .collect();
    let mut dlq_summary: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in letters.as_ref().map(Vec::as_slice).unwrap_or_default() {
        let reason: String = l.reason.chars().take(60).collect();
        *dlq_summary.entry((l.consumer.clone(), reason)).or_default() += 1;
    }
    eprintln!(
        "chaos: max delay per subscriber (ms) {per_sub:?}; DLQ by consumer and reason {dlq_summary:?}"
    );
    if std::env::var_os("RINGRIFT_CHAOS_KEEP").is_some() {
        eprintln!("chaos: keeping the home {}", home.path().display());
        std::mem::forget(home);
    }

    // The verdict.
    assert!(
        done.is_some(),
        "publishers not done within {drain_limit:?}: {publishers}"
    );
    assert!(
        caught_up.is_some(),
        "events accepted by an outbox never reached a consumer: missing per subscriber {missing:?}"
    );
    let letters = letters.unwrap_or_else(|e| panic!("ListDeadLetters: {e}"));
    assert!(
        letters.is_empty(),
        "healthy handlers' events in the DLQ: {letters:?}"
    );
    assert!(
        rec.twice.is_empty(),
        "handled twice in one process (dedup missed): {:?}",
        &rec.twice[..rec.twice.len().min(10)]
    );
    assert!(
        !rec.stalls.is_empty(),
        "one handling stalled past ack_wait (begun; a kill may end it early)"
    );
    assert!(
        failed.is_empty(),
        "FAILED without crashing past max_restarts: {failed:?}"
    );
    assert_eq!(zombies_after, 0, "zombies left");
    assert!(
        fds_after <= fds_before + 4,
        "launcher fds grew: {fds_before} -> {fds_after}"
    );
    assert!(
        temp_after.len() <= temp_before,
        "temp files left: {temp_after:?}"
    );
    assert!(
        kills.values().sum::<u32>() as u64 >= p.secs / 4,
        "the chaos loop killed too little: {kills:?}"
    );
    drop(nats);
}
