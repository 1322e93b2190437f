//! The one place where contract types become JSON and back: job result files (a report
//! in an envelope `{"job": <kind>, "version": 1, ...fields}`) and work-item payloads.
//! Every failure is a [`ContractError`] naming what was read and the field at fault
//! (`export job result: missing field `rows``), never a default.

use crate::payload::Payload;
use crate::report::{JobKind, Report};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The version of the report envelope this build writes and reads.
pub const REPORT_VERSION: u32 = 1;

/// A document that does not fit its contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what}: {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct ContractError {
    /// What was read, e.g. "export job result" or "training work item 42".
    pub what: String,
    /// The path of the offending field when it is not the document itself.
    pub field: Option<String>,
    /// serde's message, e.g. "missing field `rows`".
    pub message: String,
}

impl ContractError {
    fn new(what: &str, message: impl ToString) -> Self {
        ContractError {
            what: what.to_owned(),
            field: None,
            message: message.to_string(),
        }
    }
}

/// Deserialises `value` as `T`, naming the field of a failure.
fn from_value<T: serde::de::DeserializeOwned>(
    what: &str,
    value: Value,
) -> Result<T, ContractError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ContractError {
            what: what.to_owned(),
            field: (path != ".").then_some(path),
            message: e.into_inner().to_string(),
        }
    })
}

#[derive(Deserialize)]
struct Envelope {
    job: JobKind,
    version: u32,
    #[serde(flatten)]
    report: Map<String, Value>,
}

/// The result document of a `kind` job: the report's fields plus `job` and `version`.
pub fn report_json<T: Report>(kind: JobKind, report: &T) -> Result<Value, ContractError> {
    let what = format!("{kind} job result");
    let mut value = serde_json::to_value(report).map_err(|e| ContractError::new(&what, e))?;
    let Value::Object(fields) = &mut value else {
        return Err(ContractError::new(&what, "a report must be a JSON object"));
    };
    fields.insert("job".into(), Value::from(kind.as_str()));
    fields.insert("version".into(), Value::from(REPORT_VERSION));
    Ok(value)
}

/// Reads the result document of a `kind` job as `T`: the envelope must name `kind` and
/// [`REPORT_VERSION`], and every field of `T` must be present with its type.
pub fn parse_report<T: Report>(kind: JobKind, result: Value) -> Result<T, ContractError> {
    let what = format!("{kind} job result");
    if !T::KINDS.contains(&kind) {
        return Err(ContractError::new(
            &what,
            format!(
                "read as {}, which {kind} jobs do not write",
                std::any::type_name::<T>()
            ),
        ));
    }
    let env: Envelope = from_value(&what, result)?;
    if env.job != kind {
        return Err(ContractError {
            what,
            field: Some("job".into()),
            message: format!("written by a {} job", env.job),
        });
    }
    if env.version != REPORT_VERSION {
        return Err(ContractError {
            what,
            field: Some("version".into()),
            message: format!(
                "version {} is not the one this build reads ({REPORT_VERSION})",
                env.version
            ),
        });
    }
    from_value(&what, Value::Object(env.report))
}

/// The queue JSON of a payload.
pub fn payload_json<P: Payload>(payload: &P) -> Result<Value, ContractError> {
    serde_json::to_value(payload)
        .map_err(|e| ContractError::new(&format!("{} work item", P::KIND), e))
}

