//! `ringrift-test-daemon` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_test_daemon::info(), ringrift_test_daemon::build)
}
