//! `ringrift-external-drive-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_external_drive_sync::INFO,
        ringrift_external_drive_sync::build,
    )
}
