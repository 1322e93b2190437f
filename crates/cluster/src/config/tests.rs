//! The cluster.toml parser: a good file, each kind of bad input (the error names file,
//! key and value), and no file = a one-node cluster.

use super::*;

const GOOD: &str = r#"
[cluster]
name = "lab"

[membership]
heartbeat_interval_s = 0.5
suspect_after_s = 2
dead_after_s = 4

[leader]
mode = "static"

[events]
backend = "sqlite"

[auth]
require_token = true

[[node]]
name = "coord"
roles = ["coordinator", "training"]
address = "10.0.0.1"

[[node]]
name = "gpu-1"
roles = ["training"]
address = "gpu-1.lab"
ports = { p2p = 9770, router = 9780 }
exclude_from_sync = true

[[node]]
name = "spot"
roles = ["selfplay", "ephemeral"]
address = "::1"
"#;

fn parse(text: &str) -> Result<ClusterConfig, ClusterError> {
    ClusterConfig::parse(text, Path::new("/x/cluster.toml"), "coord")
}

/// `GOOD` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn a_good_file_parses_completely() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.name, "lab");
    assert_eq!(c.file.as_deref(), Some(Path::new("/x/cluster.toml")));
    assert_eq!(c.timeouts.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(c.timeouts.suspect_after, Duration::from_secs(2));
    assert_eq!(c.timeouts.dead_after, Duration::from_secs(4));
    assert_eq!(
        c.timeouts.rpc_timeout,
        Duration::from_millis(500),
        "capped by the interval"
    );
    assert_eq!(c.leader, LeaderMode::Static);
    assert_eq!(c.events, EventBackend::Sqlite);
    assert!(c.require_token);
    assert_eq!(c.nodes.len(), 3);
    assert_eq!(c.this_node().name, "coord");
    assert_eq!(
        c.this_node().roles,
        BTreeSet::from([Role::Coordinator, Role::Training])
    );
    let gpu = c.node("gpu-1").unwrap();
    assert_eq!(gpu.ports.p2p, 9770);
    assert_eq!(gpu.ports.router, 9780);
    assert_eq!(gpu.ports.health, 8765, "unset ports keep their defaults");
    assert!(gpu.exclude_from_sync && !gpu.ephemeral);
    assert_eq!(gpu.p2p_addr(), "gpu-1.lab:9770");
    let spot = c.node("spot").unwrap();
    assert!(spot.ephemeral, "the ephemeral role implies the flag");
    assert_eq!(spot.p2p_addr(), "[::1]:8770");
    assert_eq!(spot.p2p_listen(), "[::1]:8770", "loopback binds itself");
    assert_eq!(c.this_node().p2p_listen(), "0.0.0.0:8770");
    assert_eq!(c.static_leader().map(|n| n.name.as_str()), Some("coord"));
    let peers: Vec<&str> = c.peers().map(|n| n.name.as_str()).collect();
    assert_eq!(peers, ["gpu-1", "spot"]);
}

#[test]
fn etcd_and_jetstream_are_parsed_and_validated() {
    let text = edit(
        "[leader]\nmode = \"static\"",
        "[leader]\nmode = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\", \"https://e2:2379\"]\nca = \"/etc/ringrift/etcd-ca.pem\"\nuser = \"root\"\npassword = \"etcd-pw-77\"",
    )
    .replace(
        "backend = \"sqlite\"",
        "backend = \"jetstream\"\nservers = [\"nats://10.0.0.1:4222\"]\nuser = \"rr\"\npassword = \"nats-pw-42\"\ntls_ca = \"/etc/ringrift/nats-ca.pem\"",
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.leader,
        LeaderMode::Etcd {
            endpoints: vec!["http://10.0.0.1:2379".into(), "https://e2:2379".into()],
            ttl_s: crate::config::DEFAULT_LEASE_TTL_S,
            auth: crate::config::EtcdAuth {
                user: Some(("root".into(), crate::config::Secret::new("etcd-pw-77"))),
                ca: Some("/etc/ringrift/etcd-ca.pem".into()),
            },
        }
    );
    assert_eq!(c.static_leader(), None, "the lease decides under etcd");
    assert_eq!(
        c.events,
        EventBackend::Jetstream {
            servers: vec!["nats://10.0.0.1:4222".into()],
            replicas: 1,
            queue_done_retention: std::time::Duration::from_secs(3600),
            auth: crate::config::NatsAuth {
                user: Some(("rr".into(), crate::config::Secret::new("nats-pw-42"))),
                tls_ca: Some("/etc/ringrift/nats-ca.pem".into()),
            },
        }
    );
    // The passwords never show: not in Debug, not in the JSON of /status.
    let shown = format!("{c:?} {:#?} {}", c, serde_json::to_string(&c).unwrap());
    assert!(
        !shown.contains("etcd-pw-77") && !shown.contains("nats-pw-42"),
        "{shown}"
    );
    assert!(shown.contains("root") && shown.contains("***"), "{shown}");
}

