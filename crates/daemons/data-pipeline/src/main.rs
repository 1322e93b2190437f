//! `ringrift-data-pipeline` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_data_pipeline::INFO, ringrift_data_pipeline::build)
}
