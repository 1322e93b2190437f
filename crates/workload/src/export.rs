//! Export: games since a watermark → one NPZ training file numpy can load.
//!
//! Arrays (N = positions, P = seats = planes, C = cells, K = policy entries per row):
//! `features` f32 [N, P, C] (plane 0 = player to move's stones, then the following seats),
//! `values` f32 [N] (final outcome for the player to move: 1 win, 0 draw, -1 loss),
//! `policy_indices` i32 [N, K] (cells, -1 = padding), `policy_values` f32 [N, K].

use crate::WorkloadError;
use crate::game::{Geometry, State};
use crate::progress::Progress;
use crate::selfplay::POLICY_TOP_K;
use npyz::WriterBuilder;
pub use ringrift_contracts::ExportReport;
use ringrift_store::games::GameStore;
use ringrift_store::{ConfigKey, paths};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct ExportArgs {
    pub home: PathBuf,
    pub config: ConfigKey,
    /// Only games ingested after this watermark (0 = all).
    pub since: i64,
    pub max_games: Option<usize>,
    /// Game store to read; default `data/games/{config}.db`.
    pub db: Option<PathBuf>,
    /// Output; default `data/training/{config}.npz`.
    pub output: Option<PathBuf>,
    pub quiet: bool,
}

/// Training rows in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub planes: usize,
    pub cells: usize,
    pub k: usize,
    pub features: Vec<f32>,
    pub values: Vec<f32>,
    pub policy_indices: Vec<i32>,
    pub policy_values: Vec<f32>,
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.values.len()
    }

    fn push_position(&mut self, s: &State, outcome: f32, policy: &[(u16, f32)]) {
        let n = s.players();
        let me = s.to_move;
        let base = self.features.len();
        self.features.resize(base + self.planes * self.cells, 0.0);
        for (c, &v) in s.cells.iter().enumerate() {
            if v >= 0 {
                let plane = usize::from((v as u8 + n - me) % n);
                self.features[base + plane * self.cells + c] = 1.0;
            }
        }
        self.values.push(outcome);
        for i in 0..self.k {
            match policy.get(i) {
                Some(&(c, p)) => {
                    self.policy_indices.push(i32::from(c));
                    self.policy_values.push(p);
                }
                None => {
                    self.policy_indices.push(-1);
                    self.policy_values.push(0.0);
                }
            }
        }
    }

    /// Appends another dataset of the same shape.
    pub fn extend(&mut self, other: Dataset) -> Result<(), WorkloadError> {
        if self.rows() == 0 && self.features.is_empty() {
            *self = other;
            return Ok(());
        }
        if (self.planes, self.cells, self.k) != (other.planes, other.cells, other.k) {
            return Err(WorkloadError::Invalid(format!(
                "datasets differ in shape: {}x{}x{} vs {}x{}x{}",
                self.planes, self.cells, self.k, other.planes, other.cells, other.k
            )));
        }
        self.features.extend(other.features);
        self.values.extend(other.values);
        self.policy_indices.extend(other.policy_indices);
        self.policy_values.extend(other.policy_values);
        Ok(())
    }

    /// Writes the four arrays as an NPZ, atomically.
    pub fn write_npz(&self, path: &Path) -> Result<(), WorkloadError> {
        let n = self.rows() as u64;
        let (p, c, k) = (self.planes as u64, self.cells as u64, self.k as u64);
        ringrift_store::manifest::atomic_write_with(path, |file| {
            let mut npz = npyz::npz::NpzWriter::new(file);
            {
                let mut w = npz
                    .array::<f32>("features", Default::default())?
                    .default_dtype()
                    .shape(&[n, p, c])
                    .begin_nd()?;
                w.extend(self.features.iter().copied())?;
                w.finish()?;
            }
            {
                let mut w = npz
                    .array::<f32>("values", Default::default())?
                    .default_dtype()
                    .shape(&[n])
                    .begin_nd()?;
                w.extend(self.values.iter().copied())?;
                w.finish()?;
            }
            {
                let mut w = npz
                    .array::<i32>("policy_indices", Default::default())?
                    .default_dtype()
                    .shape(&[n, k])
                    .begin_nd()?;
                w.extend(self.policy_indices.iter().copied())?;
                w.finish()?;
            }
            {
                let mut w = npz
                    .array::<f32>("policy_values", Default::default())?
                    .default_dtype()
                    .shape(&[n, k])
                    .begin_nd()?;
                w.extend(self.policy_values.iter().copied())?;
                w.finish()?;
            }
            npz.zip_writer().finish().map_err(std::io::Error::other)?;
            Ok(())
        })?;
        Ok(())
    }

    /// Reads and validates an NPZ written by [`Dataset::write_npz`] (or any producer of
    /// the same arrays).
    pub fn read_npz(path: &Path) -> Result<Dataset, WorkloadError> {
        let bad = |reason: String| WorkloadError::BadData {
            path: path.to_path_buf(),
            reason,
        };
        let mut npz = npyz::npz::NpzArchive::open(path)
            .map_err(|e| bad(format!("not a readable NPZ: {e}")))?;
        fn array<T: npyz::Deserialize>(
            npz: &mut npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>,
            name: &str,
            bad: &dyn Fn(String) -> WorkloadError,
        ) -> Result<(Vec<u64>, Vec<T>), WorkloadError> {
            let file = npz
                .by_name(name)
                .map_err(|e| bad(format!("array {name}: {e}")))?
                .ok_or_else(|| bad(format!("array {name} is missing")))?;
            let shape = file.shape().to_vec();
            let dtype = file.dtype().descr();
            let data = file.into_vec::<T>().map_err(|e| {
                bad(format!(
                    "array {name} has dtype {dtype} this reader cannot use: {e}"
                ))
            })?;
            Ok((shape, data))
        }
        let (fs, features) = array::<f32>(&mut npz, "features", &bad)?;
        let (vs, values) = array::<f32>(&mut npz, "values", &bad)?;
        let (is, policy_indices) = array::<i32>(&mut npz, "policy_indices", &bad)?;
        let (ps, policy_values) = array::<f32>(&mut npz, "policy_values", &bad)?;
        let [n, p, c] = fs[..] else {
            return Err(bad(format!("features must be [N, P, C], found {fs:?}")));
        };
        let [ni, k] = is[..] else {
            return Err(bad(format!("policy_indices must be [N, K], found {is:?}")));
        };
        if vs != [n] || ni != n || ps != is {
            return Err(bad(format!(
                "inconsistent shapes: features {fs:?}, values {vs:?}, policy_indices {is:?}, policy_values {ps:?}"
            )));
        }
        if let Some(bad_idx) = policy_indices.iter().find(|&&i| i < -1 || i >= c as i32) {
            return Err(bad(format!("policy index {bad_idx} outside -1..{c}")));
        }
        if values.iter().any(|v| !(-1.0..=1.0).contains(v)) {
            return Err(bad("values outside [-1, 1]".into()));
        }
        Ok(Dataset {
            planes: p as usize,
            cells: c as usize,
            k: k as usize,
            features,
            values,
            policy_indices,
            policy_values,
        })
    }
}

