//! The small policy/value network and its versioned file format.
//!
//! Architecture `mlp-relu-v1`: input = one 0/1 plane per seat, rotated so plane 0 is the
//! player to move (`planes × cells` features), one ReLU hidden layer, a policy head (one
//! logit per cell) and a tanh value head (expected outcome for the player to move).
//! Inputs are sparse, so the hidden pre-activation is a sum of weight rows, one per
//! stone; search keeps it up to date incrementally as stones are placed and removed.
//!
//! File (`.rrm`): the format up to the payload is `ringrift_store::models` ([`MAGIC`],
//! [`FORMAT_VERSION`], [`ModelHeader`], checked by `read_header`, written by `encode`);
//! the payload is every parameter as f32 LE. Loading checks all of it and names what is
//! wrong.

use crate::WorkloadError;
use crate::rng::Rng;
use ringrift_store::ConfigKey;
use ringrift_store::StoreError;
use ringrift_store::manifest::atomic_write;
pub use ringrift_store::models::{FORMAT_VERSION, MAGIC, ModelHeader};
use std::path::Path;
/// Stones → ReLU layer → policy and value heads.
pub const ARCH: &str = "mlp-relu-v1";
/// [`ARCH`] plus a positional n-tuple term: a learned value per (window, pattern),
/// summed over the board's windows and added to the value head's pre-activation.
/// (`mlp-ntuple-v1` shared one table across windows; it learned too little to beat the
/// heuristic and is no longer read.)
pub const ARCH_NTUPLE: &str = "mlp-ntuple-v2";

/// Network weights. `w1t[(feature * hidden) + h]`, `wp[(cell * hidden) + h]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub config_key: ConfigKey,
    pub planes: usize,
    pub cells: usize,
    pub hidden: usize,
    pub generation: u32,
    pub parent_sha256: Option<String>,
    pub trained_samples: u64,
    pub w1t: Vec<f32>,
    pub b1: Vec<f32>,
    pub wp: Vec<f32>,
    pub bp: Vec<f32>,
    pub wv: Vec<f32>,
    pub bv: f32,
    /// Value per window pattern (`Geometry::patterns`); empty = no n-tuple term.
    pub lut: Vec<f32>,
}

impl Model {
    /// A network with every parameter zero.
    pub fn zeros(config_key: ConfigKey, cells: usize, hidden: usize) -> Model {
        let planes = usize::from(config_key.players());
        Model {
            config_key,
            planes,
            cells,
            hidden,
            generation: 0,
            parent_sha256: None,
            trained_samples: 0,
            w1t: vec![0.0; planes * cells * hidden],
            b1: vec![0.0; hidden],
            wp: vec![0.0; cells * hidden],
            bp: vec![0.0; cells],
            wv: vec![0.0; hidden],
            bv: 0.0,
            lut: Vec::new(),
        }
    }

    /// Adds a zero n-tuple table (architecture [`ARCH_NTUPLE`]).
    pub fn with_ntuple(mut self) -> Model {
        let n = crate::game::Geometry::new(self.config_key).lut_len();
        self.lut = vec![0.0; n];
        self
    }

