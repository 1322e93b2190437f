//! In process through `Context::for_test`: `build`, `on_start` (listens on port 0), a
//! DAEMON_HEARTBEAT handled shows in `/status`; another node's heartbeat or lifecycle event
//! of a daemon of the same name does not.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_handle_a_heartbeat_and_serve_it() {
    let home = tempfile::tempdir().unwrap();
    let (h, ctx, _published) = ringrift_test_support::daemon(
        INFO.name,
        build,
        home.path(),
        "test",
        "[health_server]\nlisten = \"127.0.0.1:0\"\n",
    );
    h.on_start(&ctx).await.unwrap();
    let hb = |node: &str, pid: u32| {
        Event::new(wire::event::Payload::DaemonHeartbeat(
            wire::DaemonHeartbeat {
                daemon: "probe_daemon".into(),
                pid,
                node: node.into(),
                uptime_s: 1.0,
                health: Some(handler_base::HealthCheckResult::running("ok").into()),
            },
        ))
    };
    // `Context::for_test` runs on node "test".
    h.handle_event(&ctx, &hb("test", 42)).await.unwrap();
    h.handle_event(&ctx, &hb("elsewhere", 99)).await.unwrap();
    let mut stopped = Event::new(wire::event::Payload::DaemonStopped(wire::DaemonLifecycle {
        daemon: "probe_daemon".into(),
        pid: 99,
        reason: "stopped".into(),
        ..Default::default()
    }));
    stopped.source = "launcher@elsewhere".into();
    h.handle_event(&ctx, &stopped).await.unwrap();
    let addr = handler_base::read_addr_file(home.path(), "health_server").unwrap();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    // The reader's view: the typed body, every field named (an unknown or missing one fails).
    let (_, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    let st: handler_base::status_body::HealthServerStatus =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let d = &st.daemons["probe_daemon"];
    assert_eq!(d.pid, 42, "{st:?}");
    assert!(d.up, "another node's stop: {st:?}");
    assert_eq!(d.node, "test");
    ctx.shutdown.cancel();
}