/// Builds the rows of stored games (replaying and validating every move).
pub fn dataset_from_games(
    config: ConfigKey,
    games: &[ringrift_store::games::StoredGame],
) -> Result<Dataset, WorkloadError> {
    let geo = Geometry::new(config);
    let mut ds = Dataset {
        planes: geo.players(),
        cells: geo.cells(),
        k: POLICY_TOP_K,
        ..Dataset::default()
    };
    for sg in games {
        let g = &sg.game;
        if g.config_key != config {
            return Err(WorkloadError::Invalid(format!(
                "game {} is {}, not {config}",
                g.game_id, g.config_key
            )));
        }
        let mut s = State::new(geo.clone());
        for (ply, &m) in g.moves.iter().enumerate() {
            let outcome = match g.winner {
                Some(w) if w == s.to_move => 1.0,
                Some(_) => -1.0,
                None => 0.0,
            };
            let played = [(m, 1.0f32)];
            let policy = g
                .policy
                .as_ref()
                .and_then(|p| p.get(ply))
                .map_or(&played[..], |p| &p[..]);
            ds.push_position(&s, outcome, policy);
            s.play(usize::from(m)).map_err(|e| {
                WorkloadError::Invalid(format!("game {} ply {ply}: {e}", g.game_id))
            })?;
        }
        if s.winner != g.winner {
            return Err(WorkloadError::Invalid(format!(
                "game {}: stored winner {:?} but replay gives {:?}",
                g.game_id, g.winner, s.winner
            )));
        }
    }
    Ok(ds)
}

/// Exports games after `since` to an NPZ.
pub fn export(args: &ExportArgs) -> Result<ExportReport, WorkloadError> {
    let started = Instant::now();
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| paths::game_db(&args.home, args.config));
    if !db.exists() {
        return Err(WorkloadError::Invalid(format!(
            "no game store at {}",
            db.display()
        )));
    }
    let store = GameStore::open(&db)?;
    let limit = args.max_games.unwrap_or(usize::MAX);
    let games = store.games_since(args.since, limit)?;
    if games.is_empty() {
        return Err(WorkloadError::Invalid(format!(
            "no games in {} after watermark {}",
            db.display(),
            args.since
        )));
    }
    let max_seq = games.iter().map(|g| g.seq).max().unwrap_or(args.since);
    let mut progress = Progress::new("export", games.len() as u64, args.quiet);
    let mut ds = Dataset::default();
    for chunk in games.chunks(200) {
        ds.extend(dataset_from_games(args.config, chunk)?)?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| paths::training_dir(&args.home).join(format!("{}.npz", args.config)));
    ds.write_npz(&output)?;
    let (sha256, bytes) = ringrift_store::manifest::hash_file(&output)?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(ExportReport {
        config_key: args.config,
        games: games.len(),
        rows: ds.rows(),
        output,
        sha256,
        bytes,
        max_seq,
        elapsed_s: elapsed,
        rows_per_s: ds.rows() as f64 / elapsed.max(1e-9),
    })
}
