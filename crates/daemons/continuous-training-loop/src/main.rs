//! `ringrift-continuous-training-loop` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_continuous_training_loop::INFO,
        ringrift_continuous_training_loop::build,
    )
}
