//! In process through `Context::for_test`: `build` reads the gate from
//! `[unified_promotion]`, EVALUATION_COMPLETED handled: a model below that gate is
//! rejected once, naming the opponent it fell short against. On a node that does not
//! lead (cluster.toml names another coordinator), the evaluation is nacked: nothing is
//! published or decided. A model evaluated on another node is fetched from that node's
//! data server (two homes, two data servers on loopback) and the copy promoted.

use super::*;

#[tokio::test]
async fn build_and_reject_a_model_below_the_configured_gate() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, published) = Context::for_test(
        INFO.name,
        home.path(),
        "[unified_promotion]\nmin_lower_vs_random = 0.9\n",
    )
    .unwrap();
    let h = build(&ctx).unwrap();
    assert!(h.health_check().details["gate"].contains("random ≥ 0.90"));
    let r = |o: &str, l: f64| wire::OpponentResult {
        opponent: o.into(),
        games: 100,
        wins: 88,
        win_rate: l + 0.05,
        lower_95: l,
        upper_95: l + 0.1,
        ..Default::default()
    };
    // 0.85 passes the default random gate (0.85) but not the configured 0.9.
    let ev = Event::new(wire::event::Payload::EvaluationCompleted(
        wire::EvaluationCompleted {
            model_path: "/nonexistent/m.rrm".into(),
            model_sha256: "s1".into(),
            results: vec![r("random", 0.86), r("heuristic", 0.70)],
            elo: 1500.0,
            run_id: "w".into(),
            ..Default::default()
        },
    ))
    .with_config("hex8_2p");
    h.handle_event(&ctx, &ev).await.unwrap();
    h.handle_event(&ctx, &ev).await.unwrap();
    let p = published.payloads();
    assert!(
        matches!(&p[..], [wire::event::Payload::PromotionRejected(r)] if r.reason.contains("vs random")),
        "{p:?}"
    );
}

#[tokio::test]
async fn a_node_that_does_not_lead_nacks_the_evaluation() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("cluster.toml"),
        "[[node]]\nname = \"coord\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\n\
         [[node]]\nname = \"test\"\nroles = [\"training\"]\naddress = \"127.0.0.1\"\nports = { p2p = 8790 }\n",
    )
    .unwrap();
    let (ctx, published) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build(&ctx).unwrap();
    let ev = Event::new(wire::event::Payload::EvaluationCompleted(
        wire::EvaluationCompleted {
            model_path: "/nonexistent/m.rrm".into(),
            model_sha256: "s1".into(),
            run_id: "w".into(),
            ..Default::default()
        },
    ))
    .with_config("hex8_2p");
    let err = h.handle_event(&ctx, &ev).await.expect_err("nacked");
    assert!(err.to_string().contains("(test) does not lead"), "{err}");
    assert!(published.payloads().is_empty());
}

/// Two homes on separate "machines": the training node `train` trained and evaluated
/// a model under its own home (`/srv/ringrift-train/...` as its event says, a path not
/// readable here), and its data server serves it as `models/hex8_2p/gen0001_w5.rrm`.
/// The leader `lead` fetches it from `train`, verified, and promotes that copy
/// (canonical here, MODEL_PROMOTED, no copy left in `.incoming`). While `train` does
/// not serve the file, the evaluation is nacked (an error, nothing decided or
/// published), and the redelivery after is promoted.
#[tokio::test]
async fn a_model_evaluated_on_another_node_is_fetched_from_it_and_promoted() {
    use ringrift_test_support::data_server as testing;
    let config: ConfigKey = "hex8_2p".parse().unwrap();
    let (lead, train) = (
        testing::server("lead").await,
        testing::server("train").await,
    );
    std::fs::write(
        lead.home.path().join("cluster.toml"),
        testing::cluster(&[
            ("lead", "\"coordinator\"", lead.port, false),
            ("train", "\"training\"", train.port, false),
        ]),
    )
    .unwrap();
    let (h, ctx, published) =
        ringrift_test_support::daemon(INFO.name, build, lead.home.path(), "lead", "");
    let (header, bytes) = ringrift_store::models::example(config, 1, &[7u8; 100_000]).unwrap();
    let r = |o: &str, l: f64| wire::OpponentResult {
        opponent: o.into(),
        games: 100,
        wins: 95,
        win_rate: l + 0.03,
        lower_95: l,
        upper_95: l + 0.05,
        ..Default::default()
    };
    let mut ev = Event::new(wire::event::Payload::EvaluationCompleted(
        wire::EvaluationCompleted {
            model_path: "/srv/ringrift-train/models/hex8_2p/gen0001_w5.rrm".into(),
            model_sha256: header.payload_sha256.clone(),
            results: vec![r("random", 0.95), r("heuristic", 0.80)],
            elo: 1500.0,
            run_id: "t1".into(),
            ..Default::default()
        },
    ))
    .with_config("hex8_2p");
    ev.source = "evaluation@train".into();

    // Not served yet: nacked, retryable, nothing decided.
    let err = h.handle_event(&ctx, &ev).await.expect_err("nacked");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("from train") && msg.contains("does not serve models/hex8_2p/gen0001_w5.rrm"),
        "{msg}"
    );
    assert!(published.payloads().is_empty());
    assert!(
        ringrift_store::models::canonical(lead.home.path(), config)
            .unwrap()
            .is_none()
    );

    let dir = ringrift_store::paths::models_dir(train.home.path()).join("hex8_2p");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gen0001_w5.rrm"), &bytes).unwrap();
    h.handle_event(&ctx, &ev)
        .await
        .expect("fetched and promoted");
    let c = ringrift_store::models::canonical(lead.home.path(), config)
        .unwrap()
        .expect("canonical installed on the leader");
    assert_eq!(c.sha256, header.payload_sha256);
    let p = published.payloads();
    assert!(
        matches!(&p[..], [wire::event::Payload::ModelPromoted(m)] if m.model_sha256 == header.payload_sha256),
        "{p:?}"
    );
    let incoming = ringrift_transfer::model_fetch::incoming_dir(lead.home.path());
    let left: Vec<_> = std::fs::read_dir(&incoming)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "copies left in .incoming: {left:?}");
    assert_eq!(h.health_check().details["fetched"], "1");
    // Decided once: a redelivery fetches nothing more.
    h.handle_event(&ctx, &ev).await.unwrap();
    assert_eq!(published.payloads().len(), 1);
    assert_eq!(h.health_check().details["fetched"], "1");
}
