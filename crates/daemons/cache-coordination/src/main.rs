//! `ringrift-cache-coordination` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_cache_coordination::INFO,
        ringrift_cache_coordination::build,
    )
}
