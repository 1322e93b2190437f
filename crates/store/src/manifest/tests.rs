//! Tests of manifests, atomic writes and quarantine.

use super::*;
use proptest::prelude::*;

#[test]
fn detects_flipped_byte_and_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("a.npz");
    atomic_write(&f, &[7u8; 1000]).expect("write");
    let m = Manifest::build(dir.path(), &["a.npz"]).expect("build");
    assert!(m.verify_all(dir.path()).expect("verify").is_empty());

    let mut bytes = std::fs::read(&f).expect("read");
    bytes[500] ^= 0x01;
    std::fs::write(&f, &bytes).expect("flip");
    let bad = m.verify_all(dir.path()).expect("verify");
    assert!(matches!(bad.as_slice(), [Mismatch::Hash { .. }]), "{bad:?}");

    std::fs::write(&f, &bytes[..999]).expect("truncate");
    let bad = m.verify_all(dir.path()).expect("verify");
    assert!(
        matches!(
            bad.as_slice(),
            [Mismatch::Size {
                expected: 1000,
                actual: 999,
                ..
            }]
        ),
        "{bad:?}"
    );

    std::fs::remove_file(&f).expect("remove");
    let bad = m.verify_all(dir.path()).expect("verify");
    assert!(
        matches!(bad.as_slice(), [Mismatch::Missing { .. }]),
        "{bad:?}"
    );
}

#[test]
fn manifest_round_trips_and_bad_json_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    atomic_write(&dir.path().join("x"), b"hello").expect("write");
    let m = Manifest::build(dir.path(), &["x"]).expect("build");
    assert_eq!(
        m.files["x"].sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let mp = dir.path().join("manifest.json");
    m.save(&mp).expect("save");
    assert_eq!(Manifest::load(&mp).expect("load"), m);
    std::fs::write(&mp, b"{not json").expect("break");
    assert!(matches!(
        Manifest::load(&mp),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn failed_atomic_write_leaves_old_content_and_no_temp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("model.bin");
    atomic_write(&f, b"old").expect("write");
    let err = atomic_write_with(&f, |w| {
        w.write_all(b"half")?;
        Err(std::io::Error::other("disk full"))
    });
    assert!(err.is_err());
    assert_eq!(std::fs::read(&f).expect("read"), b"old");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(names.len(), 1, "temp file left behind");
}

#[test]
fn quarantine_moves_file_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.db");
    atomic_write(&f, b"junk").expect("write");
    let q = quarantine(&f, &dir.path().join("quarantine"), "hash mismatch").expect("quarantine");
    assert!(!f.exists());
    assert_eq!(std::fs::read(&q).expect("read"), b"junk");
}

#[test]
fn symlink_and_copy_are_atomic_replacements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    atomic_write(&a, b"A").expect("a");
    let sha = atomic_copy(&a, &b).expect("copy");
    assert_eq!(sha, sha256_hex(b"A"));
    let link = dir.path().join("best");
    atomic_symlink(Path::new("a"), &link).expect("link a");
    atomic_symlink(Path::new("b"), &link).expect("relink b");
    assert_eq!(std::fs::read_link(&link).expect("readlink"), Path::new("b"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Any single flipped bit anywhere is detected.
    #[test]
    fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 1..512), pos in any::<usize>(), bit in 0u8..8) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        atomic_write(&f, &data).expect("write");
        let entry = entry_for(&f).expect("entry");
        let mut bytes = data.clone();
        let i = pos % bytes.len();
        bytes[i] ^= 1 << bit;
        std::fs::write(&f, &bytes).expect("flip");
        prop_assert!(verify(&f, &entry).expect("verify").is_err());
    }
}
