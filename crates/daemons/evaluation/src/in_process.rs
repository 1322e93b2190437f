//! In process through `Context::for_test`: `build` with a scripted evaluate job run by
//! the real job runner, TRAINING_COMPLETED handled: the gauntlet's report becomes one
//! EVALUATION_COMPLETED.

use super::*;
use ringrift_contracts::example;

#[tokio::test]
async fn build_and_evaluate_a_trained_model() {
    let home = tempfile::tempdir().unwrap();
    let config = "hex8_2p".parse().unwrap();
    let mut report = example::evaluate(
        config,
        "/m/gen0001.rrm",
        vec![
            example::opponent("random", 40, 39, 0.87, 1.0),
            example::opponent("heuristic", 40, 22, 0.40, 0.69),
        ],
        Some(1580.0),
    );
    report.model_sha256 = "abc123".into();
    let jobs = ringrift_jobs::scripted_job(home.path(), JobKind::Evaluate, &report).unwrap();
    let (ctx, published) =
        Context::for_test(INFO.name, home.path(), &format!("[jobs]\n{jobs}")).unwrap();
    let h = build(&ctx).unwrap();
    let trained = Event::new(wire::event::Payload::TrainingCompleted(
        wire::TrainingCompleted {
            run_id: "w1".into(),
            model_path: "/m/gen0001.rrm".into(),
            model_sha256: "abc123".into(),
            generation: 1,
            ..Default::default()
        },
    ))
    .with_config("hex8_2p");
    h.handle_event(&ctx, &trained).await.unwrap();
    let done: Vec<_> = published
        .payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::EvaluationCompleted(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].model_sha256, "abc123");
}

/// `games_canonical = 0` would promote every candidate that clears the floors: a config
/// error naming the key, not a silently disabled SPRT.
#[tokio::test]
async fn no_games_against_the_canonical_model_is_a_config_error() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, _) = Context::for_test(
        INFO.name,
        home.path(),
        "[evaluation]\ngames_canonical = 0\n",
    )
    .unwrap();
    let err = build(&ctx).err().expect("refused");
    assert!(handler_base::is_config_error(&err), "{err:#}");
    assert!(format!("{err:#}").contains("games_canonical"), "{err:#}");
}
