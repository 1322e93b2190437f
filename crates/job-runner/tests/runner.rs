//! Job runner tests against real `sh` processes: timeouts kill whole groups, a restarted
//! runner adopts instead of duplicating, bad result files fail clearly.

use job_runner::{CommandTemplate, JobRunner, JobSpec, JobStatus, Recovered, Started, is_alive};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `limit` passes.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn spec(dir: &Path, key: &str, script: &str, timeout: Duration) -> JobSpec {
    let mut vars = BTreeMap::new();
    vars.insert("dir".to_string(), dir.display().to_string());
    JobSpec {
        job_key: key.into(),
        kind: "test".into(),
        template: CommandTemplate::new(vec!["sh".into(), "-c".into(), script.into()])
            .expect("template"),
        vars,
        timeout,
        log_path: dir.join("logs").join(format!("{key}.log")),
        result_path: Some(dir.join(format!("{key}.result.json"))),
        workdir: None,
        env: vec![],
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn success_reads_result_and_logs_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = JobRunner::open(&dir.path().join("jobs.db")).expect("open");
    let s = spec(
        dir.path(),
        "ok",
        "echo hello; echo '{{\"games\": 3}}' > {result}",
        Duration::from_secs(30),
    );
    let o = runner.run(&s).expect("run");
    assert_eq!(o.status, JobStatus::Succeeded, "{o:?}");
    assert_eq!(o.exit_code, Some(0));
    assert_eq!(o.result, Some(serde_json::json!({"games": 3})));
    let log = std::fs::read_to_string(&s.log_path).expect("log");
    assert!(log.contains("hello"), "{log}");
}

#[test]
fn timeout_kills_the_whole_group_including_grandchildren() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = JobRunner::open(&dir.path().join("jobs.db"))
        .expect("open")
        .with_grace(Duration::from_millis(300));
    // The grandchild ignores SIGTERM, so only the group SIGKILL can end it.
    let script = "sh -c 'trap \"\" TERM; sleep 300' & echo $! > {dir}/gc.pid; sleep 300";
    let s = spec(dir.path(), "slow", script, Duration::from_secs(1));
    let started = runner.start(&s).expect("start");
    let h = started.handle().clone();
    let gc_file = dir.path().join("gc.pid");
    assert!(
        eventually(Duration::from_secs(10), || read_pid(&gc_file).is_some()),
        "grandchild never started"
    );
    let gc = read_pid(&gc_file).expect("grandchild pid");
    assert!(is_alive(gc, None));
    let o = runner.wait(&h).expect("wait");
    assert_eq!(o.status, JobStatus::TimedOut, "{o:?}");
    assert!(o.error.as_deref().unwrap_or("").contains("timed out"));
    assert!(
        eventually(Duration::from_secs(5), || !is_alive(gc, None)),
        "grandchild {gc} survived the timeout"
    );
    assert!(
        eventually(Duration::from_secs(5), || !is_alive(h.pid, None)),
        "leader survived"
    );
}

#[test]
fn restarted_runner_adopts_instead_of_duplicating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("jobs.db");
    let script = "echo $$ >> {dir}/starts; while [ ! -f {dir}/go ]; do sleep 0.05; done; \
                  echo '{{\"done\": true}}' > {result}";
    let s = spec(dir.path(), "train:hex8_2p", script, Duration::from_secs(60));
    let first = {
        let a = JobRunner::open(&db).expect("runner a");
        match a.start(&s).expect("start") {
            Started::Started(h) => h,
            other => panic!("expected a fresh start, got {other:?}"),
        }
        // Runner A goes away without stopping its job, as a crashed daemon would.
    };
    let b = JobRunner::open(&db).expect("runner b");
    match b.start(&s).expect("start again") {
        Started::AlreadyRunning(h) => assert_eq!(h.pid, first.pid),
        other => panic!("restarted runner started a duplicate: {other:?}"),
    }
    let recovered = b.recover().expect("recover");
    assert!(
        matches!(recovered.as_slice(), [Recovered::Running(h)] if h.job_id == first.job_id),
        "{recovered:?}"
    );
    std::fs::write(dir.path().join("go"), b"").expect("release job");
    let o = b.wait(&first).expect("wait adopted");
    assert_eq!(o.status, JobStatus::Succeeded, "{o:?}");
    assert_eq!(o.result, Some(serde_json::json!({"done": true})));
    let starts = std::fs::read_to_string(dir.path().join("starts")).expect("starts");
    assert_eq!(
        starts.lines().count(),
        1,
        "job ran more than once: {starts}"
    );
    // Once finished, the key is free again.
    std::fs::remove_file(dir.path().join("go")).expect("reset");
    let again = b.start(&s).expect("start");
    assert!(matches!(again, Started::Started(_)));
    assert_eq!(
        b.cancel(again.handle()).expect("cancel").status,
        JobStatus::Cancelled
    );
}

