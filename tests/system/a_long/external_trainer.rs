//! A pluggable external trainer: one generation of the loop (selfplay → export → train →
//! evaluate → promotion decision) with the `train` job run by the Python example trainer
//! (`examples/python-trainer/train.py`, ONNX out) through `[jobs]` alone, every other
//! setting as in the training-loop test. The model trained, evaluated and decided on is
//! the `.onnx` file. Needs python3 with numpy and onnx: skipped visibly without them,
//! a failure under `CI=true`.

use super::training_loop::{
    assert_no_duplicate_training, assert_no_duplicate_training_jobs, loop_home_with, start,
    wait_decided,
};
use ringrift_proto::wire::event::Payload;
use ringrift_system_tests::{command_works, require_tool};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onnx_model_from_the_python_trainer_is_evaluated_and_decided_on() {
    let present = command_works("python3", &["-c", "import numpy, onnx"]);
    if !require_tool("python3 numpy/onnx", present) {
        return;
    }
    let _heavy = ringrift_system_tests::heavy();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python-trainer/train.py")
        .canonicalize()
        .expect("examples/python-trainer/train.py");
    // Single quotes: the path is one argument whatever it holds (the template is split
    // like a shell line, and no shell runs it).
    let home = loop_home_with(&format!(
        r#"[jobs]
model_format = "onnx"
train = "python3 '{}' --config {{config_key}} --data {{data}} --output {{output}} --result {{result}} --generation {{generation}} --epochs {{epochs}} --init {{init}}"
"#,
        script.display()
    ));
    let _l = start(&home);
    let events = wait_decided(&home).await;
    let onnx = |p: &str| p.ends_with(".onnx");
    let trained: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::TrainingCompleted(t)) => Some(t.model_path.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        !trained.is_empty() && trained.iter().all(|p| onnx(p)),
        "trained models: {trained:?}"
    );
    let evaluated = events.iter().find_map(|e| match &e.payload {
        Some(Payload::EvaluationCompleted(v)) => Some(v.clone()),
        _ => None,
    });
    let evaluated = evaluated.expect("an evaluation before the decision");
    assert!(onnx(&evaluated.model_path), "{evaluated:?}");
    assert!(
        evaluated
            .results
            .iter()
            .any(|r| r.opponent == "heuristic" && r.games > 0),
        "the ONNX model played the gauntlet: {evaluated:?}"
    );
    // The decision names the ONNX model, promoted or rejected with its reasons.
    let decision = events
        .iter()
        .find_map(|e| match &e.payload {
            Some(Payload::ModelPromoted(p)) => Some((
                p.model_path.clone(),
                p.model_sha256.clone(),
                p.canonical_path.clone(),
            )),
            Some(Payload::PromotionRejected(r)) => {
                assert!(!r.reason.is_empty(), "a rejection says why");
                Some((r.model_path.clone(), r.model_sha256.clone(), String::new()))
            }
            _ => None,
        })
        .expect("decision");
    eprintln!("decision: {decision:?}");
    assert!(onnx(&decision.0), "{decision:?}");
    assert_eq!(decision.1, evaluated.model_sha256);
    if !decision.2.is_empty() {
        assert!(
            decision.2.ends_with("canonical_hex8_2p.onnx"),
            "{decision:?}"
        );
    }
    // The identity is the SHA-256 of the ONNX file the trainer wrote.
    let bytes = std::fs::read(&decision.0).expect("the trained model");
    assert_eq!(ringrift_store::manifest::sha256_hex(&bytes), decision.1);
    assert_no_duplicate_training(&events);
    assert!(
        assert_no_duplicate_training_jobs(home.path()) >= 1,
        "a decision without a succeeded training job"
    );
}
