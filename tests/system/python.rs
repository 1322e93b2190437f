//! A real non-Rust client: Python grpcio stubs generated from `proto/` subscribe to the
//! live stream and publish an event.

use ringrift_system_tests::Home;
use std::path::PathBuf;
use std::process::Command;

fn python_has_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn python_grpcio_client_subscribes_and_publishes() {
    if !python_has_grpc() {
        eprintln!(
            "SKIP python_grpcio_client_subscribes_and_publishes: python3 grpcio/grpcio-tools not installed (scripts/test installs them)"
        );
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