    pub fn arch(&self) -> &'static str {
        if self.lut.is_empty() {
            ARCH
        } else {
            ARCH_NTUPLE
        }
    }

    /// Sum of the n-tuple table over window patterns.
    pub fn lut_sum(&self, patterns: &[u32]) -> f32 {
        if self.lut.is_empty() {
            return 0.0;
        }
        patterns.iter().map(|&p| self.lut[p as usize]).sum()
    }

    /// Value of a whole position for `perspective` (no incremental state).
    pub fn evaluate(&self, geo: &crate::game::Geometry, cells: &[i8], perspective: u8) -> f32 {
        let mut acc = vec![0.0; self.hidden];
        self.accumulate(cells, perspective, &mut acc);
        let lut = if self.lut.is_empty() {
            0.0
        } else {
            self.lut_sum(&geo.patterns(cells, perspective))
        };
        self.value(&acc, lut)
    }

    /// A freshly initialised network (small random weights).
    pub fn new_random(config_key: ConfigKey, cells: usize, hidden: usize, seed: u64) -> Model {
        let mut m = Model::zeros(config_key, cells, hidden);
        let mut rng = Rng::new(seed);
        let mut gauss =
            |w: &mut [f32], std: f64| w.iter_mut().for_each(|x| *x = (rng.normal() * std) as f32);
        gauss(&mut m.w1t, 0.15);
        gauss(&mut m.wp, 0.05);
        gauss(&mut m.wv, 0.05);
        m
    }

    /// The untrained "null" model: value 0 everywhere, uniform policy. Search with it
    /// plays only the tactics it can see; it is generation 0 of the loop.
    pub fn null(config_key: ConfigKey, cells: usize) -> Model {
        Model::zeros(config_key, cells, 1)
    }

    pub fn param_count(&self) -> usize {
        self.w1t.len()
            + self.b1.len()
            + self.wp.len()
            + self.bp.len()
            + self.wv.len()
            + 1
            + self.lut.len()
    }

    /// Feature index of a stone of seat `owner` at `cell`, seen by `perspective`.
    pub fn feature(&self, owner: u8, perspective: u8, cell: usize) -> usize {
        let n = self.planes as u8;
        let plane = usize::from((owner + n - perspective) % n);
        plane * self.cells + cell
    }

    /// Hidden pre-activation of a position seen by `perspective`.
    pub fn accumulate(&self, cells: &[i8], perspective: u8, acc: &mut [f32]) {
        acc.copy_from_slice(&self.b1);
        for (c, &v) in cells.iter().enumerate() {
            if v >= 0 {
                self.add_feature(acc, self.feature(v as u8, perspective, c), 1.0);
            }
        }
    }

    /// `acc += sign * row(feature)`.
    pub fn add_feature(&self, acc: &mut [f32], feature: usize, sign: f32) {
        let h = self.hidden;
        let row = &self.w1t[feature * h..(feature + 1) * h];
        for (a, w) in acc.iter_mut().zip(row) {
            *a += sign * w;
        }
    }

    /// Value head on a pre-activation (plus the n-tuple sum): expected outcome for the
    /// perspective player.
    pub fn value(&self, acc: &[f32], lut_sum: f32) -> f32 {
        let mut s = self.bv + lut_sum;
        for (a, w) in acc.iter().zip(&self.wv) {
            s += a.max(0.0) * w;
        }
        s.tanh()
    }

    /// Policy logits for `cells` (the caller masks illegal ones).
    pub fn policy_logits(&self, acc: &[f32], cells: &[u16], out: &mut Vec<f32>) {
        let h = self.hidden;
        let hidden: Vec<f32> = acc.iter().map(|a| a.max(0.0)).collect();
        out.clear();
        for &c in cells {
            let c = usize::from(c);
            let row = &self.wp[c * h..(c + 1) * h];
            out.push(self.bp[c] + row.iter().zip(&hidden).map(|(w, x)| w * x).sum::<f32>());
        }
    }

    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.param_count() * 4);
        for v in self
            .w1t
            .iter()
            .chain(&self.b1)
            .chain(&self.wp)
            .chain(&self.bp)
            .chain(&self.wv)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.bv.to_le_bytes());
        for v in &self.lut {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Writes the model atomically; returns the header written (with the payload hash).
    pub fn save(&self, path: &Path) -> Result<ModelHeader, WorkloadError> {
        let payload = self.payload();
        let header = ModelHeader {
            format_version: FORMAT_VERSION,
            arch: self.arch().to_string(),
            config_key: self.config_key,
            planes: self.planes,
            cells: self.cells,
            hidden: self.hidden,
            generation: self.generation,
            parent_sha256: self.parent_sha256.clone(),
            trained_samples: self.trained_samples,
            created_at: ringrift_store::now_ms(),
            // Set by `encode` from the payload.
            payload_sha256: String::new(),
            payload_len: 0,
            lut_len: self.lut.len() as u64,
        };
        let (header, bytes) = ringrift_store::models::encode(header, &payload)?;
        atomic_write(path, &bytes)?;
        Ok(header)
    }

    /// Reads and verifies a model file.
    pub fn load(path: &Path) -> Result<(Model, ModelHeader), WorkloadError> {
        let bytes = std::fs::read(path).map_err(|e| WorkloadError::io("read model", path, e))?;
        Model::from_bytes(path, &bytes)
    }

    /// Verifies and decodes the bytes of a model file (`path` names it in errors), so a
    /// caller that checks a model and then writes it elsewhere reads the file once.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<(Model, ModelHeader), WorkloadError> {
        let bad = |reason: String| WorkloadError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
        let (header, payload) =
            ringrift_store::models::read_header(path, bytes).map_err(|e| match e {
                StoreError::BadModel { path, reason } => WorkloadError::BadModel { path, reason },
                other => other.into(),
            })?;
        if header.arch != ARCH && header.arch != ARCH_NTUPLE {
            return Err(bad(format!(
                "architecture {:?}, this build knows {ARCH:?} and {ARCH_NTUPLE:?}",
                header.arch
            )));
        }
        if header.planes != usize::from(header.config_key.players()) || header.hidden == 0 {
            return Err(bad(format!(
                "shape planes={} hidden={} does not fit {}",
                header.planes, header.hidden, header.config_key
            )));
        }
        let board_cells = crate::game::Geometry::new(header.config_key).cells();
        if header.cells != board_cells {
            return Err(bad(format!(
                "{} cells, but {} has {board_cells}",
                header.cells, header.config_key
            )));
        }
        let (p, c, h) = (header.planes, header.cells, header.hidden);
        let lut_len = if header.arch == ARCH_NTUPLE {
            crate::game::Geometry::new(header.config_key).lut_len()
        } else {
            0
        };
        if header.lut_len as usize != lut_len {
            return Err(bad(format!(
                "n-tuple table of {} entries, {} needs {lut_len}",
                header.lut_len, header.arch
            )));
        }
        let expected = p * c * h + h + c * h + c + h + 1 + lut_len;
        if payload.len() != expected * 4 {
            return Err(bad(format!(
                "payload holds {} floats, shape needs {expected}",
                payload.len() / 4
            )));
        }
        let mut floats = payload
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let mut take = |n: usize| -> Vec<f32> { floats.by_ref().take(n).collect() };
        let w1t = take(p * c * h);
        let b1 = take(h);
        let wp = take(c * h);
        let bp = take(c);
        let wv = take(h);
        let bv = take(1).first().copied().unwrap_or(0.0);
        let lut = take(lut_len);
        if w1t
            .iter()
            .chain(&wp)
            .chain(&wv)
            .chain(&lut)
            .any(|v| !v.is_finite())
        {
            return Err(bad("weights contain NaN or infinity".into()));
        }
        let model = Model {
            config_key: header.config_key,
            planes: p,
            cells: c,
            hidden: h,
            generation: header.generation,
            parent_sha256: header.parent_sha256.clone(),
            trained_samples: header.trained_samples,
            w1t,
            b1,
            wp,
            bp,
            wv,
            bv,
            lut,
        };
        Ok((model, header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ConfigKey {
        "hex8_2p".parse().expect("key")
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.rrm");
        let mut m = Model::new_random(key(), 64, 8, 3);
        m.generation = 4;
        let mut nt = Model::new_random(key(), 64, 8, 4).with_ntuple();
        nt.lut[7] = 0.25;
        nt.save(&p).expect("save ntuple");
        assert_eq!(Model::load(&p).expect("load ntuple").0, nt);
        let h = m.save(&p).expect("save");
        let (back, h2) = Model::load(&p).expect("load");
        assert_eq!(back, m);
        assert_eq!(h, h2);
        assert_eq!(h.payload_sha256.len(), 64);
    }

    /// One definition of the format: the header the engine wrote is the one the store's
    /// header-only reader (used by promotion) reads.
    #[test]
    fn the_store_reads_the_header_the_engine_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.rrm");
        let mut m = Model::new_random(key(), 64, 8, 5).with_ntuple();
        m.generation = 3;
        let written = m.save(&p).expect("save");
        let read = ringrift_store::models::read_header_file(&p).expect("header");
        assert_eq!(read, written);
        assert_eq!(read, Model::load(&p).expect("load").1);
        assert_eq!((read.generation, read.lut_len > 0), (3, true));
    }

    #[test]
    fn corruption_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.rrm");
        Model::new_random(key(), 64, 8, 3).save(&p).expect("save");
        let good = std::fs::read(&p).expect("read");

        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        std::fs::write(&p, &flipped).expect("write");
        let e = Model::load(&p).expect_err("flipped").to_string();
        assert!(e.contains("sha256"), "{e}");

        std::fs::write(&p, &good[..good.len() - 8]).expect("write");
        let e = Model::load(&p).expect_err("truncated").to_string();
        assert!(e.contains("truncated"), "{e}");

        std::fs::write(&p, b"hello world, not a model").expect("write");
        let e = Model::load(&p).expect_err("junk").to_string();
        assert!(e.contains("magic"), "{e}");
    }

    #[test]
    fn incremental_accumulation_matches_full() {
        let m = Model::new_random("square8_3p".parse().expect("key"), 64, 16, 9);
        let mut cells = vec![-1i8; 64];
        cells[5] = 0;
        cells[9] = 2;
        let mut full = vec![0.0; 16];
        m.accumulate(&cells, 1, &mut full);
        let mut inc = vec![0.0; 16];
        m.accumulate(&[-1i8; 64], 1, &mut inc);
        m.add_feature(&mut inc, m.feature(0, 1, 5), 1.0);
        m.add_feature(&mut inc, m.feature(2, 1, 9), 1.0);
        for (a, b) in full.iter().zip(&inc) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
