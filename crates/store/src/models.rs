//! The `models/` folder of a home: the model file formats up to what daemons need
//! without the engine (identity, config, generation) and the canonical model of a config
//! with its verified, atomic promotion.
//!
//! Two formats ([`ModelFormat`], told apart by extension): our `.rrm`, and ONNX (`.onnx`,
//! from an external trainer; contract in `docs/jobs.md`: the metadata property
//! `ringrift.config_key` is required, `ringrift.generation` optional). A model's identity
//! (`payload_sha256`) is the SHA-256 of the `.rrm` payload, or of the whole `.onnx` file.
//! [`identify`] reads either; inference is the workload's (`ringrift-job`), never here.
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
//! `models/canonical_{config}.{ext}` (and its `.json` sidecar) under `models/backup/`,
//! copies the candidate to `canonical_{config}.{its ext}` atomically (then removes a
//! canonical file of the other format), writes the sidecar (name, hashes, the
//! evaluation that earned it) and points the `models/ringrift_best_{config}` symlink at
//! it by an atomic rename. The gate is the caller's (`ringrift_contracts::check_gate`).
//!
//! The swap is fenced ([`Fence`]): a leader's promotion carries its fencing token
//! (`ringrift_cluster::leader`), and the sidecar records the highest token that has
//! written the canonical model of its config (`fence_token`). A token lower than that is
//! refused with [`StoreError::Fenced`] naming both, and nothing changes: a leader deposed
//! between its last check of the leadership and the swap cannot replace the canonical
//! model a newer leader wrote. The check, the raise and the swap run under one exclusive
//! `flock` of `models/.canonical_{config}.lock` (hidden: never served, never a model), so
//! two writers cannot interleave; a higher token is written to the sidecar before the
//! model file is touched, so a crash in the middle of a swap never lowers the fence.

use crate::manifest::{atomic_copy, atomic_symlink, atomic_write, sha256_hex};
use crate::{ConfigKey, StoreError, paths};
use ringrift_contracts::{EvaluateReport, GateDecision, PromotionReport};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"RRMODEL\0";
pub const FORMAT_VERSION: u32 = 1;

/// A model file format, named by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// Ours: header + f32 weights (`ringrift_engine::model`).
    #[default]
    Rrm,
    /// ONNX, from an external trainer; evaluated through `tract` by `ringrift-job`.
    Onnx,
}

impl ModelFormat {
    pub const ALL: [ModelFormat; 2] = [ModelFormat::Rrm, ModelFormat::Onnx];

    /// The extension without the dot.
    pub fn ext(self) -> &'static str {
        match self {
            ModelFormat::Rrm => "rrm",
            ModelFormat::Onnx => "onnx",
        }
    }

    /// The format of a file name or path by its extension, if it is a model file.
    pub fn of(path: impl AsRef<Path>) -> Option<ModelFormat> {
        let ext = path.as_ref().extension()?.to_str()?;
        ModelFormat::ALL.into_iter().find(|f| f.ext() == ext)
    }

    /// `path`'s format, or an error naming the file.
    pub fn of_file(path: &Path) -> Result<ModelFormat, StoreError> {
        ModelFormat::of(path).ok_or_else(|| StoreError::BadModel {
            path: path.to_path_buf(),
            reason: "not a model file name (extension .rrm or .onnx)".into(),
        })
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.ext())
    }
}

/// What daemons need to know of a model file of either format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub format: ModelFormat,
    pub config_key: ConfigKey,
    pub generation: u32,
    /// The model's identity: the `.rrm` payload's SHA-256, the `.onnx` file's.
    pub payload_sha256: String,
}

/// ONNX metadata property keys of the model contract.
pub const ONNX_CONFIG_KEY: &str = "ringrift.config_key";
pub const ONNX_GENERATION: &str = "ringrift.generation";

/// The part of ONNX's `ModelProto` daemons read: `metadata_props` (field 14); every other
/// field is skipped by the decoder.
#[derive(Clone, PartialEq, prost::Message)]
struct OnnxMetadata {
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<OnnxEntry>,
    /// `ir_version` (field 1): every ONNX file sets it, so junk that happens to decode
    /// is still told apart.
    #[prost(int64, tag = "1")]
    ir_version: i64,
}

