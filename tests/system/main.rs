//! System tests: each starts real binaries in a temp home on port 0.
//! Build the binaries first: `cargo build --workspace --bins`.

// The tests of half a minute or more, most of it required waiting (a 60 s partition, a
// 60 s router outage, the 1..16 s backoff) or a whole training loop. libtest starts tests
// in name order on 2 threads; `a_long` sorts first, so these overlap the many short tests
// instead of running as the tail (docs/style.md, "Long system tests").
mod a_long;
mod auth;
mod cli;
mod cluster;
mod data_plane;
mod data_server;
mod disk_full;
mod dlq;
mod game_sync;
mod jetstream_queue;
mod job_templates;
mod launcher;
mod leader;
mod lifecycle;
mod lifecycle_config;
mod poller;
mod profiles;
mod publisher;
mod python;
mod router;
mod tidy;
mod tls;
mod transfer;
