//! A real non-Rust client: Python grpcio stubs generated from `proto/` subscribe to the
//! live stream and publish an event.

use ringrift_system_tests::{Home, command_works, require_tool};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn python_grpcio_client_subscribes_and_publishes() {
    let present = command_works("python3", &["-c", "import grpc, grpc_tools.protoc"]);
    if !require_tool("python3 grpcio/grpcio-tools", present) {
        return;
    }
    let home = Home::new();
    let (_router, addr) = home.start_router("127.0.0.1:0", &[]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("tests/python/client.py"))
        .arg("--proto")
        .arg(root.join("proto"))
        .arg("--router")
        .arg(&addr)
        .arg("--gen")
        .arg(home.path().join("pygen"))
        .output()
        .expect("run python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK received seq="), "{stdout}");
}
