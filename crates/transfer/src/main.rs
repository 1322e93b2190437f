//! `ringrift-fetch`: mirror a peer's data_server tree into a directory, verified.
fn main() -> std::process::ExitCode {
    ringrift_transfer::cli::main()
}
