//! `ringrift-maintenance` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_maintenance::INFO, ringrift_maintenance::build)
}
