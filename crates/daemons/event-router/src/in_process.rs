//! The router inside its own test process, for this crate's tests of its gRPC service
//! (dead letters, stats, refused requests) that need no crash: the real `serve` on a
//! loopback port-0 listener in `home` (durability relaxed), stopped on drop. Other
//! crates' tests start the router binary (`ringrift_test_support::Home`): no daemon
//! crate depends on another. Crash durability stays with the subprocess system tests.

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

    /// A plain gRPC client of the in-process router `r`.
    async fn client(
        r: &InProcess,
    ) -> wire::event_router_client::EventRouterClient<tonic::transport::Channel> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", r.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        wire::event_router_client::EventRouterClient::new(ch)
    }

    #[tokio::test]
    async fn serves_publish_and_stats_in_process() {
        let home = tempfile::tempdir().unwrap();
        let r = InProcess::start(home.path()).await.unwrap();
        let mut c = client(&r).await;
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

    /// A dead letter that cannot be written (a trigger on `dead_letters` stands in for a
    /// full disk) does not hold its consumer's floor for good: once writes work again it
    /// is written and the floor passes it (issue 28, point 5; before, it stayed `dying`
    /// and the floor stayed below it until the router restarted).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_dead_letter_write_is_retried_and_frees_the_floor() {
        let home = tempfile::tempdir().unwrap();
        let r = InProcess::start(home.path()).await.unwrap();
        let mut c = client(&r).await;
        for id in ["poison", "fine"] {
            c.publish(wire::Event {
                id: id.into(),
                r#type: wire::EventType::External as i32,
                payload: Some(wire::event::Payload::Json("{}".into())),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let db = rusqlite::Connection::open(home.path().join("events/events.db")).unwrap();
        db.execute_batch(
            "CREATE TRIGGER full BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
        let mut stream = c
            .subscribe(wire::SubscribeRequest {
                consumer: "c".into(),
                types: vec![wire::EventType::External as i32],
                start: Some(wire::subscribe_request::Start::FromSeq(1)),
                ack_wait_ms: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ack = |seq| wire::AckRequest {
            consumer: "c".into(),
            seq,
            ..Default::default()
        };
        let nack = |seq| wire::NackRequest {
            consumer: "c".into(),
            seq,
            reason: "poison".into(),
        };
        // The poison event is nacked until the router decides to dead-letter it (5).
        let mut refused = None;
        for _ in 0..20 {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a delivery")
                .unwrap()
                .expect("stream open");
            if ev.id == "fine" {
                c.ack(ack(ev.seq)).await.unwrap();
                continue;
            }
            if let Err(e) = c.nack(nack(ev.seq)).await {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("the dead-letter write failed");
        assert!(e.message().contains("disk full"), "{e}");
        db.execute_batch("DROP TRIGGER full").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = c.stats(wire::StatsRequest {}).await.unwrap().into_inner();
            let floor = stats
                .consumers
                .iter()
                .find(|x| x.name == "c")
                .map(|x| x.ack_floor);
            let letters = c
                .list_dead_letters(wire::ListDeadLettersRequest {
                    consumer: "c".into(),
                    include_resolved: true,
                })
                .await
                .unwrap()
                .into_inner()
                .letters;
            if floor == Some(2) && letters.len() == 1 {
                assert_eq!(letters[0].seq, 1);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "floor {floor:?}, letters {letters:?}: the consumer's floor is held"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
