//! Fuzz targets of the job reports and work-item payloads (see `ringrift-fuzz`): result
//! documents of every job kind and queue payloads, mutated as JSON text. Any document is
//! the typed report or a [`ContractError`] saying what was read, never a panic; an
//! accepted report or payload is written and read back equal.

use crate::payload::{Payload, SelfplayItem, TournamentItem, TrainingItem};
use crate::report::Report;
use crate::wire::{parse_payload, parse_report, payload_json, report_json};
use crate::{ConfigKey, ExportReport, JobKind, SelfplayReport, example};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use std::fmt::Debug;

fn key() -> ConfigKey {
    "hex8_2p".parse().expect("key")
}

fn seeds() -> Vec<Vec<u8>> {
    let docs: Vec<Result<Value, _>> = vec![
        report_json(
            JobKind::Selfplay,
            &SelfplayReport {
                config_key: key(),
                games: 10,
                moves: 400,
                wins_by_seat: vec![6, 3],
                draws: 1,
                mean_length: 40.0,
                elapsed_s: 2.5,
                games_per_s: 4.0,
                moves_per_s: 160.0,
                threads: 2,
                db: "/h/data/games/hex8_2p.db".into(),
                model: Some("/h/models/m.rrm".into()),
                model_sha256: None,
                max_seq: 99,
            },
        ),
        report_json(
            JobKind::Export,
            &ExportReport {
                config_key: key(),
                games: 3,
                rows: 30,
                output: "/d/x.npz".into(),
                sha256: "ab".into(),
                bytes: 100,
                max_seq: 7,
                elapsed_s: 0.5,
                rows_per_s: 60.0,
                skipped: 0,
            },
        ),
        report_json(JobKind::Train, &example::train(key(), "/h/models/next.rrm")),
        report_json(
            JobKind::Distill,
            &example::train(key(), "/h/models/small.rrm"),
        ),
        report_json(
            JobKind::Evaluate,
            &example::evaluate(
                key(),
                "/h/models/next.rrm",
                vec![
                    example::opponent("random", 100, 95, 0.89, 0.98),
                    example::opponent("heuristic", 100, 70, 0.6, 0.78),
                ],
                Some(1612.0),
            ),
        ),
        report_json(
            JobKind::Tournament,
            &example::tournament(key(), &[("a", 1500.0), ("b", 1480.5)]),
        ),
    ];
    docs.into_iter()
        .filter_map(Result::ok)
        .map(|v| serde_json::to_vec_pretty(&v).unwrap_or_default())
        .collect()
}

/// Reads `doc` as a `kind` report `T`; an accepted report is written and read back equal.
fn check_report<T: Report + PartialEq + Debug>(
    kind: JobKind,
    doc: &Value,
) -> Result<(), TestCaseError> {
    match parse_report::<T>(kind, doc.clone()) {
        Ok(r) => {
            let v =
                report_json(kind, &r).map_err(|e| TestCaseError::fail(format!("write: {e}")))?;
            let back = parse_report::<T>(kind, v)
                .map_err(|e| TestCaseError::fail(format!("written report refused: {e}")))?;
            prop_assert_eq!(back, r);
        }
        Err(e) => prop_assert!(
            e.to_string().starts_with(&format!("{kind} job result")),
            "{}",
            e
        ),
    }
    Ok(())
}

#[test]
fn fuzz_job_reports() {
    let r = ringrift_fuzz::run(
        file!(),
        "job_report",
        ringrift_fuzz::mutated(seeds()),
        |bytes| {
            let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
                return Ok(());
            };
            // Every reader against every document: a report of the wrong kind is refused too.
            for kind in JobKind::ALL {
                check_report::<SelfplayReport>(kind, &doc)?;
                check_report::<ExportReport>(kind, &doc)?;
                check_report::<crate::TrainReport>(kind, &doc)?;
                check_report::<crate::EvaluateReport>(kind, &doc)?;
                check_report::<crate::TournamentReport>(kind, &doc)?;
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}

fn check_payload<P: Payload + PartialEq + Debug>(doc: &Value) -> Result<(), TestCaseError> {
    match parse_payload::<P>("42", doc) {
        Ok(p) => {
            let v = payload_json(&p).map_err(|e| TestCaseError::fail(format!("write: {e}")))?;
            let back = parse_payload::<P>("42", &v)
                .map_err(|e| TestCaseError::fail(format!("written payload refused: {e}")))?;
            prop_assert_eq!(back, p);
        }
        Err(e) => prop_assert!(e.to_string().contains("work item 42"), "{}", e),
    }
    Ok(())
}

#[test]
fn fuzz_work_payloads() {
    let seeds = [
        r#"{"games": 100, "reason": "queue low", "device": "gpu1"}"#,
        r#"{"npz_path": "/d/a.npz", "npz_paths": ["/d/z.npz", "/d/a.npz"], "npz_sha256": "ab", "rows": 3000, "watermark": 77}"#,
        "{}",
    ];
    let r = ringrift_fuzz::run(
        file!(),
        "work_payload",
        ringrift_fuzz::mutated_text(&seeds),
        |text| {
            let Ok(doc) = serde_json::from_str::<Value>(&text) else {
                return Ok(());
            };
            check_payload::<SelfplayItem>(&doc)?;
            check_payload::<TrainingItem>(&doc)?;
            check_payload::<TournamentItem>(&doc)?;
            if let Ok(item) = parse_payload::<SelfplayItem>("42", &doc) {
                let _ = item.gpu();
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}
