//! `ringrift-training-node-watcher` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(
        ringrift_training_node_watcher::INFO,
        ringrift_training_node_watcher::build,
    )
}
