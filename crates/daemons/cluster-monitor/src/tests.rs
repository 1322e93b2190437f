//! The view from a local answer and the peers' answers, and its health: DEGRADED exactly
//! while a node is dead or the local p2p_backend does not answer.

use super::*;
use ringrift_cluster::resources::Resources;
use ringrift_cluster::view::{JobView, MemberView, QueueView};
use std::path::Path;

fn cluster() -> ClusterConfig {
    ClusterConfig::parse(
        "[[node]]\nname = \"a\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = { p2p = 1001 }\n\
         [[node]]\nname = \"b\"\nroles = [\"training\"]\naddress = \"127.0.0.1\"\nports = { p2p = 1002 }\n\
         [[node]]\nname = \"c\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nports = { p2p = 1003 }\nephemeral = true\n",
        Path::new("cluster.toml"),
        "a",
    )
    .unwrap()
}

fn info(node: &str, members: Vec<(&str, MemberState)>, jobs: usize) -> NodeInfo {
    NodeInfo {
        node: node.into(),
        roles: vec![],
        version: "0.0.0".into(),
        started_unix_ms: 1,
        resources: Resources {
            cpu_count: 4,
            disk_free_bytes: 10,
            gpus: vec![("gpu0".into(), 3.0)],
            ..Default::default()
        },
        daemons: vec![],
        daemons_note: String::new(),
        jobs: (0..jobs)
            .map(|i| JobView {
                job_id: format!("j{i}"),
                job_key: "k".into(),
                pid: 1,
                deadline_unix_ms: 0,
            })
            .collect(),
        jobs_note: String::new(),
        queue: Some(QueueView {
            pending: 7,
            ..Default::default()
        }),
        leader: "a".into(),
        leader_mode: "static".into(),
        members: members
            .into_iter()
            .map(|(n, s)| MemberView {
                node: n.into(),
                address: String::new(),
                roles: vec![],
                state: s,
                last_seen_s_ago: Some(0.0),
                started_unix_ms: 1,
            })
            .collect(),
    }
}

#[test]
fn view_lists_every_node_sums_answers_and_degrades_on_a_dead_node() {
    let c = cluster();
    let all_alive = vec![
        ("a", MemberState::Alive),
        ("b", MemberState::Alive),
        ("c", MemberState::Alive),
    ];
    let v = assemble(
        &c,
        info("a", all_alive, 1),
        vec![
            ("b".into(), Ok(info("b", vec![], 2))),
            ("c".into(), Ok(info("c", vec![], 0))),
        ],
        5,
    );
    let names: Vec<&str> = v.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        (v.leader.as_str(), v.queue.map(|q| q.pending)),
        ("a", Some(7))
    );
    assert_eq!(
        (
            v.totals.alive,
            v.totals.cpu_count,
            v.totals.gpus,
            v.totals.running_jobs
        ),
        (3, 12, 3, 3)
    );
    assert!(v.nodes[2].ephemeral);
    let h = health_of(Some(&v), "");
    assert_eq!(h.status, handler_base::HealthStatus::Running, "{h:?}");
    assert_eq!(h.details.get("node.c").map(String::as_str), Some("alive"));

    let v = assemble(
        &c,
        info(
            "a",
            vec![
                ("a", MemberState::Alive),
                ("b", MemberState::Suspect),
                ("c", MemberState::Dead),
            ],
            0,
        ),
        vec![("b".into(), Err("127.0.0.1:1002: no answer".into()))],
        5,
    );
    assert_eq!((v.totals.alive, v.totals.suspect, v.totals.dead), (1, 1, 1));
    assert_eq!(v.nodes[1].error, "127.0.0.1:1002: no answer");
    assert!(v.nodes[2].info.is_none() && v.nodes[2].error.contains("dead"));
    let h = health_of(Some(&v), "");
    assert_eq!(h.status, handler_base::HealthStatus::Degraded, "{h:?}");
    assert!(h.message.contains("node(s) dead: c"), "{}", h.message);
    assert_eq!(h.details.get("node.b").map(String::as_str), Some("suspect"));

    let h = health_of(Some(&v), "local p2p_backend: refused");
    assert_eq!(h.status, handler_base::HealthStatus::Degraded);
    assert!(h.message.contains("refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_p2p_backend_the_view_is_degraded_and_status_says_why() {
    let home = tempfile::tempdir().unwrap();
    let (m, ctx, _rec) = ringrift_test_support::daemon(
        INFO.name,
        build,
        home.path(),
        "test",
        "[cluster_monitor]\nlisten = \"127.0.0.1:0\"\n",
    );
    m.on_start(&ctx).await.unwrap();
    let h = m.health_check();
    assert_eq!(h.status, handler_base::HealthStatus::Degraded, "{h:?}");
    assert!(h.message.contains("run/p2p_backend.addr"), "{}", h.message);
    assert!(handler_base::read_addr_file(home.path(), "cluster_monitor").is_some());
    ctx.shutdown.cancel();
}
