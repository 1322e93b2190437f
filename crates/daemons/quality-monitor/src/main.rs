//! `ringrift-quality-monitor` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_quality_monitor::INFO,
        ringrift_quality_monitor::build,
    )
}
