//! `ringrift-npz-distribution` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_npz_distribution::INFO,
        ringrift_npz_distribution::build,
    )
}
