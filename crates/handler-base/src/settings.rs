//! Layered configuration: defaults (the daemon's declared ones, see [`crate::lifecycle`])
//! < /etc/ringrift/ringrift.toml < $RINGRIFT_HOME/ringrift.toml < `--config FILE` <
//! RINGRIFT_* env < `--set` flags.
//!
//! Env keys use `__` between section and key: `RINGRIFT_AUTO_EXPORT__THRESHOLD=100` is
//! `auto_export.threshold`. The environment is passed in as a map so tests never touch
//! the process environment.

use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config section [{section}]: {error}")]
    Section { section: String, error: String },
    #[error("{0}")]
    Usage(String),
    /// A value that parses but is out of range (see [`crate::ensure_config`]).
    #[error("{0}")]
    Invalid(String),
    /// Configuration that could not be read or a directory that could not be made (a
    /// disk or permission failure, not bad configuration): exit 74 (EX_IOERR), which a
    /// supervisor restarts, never 64. `what` says what failed, e.g. `read /x/cluster.toml`.
    #[error("{what}: {error}")]
    Io { what: String, error: String },
}

/// Keys of a daemon's section that handler-base reads itself (see
/// [`crate::LifecycleConfig`]); [`Settings::section`] hides them from the daemon's struct.
pub const LIFECYCLE_KEYS: &[&str] = &[
    "cycle_interval_s",
    "worker_threads",
    "publish_buffer",
    "heartbeat_interval_s",
    "stop_grace_s",
    "ack_wait_s",
    "max_ack_pending",
    "stuck_after_s",
    "degraded_after_failures",
    "subscribe_refused_exit_s",
    "scope",
];

/// The merged configuration of one daemon process.
#[derive(Debug, Clone)]
pub struct Settings {
    cfg: config::Config,
    files: Vec<PathBuf>,
}

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The bottom layer, below every file: `(key, value)` (the daemon's declared defaults).
    pub defaults: Vec<(String, String)>,
    pub system_file: Option<PathBuf>,
    pub home: PathBuf,
    pub extra_file: Option<PathBuf>,
    /// TOML text in the place of `--config` (in-process tests).
    pub extra_toml: Option<String>,
    pub env: HashMap<String, String>,
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The production layers for `home`, with the real environment.
    pub fn standard(
        home: &Path,
        extra_file: Option<PathBuf>,
        overrides: Vec<(String, String)>,
    ) -> Self {
        Sources {
            system_file: Some(PathBuf::from("/etc/ringrift/ringrift.toml")),
            home: home.to_owned(),
            extra_file,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("RINGRIFT_"))
                .collect(),
            overrides,
            defaults: Vec::new(),
            extra_toml: None,
        }
    }

    /// Adds bottom-layer defaults.
    pub fn with_defaults(mut self, defaults: Vec<(String, String)>) -> Self {
        self.defaults = defaults;
        self
    }
}

