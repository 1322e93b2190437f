//! ONNX models through tract: the checked-in tiny model (written once by
//! `examples/python-trainer/train.py`, see `fixtures/README.md`) loads, plays, is evaluated
//! and promoted; bad files fail naming the file; and, with Python + numpy + onnx, a model
//! the example trainer writes now gives the same values in tract as in ONNX's reference
//! evaluator (skipped visibly without them; under `CI=true` that fails).

mod common;

use ringrift_workload::game::{Geometry, State};
use ringrift_workload::model_file::AnyModel;
use ringrift_workload::onnx::OnnxModel;
use ringrift_workload::players::{Player, RandomPlayer, play_game};
use ringrift_workload::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_hex8_2p.onnx")
}

fn trainer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-trainer/train.py")
}

fn sha256(bytes: &[u8]) -> String {
    ringrift_store::manifest::sha256_hex(bytes)
}

/// Feature rows of a few positions of one random game (the NPZ encoding).
fn boards(n: usize) -> (Vec<f32>, usize) {
    let geo = Geometry::new("hex8_2p".parse().expect("key"));
    let row = geo.players() * geo.cells();
    let mut rng = Rng::new(5);
    let mut s = State::new(geo);
    let mut out = Vec::new();
    let mut rows = 0;
    while rows < n && !s.done {
        let mut f = vec![0.0; row];
        ringrift_workload::dataset::encode_features(&s, &mut f);
        out.extend(f);
        rows += 1;
        let moves = s.legal_moves();
        s.play_unchecked(usize::from(moves[rng.below(moves.len())]));
    }
    (out, rows)
}

#[test]
fn the_checked_in_tiny_model_loads_plays_is_evaluated_and_promoted() {
    let m = OnnxModel::load(&fixture()).expect("load the fixture");
    assert_eq!(m.config_key().to_string(), "hex8_2p");
    assert_eq!(m.info.generation, 1);
    let bytes = std::fs::read(fixture()).expect("fixture");
    assert_eq!(m.info.payload_sha256, sha256(&bytes));
    let (b, n) = boards(6);
    let v = m.values(&b, n).expect("values");
    assert_eq!(v.len(), n);
    assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)), "{v:?}");

    // It plays whole legal games.
    let key = "hex8_2p".parse().expect("key");
    let (model, info) = AnyModel::load(&fixture(), key).expect("any");
    let geo = Geometry::new(key);
    let mut rng = Rng::new(3);
    let mut me = model.player("tiny", ringrift_workload::players::SearchConfig::greedy(1));
    let mut other = RandomPlayer;
    let seats: &mut [&mut dyn Player] = &mut [me.as_mut(), &mut other];
    let end = play_game(State::new(geo), seats, &mut rng);
    assert!(end.done);
    model.failure().expect("no inference failure");

    // The gauntlet and the promotion take it like one of ours.
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let candidate = home.join("models/hex8_2p/gen0001_w1.onnx");
    std::fs::create_dir_all(candidate.parent().expect("dir")).expect("mkdir");
    std::fs::copy(fixture(), &candidate).expect("copy");
    let r = ringrift_workload::evaluate::evaluate(&ringrift_workload::evaluate::EvaluateArgs {
        home: home.to_path_buf(),
        config: key,
        model: candidate.clone(),
        name: None,
        job_id: "t".into(),
        games_vs_random: 4,
        games_vs_heuristic: 4,
        games_vs_canonical: 4,
        depth: 1,
        canonical_depth: 1,
        opening_plies: 2,
        explore_plies: 0,
        threads: 2,
        seed: 9,
        record_elo: true,
        source_node: "test".into(),
        quiet: true,
        gate: Default::default(),
        early_reject: false,
        early_accept: false,
    })
    .expect("evaluate the ONNX model");
    assert_eq!(r.model_sha256, info.payload_sha256);
    assert_eq!(r.generation, 1);
    assert_eq!(r.results.iter().map(|o| o.games).sum::<u64>(), 8);
    let open = ringrift_workload::promote::Gate {
        min_lower_vs_random: 0.0,
        min_lower_vs_heuristic: 0.0,
        min_lower_vs_canonical: 0.0,
        ..Default::default()
    };
    let p = ringrift_workload::promote::promote_if_passed(
        home,
        &r,
        &open,
        ringrift_workload::promote::Fence::Leader(1),
    )
    .expect("promote");
    assert!(p.promoted, "{p:?}");
    let canonical = home.join("models/canonical_hex8_2p.onnx");
    assert_eq!(p.canonical.as_deref(), Some(canonical.as_path()));
    assert_eq!(std::fs::read(&canonical).expect("canonical"), bytes);
}

