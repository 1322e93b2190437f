//! `ringrift-p2p-backend` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_p2p_backend::INFO, ringrift_p2p_backend::build)
}