#[test]
fn an_https_etcd_endpoint_needs_a_ca_and_credentials_come_in_pairs() {
    let with = |leader: &str| {
        parse(&edit(
            "[leader]\nmode = \"static\"",
            &format!("[leader]\nmode = \"etcd\"\n{leader}"),
        ))
    };
    let e = with("endpoints = [\"https://10.0.0.1:2379\"]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("leader.ca") && e.contains("https://10.0.0.1:2379"),
        "{e}"
    );
    let e = with("endpoints = [\"http://10.0.0.1:2379\"]\nuser = \"root\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("leader.password"), "{e}");
    let e = with("endpoints = [\"http://10.0.0.1:2379\"]\npassword = \"hunter22\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("leader.user") && !e.contains("hunter22"), "{e}");
}

/// Each bad input and the (key, value) its error must name.
#[test]
fn each_bad_input_names_file_key_and_value() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            edit("\"coordinator\", \"training\"", "\"coordinator\", \"gpu\""),
            "node[0].roles",
            "\"gpu\"",
        ),
        (
            edit("\"coordinator\", \"training\"", "\"training\""),
            "node[*].roles",
            "[]",
        ),
        (
            edit("roles = [\"training\"]", "roles = [\"coordinator\"]"),
            "node[*].roles",
            "[\"coord\", \"gpu-1\"]",
        ),
        (
            edit("name = \"gpu-1\"", "name = \"coord\""),
            "node[1].name",
            "\"coord\"",
        ),
        (
            edit("name = \"gpu-1\"", "name = \"gpu 1\""),
            "node[1].name",
            "\"gpu 1\"",
        ),
        (
            edit("address = \"gpu-1.lab\"", "address = \"gpu_1!\""),
            "node[1].address",
            "\"gpu_1!\"",
        ),
        (
            edit("ports = { p2p = 9770", "ports = { p2p = 0"),
            "node[1].ports.p2p",
            "0",
        ),
        (
            edit("roles = [\"selfplay\", \"ephemeral\"]", "roles = []"),
            "node[2].roles",
            "[]",
        ),
        (
            edit("address = \"::1\"", "address = \"10.0.0.1\""),
            "node[2].ports.p2p",
            "\"10.0.0.1:8770\"",
        ),
        (
            edit("dead_after_s = 4", "dead_after_s = 1.5"),
            "membership.dead_after_s",
            "1.5",
        ),
        (
            edit("suspect_after_s = 2", "suspect_after_s = -2"),
            "membership.suspect_after_s",
            "-2.0",
        ),
        (
            edit("suspect_after_s = 2", "suspect_after_s = 0.25"),
            "membership.suspect_after_s",
            "0.25",
        ),
        (
            edit("mode = \"static\"", "mode = \"raft\""),
            "leader.mode",
            "\"raft\"",
        ),
        (
            edit("mode = \"static\"", "mode = \"etcd\""),
            "leader.endpoints",
            "[]",
        ),
        (
            edit(
                "mode = \"static\"",
                "mode = \"etcd\"\nendpoints = [\"10.0.0.1:2379\"]",
            ),
            "leader.endpoints",
            "\"10.0.0.1:2379\"",
        ),
        (
            edit(
                "mode = \"static\"",
                "mode = \"static\"\nendpoints = [\"http://e:2379\"]",
            ),
            "leader.endpoints",
            "[\"http://e:2379\"]",
        ),
        (
            edit(
                "mode = \"static\"",
                "mode = \"etcd\"\nendpoints = [\"http://e:2379\"]\nttl_s = 0",
            ),
            "leader.ttl_s",
            "0",
        ),
        (
            edit("mode = \"static\"", "mode = \"static\"\nttl_s = 3"),
            "leader.ttl_s",
            "3",
        ),
        (
            edit("backend = \"sqlite\"", "backend = \"kafka\""),
            "events.backend",
            "\"kafka\"",
        ),
        (
            edit("backend = \"sqlite\"", "backend = \"jetstream\""),
            "events.servers",
            "[]",
        ),
        (
            edit(
                "backend = \"sqlite\"",
                "backend = \"jetstream\"\nservers = [\"http://n:4222\"]",
            ),
            "events.servers",
            "\"http://n:4222\"",
        ),
        (
            edit(
                "backend = \"sqlite\"",
                "backend = \"jetstream\"\nservers = [\"nats://n:4222\"]\nreplicas = 7",
            ),
            "events.replicas",
            "7",
        ),
        (
            edit(
                "backend = \"sqlite\"",
                "backend = \"jetstream\"\nservers = [\"nats://n:4222\"]\nqueue_done_retention_s = 0",
            ),
            "events.queue_done_retention_s",
            "0",
        ),
        (
            edit(
                "backend = \"sqlite\"",
                "backend = \"sqlite\"\nqueue_done_retention_s = 60",
            ),
            "events.queue_done_retention_s",
            "60",
        ),
        (
            edit("require_token = true", "token = \"s3cret\""),
            "auth.token",
            "\"***\"",
        ),
        (
            edit("name = \"coord\"", "name = \"boss\""),
            "node[*].name",
            "[\"boss\", \"gpu-1\", \"spot\"]",
        ),
        ("[cluster]\nname = \"x\"\n".to_owned(), "node", "\"[]\""),
    ];
    for (text, key, value) in cases {
        let e = parse(&text).unwrap_err();
        let msg = e.to_string();
        match &e {
            ClusterError::Invalid {
                file,
                key: k,
                value: v,
                ..
            } => {
                assert_eq!(file, Path::new("/x/cluster.toml"), "{msg}");
                assert_eq!((k.as_str(), v.as_str()), (key, value), "{msg}");
            }
            other => panic!("expected Invalid for {key}, got {other:?}"),
        }
        assert!(
            msg.starts_with("/x/cluster.toml: ") && msg.contains(key) && msg.contains(value),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"), "the secret is never echoed: {msg}");
    }
}

