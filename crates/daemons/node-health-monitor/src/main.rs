//! `ringrift-node-health-monitor` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_node_health_monitor::INFO,
        ringrift_node_health_monitor::build,
    )
}
