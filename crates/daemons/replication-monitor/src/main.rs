//! `ringrift-replication-monitor` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_replication_monitor::INFO,
        ringrift_replication_monitor::build,
    )
}