/// Reads the payload of work item `item_id` as `P`.
pub fn parse_payload<P: Payload>(item_id: &str, payload: &Value) -> Result<P, ContractError> {
    from_value(&format!("{} work item {item_id}", P::KIND), payload.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::TrainingItem;
    use crate::report::{ExportReport, TrainReport};

    fn export() -> ExportReport {
        ExportReport {
            config_key: "hex8_2p".parse().expect("key"),
            games: 3,
            rows: 30,
            output: "/d/x.npz".into(),
            sha256: "ab".into(),
            bytes: 100,
            max_seq: 7,
            elapsed_s: 0.5,
            rows_per_s: 60.0,
            skipped: 1,
        }
    }

    #[test]
    fn a_report_round_trips_through_its_envelope() {
        let v = report_json(JobKind::Export, &export()).expect("json");
        assert_eq!(v["job"], "export");
        assert_eq!(v["version"], REPORT_VERSION);
        let back: ExportReport = parse_report(JobKind::Export, v).expect("parse");
        assert_eq!(back, export());
    }

    #[test]
    fn a_missing_field_is_named_with_the_job_kind() {
        let mut v = report_json(JobKind::Export, &export()).expect("json");
        v.as_object_mut().expect("object").remove("rows");
        let err = parse_report::<ExportReport>(JobKind::Export, v).expect_err("missing rows");
        let msg = err.to_string();
        assert!(msg.contains("export job result"), "{msg}");
        assert!(msg.contains("missing field `rows`"), "{msg}");
    }

    #[test]
    fn a_mistyped_field_is_named() {
        let mut v = report_json(JobKind::Export, &export()).expect("json");
        v["rows"] = Value::from("thirty");
        let err = parse_report::<ExportReport>(JobKind::Export, v).expect_err("mistyped");
        assert_eq!(err.field.as_deref(), Some("rows"), "{err}");
        assert!(
            err.to_string().contains("field `rows`: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_wrong_job_and_version_are_refused() {
        let mut v = report_json(JobKind::Export, &export()).expect("json");
        v["row_count"] = Value::from(30);
        let err = parse_report::<ExportReport>(JobKind::Export, v).expect_err("unknown");
        assert!(
            err.to_string().contains("unknown field `row_count`"),
            "{err}"
        );

        let v = report_json(JobKind::Export, &export()).expect("json");
        let err = parse_report::<TrainReport>(JobKind::Train, v.clone()).expect_err("job");
        assert_eq!(err.field.as_deref(), Some("job"), "{err}");
        let err = parse_report::<TrainReport>(JobKind::Export, v.clone()).expect_err("type");
        assert!(
            err.to_string().contains("export jobs do not write"),
            "{err}"
        );

        let mut v2 = v;
        v2["version"] = Value::from(2);
        let err = parse_report::<ExportReport>(JobKind::Export, v2).expect_err("version");
        assert_eq!(err.field.as_deref(), Some("version"), "{err}");

        let mut v3 = report_json(JobKind::Export, &export()).expect("json");
        v3.as_object_mut().expect("object").remove("version");
        let err = parse_report::<ExportReport>(JobKind::Export, v3).expect_err("no version");
        assert!(err.to_string().contains("missing field `version`"), "{err}");
    }

    #[test]
    fn payloads_name_the_item_and_field() {
        let p = TrainingItem {
            npz_path: "/d/a.npz".into(),
            npz_paths: vec!["/d/a.npz".into()],
            npz_sha256: "s".into(),
            rows: 10,
            watermark: 4,
        };
        let v = payload_json(&p).expect("json");
        assert_eq!(parse_payload::<TrainingItem>("i1", &v).expect("parse"), p);
        let mut bad = v;
        bad.as_object_mut().expect("object").remove("watermark");
        let err = parse_payload::<TrainingItem>("i1", &bad).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("training work item i1"), "{msg}");
        assert!(msg.contains("missing field `watermark`"), "{msg}");
    }

    /// Every result example of `docs/jobs.md` parses as the report of its `job`, and
    /// every report type has one.
    #[test]
    fn the_examples_in_docs_jobs_md_fit_the_contract() {
        use crate::report::{EvaluateReport, SelfplayReport, TournamentReport};
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/jobs.md");
        let doc = std::fs::read_to_string(path).expect("docs/jobs.md");
        let mut seen = Vec::new();
        for block in doc.split("```json").skip(1) {
            let json = block.split("```").next().expect("closed block");
            let v: Value = serde_json::from_str(json).expect("valid JSON");
            let kind: JobKind = serde_json::from_value(v["job"].clone()).expect("job");
            let r = match kind {
                JobKind::Selfplay => parse_report::<SelfplayReport>(kind, v).map(|_| ()),
                JobKind::Export => parse_report::<ExportReport>(kind, v).map(|_| ()),
                JobKind::Train | JobKind::Distill => {
                    parse_report::<TrainReport>(kind, v).map(|_| ())
                }
                JobKind::Evaluate => parse_report::<EvaluateReport>(kind, v).map(|_| ()),
                JobKind::Tournament => parse_report::<TournamentReport>(kind, v).map(|_| ()),
            };
            r.unwrap_or_else(|e| panic!("docs/jobs.md example: {e}"));
            seen.push(kind);
        }
        for k in [
            JobKind::Selfplay,
            JobKind::Export,
            JobKind::Train,
            JobKind::Evaluate,
            JobKind::Tournament,
        ] {
            assert!(seen.contains(&k), "docs/jobs.md has no {k} example");
        }
    }
}
