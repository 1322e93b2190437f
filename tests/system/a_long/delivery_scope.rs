//! Delivery scope on one JetStream log (issue 27, point 2): three nats-servers in one
//! cluster and a router per node. On each node run the same daemon twice, once
//! node-scoped and once cluster-scoped, plus the shipped `unified_promotion` (a
//! cluster-scoped leader duty; the static leader is n0). The consumers get the names
//! handler-base gives them (`test_daemon@n<i>`, `test_daemon`, `unified_promotion`), none
//! from the test. Every event is handled once by each node-scoped copy and by exactly one
//! cluster-scoped copy; every evaluation is decided by the leader's unified_promotion, and
//! only the leader's router has a session of its consumer.
//!
//! Before scopes every copy read the consumer `<daemon>`: the six test daemons split the
//! events (each node-scoped copy missed about 5 in 6), and a follower's unified_promotion
//! acked and dropped the evaluations it pulled (about 2 in 3).

use ringrift_proto::wire::{self, EventType, event::Payload};
use ringrift_system_tests::{Home, Nats, Proc, router_log, wait_for_async};
use std::collections::BTreeMap;
use std::time::Duration;

const NODES: usize = 3;
const EVENTS: usize = 30;
const EVALUATIONS: usize = 6;

/// cluster.toml of node `i`: the three nodes (n0 the coordinator, so the static leader;
/// distinct peer ports, none of them served here) and the servers, its own first.
fn cluster_toml(nats: &Nats, i: usize) -> String {
    let n = nats.servers.len();
    let servers: Vec<String> = (0..n)
        .map(|k| format!("{:?}", nats.servers[(i + k) % n]))
        .collect();
    let mut s = format!(
        "[cluster]\nname = \"scope-test\"\n\n[leader]\nmode = \"static\"\n\n[events]\nbackend = \"jetstream\"\nservers = [{}]\n",
        servers.join(", ")
    );
    for k in 0..NODES {
        let role = if k == 0 { "coordinator" } else { "training" };
        s += &format!(
            "\n[[node]]\nname = \"n{k}\"\nroles = [\"{role}\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = {} }}\n",
            18770 + k
        );
    }
    s
}

/// A home of node `i` with its cluster.toml.
fn node_home(nats: &Nats, i: usize) -> Home {
    let home = Home::new();
    std::fs::write(home.path().join("cluster.toml"), cluster_toml(nats, i)).unwrap();
    std::fs::write(
        home.path().join("ringrift.toml"),
        format!("node = \"n{i}\"\nheartbeat_interval_s = 3600\n"),
    )
    .unwrap();
    home
}

/// The test daemon of node `i` in its own home, subscribed to EXTERNAL with `scope`.
fn test_daemon(nats: &Nats, i: usize, router: &str, scope: &str) -> (Home, Proc) {
    let home = node_home(nats, i);
    let cfg = home.path().join("test_daemon.toml");
    std::fs::write(
        &cfg,
        format!(
            "[test_daemon]\ninstance = \"{scope}-n{i}\"\nscope = \"{scope}\"\nsubscribe = [\"EXTERNAL\"]\ncycle_interval_s = 1\n"
        ),
    )
    .unwrap();
    let p = home.spawn(
        "ringrift-test-daemon",
        &["--router", router, "--config", cfg.to_str().unwrap()],
    );
    (home, p)
}

