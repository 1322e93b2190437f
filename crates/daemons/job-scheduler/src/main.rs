//! `ringrift-job-scheduler` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_job_scheduler::INFO, ringrift_job_scheduler::build)
}
