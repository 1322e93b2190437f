//! `ringrift-events` binary.
fn main() -> std::process::ExitCode {
    ringrift_events::main()
}
