//! Fuzz target of NPZ reading (see `ringrift-fuzz`): NPZ files of training rows,
//! mutated (the zip, the NPY headers, the shapes and the data). Any file is a validated
//! [`Dataset`] or a [`WorkloadError`] naming the file, never a panic; an accepted dataset
//! is written and read back identical.

use crate::WorkloadError;
use crate::dataset::Dataset;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn dataset(rows: usize, games: bool) -> Dataset {
    let (planes, cells, k) = (2, 3, 2);
    Dataset {
        planes,
        cells,
        k,
        features: (0..rows * planes * cells).map(|i| i as f32 * 0.5).collect(),
        values: (0..rows)
            .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
            .collect(),
        policy_indices: (0..rows * k)
            .map(|i| (i % cells) as i32 - i32::from(i % 5 == 4))
            .collect(),
        policy_values: (0..rows * k).map(|i| 1.0 / (i + 1) as f32).collect(),
        games: if games {
            (0..rows as u32).map(|g| g / 2).collect()
        } else {
            (0..rows as u32).collect()
        },
        current_game: 0,
    }
}

/// Bit-exact equality (NaN included) of two datasets.
fn same(a: &Dataset, b: &Dataset) -> bool {
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    (a.planes, a.cells, a.k, &a.policy_indices, &a.games)
        == (b.planes, b.cells, b.k, &b.policy_indices, &b.games)
        && bits(&a.features) == bits(&b.features)
        && bits(&a.values) == bits(&b.values)
        && bits(&a.policy_values) == bits(&b.policy_values)
}

#[test]
fn fuzz_npz_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seeds = Vec::new();
    for (i, (rows, games)) in [(0, true), (1, true), (4, true), (3, false)]
        .into_iter()
        .enumerate()
    {
        let p = dir.path().join(format!("seed{i}.npz"));
        dataset(rows, games).write_npz(&p).expect("write seed");
        seeds.push(std::fs::read(&p).expect("read seed"));
    }
    let path = dir.path().join("hex8_2p.npz");
    let again = dir.path().join("again.npz");
    let r = ringrift_fuzz::run(
        file!(),
        "npz_read",
        ringrift_fuzz::mutated(seeds),
        |bytes| {
            std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match Dataset::read_npz(&path) {
                Ok(d) => {
                    d.write_npz(&again)
                        .map_err(|e| TestCaseError::fail(format!("write: {e}")))?;
                    let back = Dataset::read_npz(&again)
                        .map_err(|e| TestCaseError::fail(format!("written NPZ unreadable: {e}")))?;
                    prop_assert!(same(&back, &d), "round trip changed the dataset");
                }
                Err(e) => {
                    let named = matches!(&e, WorkloadError::BadData { path: p, .. } if p == &path);
                    prop_assert!(named, "error does not name the file: {}", e);
                }
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
}
