//! `ringrift-bench-router`: runs the router-vs-NATS benchmark (see the library docs).
fn main() -> std::process::ExitCode {
    ringrift_bench::main()
}
