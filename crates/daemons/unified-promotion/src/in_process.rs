//! In process through `Context::for_test`: `build` reads the gate from
//! `[unified_promotion]`, EVALUATION_COMPLETED handled: a model below that gate is
//! rejected once, naming the opponent it fell short against. On a node that does not
//! lead (cluster.toml names another coordinator), the evaluation is nacked: nothing is
//! published or decided.

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