/// ONNX `StringStringEntryProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct OnnxEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// The metadata properties of ONNX model bytes (`path` names the file in errors).
pub fn onnx_metadata(
    path: &Path,
    bytes: &[u8],
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    let bad = |reason: String| StoreError::BadModel {
        path: path.to_path_buf(),
        reason,
    };
    let m = <OnnxMetadata as prost::Message>::decode(bytes)
        .map_err(|e| bad(format!("not an ONNX model (protobuf: {e})")))?;
    if m.ir_version <= 0 {
        return Err(bad("not an ONNX model (no ir_version)".into()));
    }
    Ok(m.metadata_props
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect())
}

/// Identifies model bytes of either format, by `path`'s extension, and checks them as
/// far as daemons can: the `.rrm` header and payload hash ([`read_header`]); the ONNX
/// protobuf and its `ringrift.*` metadata.
pub fn identify(path: &Path, bytes: &[u8]) -> Result<ModelInfo, StoreError> {
    match ModelFormat::of_file(path)? {
        ModelFormat::Rrm => {
            let (h, _) = read_header(path, bytes)?;
            Ok(ModelInfo {
                format: ModelFormat::Rrm,
                config_key: h.config_key,
                generation: h.generation,
                payload_sha256: h.payload_sha256,
            })
        }
        ModelFormat::Onnx => {
            let bad = |reason: String| StoreError::BadModel {
                path: path.to_path_buf(),
                reason,
            };
            let meta = onnx_metadata(path, bytes)?;
            let config_key = meta
                .get(ONNX_CONFIG_KEY)
                .ok_or_else(|| bad(format!("ONNX metadata lacks {ONNX_CONFIG_KEY}")))?
                .parse::<ConfigKey>()
                .map_err(|e| bad(format!("ONNX metadata {ONNX_CONFIG_KEY}: {e}")))?;
            let generation = match meta.get(ONNX_GENERATION) {
                None => 0,
                Some(g) => g
                    .parse()
                    .map_err(|e| bad(format!("ONNX metadata {ONNX_GENERATION} {g:?}: {e}")))?,
            };
            Ok(ModelInfo {
                format: ModelFormat::Onnx,
                config_key,
                generation,
                payload_sha256: sha256_hex(bytes),
            })
        }
    }
}

/// Reads a model file of either format and identifies it ([`identify`]).
pub fn identify_file(path: &Path) -> Result<ModelInfo, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::io("read model", path, e))?;
    identify(path, &bytes)
}

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
    if header.format_version != version {
        return Err(bad(format!(
            "header says format version {}, the file is version {version}",
            header.format_version
        )));
    }
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

/// ONNX bytes of `config` and `generation` with only the fields daemons read (`ir_version`,
/// the `ringrift.*` metadata) and `pad` bytes of padding metadata: for tests of the
/// daemons that move and promote models (not loadable by an ONNX runtime; no graph).
pub fn example_onnx(config: ConfigKey, generation: u32, pad: usize) -> Vec<u8> {
    onnx_with_metadata(&[
        (ONNX_CONFIG_KEY, &config.to_string()),
        (ONNX_GENERATION, &generation.to_string()),
        ("pad", &"x".repeat(pad)),
    ])
}

/// ONNX bytes with only `ir_version` and `meta` as `metadata_props`.
fn onnx_with_metadata(meta: &[(&str, &str)]) -> Vec<u8> {
    prost::Message::encode_to_vec(&OnnxMetadata {
        ir_version: 8,
        metadata_props: meta
            .iter()
            .map(|(k, v)| OnnxEntry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    })
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
    /// The highest fencing token that has written this config's canonical model (0 in a
    /// sidecar written before fencing, or by replicas only).
    #[serde(default)]
    pub fence_token: u64,
}

/// Who swaps the canonical model, for its fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The leader holding this fencing token (under static leadership the constant
    /// `ringrift_cluster::leader::STATIC_TOKEN`): refused when a higher token has
    /// written here; raises the recorded token otherwise.
    Leader(u64),
    /// A copy of a canonical model promoted (and fenced) on another node, installed by
    /// `model_sync`: checks no token and keeps the recorded one.
    Replica,
}

