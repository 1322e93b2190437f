//! An exported NPZ loads in numpy with the documented shapes and dtypes.
//! Skipped, visibly, when numpy is not installed; under `CI=true` a missing numpy fails.

mod common;

use std::process::Command;

#[test]
fn numpy_loads_exported_npz() {
    if !common::require_python("numpy", "numpy_loads_exported_npz") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sp, ex, out) = common::games_exported(dir.path(), 12);
    assert_eq!(ex.games, 12);
    assert_eq!(ex.rows as u64, sp.moves);
    let script = format!(
        r#"
import numpy as np, sys
d = np.load(sys.argv[1])
assert sorted(d.files) == ["features", "games", "policy_indices", "policy_values", "values"], d.files
f, v, pi, pv, g = d["features"], d["values"], d["policy_indices"], d["policy_values"], d["games"]
n = {rows}
assert f.shape == (n, 2, 64) and f.dtype == np.float32, (f.shape, f.dtype)
assert v.shape == (n,) and v.dtype == np.float32, (v.shape, v.dtype)
assert pi.shape == (n, 8) and pi.dtype == np.int32, (pi.shape, pi.dtype)
assert pv.shape == (n, 8) and pv.dtype == np.float32, (pv.shape, pv.dtype)
assert set(np.unique(f)) <= {{0.0, 1.0}}
assert ((v >= -1.0) & (v <= 1.0)).all()
assert ((pi >= -1) & (pi < 64)).all()
s = pv.sum(axis=1)
assert (s > 0.0).all() and (s <= 1.0 + 1e-4).all(), s
assert (np.diff(pv, axis=1) <= 1e-7).all(), "policy entries are sorted, most probable first"
# Row 0 of every game is the empty board; stones grow by one per row within a game,
# and the game index counts games from 0 in order.
assert f[0].sum() == 0
assert g.shape == (n,) and g.dtype == np.int32, (g.shape, g.dtype)
assert g[0] == 0 and (np.diff(g) >= 0).all() and (np.diff(g) <= 1).all()
starts = np.flatnonzero(np.diff(g)) + 1
assert all(f[i].sum() == 0 for i in starts), "a game starts on an empty board"
print("ok", n)
"#,
        rows = ex.rows
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(&out)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "numpy check failed: {stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok"));
}
