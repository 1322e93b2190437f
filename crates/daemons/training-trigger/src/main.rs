//! `ringrift-training-trigger` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_training_trigger::INFO,
        ringrift_training_trigger::build,
    )
}
