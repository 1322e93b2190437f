//! `ringrift-gossip-sync` binary.
fn main() -> std::process::ExitCode {
    handler_base::daemon_main(ringrift_gossip_sync::INFO, ringrift_gossip_sync::build)
}
