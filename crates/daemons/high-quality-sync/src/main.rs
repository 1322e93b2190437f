//! `ringrift-high-quality-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_high_quality_sync::INFO,
        ringrift_high_quality_sync::build,
    )
}