#[test]
fn a_bad_onnx_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xfe this is not protobuf").expect("write");
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(fixture()).expect("fixture");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    for (p, what) in [
        (&junk, "not an ONNX model"),
        (&truncated, "ONNX"),
        (&dir.path().join("missing.onnx"), "read model"),
    ] {
        let err = OnnxModel::load(p).expect_err("bad file").to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(err.contains(what), "{err}");
    }
    let key = "hex8_3p".parse().expect("key");
    let err = AnyModel::load(&fixture(), key)
        .expect_err("wrong config")
        .to_string();
    assert!(
        err.contains("tiny_hex8_2p.onnx") && err.contains("hex8_3p"),
        "{err}"
    );
}

/// The values ONNX's reference evaluator gives for `boards` (`n` rows) with `model`.
fn reference_values(model: &Path, boards: &[f32], n: usize) -> Vec<f32> {
    let script = r#"
import json, sys
import numpy as np
from onnx.reference import ReferenceEvaluator
rows = json.load(open(sys.argv[2]))
x = np.array(rows, dtype=np.float32)
(v,) = ReferenceEvaluator(sys.argv[1]).run(["value"], {"board": x})
print(json.dumps([float(a) for a in v.reshape(-1)]))
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("boards.json");
    let row = boards.len() / n;
    let rows: Vec<&[f32]> = boards.chunks(row).collect();
    std::fs::write(&input, serde_json::to_vec(&rows).expect("json")).expect("write");
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(model)
        .arg(&input)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "reference evaluator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("values")
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-4, "tract {a:?} vs reference {b:?}");
    }
}

/// The example trainer's model now, and the checked-in one, give the same values in
/// tract as in ONNX's reference evaluator. `RINGRIFT_REGENERATE_ONNX_FIXTURE=1` writes
/// the new model over the fixture.
#[test]
fn the_example_trainer_writes_a_model_tract_reads_as_onnx_does() {
    if !common::require_python(
        "numpy, onnx",
        "the_example_trainer_writes_a_model_tract_reads_as_onnx_does",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().to_path_buf();
    let (_, _, npz) = common::games_exported(&home, 8);
    let model = home.join("models/hex8_2p/gen0001_w8.onnx");
    let result = home.join("result.json");
    let out = Command::new("python3")
        .arg(trainer())
        .args(["--config", "hex8_2p", "--data"])
        .arg(&npz)
        .arg("--output")
        .arg(&model)
        .arg("--result")
        .arg(&result)
        .args([
            "--generation",
            "1",
            "--epochs",
            "2",
            "--hidden",
            "8",
            "--init",
            "",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "train.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its result is a TrainReport by the contract.
    let r = ringrift_contracts::wire::parse_report::<ringrift_contracts::TrainReport>(
        ringrift_contracts::JobKind::Train,
        serde_json::from_slice(&std::fs::read(&result).expect("result")).expect("json"),
    )
    .expect("the result fits the TrainReport contract");
    let m = OnnxModel::load(&model).expect("tract loads the trained model");
    assert_eq!(r.sha256, m.info.payload_sha256);
    assert_eq!(r.generation, m.info.generation);
    let (b, n) = boards(12);
    assert_close(
        &m.values(&b, n).expect("values"),
        &reference_values(&model, &b, n),
    );
    let fixed = OnnxModel::load(&fixture()).expect("fixture");
    assert_close(
        &fixed.values(&b, n).expect("values"),
        &reference_values(&fixture(), &b, n),
    );
    if std::env::var("RINGRIFT_REGENERATE_ONNX_FIXTURE").is_ok_and(|v| v == "1") {
        std::fs::copy(&model, fixture()).expect("regenerate the fixture");
        eprintln!("regenerated {}", fixture().display());
    }
}
