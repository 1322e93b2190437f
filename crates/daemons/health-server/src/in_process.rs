//! In process through `Context::for_test`: `build`, `on_start` (listens on port 0), a
//! DAEMON_HEARTBEAT handled shows in `/status`.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_handle_a_heartbeat_and_serve_it() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, _published) = Context::for_test(
        INFO.name,
        home.path(),
        "[health_server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let h = build(&ctx).unwrap();
    h.on_start(&ctx).await.unwrap();
    let hb = wire::DaemonHeartbeat {
        daemon: "probe_daemon".into(),
        pid: 42,
        node: "n".into(),
        uptime_s: 1.0,
        health: Some(handler_base::HealthCheckResult::running("ok").into()),
    };
    let ev = Event::new(wire::event::Payload::DaemonHeartbeat(hb));
    h.handle_event(&ctx, &ev).await.unwrap();
    let addr = handler_base::read_addr_file(home.path(), "health_server").unwrap();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.contains("probe_daemon"), "{body}");
    ctx.shutdown.cancel();
}
