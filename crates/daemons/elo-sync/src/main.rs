//! `ringrift-elo-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_elo_sync::INFO, ringrift_elo_sync::build)
}
