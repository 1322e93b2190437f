//! A model file fetched from a peer's `models` root into this home's
//! `models/.incoming/` (hidden: never served, never taken for a model), its file SHA-256
//! verified by the engine against the peer's manifest and its header read: what
//! model_sync (a peer's canonical model) and unified_promotion (a candidate evaluated on
//! another node) both do before they install a model with `ringrift_store::models`;
//! and the trained generations a peer serves of a config (tournament_daemon plays them).

use crate::files::{Engine, ManifestEntry, Root, Wanted, check_rel, manifest_under};
use crate::{Peer, TransferError};
use ringrift_store::models::{self, ModelFormat, ModelInfo};
use std::path::{Component, Path, PathBuf};

/// A model downloaded and identified; the caller installs it (or not) and removes it.
#[derive(Debug, Clone)]
pub struct FetchedModel {
    /// The verified copy in `models/.incoming/`.
    pub path: PathBuf,
    /// Its header (the payload SHA-256 is what an event names).
    pub info: ModelInfo,
    /// Bytes received over the network.
    pub downloaded: u64,
}

/// Where this home keeps downloads of models before they are installed.
pub fn incoming_dir(home: &Path) -> PathBuf {
    ringrift_store::paths::models_dir(home).join(".incoming")
}

/// The path, relative to the `models` root its node's data_server serves, of a model
/// file written on that node at `path` (`<home>/models/<rel>`: what follows the last
/// `models` component). An error names the path when it is not under a models directory
/// (a peer serves nothing else of its models).
pub fn served_rel(path: &str) -> Result<String, TransferError> {
    let p = Path::new(path);
    let comps: Vec<Component> = p.components().collect();
    let after = comps
        .iter()
        .rposition(|c| matches!(c, Component::Normal(s) if *s == "models"))
        .map(|i| &comps[i + 1..])
        .filter(|rest| !rest.is_empty());
    let Some(rest) = after else {
        return Err(TransferError::Invalid(format!(
            "model {path:?} is not under a models directory: its node's data_server serves only <home>/data and <home>/models"
        )));
    };
    let rel = rest
        .iter()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    check_rel(&rel).map_err(|why| {
        TransferError::Invalid(format!("model {path:?}: {rel:?} cannot be fetched: {why}"))
    })?;
    Ok(rel)
}

/// Downloads `rel` (a model of `peer`'s `models` root, announced as `entry`) to
/// `models/.incoming/{stem}.{sha256 prefix}.{ext}` in `home` and identifies it. A file
/// that is not a model is an error (the copy removed).
pub async fn fetch_model(
    engine: &Engine,
    peer: &Peer,
    home: &Path,
    rel: &str,
    entry: &ManifestEntry,
) -> Result<FetchedModel, TransferError> {
    let stem = Path::new(rel)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = ModelFormat::of(rel).unwrap_or_default().ext();
    let path = incoming_dir(home).join(format!(
        "{stem}.{}.{ext}",
        &entry.sha256[..16.min(entry.sha256.len())]
    ));
    let wanted = Wanted {
        root: Root::Models,
        path: rel.to_owned(),
        sha256: entry.sha256.clone(),
        size: entry.size,
    };
    let fetched = engine.fetch(peer, &wanted, &path).await?;
    let p = path.clone();
    let info = tokio::task::spawn_blocking(move || {
        let info = models::identify_file(&p);
        if info.is_err() {
            let _ = std::fs::remove_file(&p);
        }
        info
    })
    .await
    .map_err(|e| TransferError::Invalid(format!("identify {}: {e}", path.display())))??;
    Ok(FetchedModel {
        path,
        info,
        downloaded: fetched.downloaded,
    })
}

/// The model file `model_path` written on `peer` (an absolute path there, under its
/// home's `models`), fetched as [`fetch_model`] after its line of the peer's manifest.
/// An error names the peer and the path when the peer does not serve it.
pub async fn fetch_model_at(
    engine: &Engine,
    peer: &Peer,
    home: &Path,
    model_path: &str,
) -> Result<FetchedModel, TransferError> {
    let rel = served_rel(model_path)?;
    let doc = manifest_under(engine.client(), peer, Root::Models, &rel).await?;
    let Some(entry) = doc.files.get(&rel) else {
        return Err(TransferError::Invalid(format!(
            "{} does not serve models/{rel} (the model {model_path} written there)",
            peer.name
        )));
    };
    fetch_model(engine, peer, home, &rel, entry).await
}

/// The generation in a trained model's file name (`gen0003_w12.rrm`: 3; 0 when the name
/// has none).
pub fn generation_in_name(name: &str) -> u32 {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.strip_prefix("gen")
        .map(|r| {
            r.bytes().take_while(u8::is_ascii_digit).fold(0u32, |g, d| {
                g.saturating_mul(10).saturating_add(u32::from(d - b'0'))
            })
        })
        .unwrap_or(0)
}

/// The trained generations of `config` that `peer` serves (`models/<config>/gen*.{rrm,
/// onnx}`): each one's path relative to the models root, its manifest line and its
/// generation (the header's, else the file name's), newest first.
pub async fn generations(
    engine: &Engine,
    peer: &Peer,
    config: ringrift_store::ConfigKey,
) -> Result<Vec<(String, ManifestEntry, u32)>, TransferError> {
    let dir = config.to_string();
    let doc = manifest_under(engine.client(), peer, Root::Models, &dir).await?;
    let mut out: Vec<(String, ManifestEntry, u32)> = doc
        .files
        .into_iter()
        .filter(|(rel, _)| {
            rel.strip_prefix(&format!("{dir}/"))
                .is_some_and(|f| !f.contains('/') && f.starts_with("gen"))
                && ModelFormat::of(rel).is_some()
        })
        .map(|(rel, e)| {
            let g = e.generation.unwrap_or_else(|| generation_in_name(&rel));
            (rel, e, g)
        })
        .collect();
    out.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_path_maps_to_its_place_in_the_served_models_root() {
        for (path, rel) in [
            (
                "/srv/n3/models/hex8_2p/gen0001_w5.rrm",
                "hex8_2p/gen0001_w5.rrm",
            ),
            // The last `models` component: a home under a directory named models.
            (
                "/models/home/models/canonical_hex8_2p.onnx",
                "canonical_hex8_2p.onnx",
            ),
        ] {
            assert_eq!(served_rel(path).unwrap(), rel, "{path}");
        }
        for bad in [
            "/srv/n3/data/training/m.rrm",
            "/srv/n3/models",
            "/srv/n3/models/.incoming/m.rrm",
            "relative/m.rrm",
        ] {
            let err = served_rel(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn the_generation_is_read_from_a_trained_models_name() {
        for (name, g) in [
            ("gen0003_w12.rrm", 3),
            ("hex8_2p/gen0120_w5.onnx", 120),
            ("canonical_hex8_2p.rrm", 0),
            ("gen.rrm", 0),
        ] {
            assert_eq!(generation_in_name(name), g, "{name}");
        }
    }
}
