//! Registry and profile tests: the embedded data is valid and the checks catch mistakes.

use super::*;

#[test]
fn builtin_registry_has_the_53_seed_entries_plus_one_alias() {
    let r = Registry::builtin();
    assert_eq!(r.all().len(), 54);
    assert_eq!(r.daemons().count(), 50);
    assert!(
        r.validate(&|_| true).is_empty(),
        "{:?}",
        r.validate(&|_| true)
    );
}

#[test]
fn deprecated_names_resolve_with_a_warning() {
    let r = Registry::builtin();
    for (old, new) in [
        ("sync_coordinator", "auto_sync"),
        ("health_check", "node_health_monitor"),
        ("auto_promotion", "unified_promotion"),
    ] {
        let (spec, warning) = r.resolve(old).unwrap();
        assert_eq!(spec.name, new);
        assert!(warning.unwrap().contains("deprecated"));
    }
    assert!(r.resolve("auto_sync").unwrap().1.is_none());
    assert_eq!(
        r.resolve("nope").unwrap_err(),
        RegistryError::Unknown("nope".into())
    );
}

#[test]
fn closure_pulls_dependencies_first() {
    let r = Registry::builtin();
    let (order, _) = r.closure(&["training_trigger".into()]).unwrap();
    assert_eq!(
        order,
        vec!["event_router", "auto_export", "training_trigger"]
    );
    let (order, _) = r
        .closure(&["system_health_monitor".into(), "event_router".into()])
        .unwrap();
    assert_eq!(
        order,
        vec![
            "event_router",
            "node_health_monitor",
            "system_health_monitor"
        ]
    );
}

const BROKEN: &str = r#"
[[daemon]]
name = "a"
category = "t"
standalone = true
depends_on = ["b"]
implemented = true
binary = "no-such-binary-anywhere"

[[daemon]]
name = "b"
category = "t"
standalone = true
depends_on = ["a"]

[[daemon]]
name = "c"
category = "t"
standalone = true
depends_on = ["ghost"]
"#;

#[test]
fn validate_finds_cycles_missing_dependencies_and_binaries() {
    let r = Registry::from_toml(BROKEN).unwrap();
    let problems = r.validate(&|b| b != "no-such-binary-anywhere");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        problems.iter().any(|p| matches!(p, Problem::Cycle(_))),
        "{text:?}"
    );
    assert!(
        problems.contains(&Problem::UnknownDependency {
            daemon: "c".into(),
            dep: "ghost".into()
        }),
        "{text:?}"
    );
    assert!(
        problems.contains(&Problem::MissingBinary {
            daemon: "a".into(),
            binary: "no-such-binary-anywhere".into()
        }),
        "{text:?}"
    );
    assert!(matches!(
        r.closure(&["a".into()]),
        Err(RegistryError::Cycle(_))
    ));
}

#[test]
fn duplicate_or_badly_named_entries_are_rejected() {
    let dup =
        "[[daemon]]\nname = \"a\"\ncategory = \"t\"\n[[daemon]]\nname = \"a\"\ncategory = \"t\"\n";
    assert!(
        Registry::from_toml(dup)
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    let bad = "[[daemon]]\nname = \"Bad-Name\"\ncategory = \"t\"\n";
    assert!(Registry::from_toml(bad).is_err());
    let unknown_field = "[[daemon]]\nname = \"a\"\ncategory = \"t\"\nrestarts = 3\n";
    assert!(
        Registry::from_toml(unknown_field)
            .unwrap_err()
            .to_string()
            .contains("restarts")
    );
}

#[test]
fn every_builtin_profile_loads_and_names_known_daemons() {
    let r = Registry::builtin();
    for name in builtin_profile_names() {
        let p = load_profile(name, None, &r).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!p.daemons.is_empty(), "{name}");
    }
}

#[test]
fn standard_includes_minimal_and_full_is_every_real_daemon() {
    let r = Registry::builtin();
    let minimal = load_profile("minimal", None, &r).unwrap();
    let standard = load_profile("standard", None, &r).unwrap();
    for d in &minimal.daemons {
        assert!(standard.daemons.contains(d), "standard lacks {d}");
    }
    let full = load_profile("full", None, &r).unwrap();
    let mut want: Vec<String> = r.daemons().map(|s| s.name.clone()).collect();
    want.sort();
    let mut got = full.daemons.clone();
    got.sort();
    assert_eq!(got, want);
}

