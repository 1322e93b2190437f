//! `ringrift-auto-export` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_auto_export::INFO, ringrift_auto_export::build)
}
