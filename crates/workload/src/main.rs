//! `ringrift-job`: the embedded workload's command line (logic in `ringrift_workload::cli`).

fn main() -> std::process::ExitCode {
    ringrift_workload::cli::main()
}
