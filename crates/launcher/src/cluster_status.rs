//! `ringrift-launcher --status --cluster`: every node of cluster.toml asked directly for
//! its `NodeInfo` (its peer API, concurrently, bounded by the cluster's rpc timeout), so
//! the command works while this node's own monitors are down. A node that does not
//! answer is listed with the reason; the exit code is 1 when any did not.

use ringrift_cluster::ClusterConfig;
use ringrift_cluster::view::ClusterStatus;
/// One node of cluster.toml and what it said (or why it said nothing): the typed row of
/// `--status --cluster --json`.
pub use ringrift_cluster::view::NodeRow as Row;

/// Asks every node; rows in cluster.toml order.
pub async fn collect(
    cluster: &ClusterConfig,
    bearer: handler_base::router_client::Bearer,
) -> Vec<Row> {
    let limit = cluster.timeouts.rpc_timeout;
    let mut set = tokio::task::JoinSet::new();
    for (i, n) in cluster.nodes.iter().enumerate() {
        let (addr, bearer) = (n.p2p_addr(), bearer.clone());
        let mut row = Row {
            name: n.name.clone(),
            roles: n.roles.iter().map(|r| r.to_string()).collect(),
            address: addr.clone(),
            info: None,
            error: String::new(),
        };
        set.spawn(async move {
            match ringrift_cluster::client::node_info(&addr, bearer, limit).await {
                Ok(info) => row.info = Some(info),
                Err(e) => row.error = e.to_string(),
            }
            (i, row)
        });
    }
    let mut rows: Vec<(usize, Row)> = set.join_all().await;
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

fn gib(b: u64) -> String {
    format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
}

/// The `--status --cluster --json` body.
pub fn body(cluster: &ClusterConfig, rows: Vec<Row>) -> ClusterStatus {
    ClusterStatus {
        cluster: cluster.name.clone(),
        config: cluster.source(),
        nodes: rows,
    }
}

/// The human table: one line per node, its daemons indented below it.
pub fn table(cluster: &ClusterConfig, rows: &[Row]) -> String {
    let leader = rows
        .iter()
        .find_map(|r| {
            r.info
                .as_ref()
                .map(|i| format!("{} ({})", i.leader, i.leader_mode))
        })
        .unwrap_or_else(|| "unknown (no node answered)".into());
    let mut out = format!(
        "cluster {} ({})  leader {leader}\n{:<14} {:<22} {:<22} {:<6} {:>7} {:>5} {:>6} {:>9} {:>9} {}\n",
        cluster.name,
        cluster.source(),
        "NODE",
        "ROLES",
        "ADDRESS",
        "STATE",
        "DAEMONS",
        "JOBS",
        "LOAD",
        "MEM FREE",
        "DISK FREE",
        "GPUS"
    );
    for r in rows {
        let Some(i) = &r.info else {
            out.push_str(&format!(
                "{:<14} {:<22} {:<22} {:<6} {}\n",
                r.name,
                r.roles.join(","),
                r.address,
                "DOWN",
                r.error
            ));
            continue;
        };
        let res = &i.resources;
        let gpus = if res.gpus.is_empty() {
            "-".to_owned()
        } else {
            res.gpus
                .iter()
                .map(|(id, u)| format!("{id}:{u:.0}%"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push_str(&format!(
            "{:<14} {:<22} {:<22} {:<6} {:>7} {:>5} {:>6.2} {:>9} {:>9} {}\n",
            r.name,
            r.roles.join(","),
            r.address,
            "up",
            i.daemons.len(),
            i.jobs.len(),
            res.load_1m,
            gib(res.memory_available_bytes),
            gib(res.disk_free_bytes),
            gpus
        ));
        if i.daemons.is_empty() && !i.daemons_note.is_empty() {
            out.push_str(&format!("    ({})\n", i.daemons_note));
        }
        for d in &i.daemons {
            out.push_str(&format!(
                "    {:<28} {:<9} restarts {:<3} {}\n",
                d.name, d.state, d.restarts, d.health
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_does_not_answer_is_listed_with_why() {
        // Port 1 on loopback: nothing listens.
        let toml = "[membership]\nrpc_timeout_s = 1\n\n[[node]]\nname = \"a\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = { p2p = 1 }\n";
        let cluster =
            ClusterConfig::parse(toml, std::path::Path::new("cluster.toml"), "a").unwrap();
        let rows = collect(&cluster, handler_base::router_client::Bearer::none()).await;
        assert_eq!(rows.len(), 1);
        assert!(rows[0].info.is_none());
        assert!(rows[0].error.contains("127.0.0.1:1"), "{rows:?}");
        let t = table(&cluster, &rows);
        assert!(t.contains("leader unknown (no node answered)"), "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("a ") && l.contains("DOWN")),
            "{t}"
        );
    }
}
