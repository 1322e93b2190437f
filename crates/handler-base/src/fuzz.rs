//! Fuzz targets of the settings every daemon loads (see `ringrift-fuzz`): TOML text
//! (generated and mutated), `RINGRIFT_*` env and `--set` overrides, layered by
//! [`Settings::load`] and read as the lifecycle settings, `[tls]`, `[auth]`, a listen
//! address check and a typed section; and heartbeat health results from the wire. Any
//! input is a valid value or a [`ConfigError`] naming the key, never a panic.

use crate::lifecycle::LifecycleConfig;
use crate::settings::{Settings, Sources};
use proptest::prelude::*;
use ringrift_fuzz::{mutated_text, raw_value, toml_value};

/// A registered daemon (node-scoped, with a default interval) and one the registry does
/// not know (its scope is a setting).
const DAEMONS: [crate::DaemonInfo; 2] = [
    crate::DaemonInfo {
        cycle_interval_s: Some(300.0),
        scope: Some(crate::scope::Scope::Node),
        ..crate::DaemonInfo::unregistered("auto_export", "")
    },
    crate::DaemonInfo::unregistered("fuzz_daemon", ""),
];

const KEYS: &[&str] = &[
    "cycle_interval_s",
    "worker_threads",
    "publish_buffer",
    "heartbeat_interval_s",
    "stop_grace_s",
    "ack_wait_s",
    "max_ack_pending",
    "stuck_after_s",
    "degraded_after_failures",
    "scope",
    "threshold",
    "ratio",
    "names",
    "enabled",
    "listen",
];

/// A section of the field types daemon settings use.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(dead_code)] // read only by serde: the property is that reading never panics
struct Section {
    threshold: u64,
    ratio: f64,
    names: Vec<String>,
    enabled: bool,
    listen: String,
    timeout_s: Option<f64>,
}

/// `(section or top level, key, value)` lines.
fn lines() -> impl Strategy<Value = Vec<(Option<usize>, usize, String)>> {
    proptest::collection::vec(
        (
            proptest::option::of(0..DAEMONS.len()),
            0..KEYS.len(),
            toml_value(),
        ),
        0..8,
    )
}

fn toml_text(lines: &[(Option<usize>, usize, String)]) -> String {
    let mut top = String::new();
    let mut sections = String::new();
    for (sec, key, value) in lines {
        match sec {
            None => top.push_str(&format!("{} = {value}\n", KEYS[*key])),
            Some(s) => sections.push_str(&format!(
                "[{}]\n{} = {value}\n",
                DAEMONS[*s].name, KEYS[*key]
            )),
        }
    }
    top + &sections
}

/// Mutated settings files in the shapes operators write.
fn file_text() -> BoxedStrategy<String> {
    prop_oneof![
        lines().prop_map(|l| toml_text(&l)),
        mutated_text(&[
            "ack_wait_s = 30.0\nworker_threads = 2\n[auto_export]\nthreshold = 500\ncycle_interval_s = 60\n",
            "[tls]\nallow_plaintext = true\n[auth]\ntoken = \"s3cret\"\n",
            "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\nca = \"/nonexistent/ca.pem\"\n",
            "node = \"n1\"\n[fuzz_daemon]\nscope = \"node\"\nheartbeat_interval_s = 0.05\nstuck_after_s = 600\n",
        ]),
    ]
    .boxed()
}

/// `RINGRIFT_<SECTION>__<KEY>` or `RINGRIFT_<KEY>` env pairs.
fn env() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (
            proptest::option::of(0..DAEMONS.len()),
            0..KEYS.len(),
            raw_value(),
        )
            .prop_map(|(sec, key, v)| {
                let k = match sec {
                    Some(s) => format!("{}__{}", DAEMONS[s].name, KEYS[key]),
                    None => KEYS[key].to_owned(),
                };
                (format!("RINGRIFT_{}", k.to_uppercase()), v)
            }),
        0..4,
    )
}

/// `--set key=value` pairs, keys dotted (or odd: empty, a lone dot, brackets).
fn overrides() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        8 => (proptest::option::of(0..DAEMONS.len()), 0..KEYS.len()).prop_map(|(sec, key)| match sec {
            Some(s) => format!("{}.{}", DAEMONS[s].name, KEYS[key]),
            None => KEYS[key].to_owned(),
        }),
        1 => "[a-z.\\[\\]0-9_]{0,10}",
    ];
    proptest::collection::vec((key, raw_value()), 0..4)
}

#[test]
fn fuzz_settings_layers() {
    let home = tempfile::tempdir().expect("tempdir");
    let r = ringrift_fuzz::run(
        file!(),
        "settings_layers",
        (0..DAEMONS.len(), file_text(), env(), overrides()),
        |(i, text, env, overrides)| {
            let info = &DAEMONS[i];
            let src = Sources {
                home: home.path().to_owned(),
                defaults: info.defaults(),
                extra_toml: Some(text),
                env: env.into_iter().collect(),
                overrides,
                ..Default::default()
            };
            let Ok(s) = Settings::load(&src) else {
                return Ok(());
            };
            check(&s, info)
        },
    );
    assert_eq!(r, Ok(()));
}

/// Everything handler-base reads from settings: valid or a named error.
fn check(
    s: &Settings,
    info: &crate::DaemonInfo,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let name = info.name;
    match LifecycleConfig::load(s, info) {
        Ok(l) => {
            // What an accepted config is used for must not panic either.
            let _ = l.stuck_after(std::time::Duration::from_secs(3600));
            prop_assert!(l.heartbeat_interval.as_millis() >= 50);
            prop_assert!(l.ack_wait.as_millis() <= u128::from(u32::MAX));
            prop_assert!(l.worker_threads >= 1 && l.max_ack_pending >= 1);
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    let tls = crate::tls::Tls::load(s);
    let token = crate::auth::load(s);
    if let (Ok(tls), Ok(token)) = (&tls, &token) {
        let listen = s.string(&format!("{name}.listen")).unwrap_or_default();
        let _ = crate::auth::check_listen("fuzz.listen", &listen, token.as_ref(), tls);
    }
    let _ = s.section::<Section>(name);
    let _ = crate::scope::scope_of(s, info);
    Ok(())
}

#[test]
fn fuzz_health_results() {
    use ringrift_proto::wire;
    let r = ringrift_fuzz::run(
        file!(),
        "health_result",
        (
            any::<bool>(),
            any::<i32>(),
            ".{0,16}",
            proptest::collection::hash_map(".{0,6}", ".{0,6}", 0..4),
        ),
        |(healthy, status, message, details)| {
            let w = wire::HealthCheckResult {
                healthy,
                status: status % 8,
                message,
                details,
            };
            match crate::HealthCheckResult::try_from(w.clone()) {
                Ok(h) => prop_assert_eq!(wire::HealthCheckResult::from(h), w),
                Err(e) => prop_assert!(e.contains("status")),
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}
