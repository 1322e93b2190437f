//! In process with a temp home and a peer's data server: LRU eviction keeps `models/`
//! within the budget by access time without touching canonical, linked, newest or the
//! newest backup; the view lists both nodes and who holds which SHA-256; MODEL_PROMOTED
//! evicts what the promotion superseded but keeps the previous canonical's backup.

use super::*;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Writes `size` bytes (content tagged by `tag`) with mtime and atime `age_s` and
/// `used_s` seconds ago.
fn model(p: &Path, tag: u8, size: usize, age_s: u64, used_s: u64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, vec![tag; size]).unwrap();
    let now = SystemTime::now();
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_times(
        std::fs::FileTimes::new()
            .set_modified(now - Duration::from_secs(age_s))
            .set_accessed(now - Duration::from_secs(used_s)),
    )
    .unwrap();
}

fn exists(m: &Path, rel: &str) -> bool {
    m.join(rel).exists()
}

fn read_view(home: &Path) -> CacheView {
    serde_json::from_slice(&std::fs::read(home.join("run/cache_coordination.json")).unwrap())
        .unwrap()
}

#[tokio::test]
async fn lru_eviction_view_and_invalidation_on_promotion() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let m = h.join("models");
    model(&m.join("canonical_hex8_2p.rrm"), 1, 100, 5000, 5000);
    std::os::unix::fs::symlink("canonical_hex8_2p.rrm", m.join("ringrift_best_hex8_2p")).unwrap();
    // Candidates gen0 (oldest, but used a moment ago) .. gen5 (newest).
    for (i, age) in [
        (0u8, 900u64),
        (1, 800),
        (2, 700),
        (3, 600),
        (4, 500),
        (5, 400),
    ] {
        let used = if i == 0 { 1 } else { age };
        model(
            &m.join(format!("hex8_2p/gen{i}.rrm")),
            10 + i,
            100,
            age,
            used,
        );
    }
    // An old candidate another config's best link points at.
    model(&m.join("square8_2p/gen0.rrm"), 30, 100, 10_000, 10_000);
    std::os::unix::fs::symlink("square8_2p/gen0.rrm", m.join("ringrift_best_square8_2p")).unwrap();
    model(
        &m.join("backup/canonical_hex8_2p.100.rrm"),
        40,
        100,
        9000,
        9000,
    );
    std::fs::write(m.join("backup/canonical_hex8_2p.100.json"), b"{}").unwrap();
    model(
        &m.join("backup/canonical_hex8_2p.200.rrm"),
        41,
        100,
        8000,
        8000,
    );
    // 1000 bytes in all; protected: canonical, square8 gen0 (linked), gen4 and gen5
    // (newest 2), backup .200 (newest backup) = 500.

    // A peer holding the same canonical model and one of its own.
    let peer_home = tempfile::tempdir().unwrap();
    model(
        &peer_home.path().join("models/canonical_hex8_2p.rrm"),
        1,
        100,
        10,
        10,
    );
    model(
        &peer_home.path().join("models/hex8_2p/gen9.rrm"),
        99,
        50,
        10,
        10,
    );
    let (_, peer_ctx, url) =
        ringrift_test_support::data_server::start(peer_home.path(), "peer", "")
            .await
            .unwrap();
    let port = url.rsplit(':').next().unwrap();
    std::fs::write(
        h.join("cluster.toml"),
        format!(
            "[[node]]\nname = \"here\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = {{ p2p = 19201 }}\n\n\
             [[node]]\nname = \"peer\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nports = {{ data = {port}, p2p = 19202 }}\n"
        ),
    )
    .unwrap();

    let (d, ctx, _) = ringrift_test_support::daemon(
        INFO.name,
        build,
        h,
        "here",
        "[cache_coordination]\nbudget_bytes = 700\nkeep_newest = 2\n",
    );
    d.run_cycle(&ctx).await.unwrap();

    // Least recently used first: backup .100 (with its sidecar), gen1, gen2; gen0 was
    // used recently and stays although it is the oldest file.
    assert!(!exists(&m, "backup/canonical_hex8_2p.100.rrm"));
    assert!(!exists(&m, "backup/canonical_hex8_2p.100.json"));
    assert!(!exists(&m, "hex8_2p/gen1.rrm") && !exists(&m, "hex8_2p/gen2.rrm"));
    for kept in [
        "canonical_hex8_2p.rrm",
        "square8_2p/gen0.rrm",
        "hex8_2p/gen0.rrm",
        "hex8_2p/gen3.rrm",
        "hex8_2p/gen4.rrm",
        "hex8_2p/gen5.rrm",
        "backup/canonical_hex8_2p.200.rrm",
    ] {
        assert!(exists(&m, kept), "{kept} must stay");
    }
    let health = d.health_check();
    assert_eq!(health.details["local_bytes"], "700");
    assert_eq!(health.details["evicted_total"], "3");
    assert_eq!(health.details["node.peer"], "2 models, 150 bytes");

    let view = read_view(h);
    assert_eq!(view.nodes.len(), 2);
    assert!(view.nodes["peer"].error.is_none());
    let canonical_sha = &view.nodes["here"].models["canonical_hex8_2p.rrm"].sha256;
    assert_eq!(
        view.by_sha256[canonical_sha],
        vec!["here".to_owned(), "peer".to_owned()]
    );
    assert_eq!(view.nodes["peer"].models["hex8_2p/gen9.rrm"].size, 50);

    // Within budget now: a second cycle evicts nothing.
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(d.health_check().details["evicted_total"], "3");

    // gen5 promoted: a new backup appears (the previous canonical); older candidates
    // and older backups are superseded; protected ones stay.
    model(&m.join("backup/canonical_hex8_2p.300.rrm"), 1, 100, 1, 1);
    let ev = Event::new(wire::event::Payload::ModelPromoted(wire::ModelPromoted {
        model_path: m.join("hex8_2p/gen5.rrm").display().to_string(),
        canonical_path: m.join("canonical_hex8_2p.rrm").display().to_string(),
        model_sha256: "x".into(),
        previous_sha256: "y".into(),
        ..Default::default()
    }))
    .with_config("hex8_2p");
    d.handle_event(&ctx, &ev).await.unwrap();
    assert!(!exists(&m, "hex8_2p/gen0.rrm") && !exists(&m, "hex8_2p/gen3.rrm"));
    assert!(!exists(&m, "backup/canonical_hex8_2p.200.rrm"));
    for kept in [
        "backup/canonical_hex8_2p.300.rrm",
        "hex8_2p/gen4.rrm",
        "hex8_2p/gen5.rrm",
        "canonical_hex8_2p.rrm",
        "square8_2p/gen0.rrm",
    ] {
        assert!(exists(&m, kept), "{kept} must stay");
    }
    assert_eq!(d.health_check().details["invalidated_total"], "3");
    assert!(
        !read_view(h).nodes["here"]
            .models
            .contains_key("hex8_2p/gen0.rrm")
    );
    peer_ctx.shutdown.cancel();
}

#[tokio::test]
async fn unreachable_peer_is_reported_and_bad_budget_refused() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(
        h.join("cluster.toml"),
        "[[node]]\nname = \"here\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = { p2p = 19211 }\n\n\
         [[node]]\nname = \"gone\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nports = { data = 1, p2p = 19212 }\n",
    )
    .unwrap();
    let (d, ctx, _) = ringrift_test_support::daemon(
        INFO.name,
        build,
        h,
        "here",
        "[cache_coordination]\ntimeout_s = 2\n",
    );
    d.run_cycle(&ctx).await.unwrap();
    let health = d.health_check();
    assert_eq!(health.status, handler_base::HealthStatus::Degraded);
    assert!(
        health.details["node.gone"].starts_with("error:"),
        "{health:?}"
    );
    assert!(read_view(h).nodes["gone"].error.is_some());

    let err = ringrift_test_support::refused(
        INFO.name,
        build,
        h,
        "[cache_coordination]\nbudget_bytes = 0\n",
    );
    assert!(
        err.to_string().contains("cache_coordination.budget_bytes"),
        "{err:#}"
    );
}
