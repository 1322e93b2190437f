//! Training rows in memory and their NPZ file, the format an external trainer reads too.
//!
//! Arrays (N = positions, P = seats = planes, C = cells, K = policy entries per row):
//! `features` f32 [N, P, C] (plane 0 = player to move's stones, then the following seats),
//! `values` f32 [N] (value target for the player to move in [-1, 1]: the final outcome,
//! 1 win, 0 draw, -1 loss, blended with the search's value by export's `--value-blend`),
//! `policy_indices` i32 [N, K] (cells, -1 = padding), `policy_values` f32 [N, K],
//! `games` i32 [N] (which game of the file the row comes from, 0-based; training holds
//! out whole games for validation, so the positions of one game never sit on both sides.
//! Optional on read: without it every row counts as its own game).

use crate::WorkloadError;
use crate::game::State;
use npyz::WriterBuilder;
use std::io::{Seek, Write};
use std::path::Path;

/// An NPZ open for reading: a zip of `<array>.npy` entries.
type Npz = zip::ZipArchive<std::io::BufReader<std::fs::File>>;

/// Writes one array of `shape` as the entry `<name>.npy` of an NPZ (deflated).
fn write_array<T, W>(
    zip: &mut zip::ZipWriter<W>,
    name: &str,
    shape: &[u64],
    values: impl Iterator<Item = T>,
) -> std::io::Result<()>
where
    T: npyz::Serialize + npyz::AutoSerialize,
    W: Write + Seek,
{
    let entry = npyz::npz::file_name_from_array_name(name);
    zip.start_file(entry, Default::default())
        .map_err(std::io::Error::other)?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut *zip)
        .begin_nd()?;
    w.extend(values)?;
    w.finish()
}

/// Writes the `features` row of position `s` (planes × cells, zeroed by the caller): a
/// 1 for each stone on the plane of its owner counted from the player to move. The one
/// encoding of the NPZ and of an ONNX model's `board` input.
pub fn encode_features(s: &State, out: &mut [f32]) {
    let n = s.players();
    let me = s.to_move;
    let cells = s.cells.len();
    for (c, &v) in s.cells.iter().enumerate() {
        if v >= 0 {
            let plane = usize::from((v as u8 + n - me) % n);
            out[plane * cells + c] = 1.0;
        }
    }
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
    /// Per row: the game it comes from, 0-based within the dataset.
    pub games: Vec<u32>,
    /// The game the next pushed rows belong to ([`Dataset::start_game`]).
    pub current_game: u32,
}

impl Dataset {
    /// Rows pushed from now on belong to a new game.
    pub fn start_game(&mut self) {
        self.current_game = self.games.last().map_or(0, |g| g + 1);
    }

    pub fn rows(&self) -> usize {
        self.values.len()
    }

    /// Appends the row of position `s`: its value target for the player to move and the
    /// search `policy` (cell, probability).
    pub fn push_position(&mut self, s: &State, outcome: f32, policy: &[(u16, f32)]) {
        let base = self.features.len();
        self.features.resize(base + self.planes * self.cells, 0.0);
        encode_features(s, &mut self.features[base..]);
        self.values.push(outcome);
        self.games.push(self.current_game);
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
        let offset = self.games.last().map_or(0, |g| g + 1);
        self.games.extend(other.games.iter().map(|g| g + offset));
        self.current_game = self.games.last().map_or(0, |g| g + 1);
        Ok(())
    }

    /// Writes the four arrays as an NPZ, atomically.
    pub fn write_npz(&self, path: &Path) -> Result<(), WorkloadError> {
        let n = self.rows() as u64;
        let (p, c, k) = (self.planes as u64, self.cells as u64, self.k as u64);
        ringrift_store::manifest::atomic_write_with(path, |file| {
            let mut zip = zip::ZipWriter::new(file);
            write_array(
                &mut zip,
                "features",
                &[n, p, c],
                self.features.iter().copied(),
            )?;
            write_array(&mut zip, "values", &[n], self.values.iter().copied())?;
            let indices = self.policy_indices.iter().copied();
            write_array(&mut zip, "policy_indices", &[n, k], indices)?;
            let policy = self.policy_values.iter().copied();
            write_array(&mut zip, "policy_values", &[n, k], policy)?;
            let games = self.games.iter().map(|&g| g as i32);
            write_array(&mut zip, "games", &[n], games)?;
            zip.finish().map_err(std::io::Error::other)?;
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
        let file =
            std::fs::File::open(path).map_err(|e| bad(format!("not a readable NPZ: {e}")))?;
        let mut npz = zip::ZipArchive::new(std::io::BufReader::new(file))
            .map_err(|e| bad(format!("not a readable NPZ: {e}")))?;
        fn array<T: npyz::Deserialize>(
            npz: &mut Npz,
            name: &str,
            bad: &dyn Fn(String) -> WorkloadError,
        ) -> Result<(Vec<u64>, Vec<T>), WorkloadError> {
            let entry = match npz.by_name(&npyz::npz::file_name_from_array_name(name)) {
                Ok(entry) => entry,
                Err(zip::result::ZipError::FileNotFound) => {
                    return Err(bad(format!("array {name} is missing")));
                }
                Err(e) => return Err(bad(format!("array {name}: {e}"))),
            };
            let file = npyz::NpyFile::new(entry).map_err(|e| bad(format!("array {name}: {e}")))?;
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
        let has_games = npz
            .file_names()
            .any(|f| f == npyz::npz::file_name_from_array_name("games"));
        let games: Vec<u32> = if has_games {
            let (gs, games) = array::<i32>(&mut npz, "games", &bad)?;
            if gs != [n] {
                return Err(bad(format!("games must be [N] = [{n}], found {gs:?}")));
            }
            if let Some(g) = games.iter().find(|&&g| g < 0) {
                return Err(bad(format!("game index {g} is negative")));
            }
            games.into_iter().map(|g| g as u32).collect()
        } else {
            (0..n as u32).collect()
        };
        Ok(Dataset {
            planes: p as usize,
            cells: c as usize,
            k: k as usize,
            features,
            values,
            policy_indices,
            policy_values,
            current_game: games.last().map_or(0, |g| g + 1),
            games,
        })
    }
}
