//! System tests: each starts real binaries in a temp home on port 0.
//! Build the binaries first: `cargo build --workspace --bins`.

mod auth;
mod cli;
mod cluster;
mod cluster_queue;
mod data_server;
mod dlq;
mod jetstream_queue;
mod launcher;
mod leader;
mod lifecycle;
mod lifecycle_config;
mod partition;
mod poller;
mod publisher;
mod python;
mod router;
mod tidy;
mod training_loop;