/// The node profiles form a cluster as shipped: every node answers the peer API
/// (p2p_backend, or the coordinator marks it dead), nodes that play selfplay run the job
/// scheduler that runs it, and a spot node does not pull in the training loop.
#[test]
fn node_profiles_form_a_cluster_as_shipped() {
    let r = Registry::builtin();
    let closure = |name: &str| {
        let p = load_profile(name, None, &r).unwrap();
        r.closure(&p.daemons).unwrap().0
    };
    for node in ["coordinator", "training", "selfplay", "ephemeral"] {
        let c = closure(node);
        assert!(c.iter().any(|d| d == "p2p_backend"), "{node}: {c:?}");
    }
    for node in ["coordinator", "selfplay", "ephemeral"] {
        let c = closure(node);
        assert!(c.iter().any(|d| d == "job_scheduler"), "{node}: {c:?}");
    }
    let spot = closure("ephemeral");
    for loop_daemon in [
        "continuous_training_loop",
        "training_trigger",
        "auto_export",
        "evaluation",
        "unified_promotion",
        "data_pipeline",
    ] {
        assert!(
            !spot.iter().any(|d| d == loop_daemon),
            "ephemeral runs {loop_daemon}: {spot:?}"
        );
    }
    assert!(spot.iter().any(|d| d == "ephemeral_sync"), "{spot:?}");
}

/// The standard profile runs the loop on three configs, one of them multi-player; a
/// profile that includes it and names none inherits them, one that names its own keeps
/// those.
#[test]
fn profiles_carry_their_configs_through_includes() {
    let r = Registry::builtin();
    let standard = load_profile("standard", None, &r).unwrap();
    assert_eq!(standard.configs, ["hex8_2p", "square8_2p", "hex8_3p"]);
    assert!(
        load_profile("minimal", None, &r)
            .unwrap()
            .configs
            .is_empty()
    );
    let dir = tempfile_dir("configs");
    std::fs::write(
        dir.join("mine.toml"),
        "description = \"x\"\ninclude = [\"standard\"]\ndaemons = []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("own.toml"),
        "description = \"x\"\ninclude = [\"standard\"]\ndaemons = []\nconfigs = [\"square19_2p\"]\n",
    )
    .unwrap();
    assert_eq!(
        load_profile("mine", Some(&dir), &r).unwrap().configs,
        standard.configs
    );
    assert_eq!(
        load_profile("own", Some(&dir), &r).unwrap().configs,
        ["square19_2p"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringrift-profile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn profile_with_unknown_daemon_is_an_error() {
    let dir = std::env::temp_dir().join(format!("ringrift-profile-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("odd.toml"),
        "description = \"x\"\ndaemons = [\"event_router\", \"no_such_daemon\"]\n",
    )
    .unwrap();
    let err = load_profile("odd", Some(&dir), &Registry::builtin()).unwrap_err();
    assert!(err.to_string().contains("no_such_daemon"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_implemented_cycle_daemon_has_its_default_interval_here() {
    for s in Registry::builtin().daemons().filter(|s| s.implemented) {
        if s.name == "event_router" {
            assert_eq!(s.cycle_interval_s, None, "the router has no cycle");
            continue;
        }
        assert!(
            s.cycle_interval_s.is_some_and(|c| c > 0.0),
            "{}: cycle_interval_s must be set (> 0): it is the daemon's one default",
            s.name
        );
    }
}

#[test]
fn every_daemon_declares_its_scope_and_aliases_take_their_targets() {
    let r = Registry::builtin();
    for s in r.daemons() {
        assert!(s.scope.is_some(), "{}: no scope", s.name);
    }
    for (name, scope) in [
        ("model_sync", Scope::Node),
        ("npz_distribution", Scope::Node),
        ("queue_populator", Scope::Node),
        ("health_server", Scope::Node),
        ("unified_promotion", Scope::Cluster),
        ("tournament_daemon", Scope::Cluster),
        // Aliases resolve to their target's scope.
        ("auto_promotion", Scope::Cluster),
        ("sync_coordinator", Scope::Node),
    ] {
        assert_eq!(r.scope_of(name), Some(scope), "{name}");
    }
    assert_eq!(r.scope_of("test_daemon"), None, "not registered");
}

#[test]
fn a_missing_unknown_or_alias_scope_is_caught() {
    let missing = "[[daemon]]\nname = \"a\"\ncategory = \"t\"\nstandalone = true\n";
    let r = Registry::from_toml(missing).unwrap();
    assert_eq!(
        r.validate(&|_| true),
        vec![Problem::MissingScope { daemon: "a".into() }]
    );
    assert!(
        r.validate(&|_| true)[0].to_string().contains("no scope"),
        "{}",
        r.validate(&|_| true)[0]
    );
    let alias = "[[daemon]]\nname = \"a\"\ncategory = \"t\"\nstandalone = true\nscope = \"node\"\n\
                 [[daemon]]\nname = \"b\"\ncategory = \"t\"\nalias_of = \"a\"\nscope = \"cluster\"\n";
    assert_eq!(
        Registry::from_toml(alias).unwrap().validate(&|_| true),
        vec![Problem::AliasScope { daemon: "b".into() }]
    );
    let unknown = "[[daemon]]\nname = \"a\"\ncategory = \"t\"\nscope = \"global\"\n";
    let e = Registry::from_toml(unknown).unwrap_err().to_string();
    assert!(e.contains("global") && e.contains("cluster"), "{e}");
}
