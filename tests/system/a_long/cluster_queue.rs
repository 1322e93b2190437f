//! The shared work queue across nodes: a nats-server with JetStream and three nodes on
//! loopback (each its own home and launcher; cluster.toml says `[events] backend =
//! "jetstream"`). Only the coordinator n1 runs queue_populator (with its registry
//! dependency, a job_scheduler of its own); n2 and n3 run only job_scheduler. Selfplay
//! queued on n1 is claimed and run by the workers on n2 and n3 (their SELFPLAY_COMPLETED,
//! seen on the coordinator's router: the routers share the JetStream event stream), and the shared queue counts the items done.

use ringrift_nats::work_queue::{JetStreamWorkQueue, QueueOptions};
use ringrift_proto::wire::event::Payload;
use ringrift_store::work_queue::WorkQueue;
use ringrift_system_tests::{Home, Nats, Proc, free_port, router_log};
use std::time::Duration;

fn node_home(name: &str, cluster: &str, daemons: &[&str]) -> Home {
    let home = Home::new();
    std::fs::write(home.path().join("cluster.toml"), cluster).unwrap();
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!(
            "node = \"{name}\"\nheartbeat_interval_s = 0.5\n[event_router]\nlisten = \"127.0.0.1:0\"\n\
             [queue_populator]\ncycle_interval_s = 0.5\ngames_per_item = 4\nlow_watermark = 4\nhigh_watermark = 6\n\
             [job_scheduler]\ncycle_interval_s = 0.3\nslots = 1\nlease_s = 20\n"
        ),
    )
    .unwrap();
    home.write_profile("node", daemons);
    home
}

/// Nodes that published SELFPLAY_COMPLETED on the router at `addr`.
async fn selfplay_done_by(addr: &str) -> Vec<String> {
    router_log(addr)
        .await
        .into_iter()
        .filter(|e| matches!(e.payload, Some(Payload::SelfplayCompleted(_))))
        .map(|e| e.source)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfplay_queued_on_the_coordinator_runs_on_two_other_nodes() {
    let Some(nats) = Nats::start(1) else {
        return;
    };
    let url = nats.servers[0].clone();
    let mut cluster = format!(
        "[cluster]\nname = \"queue\"\n[leader]\nmode = \"static\"\n[events]\nbackend = \"jetstream\"\nservers = [\"{url}\"]\n"
    );
    for (name, role) in [
        ("n1", "coordinator"),
        ("n2", "selfplay"),
        ("n3", "selfplay"),
    ] {
        cluster += &format!(
            "\n[[node]]\nname = \"{name}\"\nroles = [\"{role}\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = {} }}\n",
            free_port()
        );
    }
    let homes = [
        node_home("n1", &cluster, &["event_router", "queue_populator"]),
        node_home("n2", &cluster, &["event_router", "job_scheduler"]),
        node_home("n3", &cluster, &["event_router", "job_scheduler"]),
    ];
    let running: Vec<(Proc, String)> = homes.iter().map(|h| h.launch_profile("node")).collect();
    // The routers share the JetStream event stream: the coordinator's router sees every
    // node's SELFPLAY_COMPLETED, named by its source.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let by = selfplay_done_by(&running[0].1).await;
        let on = |n: &str| by.iter().any(|s| s == &format!("job_scheduler@{n}"));
        if on("n2") && on("n3") {
            break;
        }
        if std::time::Instant::now() > deadline {
            let tail = |h: &Home| {
                let log = h.log("ringrift-launcher");
                log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
            };
            panic!(
                "no selfplay on both n2 and n3 within 120 s: {by:?}\n\
                 n2 launcher log (last lines, newest first):\n{}",
                tail(&homes[1])
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let q = JetStreamWorkQueue::open(&[url], "test", QueueOptions::default()).unwrap();
    let d = tokio::task::spawn_blocking(move || q.depth())
        .await
        .unwrap()
        .unwrap();
    assert!(d.completed >= 2, "{d:?}");
}
