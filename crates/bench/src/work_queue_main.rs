//! `ringrift-bench-work-queue`: runs the work-queue benchmark (see `ringrift_bench::work_queue`).
fn main() -> std::process::ExitCode {
    ringrift_bench::work_queue::main()
}
