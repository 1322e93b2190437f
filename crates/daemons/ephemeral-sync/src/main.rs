//! `ringrift-ephemeral-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_ephemeral_sync::INFO,
        ringrift_ephemeral_sync::build,
    )
}
