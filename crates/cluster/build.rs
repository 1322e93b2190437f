//! Compiles the etcd v3 API (`proto/etcd/...`, vendored from etcd, Apache-2.0) with protox
//! (pure Rust, no protoc) into tonic clients for the leader election in `leader.rs`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(["etcd/api/etcdserverpb/rpc.proto"], [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
