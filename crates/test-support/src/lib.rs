//! What tests share, in one place (a dev-dependency only; no production crate links it):
//!
//! * [`poll`]: polling with a deadline, sync ([`wait_for`], [`poll_until`]) and async
//!   ([`wait_for_async`], [`poll_until_async`]); tests never sleep to synchronise;
//! * [`tools`]: whether a test may use an outside tool ([`require_tool`],
//!   [`require_python`]): skipped visibly, failed under `CI=true`;
//! * [`process`]: the built binaries, child processes killed on drop, temp homes whose
//!   logs a failing test prints, the real `ringrift-event-router` started in a home;
//! * [`data_server`]: data servers started in process (`ringrift_transfer::server`) in
//!   temp homes, game records, game stores, promoted example models, cluster.toml text;
//! * [`daemon`]: the in-process prologue of a daemon test (context, node, `build`, what
//!   it published; a refused configuration, [`refused`]), and the recorder ([`Recorded`]);
//! * [`queue`]: a work queue with faults ([`queue::Faulty`]: a cut link, a stale listing).

pub mod daemon;
pub mod data_server;
pub mod poll;
pub mod process;
pub mod queue;
pub mod tools;

pub use daemon::{Daemon, Recorded, daemon, refused};
pub use poll::{poll_until, poll_until_async, wait_for, wait_for_async};
pub use process::{Home, Proc, bin, bin_dir};
pub use tools::{command_works, require_python, require_tool};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
