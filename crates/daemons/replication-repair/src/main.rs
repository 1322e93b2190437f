//! `ringrift-replication-repair` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_replication_repair::INFO,
        ringrift_replication_repair::build,
    )
}
