//! `ringrift-launcher` binary.
fn main() -> std::process::ExitCode {
    ringrift_launcher::main()
}
