//! `ringrift-unified-promotion` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_unified_promotion::INFO,
        ringrift_unified_promotion::build,
    )
}
