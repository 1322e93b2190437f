//! `ringrift-cluster-data-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_cluster_data_sync::INFO,
        ringrift_cluster_data_sync::build,
    )
}
