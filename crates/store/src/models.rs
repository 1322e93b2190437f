//! The `models/` folder of a home: the `.rrm` model file's format up to its payload
//! (what daemons need without the engine) and the canonical model of a config with its
//! verified, atomic promotion.
//!
//! File layout (`.rrm`): magic `RRMODEL\0`, u32 LE format version, u32 LE header length,
//! the header as JSON ([`ModelHeader`], which carries the SHA-256 and length of the
//! payload), then the payload. [`read_header`] checks all of that and names what is
//! wrong; what the payload means (architecture, shape, weights) is the engine's
//! (`ringrift_engine::model`), which reads and writes files through [`read_header`] and
//! [`encode`], so the format has one definition.
//!
//! A promotion verifies what it promotes: the candidate's payload SHA-256 must be the one
//! evaluated (the bytes checked are the bytes written), and the canonical model must still
//! be the one the candidate was compared with ([`StoreError::ModelChanged`],
//! [`StoreError::CanonicalChanged`]). It backs up the current
//! `models/canonical_{config}.rrm` (and its `.json` sidecar) under `models/backup/`,
//! copies the candidate over it atomically, writes the sidecar (name, hashes, the
//! evaluation that earned it) and points the `models/ringrift_best_{config}` symlink at
//! it by an atomic rename. The gate is the caller's (`ringrift_contracts::check_gate`).

use crate::manifest::{atomic_copy, atomic_symlink, atomic_write, sha256_hex};
use crate::{ConfigKey, StoreError, paths};
use ringrift_contracts::{EvaluateReport, GateDecision, PromotionReport};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"RRMODEL\0";
pub const FORMAT_VERSION: u32 = 1;

/// Metadata stored in front of the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    pub format_version: u32,
    pub arch: String,
    pub config_key: ConfigKey,
    pub planes: usize,
    pub cells: usize,
    pub hidden: usize,
    pub generation: u32,
    pub parent_sha256: Option<String>,
    pub trained_samples: u64,
    pub created_at: i64,
    pub payload_sha256: String,
    pub payload_len: u64,
    /// Entries of the n-tuple table (0 for architectures without one).
    #[serde(default)]
    pub lut_len: u64,
}

/// The bytes of a model file of `header` and `payload`; the header's payload SHA-256 and
/// length are set from `payload`. Returns the header as written and the bytes.
pub fn encode(
    mut header: ModelHeader,
    payload: &[u8],
) -> Result<(ModelHeader, Vec<u8>), StoreError> {
    header.format_version = FORMAT_VERSION;
    header.payload_sha256 = sha256_hex(payload);
    header.payload_len = payload.len() as u64;
    let json = serde_json::to_vec(&header)
        .map_err(|e| StoreError::Invalid(format!("model header: {e}")))?;
    let hlen = u32::try_from(json.len())
        .map_err(|_| StoreError::Invalid(format!("model header of {} bytes", json.len())))?;
    let mut bytes = Vec::with_capacity(16 + json.len() + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&hlen.to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(payload);
    Ok((header, bytes))
}

/// Largest header [`read_header_prefix`] accepts (a header is a few hundred bytes).
pub const MAX_HEADER_LEN: usize = 1 << 20;

/// Magic, version and the header of a model file's first bytes; returns the header and
/// where the payload starts. The one parser of the prefix, shared by [`read_header`] and
/// [`read_header_prefix`].
fn parse_prefix(path: &Path, bytes: &[u8]) -> Result<(ModelHeader, usize), StoreError> {
    let bad = |reason: String| StoreError::BadModel {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a RingRift model file (bad magic)".into()));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let hlen = word(12) as usize;
    let body = bytes
        .get(16..16 + hlen)
        .ok_or_else(|| bad("header runs past end of file".into()))?;
    let header: ModelHeader =
        serde_json::from_slice(body).map_err(|e| bad(format!("header is not valid: {e}")))?;
    Ok((header, 16 + hlen))
}

/// Checks the bytes of a model file (`path` names it in errors) up to the payload: magic,
/// version, header, payload length and SHA-256. Returns the header and the payload.
pub fn read_header<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(ModelHeader, &'a [u8]), StoreError> {
    let (header, at) = parse_prefix(path, bytes)?;
    let bad = |reason: String| StoreError::BadModel {
        path: path.to_path_buf(),
        reason,
    };
    let payload = &bytes[at..];
    if payload.len() as u64 != header.payload_len {
        return Err(bad(format!(
            "payload is {} bytes, header says {} (truncated?)",
            payload.len(),
            header.payload_len
        )));
    }
    let sha = sha256_hex(payload);
    if sha != header.payload_sha256 {
        return Err(bad(format!(
            "payload sha256 {sha} does not match header {}",
            header.payload_sha256
        )));
    }
    Ok((header, payload))
}

/// Reads only the prefix of a model file from `r` (magic, version, header; at most
/// [`MAX_HEADER_LEN`] bytes of header) without the payload, so a large model's header
/// is read without loading the model. Unlike [`read_header`] the payload is not checked:
/// for listings (a file server's manifest), never for using the model.
pub fn read_header_prefix(
    path: &Path,
    r: &mut impl std::io::Read,
) -> Result<ModelHeader, StoreError> {
    let mut bytes = vec![0u8; 16];
    r.read_exact(&mut bytes)
        .map_err(|e| StoreError::io("read model header", path, e))?;
    let hlen = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    if &bytes[..8] == MAGIC && hlen <= MAX_HEADER_LEN {
        bytes.resize(16 + hlen, 0);
        r.read_exact(&mut bytes[16..])
            .map_err(|e| StoreError::io("read model header", path, e))?;
    } else if &bytes[..8] == MAGIC {
        return Err(StoreError::BadModel {
            path: path.to_path_buf(),
            reason: format!("header of {hlen} bytes (at most {MAX_HEADER_LEN})"),
        });
    }
    Ok(parse_prefix(path, &bytes)?.0)
}

/// Reads a model file and checks it as [`read_header`] does.
pub fn read_header_file(path: &Path) -> Result<ModelHeader, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::io("read model", path, e))?;
    Ok(read_header(path, &bytes)?.0)
}

