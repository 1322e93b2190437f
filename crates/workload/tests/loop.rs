//! The whole loop on a reduced size, through the real `ringrift-job` binary (and the job
//! runner for one step): selfplay → export → train → evaluate → promote, twice, in a
//! temp home.

use job_runner::{CommandTemplate, JobRunner, JobSpec, JobStatus};
use ringrift_contracts::wire::parse_report;
use ringrift_contracts::{EvaluateReport, ExportReport, JobKind, TrainReport};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ringrift-job");

/// Runs the binary with `--home` and `--result`, returns the parsed result file.
fn job(home: &Path, name: &str, args: &[&str]) -> serde_json::Value {
    let result = home.join(format!("{name}.result.json"));
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .arg("--result")
        .arg(&result)
        .args(["--quiet", "--seed", "7"])
        .args(args)
        .output()
        .expect("run ringrift-job");
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&result).expect("result file");
    serde_json::from_slice(&bytes).expect("result is JSON")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn reduced_loop_promotes_and_improves_bookkeeping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();

    // Generation 0 selfplay through the job runner, as a daemon would launch it.
    let runner = JobRunner::open(&home.join("run/jobs.db")).expect("runner");
    let mut vars = BTreeMap::new();
    vars.insert("home".to_string(), s(home));
    vars.insert("config_key".to_string(), "hex8_2p".to_string());
    let template = CommandTemplate::new(
        [
            BIN,
            "--home",
            "{home}",
            "--result",
            "{result}",
            "--quiet",
            "--seed",
            "1",
            "selfplay",
            "--config",
            "{config_key}",
            "--games",
            "40",
            "--depth",
            "1",
        ]
        .map(String::from)
        .to_vec(),
    )
    .expect("template");
    let outcome = runner
        .run(&JobSpec {
            job_key: "selfplay:hex8_2p".into(),
            kind: "selfplay".into(),
            template,
            vars,
            timeout: Duration::from_secs(120),
            log_path: home.join("logs/selfplay.log"),
            result_path: Some(home.join("run/selfplay.result.json")),
            workdir: None,
            env: vec![],
            slot: None,
        })
        .expect("run selfplay job");
    assert_eq!(outcome.status, JobStatus::Succeeded, "{outcome:?}");
    let sp = outcome.result.expect("selfplay result");
    assert_eq!(sp["games"], 40);
    assert_eq!(sp["job"], "selfplay");
    assert!(home.join("data/games/hex8_2p.db").exists());

    let npz = home.join("data/training/g1.npz");
    let ex = job(
        home,
        "export",
        &["export", "--config", "hex8_2p", "--output", &s(&npz)],
    );
    assert_eq!(ex["games"], 40);
    let since = parse_report::<ExportReport>(JobKind::Export, ex.clone())
        .expect("export report")
        .max_seq;
    assert_eq!(since, 40);

    let gen1 = home.join("models/hex8_2p_gen1.rrm");
    let tr = job(
        home,
        "train",
        &[
            "train",
            "--config",
            "hex8_2p",
            "--data",
            &s(&npz),
            "--output",
            &s(&gen1),
            "--hidden",
            "16",
            "--epochs",
            "2",
        ],
    );
    let tr = parse_report::<TrainReport>(JobKind::Train, tr).expect("train report");
    assert_eq!(tr.generation, 1);
    assert!(tr.samples > 100);

    // 30 straight wins vs random give a Wilson lower bound of 0.886 ≥ 0.85. The heuristic
    // gate is set to 0 here: this test checks the mechanics, the demo measures strength.
    let ev = job(
        home,
        "evaluate1",
        &[
            "evaluate",
            "--config",
            "hex8_2p",
            "--model",
            &s(&gen1),
            "--games-random",
            "30",
            "--games-heuristic",
            "6",
            "--depth",
            "1",
            "--promote",
            "--gate-heuristic",
            "0",
        ],
    );
    let ev = parse_report::<EvaluateReport>(JobKind::Evaluate, ev).expect("evaluate report");
    let vs_random = &ev.results[0];
    assert_eq!(vs_random.opponent, "random");
    let lower = vs_random.lower95;
    assert!(lower >= 0.85, "gen1 vs random lower bound {lower}: {ev:?}");
    assert!(ev.promotion.as_ref().is_some_and(|p| p.promoted), "{ev:?}");
    let elo1 = ev.elo.expect("elo recorded");
    let canonical = home.join("models/canonical_hex8_2p.rrm");
    let link = home.join("models/ringrift_best_hex8_2p");
    assert_eq!(
        std::fs::read_link(&link).expect("symlink"),
        Path::new("canonical_hex8_2p.rrm")
    );
    assert_eq!(
        std::fs::read(&canonical).expect("canonical"),
        std::fs::read(&gen1).expect("gen1")
    );

    // Generation 2: selfplay with the canonical model, export only the new games, fine-tune.
    let sp2 = job(
        home,
        "selfplay2",
        &[
            "selfplay",
            "--config",
            "hex8_2p",
            "--games",
            "40",
            "--depth",
            "1",
            "--model",
            &s(&link),
        ],
    );
    assert_eq!(sp2["max_seq"], 80);
    let npz2 = home.join("data/training/g2.npz");
    let ex2 = job(
        home,
        "export2",
        &[
            "export",
            "--config",
            "hex8_2p",
            "--since",
            &since.to_string(),
            "--output",
            &s(&npz2),
        ],
    );
    assert_eq!(
        ex2["games"], 40,
        "export must only take games after the watermark"
    );
    let gen2 = home.join("models/hex8_2p_gen2.rrm");
    let tr2 = job(
        home,
        "train2",
        &[
            "train",
            "--config",
            "hex8_2p",
            "--data",
            &s(&npz),
            "--data",
            &s(&npz2),
            "--init",
            &s(&gen1),
            "--output",
            &s(&gen2),
            "--epochs",
            "2",
        ],
    );
    assert_eq!(tr2["generation"], 2);
    let ev2 = job(
        home,
        "evaluate2",
        &[
            "evaluate",
            "--config",
            "hex8_2p",
            "--model",
            &s(&gen2),
            "--games-random",
            "30",
            "--games-heuristic",
            "6",
            "--games-canonical",
            "10",
            "--depth",
            "1",
            "--promote",
            "--gate-heuristic",
            "0",
            "--gate-canonical",
            "0",
        ],
    );
    let ev2 = parse_report::<EvaluateReport>(JobKind::Evaluate, ev2).expect("evaluate report");
    let opponents: Vec<&str> = ev2.results.iter().map(|r| r.opponent.as_str()).collect();
    assert_eq!(opponents, ["random", "heuristic", "hex8_2p_gen1"]);
    let promotion = ev2.promotion.as_ref().expect("promotion");
    assert!(promotion.promoted, "{ev2:?}");
    assert!(
        promotion.backup.as_ref().is_some_and(|b| b.exists()),
        "backup missing"
    );
    assert!(ev2.elo.is_some() && elo1 > 0.0);

    // Distil the promoted model into a smaller one.
    let small = home.join("models/hex8_2p_small.rrm");
    let di = job(
        home,
        "distill",
        &[
            "distill",
            "--config",
            "hex8_2p",
            "--teacher",
            &s(&link),
            "--data",
            &s(&npz2),
            "--output",
            &s(&small),
            "--hidden",
            "8",
            "--epochs",
            "1",
        ],
    );
    assert_eq!(di["hidden"], 8);

    // Elo store saw every gauntlet game.
    let elo = ringrift_store::elo::EloStore::open(&home.join("data/unified_elo.db")).expect("elo");
    assert_eq!(elo.match_count().expect("count"), 36 + 46);
}

#[test]
fn bad_input_fails_with_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--home")
            .arg(home)
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["selfplay", "--config", "hex9_2p"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("hex9_2p"), "{err}");
    let bogus = home.join("bogus.rrm");
    std::fs::write(&bogus, b"not a model").expect("write");
    let (code, err) = run(&["evaluate", "--config", "hex8_2p", "--model", &s(&bogus)]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad magic"), "{err}");
    let (code, err) = run(&["export", "--config", "hex8_2p"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no game store"), "{err}");
    let junk = home.join("junk.npz");
    std::fs::write(&junk, b"PK junk").expect("write");
    let (code, err) = run(&[
        "train",
        "--config",
        "hex8_2p",
        "--data",
        &s(&junk),
        "--output",
        &s(&home.join("m.rrm")),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("junk.npz") && err.contains("not a readable NPZ"),
        "{err}"
    );
}
