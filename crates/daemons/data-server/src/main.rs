//! `ringrift-data-server` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_data_server::INFO, ringrift_data_server::build)
}
