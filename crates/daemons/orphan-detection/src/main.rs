//! `ringrift-orphan-detection` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_orphan_detection::INFO,
        ringrift_orphan_detection::build,
    )
}