/// `models/canonical_<config>.<ext>`, where the canonical model of `format` lives.
pub fn canonical_path(home: &Path, config: ConfigKey, format: ModelFormat) -> PathBuf {
    paths::models_dir(home).join(format!("canonical_{config}.{}", format.ext()))
}

/// The canonical model file of `config` that exists, of either format. Both exist only
/// for a moment of a promotion that changes the format (or after a crash in it): then
/// the one the sidecar names.
pub fn canonical_file(home: &Path, config: ConfigKey) -> Option<PathBuf> {
    let found: Vec<PathBuf> = ModelFormat::ALL
        .into_iter()
        .map(|f| canonical_path(home, config, f))
        .filter(|p| p.exists())
        .collect();
    if found.len() > 1 {
        let named = std::fs::read(sidecar_path(home, config))
            .ok()
            .and_then(|b| serde_json::from_slice::<Canonical>(&b).ok())
            .and_then(|c| c.path.file_name().map(|n| n.to_owned()));
        if let Some(p) = found.iter().find(|p| p.file_name() == named.as_deref()) {
            return Some(p.clone());
        }
    }
    found.into_iter().next()
}

/// A canonical backup's file name as [`promote`] writes it under `models/backup/`,
/// `canonical_{config}.{stamp}.{rrm|onnx}` → (config, stamp in ms).
pub fn backup_of(name: &str) -> Option<(&str, i64)> {
    ModelFormat::of(name)?;
    let (rest, _ext) = name.strip_prefix("canonical_")?.rsplit_once('.')?;
    let (config, stamp) = rest.rsplit_once('.')?;
    Some((config, stamp.parse().ok()?))
}

fn sidecar_path(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("canonical_{config}.json"))
}

/// `models/.canonical_<config>.lock`, the `flock` every swap of the canonical model holds.
fn lock_path(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!(".canonical_{config}.lock"))
}

/// Holds the exclusive lock of `config`'s canonical model until dropped (blocking).
fn lock_canonical(
    home: &Path,
    config: ConfigKey,
) -> Result<nix::fcntl::Flock<std::fs::File>, StoreError> {
    let path = lock_path(home, config);
    let dir = paths::models_dir(home);
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io("open the canonical lock", &path, e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        StoreError::io(
            "lock the canonical model",
            &path,
            std::io::Error::from(errno),
        )
    })
}

/// The sidecar as written, if there is one (a corrupt one is an error: promoting over
/// it would lose its fence).
fn read_sidecar(home: &Path, config: ConfigKey) -> Result<Option<Canonical>, StoreError> {
    let sidecar = sidecar_path(home, config);
    let bytes = match std::fs::read(&sidecar) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read canonical sidecar", &sidecar, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: sidecar.clone(),
            reason: format!("canonical sidecar is not valid: {e}"),
        })
}

fn write_sidecar(home: &Path, config: ConfigKey, c: &Canonical) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(c)
        .map_err(|e| StoreError::Invalid(format!("canonical sidecar: {e}")))?;
    atomic_write(&sidecar_path(home, config), &json)
}

/// The highest fencing token recorded for `config`'s canonical model (0: none).
pub fn fence_token(home: &Path, config: ConfigKey) -> Result<u64, StoreError> {
    Ok(read_sidecar(home, config)?.map_or(0, |c| c.fence_token))
}

/// Whether the model of payload SHA-256 `payload_sha256` is or was `config`'s canonical
/// model in this home: the sidecar's, or one of the backed-up sidecars [`promote`] keeps
/// under `models/backup/` (promotions here and copies installed by model_sync alike).
/// For a leader handed an evaluation an earlier leader already decided: the decision
/// record is that node's, the canonical history is everywhere the model went.
pub fn was_canonical(
    home: &Path,
    config: ConfigKey,
    payload_sha256: &str,
) -> Result<bool, StoreError> {
    if read_sidecar(home, config)?.is_some_and(|c| c.sha256 == payload_sha256) {
        return Ok(true);
    }
    let dir = paths::models_dir(home).join("backup");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io("read backups", &dir, e)),
    };
    let prefix = format!("canonical_{config}.");
    for entry in entries {
        let path = entry
            .map_err(|e| StoreError::io("read backups", &dir, e))?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with(&prefix) && name.ends_with(".json")) {
            continue;
        }
        // A backup that cannot be read is not evidence either way: skip it.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if serde_json::from_slice::<Canonical>(&bytes).is_ok_and(|c| c.sha256 == payload_sha256) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `models/ringrift_best_<config>`, the symlink to the canonical model.
