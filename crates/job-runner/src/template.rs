//! Command templates: an argv whose elements may contain `{placeholder}`s.

use crate::JobError;
use std::collections::BTreeMap;

/// An argv template such as `["ringrift-job", "selfplay", "--config", "{config_key}"]`.
/// `{name}` is replaced by the value of `name`; `{{` and `}}` are literal braces. An
/// unknown placeholder or an unmatched brace is an error, never passed through.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CommandTemplate {
    argv: Vec<String>,
}

impl CommandTemplate {
    pub fn new(argv: Vec<String>) -> Result<Self, JobError> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(JobError::Template("empty command".into()));
        }
        Ok(CommandTemplate { argv })
    }

    /// Splits on whitespace (no quoting: use [`CommandTemplate::new`] for arguments with
    /// spaces).
    pub fn parse(line: &str) -> Result<Self, JobError> {
        Self::new(line.split_whitespace().map(str::to_string).collect())
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Substitutes every placeholder.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> Result<Vec<String>, JobError> {
        self.argv.iter().map(|a| render_one(a, vars)).collect()
    }
}

fn render_one(arg: &str, vars: &BTreeMap<String, String>) -> Result<String, JobError> {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' => name.push(ch),
                        _ => {
                            return Err(JobError::Template(format!(
                                "unterminated placeholder in {arg:?}"
                            )));
                        }
                    }
                }
                let value = vars.get(&name).ok_or_else(|| {
                    let known: Vec<_> = vars.keys().map(String::as_str).collect();
                    JobError::Template(format!(
                        "unknown placeholder {{{name}}} in {arg:?} (known: {})",
                        known.join(", ")
                    ))
                })?;
                out.push_str(value);
            }
            '}' => return Err(JobError::Template(format!("unmatched '}}' in {arg:?}"))),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("config_key", "hex8_2p"), ("home", "/h")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_placeholders_and_escapes() {
        let t = CommandTemplate::parse(
            "job --config {config_key} --out {home}/x_{config_key}.npz {{lit}}",
        )
        .expect("parse");
        assert_eq!(
            t.render(&vars()).expect("render"),
            [
                "job",
                "--config",
                "hex8_2p",
                "--out",
                "/h/x_hex8_2p.npz",
                "{lit}"
            ]
        );
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        for bad in ["{nope}", "{config_key", "a}b", "{config-key}"] {
            let t = CommandTemplate::new(vec!["x".into(), bad.into()]).expect("new");
            let err = t.render(&vars()).expect_err(bad);
            assert!(
                err.to_string()
                    .contains(bad.split('}').next().unwrap_or(bad)),
                "{err}"
            );
        }
        assert!(CommandTemplate::parse("   ").is_err());
    }
}
