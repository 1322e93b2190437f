//! Fuzz targets of the files a node reads from peers and jobs (see `ringrift-fuzz`):
//! SHA-256 manifests and model files (`.rrm` headers and ONNX metadata). Any bytes are a
//! valid value or a [`StoreError`] naming the file, never a panic; an accepted manifest or
//! model header is written and read back equal.

use crate::StoreError;
use crate::manifest::{FileEntry, Manifest};
use crate::models;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::path::Path;

fn manifest_seed() -> Vec<u8> {
    let mut m = Manifest::default();
    for (i, name) in [
        "training/hex8_2p.npz",
        "models/canonical_hex8_2p.rrm",
        "a b/ü.db",
    ]
    .iter()
    .enumerate()
    {
        m.files.insert(
            (*name).to_owned(),
            FileEntry {
                sha256: format!("{:064x}", i + 1),
                size: 1 << (10 * i),
                mtime_ms: 1_700_000_000_000,
            },
        );
    }
    serde_json::to_vec_pretty(&m).unwrap_or_default()
}

/// An error names the file it is about.
fn names_file(e: &StoreError, path: &Path) -> bool {
    e.to_string().contains(&*path.to_string_lossy())
}

#[test]
fn fuzz_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("manifest.json");
    let again = dir.path().join("again.json");
    let r = ringrift_fuzz::run(
        file!(),
        "manifest",
        ringrift_fuzz::mutated(vec![manifest_seed(), b"{\"files\":{}}".to_vec()]),
        |bytes| {
            std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match Manifest::load(&path) {
                Ok(m) => {
                    m.save(&again)
                        .map_err(|e| TestCaseError::fail(format!("save: {e}")))?;
                    let back = Manifest::load(&again).map_err(|e| {
                        TestCaseError::fail(format!("saved manifest unreadable: {e}"))
                    })?;
                    prop_assert_eq!(back, m);
                }
                Err(e) => prop_assert!(names_file(&e, &path), "{}", e),
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}

fn model_seeds() -> Vec<Vec<u8>> {
    let key = "hex8_2p".parse().expect("key");
    let mut v = Vec::new();
    for payload in [&b""[..], b"weights", &[7u8; 300]] {
        if let Ok((_, bytes)) = models::example(key, 3, payload) {
            v.push(bytes);
        }
    }
    v
}

#[test]
fn fuzz_model_files() {
    let rrm = Path::new("models/canonical_hex8_2p.rrm");
    let onnx = Path::new("models/canonical_hex8_2p.onnx");
    let r = ringrift_fuzz::run(
        file!(),
        "model_file",
        ringrift_fuzz::mutated(model_seeds()),
        |bytes| {
            match models::read_header(rrm, &bytes) {
                Ok((h, payload)) => {
                    let (h2, written) = models::encode(h.clone(), payload)
                        .map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
                    prop_assert_eq!(&h2, &h);
                    let (h3, p3) = models::read_header(rrm, &written)
                        .map_err(|e| TestCaseError::fail(format!("re-read: {e}")))?;
                    prop_assert_eq!(h3, h);
                    prop_assert_eq!(p3, payload);
                }
                Err(e) => prop_assert!(names_file(&e, rrm), "{}", e),
            }
            match models::read_header_prefix(rrm, &mut bytes.as_slice()) {
                Ok(_) => {}
                Err(e) => prop_assert!(names_file(&e, rrm), "{}", e),
            }
            for p in [rrm, onnx] {
                if let Err(e) = models::identify(p, &bytes) {
                    prop_assert!(names_file(&e, p), "{}", e);
                }
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}