/// A model file of `config` and `generation` whose payload is `payload` (for tests of
/// the daemons that move, check and promote models without the engine): its header and
/// bytes.
pub fn example(
    config: ConfigKey,
    generation: u32,
    payload: &[u8],
) -> Result<(ModelHeader, Vec<u8>), StoreError> {
    encode(
        ModelHeader {
            format_version: FORMAT_VERSION,
            arch: "example".into(),
            config_key: config,
            planes: 1,
            cells: 1,
            hidden: 1,
            generation,
            parent_sha256: None,
            trained_samples: 0,
            created_at: 0,
            payload_sha256: String::new(),
            payload_len: 0,
            lut_len: 0,
        },
        payload,
    )
}

/// The canonical model of a config as recorded in its sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canonical {
    pub name: String,
    pub path: PathBuf,
    /// Payload SHA-256 from the model header.
    pub sha256: String,
    pub file_sha256: String,
    pub generation: u32,
    pub promoted_at: i64,
    /// The evaluation that earned the promotion, as written then (a record for people:
    /// sidecars of older homes hold reports of older shapes, so it is not read back as
    /// a typed report).
    pub evaluation: Option<serde_json::Value>,
}

/// `models/canonical_<config>.rrm`.
pub fn canonical_path(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("canonical_{config}.rrm"))
}

fn sidecar_path(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("canonical_{config}.json"))
}

/// `models/ringrift_best_<config>`, the symlink to the canonical model.
pub fn best_link(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("ringrift_best_{config}"))
}

/// The current canonical model, if any (sidecar must be readable and match the file).
pub fn canonical(home: &Path, config: ConfigKey) -> Result<Option<Canonical>, StoreError> {
    let model = canonical_path(home, config);
    let sidecar = sidecar_path(home, config);
    if !model.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&sidecar)
        .map_err(|e| StoreError::io("read canonical sidecar", &sidecar, e))?;
    let c: Canonical = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: sidecar.clone(),
        reason: format!("canonical sidecar is not valid: {e}"),
    })?;
    Ok(Some(c))
}

