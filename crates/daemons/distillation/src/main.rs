//! `ringrift-distillation` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_distillation::INFO, ringrift_distillation::build)
}
