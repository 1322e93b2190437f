//! `ringrift-auto-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_auto_sync::INFO, ringrift_auto_sync::build)
}
