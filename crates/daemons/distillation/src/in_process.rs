//! In process through `Context::for_test`: `build` with scripted distill and evaluate
//! jobs run by the real job runner, MODEL_PROMOTED handled: the student is trained on the
//! recent exports, evaluated, and its Elo published once per promoted model.

use super::*;
use ringrift_contracts::example;

#[tokio::test]
async fn build_and_distil_a_promoted_model() {
    let home = tempfile::tempdir().unwrap();
    let config: ConfigKey = "hex8_2p".parse().unwrap();
    let npz = paths::training_dir(home.path()).join("hex8_2p_after0.npz");
    std::fs::create_dir_all(npz.parent().unwrap()).unwrap();
    std::fs::write(&npz, b"rows").unwrap();
    let student = paths::models_dir(home.path()).join("hex8_2p/distilled_abcdef012345.rrm");
    let distill = example::train(config, &student);
    let gauntlet = example::evaluate(
        config,
        &student,
        vec![
            example::opponent("random", 8, 8, 0.68, 1.0),
            example::opponent("heuristic", 8, 5, 0.31, 0.86),
        ],
        Some(1560.0),
    );
    let jobs = [
        ringrift_jobs::scripted_job(home.path(), JobKind::Distill, &distill).unwrap(),
        ringrift_jobs::scripted_job(home.path(), JobKind::Evaluate, &gauntlet).unwrap(),
    ]
    .concat();
    let (ctx, published) =
        Context::for_test(INFO.name, home.path(), &format!("[jobs]\n{jobs}")).unwrap();
    let h = build(&ctx).unwrap();
    let promoted = Event::new(wire::event::Payload::ModelPromoted(wire::ModelPromoted {
        model_path: "/m/gen0003.rrm".into(),
        canonical_path: "/m/canonical_hex8_2p.rrm".into(),
        model_sha256: "abcdef0123456789".into(),
        ..Default::default()
    }))
    .with_config("hex8_2p");
    h.handle_event(&ctx, &promoted).await.unwrap();
    h.handle_event(&ctx, &promoted).await.unwrap();
    let elo: Vec<_> = published
        .payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::EloUpdated(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(elo.len(), 1, "distilled once per promoted model: {elo:?}");
    assert_eq!(
        (elo[0].participant.as_str(), elo[0].elo),
        ("distilled_abcdef012345", 1560.0)
    );
    assert!(h.health_check().message.contains("Elo 1560"));
}
