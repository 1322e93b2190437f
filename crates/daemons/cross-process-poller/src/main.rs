//! `ringrift-cross-process-poller` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_cross_process_poller::INFO,
        ringrift_cross_process_poller::build,
    )
}
