//! Whether a test may use an outside tool (nats-server, promtool, openssl, python3 with
//! its modules): without it the test skips visibly, except under `CI=true`, where it
//! fails (a suite that skips its checks must not pass by accident; `scripts/test`
//! installs them).

use std::process::{Command, Stdio};

/// Whether a test may use `tool`, `present` as probed by the caller; see the module doc.
pub fn require_tool(tool: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    assert!(
        !ci,
        "{tool} is required under CI=true but is not installed (scripts/test installs it)"
    );
    eprintln!("SKIP: {tool} not installed (scripts/test installs it; under CI=true this fails)");
    false
}

/// Whether `python3` can import `modules` (e.g. `"numpy, onnx"`), for `test`; see
/// [`require_tool`].
pub fn require_python(modules: &str, test: &str) -> bool {
    let present = command_works("python3", &["-c", &format!("import {modules}")]);
    require_tool(&format!("python3 with {modules} (for {test})"), present)
}

/// Whether `program args...` runs and exits 0.
pub fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
