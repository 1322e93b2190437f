//! Compiles `proto/ringrift/v1/*.proto` with protox (pure Rust, no protoc) and generates
//! prost messages, tonic clients/servers and the descriptor set used for reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "ringrift/v1/events.proto",
        "ringrift/v1/router.proto",
        "ringrift/v1/supervisor.proto",
        "ringrift/v1/p2p.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ringrift_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .type_attribute(
            ".ringrift.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .message_attribute(".ringrift.v1", "#[serde(default, deny_unknown_fields)]")
        .compile_fds(fds)?;
    Ok(())
}