#[test]
fn bad_or_missing_result_file_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = JobRunner::open(&dir.path().join("jobs.db")).expect("open");
    let s = spec(
        dir.path(),
        "bad",
        "echo 'not json' > {result}",
        Duration::from_secs(30),
    );
    let o = runner.run(&s).expect("run");
    assert_eq!(o.status, JobStatus::Failed);
    let err = o.error.clone().unwrap_or_default();
    assert!(
        err.contains("not valid JSON") && err.contains("bad.result.json"),
        "{err}"
    );
    let e = o.into_result().expect_err("failed job has no result");
    assert!(e.to_string().contains("not valid JSON"), "{e}");

    let s = spec(
        dir.path(),
        "array",
        "echo '[1,2]' > {result}",
        Duration::from_secs(30),
    );
    let err = runner.run(&s).expect("run").error.unwrap_or_default();
    assert!(err.contains("must hold a JSON object"), "{err}");

    let s = spec(dir.path(), "missing", "true", Duration::from_secs(30));
    let err = runner.run(&s).expect("run").error.unwrap_or_default();
    assert!(
        err.contains("missing.result.json") && err.contains("unreadable"),
        "{err}"
    );

    let s = spec(
        dir.path(),
        "exit3",
        "echo boom >&2; exit 3",
        Duration::from_secs(30),
    );
    let o = runner.run(&s).expect("run");
    assert_eq!((o.status, o.exit_code), (JobStatus::Failed, Some(3)));
    assert!(
        std::fs::read_to_string(&s.log_path)
            .expect("log")
            .contains("boom")
    );
}

#[tokio::test]
async fn async_cancel_kills_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = JobRunner::open(&dir.path().join("jobs.db"))
        .expect("open")
        .with_grace(Duration::from_millis(300));
    let s = spec(
        dir.path(),
        "cancel",
        "sleep 300 & echo $! > {dir}/gc.pid; wait",
        Duration::from_secs(60),
    );
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (runner, token) = (runner.clone(), token.clone());
        async move { runner.run_async(s, token).await }
    });
    let gc_file = dir.path().join("gc.pid");
    let found = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(10), || read_pid(&gc_file).is_some())
            .then(|| read_pid(&gc_file))
            .flatten()
    })
    .await
    .expect("join");
    let gc = found.expect("grandchild started");
    token.cancel();
    let o = task.await.expect("join").expect("run_async");
    assert_eq!(o.status, JobStatus::Cancelled);
    let dead = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(5), || !is_alive(gc, None))
    })
    .await
    .expect("join");
    assert!(dead, "grandchild survived cancel");
}

#[test]
fn bad_template_is_an_error_not_a_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = JobRunner::open(&dir.path().join("jobs.db")).expect("open");
    let s = spec(
        dir.path(),
        "tpl",
        "echo {nonexistent}",
        Duration::from_secs(5),
    );
    let err = runner.start(&s).expect_err("unknown placeholder");
    assert!(err.to_string().contains("{nonexistent}"), "{err}");
}
