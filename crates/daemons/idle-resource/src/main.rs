//! `ringrift-idle-resource` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_idle_resource::INFO, ringrift_idle_resource::build)
}
