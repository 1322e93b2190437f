//! Fuzz target of cluster.toml (see `ringrift-fuzz`): mutated cluster files in the
//! shapes operators write. Any text is a validated [`ClusterConfig`] or a
//! [`ClusterError`] naming the file (and, when it is a bad value, the key); what the
//! daemons ask of an accepted config (this node, peers, the leader, addresses) answers
//! without a panic.

use super::*;
use proptest::prelude::*;

const FULL: &str = r#"[cluster]
name = "ringrift"

[membership]
heartbeat_interval_s = 15
suspect_after_s = 90
dead_after_s = 180
rpc_timeout_s = 5

[leader]
mode = "static"

[events]
backend = "sqlite"

[auth]
require_token = true

[[node]]
name = "coord-1"
roles = ["coordinator", "training"]
address = "10.0.0.1"
ports = { p2p = 8770, router = 8780, health = 8765, data = 8766 }

[[node]]
name = "spot-7"
roles = ["selfplay"]
address = "10.0.0.7"
ephemeral = true
exclude_from_sync = true
"#;

const ETCD_JETSTREAM: &str = r#"[leader]
mode = "etcd"
endpoints = ["http://10.0.0.1:2379", "https://10.0.0.2:2379"]
ttl_s = 10
user = "ringrift"
password = "pw"
ca = "/etc/ringrift/etcd-ca.pem"

[events]
backend = "jetstream"
servers = ["nats://10.0.0.1:4222", "tls://10.0.0.2:4222"]
replicas = 3
queue_done_retention_s = 3600

[[node]]
name = "coord-1"
roles = ["coordinator"]
address = "10.0.0.1"

[[node]]
name = "n2"
roles = ["training", "selfplay"]
address = "n2.example"
"#;

#[test]
fn fuzz_cluster_toml() {
    let file = Path::new("/etc/ringrift/cluster.toml");
    let r = ringrift_fuzz::run(
        file!(),
        "cluster_toml",
        (
            ringrift_fuzz::mutated_text(&[
                FULL,
                ETCD_JETSTREAM,
                "[[node]]\nname = \"a\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\n",
            ]),
            prop_oneof![
                Just("coord-1"),
                Just("spot-7"),
                Just("n2"),
                Just("elsewhere")
            ],
        ),
        |(text, this)| {
            match ClusterConfig::parse(&text, file, this) {
                Ok(c) => {
                    let me = c.this_node();
                    let _ = (
                        me.p2p_addr(),
                        me.p2p_listen(),
                        me.data_url(),
                        me.data_listen(),
                    );
                    for n in &c.nodes {
                        let _ = (n.addr(1), n.listen(1), n.role_names());
                    }
                    let _ = (
                        c.peers().count(),
                        c.static_leader(),
                        c.events_cannot_reach_leader(),
                        c.source(),
                    );
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(
                        msg.contains("cluster.toml"),
                        "error does not name the file: {}",
                        msg
                    );
                }
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}
