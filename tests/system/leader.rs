//! Leadership on an etcd lease: a 3-member etcd cluster and three nodes on loopback (each
//! its own home, router, p2p_backend and queue_populator; every node a coordinator, so
//! all three campaign; TTL 2 s). The nodes share one work queue (each home's
//! `data/work_queue.db` is a link to one file, standing in for the shared queue of a
//! cluster). The leader populates the queue with its fencing token; killed with SIGKILL,
//! another node holds the lease within 2 TTLs and populates with a higher token only once
//! the old leader's items are worked off; the old node, restarted, does not act, its old
//! token is refused by the queue, and no work item ran twice.
//!
//! Skips without `etcd` (Debian `etcd-server`; scripts/test installs it), fails under CI.

use ringrift_system_tests::{
    Home, Proc, command_works, free_port, http_get_with, require_tool, wait_for_async,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const TTL_S: u64 = 2;

/// Three etcd members on loopback, each with its own data dir under `root`.
fn start_etcd(root: &Path) -> (Vec<Proc>, Vec<String>) {
    let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let initial: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Vec::new();
    for i in 0..3 {
        let log = std::fs::File::create(root.join(format!("etcd{i}.log"))).unwrap();
        let child = Command::new("etcd")
            .args([
                &format!("--name=e{i}"),
                &format!("--data-dir={}", root.join(format!("etcd{i}")).display()),
                &format!("--listen-client-urls=http://127.0.0.1:{}", clients[i]),
                &format!("--advertise-client-urls=http://127.0.0.1:{}", clients[i]),
                &format!("--listen-peer-urls=http://127.0.0.1:{}", peers[i]),
                &format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                    peers[i]
                ),
                &format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new",
                "--initial-cluster-token=ringrift-test",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        procs.push(Proc {
            name: format!("etcd{i}"),
            child,
        });
    }
    let endpoints = clients
        .iter()
        .map(|c| format!("http://127.0.0.1:{c}"))
        .collect();
    (procs, endpoints)
}

fn cluster_toml(ports: &[u16], endpoints: &[String]) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut s = format!(
        "[membership]\nheartbeat_interval_s = 0.2\nsuspect_after_s = 1.5\ndead_after_s = 3\n\n[leader]\nmode = \"etcd\"\nendpoints = [{}]\nttl_s = {TTL_S}\n",
        eps.join(", ")
    );
    for (name, port) in NODES.iter().zip(ports) {
        s += &format!(
            "\n[[node]]\nname = \"{name}\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = {port} }}\n"
        );
    }
    s
}

struct Node {
    name: &'static str,
    home: Home,
    procs: Vec<Proc>,
    p2p_addr: String,
}

impl Node {
    fn new(name: &'static str, cluster: &str, queue: &Path) -> Node {
        let home = Home::new();
        std::fs::write(
            home.path().join("ringrift.toml"),
            format!(
                "node = \"{name}\"\nheartbeat_interval_s = 0.5\n[queue_populator]\ncycle_interval_s = 0.3\nlow_watermark = 4\nhigh_watermark = 10\n"
            ),
        )
        .unwrap();
        std::fs::write(home.path().join("cluster.toml"), cluster).unwrap();
        std::fs::create_dir_all(home.path().join("data")).unwrap();
        std::os::unix::fs::symlink(queue, home.path().join("data/work_queue.db")).unwrap();
        Node {
            name,
            home,
            procs: Vec::new(),
            p2p_addr: String::new(),
        }
    }

    fn start(&mut self) {
        let (r, _) = self.home.start_router("127.0.0.1:0", &[]);
        self.procs.push(r);
        let _ = std::fs::remove_file(self.home.path().join("run/p2p_backend.addr"));
        let mut p = self.home.spawn("ringrift-p2p-backend", &[]);
        self.p2p_addr = self.home.wait_addr("p2p_backend", &mut p);
        self.procs.push(p);
        self.procs
            .push(self.home.spawn("ringrift-queue-populator", &[]));
    }

    fn kill9(&mut self) {
        for mut p in self.procs.drain(..) {
            p.kill9();
        }
    }

    /// The leader this node's p2p_backend reports ("" for none; None if it does not answer).
    async fn leader(&self) -> Option<String> {
        let (code, body) = http_get_with(&self.p2p_addr, "/status", None).await?;
        if code != 200 {
            return None;
        }
        let info: ringrift_cluster::view::NodeInfo = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/status is not a NodeInfo: {e}: {body}"));
        Some(info.leader)
    }
}

/// (item_id, fence_token, status, attempts) of every row of the shared queue.
fn rows(queue: &Path) -> Vec<(String, Option<i64>, String, i64)> {
    let c = rusqlite::Connection::open(queue).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let Ok(mut st) = c.prepare("SELECT item_id, fence_token, status, attempts FROM work_items")
    else {
        return Vec::new(); // not created yet
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The test as the worker: claims the oldest pending item and completes it, counting the
/// run. `None` when nothing is pending.
fn run_one(queue: &Path, runs: &mut BTreeMap<String, u32>) -> Option<String> {
    let c = rusqlite::Connection::open(queue).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let id: Option<String> = c
        .query_row(
            "UPDATE work_items SET status = 'completed', attempts = attempts + 1
             WHERE item_id = (SELECT item_id FROM work_items WHERE status = 'pending'
                              ORDER BY created_at LIMIT 1)
             RETURNING item_id",
            [],
            |r| r.get(0),
        )
        .ok();
    if let Some(id) = &id {
        *runs.entry(id.clone()).or_default() += 1;
    }
    id
}

fn fence(queue: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(queue).unwrap();
    c.query_row(
        "SELECT token, refused FROM fence WHERE name = 'leader'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

async fn agreed_leader(nodes: &[&Node], limit: Duration) -> String {
    wait_for_async("all nodes to agree on one leader", limit, || async {
        let mut seen = BTreeSet::new();
        for n in nodes {
            seen.insert(n.leader().await?);
        }
        (seen.len() == 1)
            .then(|| seen.into_iter().next())
            .flatten()
            .filter(|l| !l.is_empty())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_killed_is_replaced_within_two_ttls_and_its_token_is_refused() {
    if !require_tool("etcd", command_works("etcd", &["--version"])) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (_etcd, endpoints) = start_etcd(root.path());
    for e in &endpoints {
        let addr = e.trim_start_matches("http://").to_owned();
        wait_for_async(
            &format!("etcd {e} healthy"),
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move {
                    let (code, body) = http_get_with(&addr, "/health", None).await?;
                    (code == 200 && body.contains("true")).then_some(())
                }
            },
        )
        .await;
    }

    let queue: PathBuf = root.path().join("work_queue.db");
    std::fs::File::create(&queue).unwrap();
    let ports: Vec<u16> = NODES.iter().map(|_| free_port()).collect();
    let cluster = cluster_toml(&ports, &endpoints);
    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|n| Node::new(n, &cluster, &queue))
        .collect();
    for n in &mut nodes {
        n.start();
    }

    // The first leader fills the queue (6 selfplay + 1 tournament) with its token.
    let first = agreed_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30)).await;
    let items = wait_for_async("the leader to populate", Duration::from_secs(30), || {
        let q = queue.clone();
        async move {
            let r = rows(&q);
            (r.len() >= 7).then_some(r)
        }
    })
    .await;
    let t1 = items[0].1.expect("a fenced item");
    assert!(
        items.iter().all(|r| r.1 == Some(t1)),
        "one leader, one token: {items:?}"
    );

    // Kill -9 the leader node; another holds the lease within 2 TTLs.
    let li = NODES.iter().position(|n| *n == first).unwrap();
    let killed = Instant::now();
    nodes[li].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.name != first).collect();
    let second = wait_for_async("a new leader", Duration::from_secs(TTL_S * 5), || async {
        let l = survivors[0].leader().await?;
        (!l.is_empty() && l != first).then_some(l)
    })
    .await;
    let failover = killed.elapsed();
    eprintln!(
        "failover {first} -> {second}: {:.2} s (TTL {TTL_S} s)",
        failover.as_secs_f64()
    );
    assert!(
        failover <= Duration::from_secs(2 * TTL_S),
        "took {failover:?}, more than 2 TTLs"
    );

    // The new leader does not requeue what the old one queued: the 7 open items are above
    // the low watermark. Work them off (counting runs); it refills with a higher token.
    let mut runs = BTreeMap::new();
    let t2 = wait_for_async(
        "the new leader to populate",
        Duration::from_secs(30),
        || {
            while run_one(&queue, &mut runs).is_some() {}
            let q = queue.clone();
            async move { rows(&q).iter().filter_map(|r| r.1).find(|t| *t != t1) }
        },
    )
    .await;
    assert!(t2 > t1, "the new token {t2} must be higher than {t1}");

    // The old node comes back: it sees the new leader, and adds nothing.
    let before_restart: BTreeSet<String> = rows(&queue).into_iter().map(|r| r.0).collect();
    nodes[li].start();
    let back = &nodes[li];
    wait_for_async(
        "the restarted node to see the leader",
        Duration::from_secs(30),
        || async { (back.leader().await? == second).then_some(()) },
    )
    .await;
    // Keep working for a while (several populator cycles of every node) and refill.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        while run_one(&queue, &mut runs).is_some() {}
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rows(&queue);
    let new_tokens: BTreeSet<Option<i64>> = after
        .iter()
        .filter(|r| !before_restart.contains(&r.0))
        .map(|r| r.1)
        .collect();
    assert!(
        new_tokens.iter().all(|t| *t == Some(t2)),
        "only the current leader adds work after the restart: {new_tokens:?}"
    );

    // The old leader's token is refused by the queue (what a deposed leader that still
    // believed it led would meet), and the refusal is counted.
    let (seen, refused_before) = fence(&queue);
    assert_eq!(seen, t2);
    let q = ringrift_store::work_queue::SqliteWorkQueue::open(&queue).unwrap();
    use ringrift_store::work_queue::{NewWork, WorkKind, WorkQueue};
    let err = q
        .enqueue_fenced(
            &NewWork::new(WorkKind::Tournament, None, 1, serde_json::json!({})),
            u64::try_from(t1).unwrap(),
        )
        .expect_err("the old leader's token");
    assert!(
        matches!(err, ringrift_store::StoreError::Fenced { .. }),
        "{err}"
    );
    assert_eq!(fence(&queue).1, refused_before + 1);

    // No work item ran twice.
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "items run more than once: {twice:?}");
    assert!(
        after.iter().all(|r| r.3 <= 1),
        "an item was attempted twice: {after:?}"
    );
    assert!(runs.len() >= 7, "ran {} items", runs.len());
}