/// Handlings per event id in the test daemon's record of `home`.
fn handled(home: &Home) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(home.path().join("test_daemon.log")).unwrap_or_default();
    for l in text.lines().filter(|l| l.starts_with("handle ")) {
        if let Some(id) = l.split(' ').nth(4) {
            *out.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

async fn stats(addr: &str) -> Option<wire::StatsResponse> {
    let mut c = handler_base::router_client::connect(addr).await.ok()?;
    Some(c.stats(wire::StatsRequest {}).await.ok()?.into_inner())
}

fn evaluation(k: usize) -> wire::Event {
    // No results: the gate rejects it, and the decision is a PROMOTION_REJECTED.
    let e = wire::EvaluationCompleted {
        model_path: format!("/nowhere/gen{k:04}.rrm"),
        model_sha256: format!("{k:064x}"),
        run_id: format!("run-{k}"),
        ..Default::default()
    };
    wire::Event {
        id: format!("eval-{k}"),
        r#type: EventType::EvaluationCompleted as i32,
        config_key: "hex8_2p".into(),
        payload: Some(Payload::EvaluationCompleted(e)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_scoped_copies_each_get_every_event_and_a_cluster_scoped_one_gets_it_once() {
    let Some(nats) = Nats::start(3) else {
        return;
    };
    let mut homes = Vec::new();
    let mut routers = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..NODES {
        let home = node_home(&nats, i);
        let (r, addr) = home.start_router("127.0.0.1:0", &[]);
        routers.push(r);
        addrs.push(addr);
        homes.push(home);
    }
    let mut node_copies = Vec::new();
    let mut cluster_copies = Vec::new();
    let mut promotion = Vec::new();
    for i in 0..NODES {
        node_copies.push(test_daemon(&nats, i, &addrs[i], "node"));
        cluster_copies.push(test_daemon(&nats, i, &addrs[i], "cluster"));
        promotion.push(homes[i].spawn(
            "ringrift-unified-promotion",
            &[
                "--router",
                &addrs[i],
                "--set",
                "unified_promotion.cycle_interval_s=1",
            ],
        ));
    }

    // Every copy subscribed: the node consumers exist (a new one starts at the head), and
    // each router has a session of the cluster consumer.
    let mut want: Vec<String> = (0..NODES).map(|i| format!("test_daemon@n{i}")).collect();
    want.push("test_daemon".into());
    want.push("unified_promotion".into());
    want.sort();
    wait_for_async(
        "every test daemon subscribed on every router",
        Duration::from_secs(90),
        || async {
            let mut all = Vec::new();
            for a in &addrs {
                all.push(stats(a).await?);
            }
            let names: Vec<String> = all[0]
                .consumers
                .iter()
                .map(|c| c.name.clone())
                .filter(|n| want.contains(n))
                .collect();
            let sessions = all.iter().all(|s| {
                s.consumers
                    .iter()
                    .any(|c| c.name == "test_daemon" && c.connected)
            });
            (names == want && sessions).then_some(())
        },
    )
    .await;

    let mut clients = Vec::new();
    for a in &addrs {
        clients.push(handler_base::router_client::connect(a).await.unwrap());
    }
    for k in 0..EVENTS {
        let ev = wire::Event {
            id: format!("scope-{k}"),
            r#type: EventType::External as i32,
            payload: Some(Payload::Json(format!("{{\"k\": {k}}}"))),
            ..Default::default()
        };
        clients[k % NODES].publish(ev).await.unwrap();
    }
    for k in 0..EVALUATIONS {
        clients[(k + 1) % NODES]
            .publish(evaluation(k))
            .await
            .unwrap();
    }
    let ids: Vec<String> = (0..EVENTS).map(|k| format!("scope-{k}")).collect();

    // Every node copy handled every event; the cluster copies together handled each.
    let cluster_total = || {
        let mut t: BTreeMap<String, usize> = BTreeMap::new();
        for (h, _) in &cluster_copies {
            for (id, n) in handled(h) {
                *t.entry(id).or_insert(0) += n;
            }
        }
        t
    };
    let complete = |m: &BTreeMap<String, usize>| ids.iter().all(|id| m.contains_key(id));
    wait_for_async(
        "every event handled by each node copy and by a cluster copy",
        Duration::from_secs(60),
        || async {
            let all = node_copies.iter().all(|(h, _)| complete(&handled(h)));
            (all && complete(&cluster_total())).then_some(())
        },
    )
    .await;
    // All acked (nothing pending on any consumer), so nothing will be delivered again.
    wait_for_async("every delivery acked", Duration::from_secs(60), || async {
        let s = stats(&addrs[0]).await?;
        let test: Vec<_> = s
            .consumers
            .iter()
            .filter(|c| c.name.starts_with("test_daemon"))
            .collect();
        (test.len() == NODES + 1 && test.iter().all(|c| c.pending == 0)).then_some(())
    })
    .await;
    for (i, (h, _)) in node_copies.iter().enumerate() {
        let m = handled(h);
        let wrong: Vec<_> = ids.iter().filter(|id| m.get(*id) != Some(&1)).collect();
        assert!(
            wrong.is_empty(),
            "node copy of n{i}: not handled once: {wrong:?} ({m:?})"
        );
    }
    let t = cluster_total();
    let wrong: Vec<_> = ids.iter().filter(|id| t.get(*id) != Some(&1)).collect();
    assert!(
        wrong.is_empty(),
        "cluster copies: not handled exactly once: {wrong:?} ({t:?})"
    );

    // Every evaluation decided, by the leader; only its router has a session.
    let decided = wait_for_async(
        "every evaluation decided",
        Duration::from_secs(60),
        || async {
            let log = router_log(&addrs[1]).await;
            let rejected: Vec<(String, String)> = log
                .iter()
                .filter(|e| e.r#type == EventType::PromotionRejected as i32)
                .map(|e| (e.id.clone(), e.source.clone()))
                .collect();
            (rejected.len() >= EVALUATIONS).then_some(rejected)
        },
    )
    .await;
    assert_eq!(decided.len(), EVALUATIONS, "{decided:?}");
    for (id, source) in &decided {
        assert_eq!(source, "unified_promotion@n0", "{id} decided by a follower");
    }
    for (i, a) in addrs.iter().enumerate() {
        let s = stats(a).await.unwrap();
        let session = s
            .consumers
            .iter()
            .any(|c| c.name == "unified_promotion" && c.connected);
        assert_eq!(
            session,
            i == 0,
            "n{i}: a session of unified_promotion: {session}"
        );
    }
    drop(promotion);
    drop(cluster_copies);
    drop(node_copies);
    drop(routers);
}
