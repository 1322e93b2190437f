//! `ringrift-system-health-monitor` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_system_health_monitor::INFO,
        ringrift_system_health_monitor::build,
    )
}