#[test]
fn syntax_errors_unknown_keys_and_wrong_types_name_file_and_key() {
    for (text, needle) in [
        (edit("[cluster]", "[cluster\n"), "cluster.toml"),
        (
            edit("name = \"lab\"", "name = \"lab\"\ncolour = \"red\""),
            "colour",
        ),
        (
            edit("exclude_from_sync = true", "exclude_from_sync = \"yes\""),
            "yes",
        ),
        (edit("dead_after_s = 4", "dead_after_s = \"four\""), "four"),
        (
            edit("ports = { p2p = 9770", "ports = { p2p = 70000"),
            "70000",
        ),
        (
            edit("ports = { p2p = 9770", "ports = { ssh = 22, p2p = 9770"),
            "ssh",
        ),
    ] {
        let e = parse(&text).unwrap_err();
        assert!(matches!(e, ClusterError::Parse { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("/x/cluster.toml: ") && msg.contains(needle),
            "{needle}: {msg}"
        );
    }
}

#[test]
fn no_file_is_a_one_node_cluster_and_the_home_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    let home_file = dir.path().join("cluster.toml");
    let system_file = dir.path().join("etc-cluster.toml");
    let c = ClusterConfig::load_from(&[home_file.clone(), system_file.clone()], "me").unwrap();
    assert_eq!(c, ClusterConfig::single_node("me"));
    assert_eq!(c.file, None);
    assert_eq!(c.nodes.len(), 1);
    assert_eq!(c.this_node().name, "me");
    assert_eq!(c.this_node().p2p_listen(), "127.0.0.1:8770");
    assert_eq!(c.static_leader().map(|n| n.name.as_str()), Some("me"));
    assert_eq!(c.peers().count(), 0);
    assert_eq!(c.timeouts.suspect_after, Duration::from_secs(90));
    assert_eq!(c.timeouts.dead_after, Duration::from_secs(180));

    std::fs::write(&system_file, GOOD).unwrap();
    let c = ClusterConfig::load_from(&[home_file.clone(), system_file.clone()], "coord").unwrap();
    assert_eq!(c.file.as_deref(), Some(system_file.as_path()));
    std::fs::write(&home_file, GOOD.replace("\"lab\"", "\"home\"")).unwrap();
    let c = ClusterConfig::load_from(&[home_file.clone(), system_file], "coord").unwrap();
    assert_eq!(
        (c.name.as_str(), c.file.as_deref()),
        ("home", Some(home_file.as_path()))
    );
    // `load` looks in the home first.
    assert_eq!(
        ClusterConfig::load(dir.path(), "coord").unwrap().name,
        "home"
    );
}

#[test]
fn etcd_lease_ttl_is_read_from_the_leader_table() {
    let c = parse(&edit(
        "[leader]\nmode = \"static\"",
        "[leader]\nmode = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nttl_s = 3",
    ))
    .unwrap();
    assert_eq!(
        c.leader,
        LeaderMode::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ttl_s: 3,
            auth: Default::default(),
        }
    );
    assert_eq!(c.leader.name(), "etcd");
}

/// With SQLite events a training node other than the one coordinator evaluates where the
/// leader never hears of it: refused with the nodes named. The same cluster on JetStream,
/// or with the training role only on the coordinator, or one node, is fine.
#[test]
fn sqlite_events_with_evaluation_off_the_leader_are_refused() {
    let c = parse(GOOD).unwrap();
    let e = c
        .events_cannot_reach_leader()
        .expect("gpu-1 evaluates off the leader");
    let msg = e.to_string();
    assert!(
        msg.contains("events.backend")
            && msg.contains("gpu-1")
            && msg.contains("coord")
            && msg.contains("jetstream"),
        "{msg}"
    );
    let js = edit(
        "backend = \"sqlite\"",
        "backend = \"jetstream\"\nservers = [\"nats://10.0.0.1:4222\"]",
    );
    assert_eq!(parse(&js).unwrap().events_cannot_reach_leader(), None);
    let only_coord_trains = edit("roles = [\"training\"]", "roles = [\"selfplay\"]");
    assert_eq!(
        parse(&only_coord_trains)
            .unwrap()
            .events_cannot_reach_leader(),
        None
    );
    assert_eq!(
        ClusterConfig::single_node("x").events_cannot_reach_leader(),
        None
    );
}
