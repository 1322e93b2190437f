//! Fuzzing with a fixed budget, shared by every crate's `fuzz` test module.
//!
//! A nightly toolchain (cargo-fuzz) is not installable where this project is built, so
//! the fuzz targets are proptest properties over mutated seed inputs: [`run`] runs one
//! target for `PROPTEST_CASES` cases (256 by default, so `cargo test` stays fast;
//! `scripts/fuzz` sets 100,000 or more), keeps a failing case in the crate's
//! `proptest-regressions/` (replayed first on every later run) and prints one line
//! `fuzz <target>: <cases> cases in <seconds> s` that `scripts/fuzz` collects.
//!
//! The property of every target is the same: any input yields a valid value or a typed
//! error naming the problem, never a panic (a panic fails the case and is shrunk to a
//! small input); where a writer exists, what was accepted is written and read back equal.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::time::Instant;

/// Cases per target when `PROPTEST_CASES` is not set (`cargo test`).
pub const DEFAULT_CASES: u32 = 256;

/// The case count of this run: `PROPTEST_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CASES)
}

/// Runs `test` on `cases()` inputs drawn from `strategy`. `source_file` is `file!()` of
/// the caller: failures are persisted beside it in `proptest-regressions/`. Returns the
/// failure (with the shrunk input) as an error message for the caller's `assert!`.
pub fn run<S: Strategy>(
    source_file: &'static str,
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(),
        source_file: Some(source_file),
        // The shrinker re-runs the target; bound it so a failure reports in seconds.
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let n = config.cases;
    let start = Instant::now();
    let mut runner = TestRunner::new(config);
    let r = runner.run(&strategy, test);
    let secs = start.elapsed().as_secs_f64();
    match r {
        Ok(()) => {
            eprintln!("fuzz {target}: {n} cases in {secs:.1} s");
            Ok(())
        }
        Err(e) => {
            eprintln!("fuzz {target}: FAILED after {secs:.1} s: {e}");
            Err(format!("fuzz target {target}: {e}"))
        }
    }
}

/// Values that break parsers and arithmetic: boundaries, non-finite floats, overflow,
/// wrong types, empty and odd strings. Text mutators splice them in place of tokens.
pub const NASTY_TOKENS: &[&str] = &[
    "0",
    "-1",
    "-0.0",
    "1e309",
    "-1e309",
    "inf",
    "-inf",
    "nan",
    "+inf",
    "1.5",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "-9223372036854775808",
    "1e18",
    "true",
    "\"\"",
    "\"x\"",
    "\"0\"",
    "\"\\u0000\"",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ a = 1 }",
    "null",
    "\"../../etc/passwd\"",
    "\"\u{fffd}\"",
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
    /// Replaces the token (run of non-separator bytes) around a position with a nasty one.
    Token(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Edit::FlipBit(p, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u8),
                Just(0xff),
                Just(b'"'),
                Just(b'\n'),
                Just(b'['),
                Just(b'='),
                any::<u8>()
            ]
        )
            .prop_map(|(p, b)| Edit::SetByte(p, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(p, v)| Edit::Insert(p, v)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Remove(p, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Duplicate(p, n)),
        (any::<usize>(), 0..NASTY_TOKENS.len()).prop_map(|(p, t)| Edit::Token(p, t)),
    ]
}

fn is_separator(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\n' | b'\t' | b'=' | b',' | b':' | b'[' | b']' | b'{' | b'}'
    )
}

fn apply(data: &mut Vec<u8>, e: &Edit) {
    let len = data.len();
    let at = |p: usize| if len == 0 { 0 } else { p % len };
    match e {
        Edit::FlipBit(p, b) if len > 0 => data[at(*p)] ^= 1 << b,
        Edit::SetByte(p, v) if len > 0 => data[at(*p)] = *v,
        Edit::Insert(p, v) => {
            let i = if len == 0 { 0 } else { p % (len + 1) };
            data.splice(i..i, v.iter().copied());
        }
        Edit::Remove(p, n) if len > 0 => {
            let i = at(*p);
            let end = (i + n).min(len);
            data.drain(i..end);
        }
        Edit::Truncate(p) => data.truncate(if len == 0 { 0 } else { p % len }),
        Edit::Duplicate(p, n) if len > 0 => {
            let i = at(*p);
            let chunk: Vec<u8> = data[i..(i + n).min(len)].to_vec();
            data.splice(i..i, chunk);
        }
        Edit::Token(p, t) if len > 0 => {
            let i = at(*p);
            let mut start = i;
            while start > 0 && !is_separator(data[start - 1]) {
                start -= 1;
            }
            let mut end = i;
            while end < len && !is_separator(data[end]) {
                end += 1;
            }
            data.splice(start..end, NASTY_TOKENS[*t].bytes());
        }
        _ => {}
    }
}

/// Byte strings: a seed with 0 to 7 edits (bit flips, bytes, inserts, removals,
/// truncation, duplicated chunks, nasty tokens), or arbitrary bytes now and then.
pub fn mutated(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    assert!(!seeds.is_empty(), "mutated: no seed inputs");
    let n = seeds.len();
    let seeded = (0..n, proptest::collection::vec(edit(), 0..8)).prop_map(move |(i, edits)| {
        let mut d = seeds[i].clone();
        for e in &edits {
            apply(&mut d, e);
        }
        d
    });
    prop_oneof![
        9 => seeded,
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
    .boxed()
}

/// Text: [`mutated`] seeds read as UTF-8 (invalid sequences replaced).
pub fn mutated_text(seeds: &[&str]) -> BoxedStrategy<String> {
    mutated(seeds.iter().map(|s| s.as_bytes().to_vec()).collect())
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
        .boxed()
}

/// A value for a setting: a nasty token or a plausible one, as TOML source text.
pub fn toml_value() -> BoxedStrategy<String> {
    prop_oneof![
        (0..NASTY_TOKENS.len()).prop_map(|i| NASTY_TOKENS[i].to_owned()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-z0-9_.:/ -]{0,12}".prop_map(|s| format!("{s:?}")),
    ]
    .boxed()
}

/// A value as an environment variable or `--set` would carry it (no TOML quoting).
pub fn raw_value() -> BoxedStrategy<String> {
    prop_oneof![
        (0..NASTY_TOKENS.len()).prop_map(|i| NASTY_TOKENS[i].trim_matches('"').to_owned()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[a-z0-9_.:/ -]{0,12}",
    ]
    .boxed()
}
