//! In process through `Context::for_test`: two p2p backends ("test" and "b") on loopback;
//! "test" sees b join, turn suspect, die and join again, one event per transition; the
//! status page lists both; a stranger's heartbeat is refused.

use super::*;
use ringrift_proto::EventType;
use ringrift_test_support::{free_port, poll_until_async};

fn cluster_toml(pa: u16, pb: u16) -> String {
    format!(
        "[membership]\nheartbeat_interval_s = 0.05\nsuspect_after_s = 0.4\ndead_after_s = 0.8\n\n\
         [[node]]\nname = \"test\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = {pa} }}\n\n\
         [[node]]\nname = \"b\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = {pb} }}\n"
    )
}

async fn start(home: &std::path::Path, node: &str) -> (Context, Recorded, Arc<dyn Handler>) {
    let (h, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, home, node, "");
    h.on_start(&ctx).await.unwrap();
    (ctx, rec, h)
}

use handler_base::Recorded;

/// (type, node) of what was published, in order.
fn changes(rec: &Recorded) -> Vec<(EventType, String)> {
    rec.events()
        .into_iter()
        .map(|e| {
            let node = match &e.payload {
                Payload::HostJoined(m) | Payload::HostLeft(m) => m.node.clone(),
                Payload::NodeUnhealthy(s) | Payload::NodeRecovered(s) => s.node.clone(),
                other => format!("{other:?}"),
            };
            (e.kind, node)
        })
        .collect()
}

/// The changes `rec` holds once there are `n`; panics naming `what` and what there was
/// after 20 s.
async fn changes_after(what: &str, rec: &Recorded, n: usize) -> Vec<(EventType, String)> {
    let got = poll_until_async(Duration::from_secs(20), || {
        let c = changes(rec);
        async move { (c.len() >= n).then_some(c) }
    })
    .await;
    got.unwrap_or_else(|| panic!("timed out waiting for {what}: {:?}", changes(rec)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_joined_unhealthy_left_joined_once_each() {
    let (pa, pb) = (free_port(), free_port());
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for h in [&ha, &hb] {
        std::fs::write(h.path().join("cluster.toml"), cluster_toml(pa, pb)).unwrap();
    }
    let (ctx_a, rec_a, a) = start(ha.path(), "test").await;
    let (ctx_b, _rec_b, b) = start(hb.path(), "b").await;
    let joined = changes_after("HOST_JOINED b", &rec_a, 1).await;
    assert_eq!(joined, vec![(EventType::HostJoined, "b".to_owned())]);
    let ev = &rec_a.events()[0];
    let Payload::HostJoined(m) = &ev.payload else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (m.address.as_str(), m.observer.as_str(), m.roles.clone()),
        (
            format!("127.0.0.1:{pb}").as_str(),
            "test",
            vec!["selfplay".to_owned()]
        )
    );
    assert!(m.started_unix_ms > 0, "{m:?}");
    assert!(ev.id.starts_with("p2p:test:b:joined:"), "{}", ev.id);

    // The status page of a lists both, b alive.
    let addr = handler_base::read_addr_file(ha.path(), "p2p_backend").unwrap();
    let mut c = peer_client(&addr, handler_base::router_client::Bearer::none()).unwrap();
    let info = NodeInfo::try_from(
        c.node_info(wire::NodeInfoRequest {})
            .await
            .unwrap()
            .into_inner(),
    )
    .unwrap();
    assert_eq!(info.node, "test");
    assert_eq!(info.leader, "test");
    assert_eq!(info.leader_mode, "static");
    assert!(info.resources.cpu_count >= 1);
    assert_eq!(info.daemons_note, "no launcher (run/launcher.addr absent)");
    let states: Vec<(String, MemberState)> = info
        .members
        .iter()
        .map(|m| (m.node.clone(), m.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("test".into(), MemberState::Alive),
            ("b".into(), MemberState::Alive)
        ]
    );
    assert!(a.health_check().message.starts_with("1 of 1 peers alive"));

    // b stops: suspect, then dead, one event each.
    ctx_b.shutdown.cancel();
    b.on_stop(&ctx_b).await;
    let c3 = changes_after("NODE_UNHEALTHY and HOST_LEFT of b", &rec_a, 3).await;
    assert_eq!(
        c3[1..],
        [
            (EventType::NodeUnhealthy, "b".to_owned()),
            (EventType::HostLeft, "b".to_owned())
        ]
    );
    // Dead is announced once, however long it stays dead.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(changes(&rec_a).len(), 3, "{:?}", changes(&rec_a));

    // b back (same port): joined again.
    let (ctx_b2, _r, _b2) = start(hb.path(), "b").await;
    let c4 = changes_after("HOST_JOINED b again", &rec_a, 4).await;
    assert_eq!(c4[3], (EventType::HostJoined, "b".to_owned()));
    ctx_b2.shutdown.cancel();
    ctx_a.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_bad_cluster_config_exits_64() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, _rec) = Context::for_test(
        INFO.name,
        home.path(),
        "[p2p_backend]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    // No cluster.toml: one node; a heartbeat from anyone else is refused.
    let h = build(&ctx).unwrap();
    h.on_start(&ctx).await.unwrap();
    let addr = handler_base::read_addr_file(home.path(), "p2p_backend").unwrap();
    let mut c = peer_client(&addr, handler_base::router_client::Bearer::none()).unwrap();
    let e = c
        .heartbeat(wire::PeerHeartbeat {
            node: "mallory".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("mallory"), "{}", e.message());
    ctx.shutdown.cancel();

    std::fs::write(
        home.path().join("cluster.toml"),
        "[[node]]\nname = \"test\"\nroles = [\"boss\"]\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    let e = build(&ctx).err().unwrap();
    assert!(handler_base::is_config_error(&e), "{e:#}");
    let msg = e.to_string();
    assert!(
        msg.contains("cluster.toml") && msg.contains("node[0].roles") && msg.contains("\"boss\""),
        "{msg}"
    );
}
