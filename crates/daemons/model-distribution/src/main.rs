//! `ringrift-model-distribution` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_model_distribution::INFO,
        ringrift_model_distribution::build,
    )
}