pub fn best_link(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("ringrift_best_{config}"))
}

/// The current canonical model, if any (sidecar must be readable and match the file).
pub fn canonical(home: &Path, config: ConfigKey) -> Result<Option<Canonical>, StoreError> {
    let Some(model) = canonical_file(home, config) else {
        return Ok(None);
    };
    let sidecar = sidecar_path(home, config);
    let bytes = std::fs::read(&sidecar)
        .map_err(|e| StoreError::io("read canonical sidecar", &sidecar, e))?;
    let mut c: Canonical = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: sidecar.clone(),
        reason: format!("canonical sidecar is not valid: {e}"),
    })?;
    // The file of this home (a sidecar copied from a peer names the peer's path).
    c.path = model;
    Ok(Some(c))
}

/// Promotes `model` (labelled `name`) to the canonical model of `config` (callers check
/// the gate) if its payload SHA-256 is `model_sha256` and the canonical model is still
/// the one of payload SHA-256 `canonical_sha256` (`None`: there was none): backup, atomic
/// write of the bytes verified, sidecar (with the `evaluation` that earned it, when the
/// caller has the whole report), atomic symlink, then removal of a canonical file of the
/// other format. The weights are not decoded: the evaluation loaded these very bytes
/// (same SHA-256) with the engine or the ONNX runtime.
///
/// `fence` is who writes: a [`Fence::Leader`] token lower than the recorded one is
/// [`StoreError::Fenced`] and changes nothing. Every check and the swap hold the
/// config's lock (blocking: async callers use `spawn_blocking`).
#[allow(clippy::too_many_arguments)]
pub fn promote(
    home: &Path,
    config: ConfigKey,
    model: &Path,
    name: &str,
    model_sha256: &str,
    canonical_sha256: Option<&str>,
    evaluation: Option<&EvaluateReport>,
    fence: Fence,
) -> Result<PromotionReport, StoreError> {
    let _lock = lock_canonical(home, config)?;
    // The fence first: a deposed leader learns nothing else and changes nothing.
    let recorded = read_sidecar(home, config)?;
    let seen = recorded.as_ref().map_or(0, |c| c.fence_token);
    let fence_token = match fence {
        Fence::Leader(token) if token < seen => {
            return Err(StoreError::Fenced { token, seen });
        }
        Fence::Leader(token) => token,
        Fence::Replica => seen,
    };
    let bytes = std::fs::read(model).map_err(|e| StoreError::io("read model", model, e))?;
    let header = identify(model, &bytes)?;
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
    // Raise the fence before touching the model: a crash mid-swap leaves it raised.
    if let Some(mut c) = recorded.filter(|_| fence_token > seen) {
        c.fence_token = fence_token;
        write_sidecar(home, config, &c)?;
    }
    let target = canonical_path(home, config, header.format);
    let sidecar = sidecar_path(home, config);
    let mut backup = None;
    let previous = canonical_file(home, config);
    if let Some(prev) = &previous {
        let dir = paths::models_dir(home).join("backup");
        let stamp = crate::now_ms();
        let ext = ModelFormat::of(prev).unwrap_or_default().ext();
        let b = dir.join(format!("canonical_{config}.{stamp}.{ext}"));
        atomic_copy(prev, &b)?;
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
    let landed = identify_file(&target)?;
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
        fence_token,
    };
    write_sidecar(home, config, &c)?;
    let link = best_link(home, config);
    let rel = target
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| target.clone());
    atomic_symlink(&rel, &link)?;
    if let Some(prev) = previous.filter(|p| *p != target) {
        std::fs::remove_file(&prev)
            .map_err(|e| StoreError::io("remove the replaced canonical model", &prev, e))?;
    }
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
        std::fs::write(canonical_path(dir.path(), key, ModelFormat::Rrm), b"model").expect("model");
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

    #[test]
    fn an_onnx_model_is_identified_by_its_metadata_and_file_hash() {
        let p = Path::new("/m/gen1.onnx");
        let bytes = onnx_with_metadata(&[(ONNX_CONFIG_KEY, "hex8_2p"), (ONNX_GENERATION, "4")]);
        let info = identify(p, &bytes).expect("identify");
        assert_eq!(info.format, ModelFormat::Onnx);
        assert_eq!(info.config_key.to_string(), "hex8_2p");
        assert_eq!(info.generation, 4);
        assert_eq!(info.payload_sha256, sha256_hex(&bytes));
        let err = identify(p, &onnx_with_metadata(&[])).expect_err("no config");
        let msg = err.to_string();
        assert!(
            msg.contains("/m/gen1.onnx") && msg.contains(ONNX_CONFIG_KEY),
            "{msg}"
        );
        let err = identify(p, b"\xff\xff not protobuf").expect_err("junk");
        let msg = err.to_string();
        assert!(
            msg.contains("/m/gen1.onnx") && msg.contains("not an ONNX model"),
            "{msg}"
        );
        let err = identify(Path::new("/m/gen1.pt"), &bytes).expect_err("extension");
        assert!(err.to_string().contains("gen1.pt"), "{err}");
    }

    /// A promotion that changes the format replaces the canonical file of the other
    /// format: one canonical model, backed up, the link naming the new file.
    #[test]
    fn promoting_an_onnx_model_over_an_rrm_one_leaves_one_canonical_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        let m = paths::models_dir(home);
        std::fs::create_dir_all(&m).expect("models dir");
        let (h, rrm) = example(key, 1, b"weights").expect("example");
        std::fs::write(m.join("gen1.rrm"), &rrm).expect("rrm");
        promote(
            home,
            key,
            &m.join("gen1.rrm"),
            "gen1",
            &h.payload_sha256,
            None,
            None,
            Fence::Leader(1),
        )
        .expect("first promotion");
        let onnx = onnx_with_metadata(&[(ONNX_CONFIG_KEY, "hex8_2p"), (ONNX_GENERATION, "2")]);
        std::fs::write(m.join("gen2.onnx"), &onnx).expect("onnx");
        let sha = sha256_hex(&onnx);
        let stale = promote(
            home,
            key,
            &m.join("gen2.onnx"),
            "gen2",
            &sha,
            None,
            None,
            Fence::Leader(1),
        )
        .expect_err("the canonical model changed since");
        assert!(
            matches!(stale, StoreError::CanonicalChanged { .. }),
            "{stale}"
        );
        let r = promote(
            home,
            key,
            &m.join("gen2.onnx"),
            "gen2",
            &sha,
            Some(&h.payload_sha256),
            None,
            Fence::Leader(1),
        )
        .expect("second promotion");
        assert_eq!(
            r.canonical.as_deref(),
            Some(m.join("canonical_hex8_2p.onnx").as_path())
        );
        assert!(!canonical_path(home, key, ModelFormat::Rrm).exists());
        assert!(
            r.backup
                .as_ref()
                .is_some_and(|b| b.extension() == Some("rrm".as_ref()))
        );
        let c = canonical(home, key).expect("read").expect("present");
        assert_eq!((c.sha256.as_str(), c.generation), (sha.as_str(), 2));
        assert_eq!(c.path, m.join("canonical_hex8_2p.onnx"));
        let link = std::fs::read_link(best_link(home, key)).expect("link");
        assert_eq!(link, Path::new("canonical_hex8_2p.onnx"));
    }
    /// A leader deposed by a newer one (token 8 has written the canonical model) swaps
    /// nothing with its token 7: the error names both tokens, and the canonical model,
    /// its sidecar and link stay the newer leader's. Equal and higher tokens pass; a
    /// replica keeps the recorded token.
    #[test]
    fn a_swap_with_a_stale_token_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        let m = paths::models_dir(home);
        std::fs::create_dir_all(&m).expect("models dir");
        let write = |generation: u32, fill: &[u8]| {
            let (h, bytes) = example(key, generation, fill).expect("example");
            let p = m.join(format!("gen{generation}.rrm"));
            std::fs::write(&p, &bytes).expect("model");
            (p, h.payload_sha256)
        };
        let (a, sha_a) = write(1, b"a");
        let (b, sha_b) = write(2, b"b");
        let (c, sha_c) = write(3, b"c");
        promote(home, key, &a, "a", &sha_a, None, None, Fence::Leader(8)).expect("token 8");
        assert_eq!(fence_token(home, key).expect("fence"), 8);
        let sidecar_before = std::fs::read(sidecar_path(home, key)).expect("sidecar");
        let err = promote(
            home,
            key,
            &b,
            "b",
            &sha_b,
            Some(&sha_a),
            None,
            Fence::Leader(7),
        )
        .expect_err("token 7 is stale");
        assert!(
            matches!(err, StoreError::Fenced { token: 7, seen: 8 }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("token 7") && msg.contains("token 8"), "{msg}");
        let now = canonical(home, key).expect("read").expect("present");
        assert_eq!((now.sha256.as_str(), now.fence_token), (sha_a.as_str(), 8));
        assert_eq!(
            std::fs::read(sidecar_path(home, key)).expect("sidecar"),
            sidecar_before,
            "the sidecar is untouched"
        );
        let landed = identify_file(&canonical_path(home, key, ModelFormat::Rrm)).expect("model");
        assert_eq!(landed.payload_sha256, sha_a, "the model file is untouched");
        assert!(
            !m.join("backup").exists(),
            "a refused swap backs nothing up"
        );
        promote(
            home,
            key,
            &b,
            "b",
            &sha_b,
            Some(&sha_a),
            None,
            Fence::Leader(8),
        )
        .expect("the same leader again");
        promote(
            home,
            key,
            &c,
            "c",
            &sha_c,
            Some(&sha_b),
            None,
            Fence::Replica,
        )
        .expect("a replica");
        let now = canonical(home, key).expect("read").expect("present");
        assert_eq!((now.sha256.as_str(), now.fence_token), (sha_c.as_str(), 8));
        promote(
            home,
            key,
            &a,
            "a",
            &sha_a,
            Some(&sha_c),
            None,
            Fence::Leader(9),
        )
        .expect("a newer leader");
        assert_eq!(fence_token(home, key).expect("fence"), 9);
    }
    /// Writers racing to replace the same canonical model (each compared with none, each
    /// with its own token) do not interleave: under the lock exactly one swaps, every
    /// other sees the canonical model it wrote (changed since) or its higher token, and
    /// the sidecar names the winner with the winner's token.
    #[test]
    fn racing_promotions_swap_one_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        let m = paths::models_dir(home);
        std::fs::create_dir_all(&m).expect("models dir");
        let n: u8 = 8;
        let candidates: Vec<(PathBuf, String)> = (1..=n)
            .map(|i| {
                let (h, bytes) = example(key, u32::from(i), &[i; 100_000]).expect("example");
                let p = m.join(format!("gen{i}.rrm"));
                std::fs::write(&p, &bytes).expect("model");
                (p, h.payload_sha256)
            })
            .collect();
        let start = std::sync::Barrier::new(usize::from(n));
        let results: Vec<(u64, String, Result<PromotionReport, StoreError>)> =
            std::thread::scope(|s| {
                let handles: Vec<_> = candidates
                    .iter()
                    .zip(1u64..)
                    .map(|((p, sha), token)| {
                        let start = &start;
                        s.spawn(move || {
                            start.wait();
                            let r =
                                promote(home, key, p, "c", sha, None, None, Fence::Leader(token));
                            (token, sha.clone(), r)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect()
            });
        let won: Vec<_> = results.iter().filter(|(_, _, r)| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "exactly one swap: {results:?}");
        for (_, _, r) in &results {
            if let Err(e) = r {
                assert!(
                    matches!(
                        e,
                        StoreError::CanonicalChanged { .. } | StoreError::Fenced { .. }
                    ),
                    "{e:?}"
                );
            }
        }
        let (token, sha, _) = won[0];
        let c = canonical(home, key).expect("read").expect("present");
        assert_eq!((c.sha256.as_str(), c.fence_token), (sha.as_str(), *token));
    }
}
