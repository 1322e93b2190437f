//! The router inside a test process, for in-process tests of daemons that call the
//! router beyond publishing (dead letters, stats, lookups) and need no crash: the real
//! `serve` on a loopback port-0 listener in `home` (durability relaxed), stopped on drop.
//! Crash durability stays with the subprocess system tests.

use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A running in-process router.
pub struct InProcess {
    /// `host:port` it listens on.
    pub addr: String,
    shutdown: CancellationToken,
}

impl InProcess {
    /// Starts the router in `home` and waits (up to 10 s) until it listens.
    pub async fn start(home: &Path) -> anyhow::Result<InProcess> {
        let shutdown = CancellationToken::new();
        let ctx = handler_base::ServiceContext::for_test(
            crate::INFO.name,
            home,
            "heartbeat_interval_s = 60\n[event_router]\nlisten = \"127.0.0.1:0\"\ndurability = \"relaxed\"\n",
            shutdown.clone(),
        )?;
        let task = tokio::spawn(crate::serve(ctx));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = handler_base::read_addr_file(home, crate::INFO.name) {
                return Ok(InProcess { addr, shutdown });
            }
            if task.is_finished() {
                anyhow::bail!("in-process router ended before listening: {:?}", task.await);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "in-process router did not listen in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_proto::wire;

    #[tokio::test]
    async fn serves_publish_and_stats_in_process() {
        let home = tempfile::tempdir().unwrap();
        let r = InProcess::start(home.path()).await.unwrap();
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", r.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = wire::event_router_client::EventRouterClient::new(ch);
        let ev = wire::Event {
            id: "in-process-1".into(),
            r#type: wire::EventType::External as i32,
            payload: Some(wire::event::Payload::Json("{}".into())),
            ..Default::default()
        };
        let ack = c.publish(ev).await.unwrap().into_inner();
        assert!(ack.seq >= 1 && !ack.duplicate);
        let head = c
            .stats(wire::StatsRequest {})
            .await
            .unwrap()
            .into_inner()
            .head_seq;
        assert_eq!(head, ack.seq);
    }
}
