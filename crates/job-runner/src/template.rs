//! Command templates: an argv whose elements may contain `{placeholder}`s.

use crate::JobError;
use std::collections::BTreeMap;

/// An argv template such as `["ringrift-job", "selfplay", "--config", "{config_key}"]`.
/// `{name}` is replaced by the value of `name`; `{{` and `}}` are literal braces. An
/// unknown placeholder or an unmatched brace is an error, never passed through. A value
/// is substituted inside its argv element: it never splits into several arguments and no
/// shell reads it.
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

    /// Splits a command line into argv elements with shell-style quoting (the `shlex`
    /// crate: `'...'`, `"..."`, backslash escapes; no expansion of any kind), so
    /// `--name '{config_key} run'` is one element.
    pub fn parse(line: &str) -> Result<Self, JobError> {
        let argv = shlex::split(line).ok_or_else(|| {
            JobError::Template(format!(
                "unbalanced quote or trailing backslash in {line:?}"
            ))
        })?;
        Self::new(argv)
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Every placeholder name the template uses, in order, each once.
    pub fn placeholders(&self) -> Result<Vec<String>, JobError> {
        let mut names: Vec<String> = Vec::new();
        for a in &self.argv {
            scan(a, true, &mut |n| {
                if !names.iter().any(|m| m == n) {
                    names.push(n.to_owned());
                }
                None
            })?;
        }
        Ok(names)
    }

    /// Expands list values: an argv element that uses the list placeholder `{name}` is
    /// repeated once per item with the item in its place (`--data {data}` with two items
    /// gives `--data a b`, `--data={data}` gives `--data=a --data=b`), and dropped for
    /// an empty list. Other placeholders are left for [`CommandTemplate::render`]; items
    /// are taken literally (braces in them are escaped). An element using two lists is
    /// an error.
    pub fn expand_lists(
        &self,
        lists: &BTreeMap<String, Vec<String>>,
    ) -> Result<CommandTemplate, JobError> {
        let mut argv = Vec::with_capacity(self.argv.len());
        for a in &self.argv {
            let mut used: Vec<&str> = Vec::new();
            scan(a, true, &mut |n| {
                if let Some((k, _)) = lists.get_key_value(n)
                    && !used.contains(&k.as_str())
                {
                    used.push(k.as_str());
                }
                None
            })?;
            match used.as_slice() {
                [] => argv.push(a.clone()),
                [name] => {
                    for item in &lists[*name] {
                        let literal = item.replace('{', "{{").replace('}', "}}");
                        argv.push(scan(a, true, &mut |n| {
                            (n == *name).then(|| literal.clone())
                        })?);
                    }
                }
                _ => {
                    return Err(JobError::Template(format!(
                        "{a:?} uses more than one list ({})",
                        used.join(", ")
                    )));
                }
            }
        }
        CommandTemplate::new(argv)
    }

    /// Substitutes every placeholder.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> Result<Vec<String>, JobError> {
        self.argv.iter().map(|a| render_one(a, vars)).collect()
    }
}

fn render_one(arg: &str, vars: &BTreeMap<String, String>) -> Result<String, JobError> {
    let mut missing = None;
    let out = scan(arg, false, &mut |name| {
        let v = vars.get(name).cloned();
        if v.is_none() && missing.is_none() {
            missing = Some(name.to_owned());
        }
        v
    })?;
    match missing {
        None => Ok(out),
        Some(name) => {
            let known: Vec<_> = vars.keys().map(String::as_str).collect();
            Err(JobError::Template(format!(
                "unknown placeholder {{{name}}} in {arg:?} (known: {})",
                known.join(", ")
            )))
        }
    }
}

/// Walks `arg` once: literal text is copied, `{name}` is replaced by `value(name)`, or
/// kept as `{name}` when that is `None`. `{{` and `}}` become single braces, or stay
/// escaped with `keep_escapes` (a partial substitution, rendered again later).
/// Malformed braces fail.
fn scan(
    arg: &str,
    keep_escapes: bool,
    value: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<String, JobError> {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push_str(if keep_escapes { "{{" } else { "{" });
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push_str(if keep_escapes { "}}" } else { "}" });
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
                match value(&name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(&name);
                        out.push('}');
                    }
                }
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

    #[test]
    fn quoting_keeps_an_argument_whole_and_a_value_is_never_split() {
        let t = CommandTemplate::parse(
            r#"python3 "my dir/train.py" --name '{config_key} run' --x "a\"b" {home}"#,
        )
        .expect("parse");
        let mut v = vars();
        v.insert("home".into(), "/h with space; rm -rf /".into());
        assert_eq!(
            t.render(&v).expect("render"),
            [
                "python3",
                "my dir/train.py",
                "--name",
                "hex8_2p run",
                "--x",
                "a\"b",
                "/h with space; rm -rf /"
            ]
        );
        let err = CommandTemplate::parse("run 'open").expect_err("unbalanced");
        assert!(err.to_string().contains("unbalanced quote"), "{err}");
    }

    #[test]
    fn placeholders_are_listed_once_in_order() {
        let t = CommandTemplate::parse("x {home}/{config_key} {{lit}} --c {config_key}")
            .expect("parse");
        assert_eq!(t.placeholders().expect("names"), ["home", "config_key"]);
    }

    #[test]
    fn a_list_repeats_the_argument_that_uses_it() {
        let t = CommandTemplate::parse("x --data {data} --m={data} {{lit}} --c {config_key}")
            .expect("parse");
        let lists: BTreeMap<String, Vec<String>> = [(
            "data".to_owned(),
            vec!["a.npz".to_owned(), "b{x}.npz".to_owned()],
        )]
        .into();
        let expanded = t.expand_lists(&lists).expect("expand");
        assert_eq!(
            expanded.render(&vars()).expect("render"),
            [
                "x",
                "--data",
                "a.npz",
                "b{x}.npz",
                "--m=a.npz",
                "--m=b{x}.npz",
                "{lit}",
                "--c",
                "hex8_2p"
            ]
        );
        let empty: BTreeMap<String, Vec<String>> = [("data".to_owned(), vec![])].into();
        assert_eq!(
            t.expand_lists(&empty)
                .expect("empty")
                .render(&vars())
                .expect("render"),
            ["x", "--data", "{lit}", "--c", "hex8_2p"]
        );
        let two: BTreeMap<String, Vec<String>> = [
            ("data".to_owned(), vec!["a".to_owned()]),
            ("config_key".to_owned(), vec!["b".to_owned()]),
        ]
        .into();
        let t = CommandTemplate::parse("x {data}{config_key}").expect("parse");
        let err = t.expand_lists(&two).expect_err("two lists");
        assert!(err.to_string().contains("more than one list"), "{err}");
    }
}
