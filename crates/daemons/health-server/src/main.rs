//! `ringrift-health-server` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_health_server::INFO, ringrift_health_server::build)
}