impl Settings {
    pub fn load(src: &Sources) -> Result<Settings, ConfigError> {
        let mut b = config::Config::builder();
        let mut files = Vec::new();
        for (k, v) in &src.defaults {
            b = b
                .set_default(k.as_str(), parse_scalar(v))
                .map_err(|e| ConfigError::Load(format!("default {k}: {e}")))?;
        }
        if let Some(f) = &src.system_file {
            b = b.add_source(
                config::File::from(f.as_path())
                    .format(config::FileFormat::Toml)
                    .required(false),
            );
            files.push(f.clone());
        }
        let home_file = src.home.join("ringrift.toml");
        b = b.add_source(
            config::File::from(home_file.as_path())
                .format(config::FileFormat::Toml)
                .required(false),
        );
        files.push(home_file);
        if let Some(f) = &src.extra_file {
            if !f.is_file() {
                return Err(ConfigError::Load(format!(
                    "--config {}: no such file",
                    f.display()
                )));
            }
            b = b.add_source(
                config::File::from(f.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
            files.push(f.clone());
        }
        if let Some(t) = &src.extra_toml {
            b = b.add_source(config::File::from_str(t, config::FileFormat::Toml));
        }
        let env: HashMap<String, String> = src
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != "RINGRIFT_HOME")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("RINGRIFT")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        for (k, v) in &src.overrides {
            b = b
                .set_override(k.as_str(), parse_scalar(v))
                .map_err(|e| ConfigError::Usage(format!("--set {k}: {e}")))?;
        }
        let cfg = b.build().map_err(|e| ConfigError::Load(e.to_string()))?;
        Ok(Settings { cfg, files })
    }

    /// Settings from a TOML string only (tests, embedded defaults).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let cfg = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Ok(Settings {
            cfg,
            files: Vec::new(),
        })
    }

    /// The `[name]` table as `T`; a missing table is `T::default()` (fields use serde
    /// defaults), a wrong type or unknown key is an error naming the section.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        match self.cfg.get::<config::Value>(name) {
            Err(config::ConfigError::NotFound(_)) => Ok(T::default()),
            Err(e) => Err(ConfigError::Section {
                section: name.to_owned(),
                error: e.to_string(),
            }),
            Ok(v) => {
                let v = match v.clone().into_table() {
                    Ok(mut t) => {
                        t.retain(|k, _| !LIFECYCLE_KEYS.contains(&k.as_str()));
                        check_durations(name, &t)?;
                        config::Value::new(None, t)
                    }
                    Err(_) => v,
                };
                v.try_deserialize().map_err(|e| ConfigError::Section {
                    section: name.to_owned(),
                    error: e.to_string(),
                })
            }
        }
    }

    /// One top-level string value.
    pub fn string(&self, key: &str) -> Option<String> {
        self.cfg.get_string(key).ok()
    }

    /// This node's name: the `node` setting, else the hostname (as in cluster.toml).
    /// It names directories (`models/.peers/<node>`), durable consumers
    /// (`<daemon>@<node>`) and cluster keys, so it must be a plain name
    /// ([`check_node_name`]); anything else is a configuration error naming it.
    pub fn node_name(&self) -> Result<String, ConfigError> {
        match self.string("node") {
            Some(n) => match check_node_name(&n) {
                Ok(()) => Ok(n),
                Err(why) => Err(ConfigError::Invalid(format!("node = {n:?}: {why}"))),
            },
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| "localhost".into());
                check_node_name(&host).map(|()| host.clone()).map_err(|why| {
                    ConfigError::Invalid(format!(
                        "no `node` setting, and the hostname {host:?} is no node name ({why}); set node = \"...\" in ringrift.toml"
                    ))
                })
            }
        }
    }

    /// One value of any type; `None` when absent, an error when present but wrong.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.cfg.get::<T>(key) {
            Ok(v) => Ok(Some(v)),
            Err(config::ConfigError::NotFound(_)) => Ok(None),
            Err(e) => Err(ConfigError::Load(format!("{key}: {e}"))),
        }
    }

    /// The files that were considered, lowest layer first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// A node name: 1 to 253 characters (a DNS name's bound) of `A-Z a-z 0-9 . _ -`, not
/// starting with `.` or `-` (it becomes a directory name, part of a consumer name and of
/// cluster keys).
pub fn check_node_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 253 {
        return Err(format!("must be 1 to 253 characters, not {}", n.len()));
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '.', '_', '-')"
        ));
    }
    if n.starts_with(['.', '-']) {
        return Err("must not start with '.' or '-'".into());
    }
    Ok(())
}

/// The unit of a duration key, by its suffix (`_s`, `_ms`, `_h`, `_days`; a rate
/// `…_per_s` is not a duration): seconds per unit.
fn duration_unit(key: &str) -> Option<f64> {
    if key.ends_with("_per_s") {
        return None;
    }
    [
        ("_ms", 0.001),
        ("_s", 1.0),
        ("_h", 3600.0),
        ("_days", 86400.0),
    ]
    .into_iter()
    .find(|(suffix, _)| key.ends_with(suffix))
    .map(|(_, unit)| unit)
}