/// Promotes `model` (labelled `name`) to the canonical model of `config` (callers check
/// the gate) if its payload SHA-256 is `model_sha256` and the canonical model is still
/// the one of payload SHA-256 `canonical_sha256` (`None`: there was none): backup, atomic
/// write of the bytes verified, sidecar (with the `evaluation` that earned it, when the
/// caller has the whole report), atomic symlink. The payload itself is not decoded: the
/// evaluation loaded these very bytes (same SHA-256) with the engine.
pub fn promote(
    home: &Path,
    config: ConfigKey,
    model: &Path,
    name: &str,
    model_sha256: &str,
    canonical_sha256: Option<&str>,
    evaluation: Option<&EvaluateReport>,
) -> Result<PromotionReport, StoreError> {
    let bytes = std::fs::read(model).map_err(|e| StoreError::io("read model", model, e))?;
    let (header, _) = read_header(model, &bytes)?;
    if header.payload_sha256 != model_sha256 {
        return Err(StoreError::ModelChanged {
            path: model.to_path_buf(),
            found: header.payload_sha256,
            evaluated: model_sha256.to_owned(),
        });
    }
    let current = canonical(home, config)?.map(|c| c.sha256);
    if current.as_deref() != canonical_sha256 {
        return Err(StoreError::CanonicalChanged {
            found: current,
            evaluated: canonical_sha256.map(str::to_owned),
        });
    }
    if header.config_key != config {
        return Err(StoreError::BadModel {
            path: model.to_path_buf(),
            reason: format!(
                "model is for {}, promoting into {config}",
                header.config_key
            ),
        });
    }
    let target = canonical_path(home, config);
    let sidecar = sidecar_path(home, config);
    let mut backup = None;
    if target.exists() {
        let dir = paths::models_dir(home).join("backup");
        let stamp = crate::now_ms();
        let b = dir.join(format!("canonical_{config}.{stamp}.rrm"));
        atomic_copy(&target, &b)?;
        if sidecar.exists() {
            atomic_copy(
                &sidecar,
                &dir.join(format!("canonical_{config}.{stamp}.json")),
            )?;
        }
        backup = Some(b);
    }
    atomic_write(&target, &bytes)?;
    let file_sha256 = sha256_hex(&bytes);
    // Re-read what landed: a promotion never leaves an unreadable canonical model.
    let landed = read_header_file(&target)?;
    let c = Canonical {
        name: name.to_owned(),
        path: target.clone(),
        sha256: landed.payload_sha256,
        file_sha256,
        generation: landed.generation,
        promoted_at: crate::now_ms(),
        evaluation: evaluation
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::Invalid(format!("evaluation report: {e}")))?,
    };
    let json = serde_json::to_vec_pretty(&c)
        .map_err(|e| StoreError::Invalid(format!("canonical sidecar: {e}")))?;
    atomic_write(&sidecar, &json)?;
    let link = best_link(home, config);
    let rel = target
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| target.clone());
    atomic_symlink(&rel, &link)?;
    Ok(PromotionReport {
        promoted: true,
        decision: GateDecision {
            passed: true,
            reasons: Vec::new(),
            sprt: None,
        },
        canonical: Some(target),
        backup,
        link: Some(link),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// unified_promotion used to write an evaluation without `by_seat` and
    /// `stopped_early`; such a sidecar still names the canonical model.
    #[test]
    fn a_sidecar_with_an_older_evaluation_still_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        std::fs::create_dir_all(paths::models_dir(dir.path())).expect("models dir");
        std::fs::write(canonical_path(dir.path(), key), b"model").expect("model");
        let sidecar = serde_json::json!({
            "name": "gen1", "path": "/m/canonical_hex8_2p.rrm", "sha256": "ab",
            "file_sha256": "cd", "generation": 1, "promoted_at": 5,
            "evaluation": {"config_key": "hex8_2p", "results": [{"opponent": "random", "games": 10}]},
        });
        std::fs::write(
            sidecar_path(dir.path(), key),
            serde_json::to_vec(&sidecar).expect("json"),
        )
        .expect("sidecar");
        let c = canonical(dir.path(), key)
            .expect("readable")
            .expect("present");
        assert_eq!((c.name.as_str(), c.sha256.as_str()), ("gen1", "ab"));
    }

    /// The prefix reader sees the header of a valid file without its payload, and names
    /// what is wrong with a file that is not a model.
    #[test]
    fn the_header_prefix_reads_without_the_payload() {
        let header = ModelHeader {
            format_version: 0,
            arch: "mlp-relu-v1".into(),
            config_key: "hex8_2p".parse().expect("key"),
            planes: 1,
            cells: 2,
            hidden: 3,
            generation: 7,
            parent_sha256: None,
            trained_samples: 0,
            created_at: 0,
            payload_sha256: String::new(),
            payload_len: 0,
            lut_len: 0,
        };
        let (written, bytes) = encode(header, &[9u8; 1000]).expect("encode");
        let p = Path::new("m.rrm");
        let got = read_header_prefix(p, &mut &bytes[..]).expect("prefix");
        assert_eq!(got, written);
        assert_eq!(read_header(p, &bytes).expect("full").0, written);
        let err = read_header_prefix(p, &mut &b"not a model file at all"[..]).expect_err("bad");
        assert!(err.to_string().contains("bad magic"), "{err}");
    }
}
