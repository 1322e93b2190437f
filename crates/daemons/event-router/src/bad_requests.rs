//! The router's answers to bad requests, through gRPC as any client sends them (the
//! in-process router): the bad-input catalogue's rows for its RPCs (docs/bad-input.md).

use crate::in_process::InProcess;
use ringrift_proto::wire;
use std::time::{Duration, Instant};

/// The bad-input catalogue's row for the router's requests (docs/bad-input.md): each
/// RPC answers a bad request with its status and a message naming what is wrong.
#[tokio::test]
async fn every_rpc_answers_a_bad_request_with_a_status_naming_it() {
    use tonic::Code;
    let home = tempfile::tempdir().unwrap();
    let r = InProcess::start(home.path()).await.unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", r.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = wire::event_router_client::EventRouterClient::new(ch);
    let check = |what: &str, r: Result<(), tonic::Status>, code: Code, needle: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        assert!(
            e.message().contains(needle),
            "{what}: {:?} lacks {needle:?}",
            e.message()
        );
    };
    let sub = |consumer: &str, types: Vec<i32>, prefixes: Vec<&str>| wire::SubscribeRequest {
        consumer: consumer.into(),
        types,
        prefixes: prefixes.into_iter().map(str::to_owned).collect(),
        ..Default::default()
    };
    for (what, req, needle) in [
        (
            "control character",
            sub("a\u{7}b", vec![], vec![]),
            "consumer name",
        ),
        (
            "long name",
            sub(&"c".repeat(201), vec![], vec![]),
            "consumer name",
        ),
        (
            "unknown type",
            sub("c", vec![4242], vec![]),
            "unknown event type 4242",
        ),
        (
            "unspecified type",
            sub("c", vec![0], vec![]),
            "unknown event type 0",
        ),
        (
            "prefix of nothing",
            sub("c", vec![], vec!["NOPE_"]),
            "NOPE_",
        ),
    ] {
        check(
            what,
            c.subscribe(req).await.map(drop),
            Code::InvalidArgument,
            needle,
        );
    }
    let ack = |consumer: &str, seq: u64, in_progress: bool| wire::AckRequest {
        consumer: consumer.into(),
        seq,
        cumulative: false,
        in_progress,
        queued: false,
    };
    check(
        "ack, unknown consumer",
        c.ack(ack("ghost", 1, false)).await.map(drop),
        Code::NotFound,
        "ghost",
    );
    let nack = wire::NackRequest {
        consumer: "ghost".into(),
        seq: 1,
        reason: "x".into(),
    };
    check(
        "nack, unknown consumer",
        c.nack(nack).await.map(drop),
        Code::NotFound,
        "ghost",
    );
    // A durable consumer that exists: an in-progress ack of a seq it does not hold.
    let _stream = c.subscribe(sub("real", vec![], vec![])).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let e = loop {
        match c.ack(ack("real", 999, true)).await {
            Err(e) if e.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other.map(drop),
        }
    };
    check(
        "in-progress ack of a seq not held",
        e,
        Code::FailedPrecondition,
        "seq 999",
    );
    check(
        "retry of an unknown letter",
        c.retry_dead_letter(wire::RetryDeadLetterRequest { id: 4242 })
            .await
            .map(drop),
        Code::NotFound,
        "4242",
    );
    check(
        "resolve to a bad state",
        c.resolve_dead_letter(wire::ResolveDeadLetterRequest { id: 1, state: 4242 })
            .await
            .map(drop),
        Code::InvalidArgument,
        "state must be",
    );
    let dead = wire::DeadLetterState::Dead as i32;
    check(
        "resolve of an unknown letter",
        c.resolve_dead_letter(wire::ResolveDeadLetterRequest {
            id: 4242,
            state: dead,
        })
        .await
        .map(drop),
        Code::FailedPrecondition,
        "dead letter 4242 does not exist",
    );
    let ids = (0..crate::service::MAX_BATCH + 1)
        .map(|i| i.to_string())
        .collect();
    check(
        "lookup of too many ids",
        c.lookup(wire::LookupRequest {
            ids,
            since_unix_ms: 0,
        })
        .await
        .map(drop),
        Code::InvalidArgument,
        "larger than",
    );
}
