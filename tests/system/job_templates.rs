//! The default `[jobs]` templates carry every argument `ringrift-job` needs: each kind's
//! request as the daemons build it (every placeholder of its kind, optional values empty
//! or set, lists of one and two) runs the real binary through the real job runner to a
//! report of the contract. The daemons append nothing, so this is all a job gets.

use ringrift_contracts::{
    EvaluateReport, ExportReport, SelfplayReport, TournamentReport, TrainReport,
};
use ringrift_jobs::{JobKind, JobRequest, JobTemplates, Jobs, RunnerJobs};
use ringrift_system_tests::{Home, bin_dir};
use std::time::Duration;

fn req(kind: JobKind, key: &str) -> JobRequest {
    JobRequest::new(kind, key, Duration::from_secs(120)).var("config_key", "hex8_2p")
}

async fn run<R: ringrift_contracts::report::Report>(
    jobs: &(dyn Jobs + 'static),
    r: JobRequest,
) -> R {
    r.check_complete()
        .expect("the request has every placeholder of its kind");
    let key = r.key.clone();
    jobs.run::<R>(r)
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_template_runs_ringrift_job_to_its_report() {
    let home = Home::new();
    let h = home.path();
    let t = JobTemplates {
        bin: Some(bin_dir()),
        ..Default::default()
    };
    let jobs = RunnerJobs::new(h, &t).expect("templates");
    let jobs: &dyn Jobs = &jobs;
    let selfplay = |key: &str, model: Option<String>| {
        req(JobKind::Selfplay, key)
            .var("games", 6)
            .var("threads", 1)
            .var("depth", 1)
            .opt("model", model)
    };
    let sp: SelfplayReport = run(jobs, selfplay("selfplay:a", None)).await;
    assert_eq!((sp.games, sp.model.as_deref()), (6, None));
    let npz = h.join("data/training/hex8_2p_after0.npz");
    let ex: ExportReport = run(
        jobs,
        req(JobKind::Export, "export:a")
            .var("since", 0)
            .var("output", npz.display())
            .var("value_blend", 0.5),
    )
    .await;
    assert_eq!(ex.games, 6);
    let gen1 = h.join("models/hex8_2p/gen0001_w6.rrm");
    let train = |key: &str, out: &std::path::Path, init: Option<String>| {
        req(JobKind::Train, key)
            .list("data", [npz.display(), npz.display()])
            .var("output", out.display())
            .opt("init", init)
            .var("generation", 1)
            .var("epochs", 1)
            .var("model_format", "rrm")
    };
    let tr: TrainReport = run(jobs, train("train:a", &gen1, None)).await;
    assert_eq!(
        (tr.output.as_path(), tr.samples),
        (gen1.as_path(), 2 * ex.rows)
    );
    let gen2 = h.join("models/hex8_2p/gen0002_w6.rrm");
    let tr2: TrainReport = run(
        jobs,
        train("train:b", &gen2, Some(gen1.display().to_string())),
    )
    .await;
    assert_eq!(tr2.output, gen2);
    let ev: EvaluateReport = run(
        jobs,
        req(JobKind::Evaluate, "evaluate:a")
            .var("model", gen1.display())
            .var("name", "gen one")
            .var("games_random", 2)
            .var("games_heuristic", 2)
            .var("games_canonical", 0)
            .var("depth", 1)
            .var("canonical_depth", 1)
            .var("job_id", "evaluate:abc")
            .var("early_reject", true)
            .var("early_accept", true)
            .var("gate_random", 0.85)
            .var("gate_heuristic", 0.6)
            .var("gate_canonical", 0.5)
            .var("canonical_test", "sprt")
            .var("sprt_elo0", 0)
            .var("sprt_elo1", 35)
            .var("sprt_alpha", 0.05)
            .var("sprt_beta", 0.05),
    )
    .await;
    assert_eq!(
        ev.model_name, "gen one",
        "a value with a space is one argument"
    );
    assert_eq!(ev.results.iter().map(|r| r.games).sum::<u64>(), 4);
    let student = h.join("models/hex8_2p/distilled_abc.rrm");
    let d: TrainReport = run(
        jobs,
        req(JobKind::Distill, "distill:a")
            .var("teacher", gen1.display())
            .list("data", [npz.display()])
            .var("output", student.display())
            .var("hidden", 8),
    )
    .await;
    assert_eq!((d.output.as_path(), d.hidden), (student.as_path(), 8));
    let to: TournamentReport = run(
        jobs,
        req(JobKind::Tournament, "tournament:a")
            .var("games", 2)
            .var("job_id", "tournament:hex8_2p:t")
            .var("fence_token", 3)
            .list(
                "models",
                [gen1.display(), gen2.display(), student.display()],
            ),
    )
    .await;
    assert_eq!(to.standings.len(), 3);
    let elo = ringrift_store::elo::EloStore::open(&ringrift_store::paths::elo_db(h)).unwrap();
    assert_eq!(
        elo.fence_token().unwrap(),
        Some(3),
        "the tournament recorded its matches with the leader's token"
    );
    let sp2: SelfplayReport = run(
        jobs,
        selfplay("selfplay:b", Some(gen2.display().to_string())),
    )
    .await;
    assert_eq!(
        sp2.model.as_deref(),
        Some(gen2.display().to_string().as_str())
    );
}
