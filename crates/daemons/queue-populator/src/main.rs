//! `ringrift-queue-populator` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_queue_populator::INFO,
        ringrift_queue_populator::build,
    )
}