/// The longest duration any setting may hold (about 31 years): beyond it a conversion
/// to `Duration` overflows (and panics in `Duration::from_secs_f64`).
pub const MAX_DURATION_S: f64 = 1e9;

/// The one check of a duration setting: `value` (in the unit of `key`'s suffix, see
/// [`check_durations`]; seconds when it has none) must be a finite number >= 0 of at
/// most [`MAX_DURATION_S`] seconds. `inf`, NaN, a negative value or an overflowing one is
/// a [`ConfigError`] naming key and value (exit 64), never a panic in `from_secs_f64`.
pub fn duration(key: &str, value: f64) -> Result<Duration, ConfigError> {
    let unit = duration_unit(key).unwrap_or(1.0);
    let secs = value * unit;
    if !(value.is_finite() && value >= 0.0 && secs <= MAX_DURATION_S) {
        return Err(ConfigError::Invalid(format!(
            "{key} = {value}: must be a finite number >= 0 of at most {MAX_DURATION_S} seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Every duration setting in section `section` (keys ending in `_s`, `_ms`, `_h`,
/// `_days`, in nested tables too) passes [`duration`]: run by [`Settings::section`], so
/// every daemon's settings struct is checked before it is built, in one place.
fn check_durations(
    section: &str,
    t: &config::Map<String, config::Value>,
) -> Result<(), ConfigError> {
    for (k, v) in t {
        let key = format!("{section}.{k}");
        match &v.kind {
            config::ValueKind::Table(inner) => check_durations(&key, inner)?,
            config::ValueKind::Float(f) if duration_unit(k).is_some() => {
                duration(&key, *f)?;
            }
            config::ValueKind::I64(i) if duration_unit(k).is_some() => {
                duration(&key, *i as f64)?;
            }
            config::ValueKind::U64(u) if duration_unit(k).is_some() => {
                duration(&key, *u as f64)?;
            }
            // A quoted number deserializes into an f64 field just the same.
            config::ValueKind::String(text) if duration_unit(k).is_some() => {
                if let Ok(f) = text.trim().parse::<f64>() {
                    duration(&key, f)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_scalar(v: &str) -> config::Value {
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>() {
        return f.into();
    }
    if let Ok(b) = v.parse::<bool>() {
        return b.into();
    }
    v.into()
}

/// The state directory: `--home`, else $RINGRIFT_HOME, else ~/.local/state/ringrift.
pub fn resolve_home(flag: Option<&Path>) -> PathBuf {
    if let Some(h) = flag {
        return h.to_owned();
    }
    if let Some(h) = std::env::var_os("RINGRIFT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join(".local/state/ringrift")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_name_that_is_no_plain_name_is_refused_naming_it() {
        for ok in ["n1", "gpu-01.example.com", "node_7", "A"] {
            let s = Settings::from_toml(&format!("node = {ok:?}")).unwrap();
            assert_eq!(s.node_name().unwrap(), ok);
        }
        let long = "x".repeat(254);
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            ".hidden",
            "-n",
            "n\u{e9}",
            long.as_str(),
        ] {
            let s = Settings::from_toml(&format!("node = {bad:?}")).unwrap();
            let e = s.node_name().expect_err(bad).to_string();
            assert!(e.contains("node = "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn every_duration_setting_is_finite_non_negative_and_bounded() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default)]
        #[allow(dead_code)]
        struct D {
            timeout_s: f64,
            max_age_days: f64,
            bandwidth_bytes_per_s: f64,
        }
        for (toml, key) in [
            ("[d]\ntimeout_s = inf", "d.timeout_s"),
            ("[d]\ntimeout_s = nan", "d.timeout_s"),
            ("[d]\ntimeout_s = -inf", "d.timeout_s"),
            ("[d]\ntimeout_s = -1", "d.timeout_s"),
            ("[d]\ntimeout_s = 1e300", "d.timeout_s"),
            ("[d]\ntimeout_s = \"inf\"", "d.timeout_s"),
            ("[d]\nmax_age_days = 1e15", "d.max_age_days"),
            ("[d.sub]\nwait_ms = nan", "d.sub.wait_ms"),
        ] {
            let e = Settings::from_toml(toml)
                .unwrap()
                .section::<D>("d")
                .expect_err(toml)
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        let ok = Settings::from_toml(
            "[d]\ntimeout_s = 0.5\nmax_age_days = 30\nbandwidth_bytes_per_s = inf",
        )
        .unwrap()
        .section::<D>("d")
        .expect("a rate is not a duration");
        assert_eq!(ok.timeout_s, 0.5);
        assert_eq!(duration("x_h", 2.0).unwrap(), Duration::from_secs(7200));
        assert!(duration("x_s", f64::NAN).is_err());
    }

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sec {
        threshold: u64,
        name: String,
    }

    fn sources(dir: &Path) -> Sources {
        Sources {
            home: dir.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ringrift.toml"),
            "[s]\nthreshold = 1\nname = \"home\"\n",
        )
        .unwrap();
        let extra = dir.path().join("extra.toml");
        std::fs::write(&extra, "[s]\nthreshold = 2\n").unwrap();
        let mut src = sources(dir.path());
        src.extra_file = Some(extra);
        let s: Sec = Settings::load(&src).unwrap().section("s").unwrap();
        assert_eq!(
            s,
            Sec {
                threshold: 2,
                name: "home".into()
            }
        );

        src.env.insert("RINGRIFT_S__THRESHOLD".into(), "3".into());
        let s: Sec = Settings::load(&src).unwrap().section("s").unwrap();
        assert_eq!(s.threshold, 3);

        src.overrides.push(("s.threshold".into(), "4".into()));
        let s: Sec = Settings::load(&src).unwrap().section("s").unwrap();
        assert_eq!(s.threshold, 4);
    }

    #[test]
    fn missing_section_is_default_and_bad_section_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let st = Settings::load(&sources(dir.path())).unwrap();
        assert_eq!(st.section::<Sec>("s").unwrap(), Sec::default());
        std::fs::write(
            dir.path().join("ringrift.toml"),
            "[s]\nthreshold = \"lots\"\n",
        )
        .unwrap();
        let err = Settings::load(&sources(dir.path()))
            .unwrap()
            .section::<Sec>("s")
            .unwrap_err();
        assert!(err.to_string().contains("[s]"), "{err}");
        std::fs::write(dir.path().join("ringrift.toml"), "[s]\nthreshhold = 1\n").unwrap();
        let err = Settings::load(&sources(dir.path()))
            .unwrap()
            .section::<Sec>("s")
            .unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
    }

    #[test]
    fn lifecycle_keys_are_hidden_from_sections() {
        let st = Settings::from_toml(
            "ack_wait_s = 30.0\n[s]\nthreshold = 1\nack_wait_s = 90.0\nmax_ack_pending = 8\ncycle_interval_s = 2\n",
        )
        .unwrap();
        assert_eq!(st.section::<Sec>("s").unwrap().threshold, 1);
    }

    #[test]
    fn broken_toml_and_missing_config_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ringrift.toml"), "[s\n").unwrap();
        assert!(Settings::load(&sources(dir.path())).is_err());
        let mut src = sources(tempfile::tempdir().unwrap().path());
        src.extra_file = Some(dir.path().join("nope.toml"));
        assert!(
            Settings::load(&src)
                .unwrap_err()
                .to_string()
                .contains("nope.toml")
        );
    }
}
