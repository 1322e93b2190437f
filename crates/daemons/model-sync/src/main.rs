//! `ringrift-model-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_model_sync::INFO, ringrift_model_sync::build)
}
