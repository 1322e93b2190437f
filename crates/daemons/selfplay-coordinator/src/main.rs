//! `ringrift-selfplay-coordinator` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_selfplay_coordinator::INFO,
        ringrift_selfplay_coordinator::build,
    )
}
