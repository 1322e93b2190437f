//! `ringrift-tournament-daemon` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_tournament_daemon::INFO,
        ringrift_tournament_daemon::build,
    )
}
