//! `ringrift-cluster-monitor` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_cluster_monitor::INFO,
        ringrift_cluster_monitor::build,
    )
}
