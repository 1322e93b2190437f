//! `ringrift-queue-monitor` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_queue_monitor::INFO, ringrift_queue_monitor::build)
}
