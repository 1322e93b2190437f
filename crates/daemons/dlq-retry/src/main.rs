//! `ringrift-dlq-retry` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_dlq_retry::INFO, ringrift_dlq_retry::build)
}
