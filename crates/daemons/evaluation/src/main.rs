//! `ringrift-evaluation` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_evaluation::INFO, ringrift_evaluation::build)
}
