//! The ledger: typed facts that cross daemons (training checkpoints with their
//! watermarks, exports with theirs, the pipeline stage per config, promotion decisions)
//! in `$RINGRIFT_HOME/data/ledger.db`. Each table has one writer, the daemon named by
//! [`Table::owner`]: its writer handle is handed out only for that daemon's
//! [`DaemonInfo`] and refused for any other with [`LedgerError::NotOwner`]. Anyone reads
//! through the typed queries of [`Ledger`].

use handler_base::DaemonInfo;
use ringrift_store::ConfigKey;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The tables of the ledger and their one writer each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// [`Checkpoint`]s, written by `continuous_training_loop`.
    Training,
    /// [`Export`]s, written by `auto_export`.
    Exports,
    /// [`StageRecord`]s, written by `data_pipeline`.
    Stages,
    /// [`Promotion`]s, written by `unified_promotion`.
    Promotions,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Training,
        Table::Exports,
        Table::Stages,
        Table::Promotions,
    ];

    /// The SQL table.
    pub fn name(self) -> &'static str {
        match self {
            Table::Training => "training",
            Table::Exports => "exports",
            Table::Stages => "stages",
            Table::Promotions => "promotions",
        }
    }

    /// The registry name of the one daemon that writes this table.
    pub fn owner(self) -> &'static str {
        match self {
            Table::Training => "continuous_training_loop",
            Table::Exports => "auto_export",
            Table::Stages => "data_pipeline",
            Table::Promotions => "unified_promotion",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "ledger table `{table}` is written only by {owner}; {caller} may read it but not write it"
    )]
    NotOwner {
        table: &'static str,
        owner: &'static str,
        caller: String,
    },
    #[error("ledger {path}: table `{table}` holds an invalid {column} {value:?}: {error}")]
    Invalid {
        path: PathBuf,
        table: &'static str,
        column: &'static str,
        value: String,
        error: String,
    },
    #[error("ledger task: {0}")]
    Join(String),
    #[error(transparent)]
    Open(#[from] ringrift_store::StoreError),
}

/// `IF NOT EXISTS`: the file is shared by every daemon of the home; whichever opens it
/// first creates the tables.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS training (config TEXT NOT NULL, generation INTEGER NOT NULL, watermark INTEGER NOT NULL, model TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (config, generation));
     CREATE TABLE IF NOT EXISTS exports (config TEXT NOT NULL, watermark INTEGER NOT NULL, npz TEXT NOT NULL, sha256 TEXT NOT NULL, rows INTEGER NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (config, watermark));
     CREATE TABLE IF NOT EXISTS stages (config TEXT NOT NULL PRIMARY KEY, stage TEXT NOT NULL, generation INTEGER NOT NULL, since_ms INTEGER NOT NULL);
     CREATE TABLE IF NOT EXISTS promotions (decision TEXT NOT NULL PRIMARY KEY, config TEXT NOT NULL, model TEXT NOT NULL, model_sha256 TEXT NOT NULL, promoted INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL)",
];

/// A trained generation of a config: the model written and the export watermark it was
/// trained up to (exports at or below it were trained on).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub config: ConfigKey,
    pub generation: u32,
    pub watermark: i64,
    pub model: String,
    pub at_ms: i64,
}

/// An NPZ export of a config: the games up to `watermark` (a games-database sequence).
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub config: ConfigKey,
    pub watermark: i64,
    pub npz: String,
    pub sha256: String,
    pub rows: u64,
    pub at_ms: i64,
}

/// The pipeline stage a config is in (`selfplay`, `export`, `train`, `evaluate`,
/// `promote`), the generation it works on and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecord {
    pub config: ConfigKey,
    pub stage: String,
    pub generation: u32,
    pub since_ms: i64,
}

/// A promotion decision: `decision` identifies the evaluation decided (the model's
/// SHA-256, with the canonical model it was evaluated against).
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    pub decision: String,
    pub config: ConfigKey,
    pub model: String,
    pub model_sha256: String,
    pub promoted: bool,
    pub reason: String,
    pub at_ms: i64,
}

/// The ledger of one home. Cheap to clone; all SQLite work runs in `spawn_blocking`.
#[derive(Clone)]
pub struct Ledger {
    path: Arc<PathBuf>,
    conn: Arc<Mutex<Connection>>,
}

impl Ledger {
    /// Opens (creating) `data/ledger.db` of `home`.
    pub fn open(home: &Path) -> Result<Ledger, LedgerError> {
        Self::open_at(&home.join("data/ledger.db"))
    }

    pub fn open_at(path: &Path) -> Result<Ledger, LedgerError> {
        let c = ringrift_store::db::open(path, MIGRATIONS)?;
        Ok(Ledger {
            path: Arc::new(path.to_owned()),
            conn: Arc::new(Mutex::new(c)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (conn, path) = (self.conn.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&c).map_err(|source| LedgerError::Sqlite {
                path: path.to_path_buf(),
                source,
            })
        })
        .await
        .map_err(|e| LedgerError::Join(e.to_string()))?
    }

    /// `Ok` if `who` writes `table`, else the error naming the owner.
    fn check_owner(table: Table, who: &DaemonInfo) -> Result<(), LedgerError> {
        if who.name == table.owner() {
            Ok(())
        } else {
            Err(LedgerError::NotOwner {
                table: table.name(),
                owner: table.owner(),
                caller: who.name.to_owned(),
            })
        }
    }

    fn config(&self, table: Table, raw: String) -> Result<ConfigKey, LedgerError> {
        raw.parse()
            .map_err(|e: ringrift_store::InvalidConfigKey| LedgerError::Invalid {
                path: self.path.to_path_buf(),
                table: table.name(),
                column: "config",
                value: raw.clone(),
                error: e.to_string(),
            })
    }

    /// The writer of [`Table::Training`], for `continuous_training_loop` only.
    pub fn trainer(&self, who: &DaemonInfo) -> Result<TrainingWriter, LedgerError> {
        Self::check_owner(Table::Training, who)?;
        Ok(TrainingWriter(self.clone()))
    }

    /// The writer of [`Table::Exports`], for `auto_export` only.
    pub fn exporter(&self, who: &DaemonInfo) -> Result<ExportWriter, LedgerError> {
        Self::check_owner(Table::Exports, who)?;
        Ok(ExportWriter(self.clone()))
    }

    /// The writer of [`Table::Stages`], for `data_pipeline` only.
    pub fn stager(&self, who: &DaemonInfo) -> Result<StageWriter, LedgerError> {
        Self::check_owner(Table::Stages, who)?;
        Ok(StageWriter(self.clone()))
    }

    /// The writer of [`Table::Promotions`], for `unified_promotion` only.
    pub fn promoter(&self, who: &DaemonInfo) -> Result<PromotionWriter, LedgerError> {
        Self::check_owner(Table::Promotions, who)?;
        Ok(PromotionWriter(self.clone()))
    }

    /// The newest checkpoint of every config that has one, by config.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, LedgerError> {
        let rows: Vec<(String, i64, i64, String, i64)> = self
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT config, generation, watermark, model, at_ms FROM training t
                     WHERE generation = (SELECT MAX(generation) FROM training WHERE config = t.config)
                     ORDER BY config",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(config, generation, watermark, model, at_ms)| {
                Ok(Checkpoint {
                    config: self.config(Table::Training, config)?,
                    generation: u32::try_from(generation).unwrap_or(u32::MAX),
                    watermark,
                    model,
                    at_ms,
                })
            })
            .collect()
    }

    /// The newest checkpoint of `config`.
    pub async fn checkpoint(&self, config: ConfigKey) -> Result<Option<Checkpoint>, LedgerError> {
        Ok(self
            .checkpoints()
            .await?
            .into_iter()
            .find(|c| c.config == config))
    }

    /// The newest export of every config that has one, by config.
    pub async fn exports(&self) -> Result<Vec<Export>, LedgerError> {
        let rows: Vec<(String, i64, String, String, i64, i64)> = self
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT config, watermark, npz, sha256, rows, at_ms FROM exports e
                     WHERE watermark = (SELECT MAX(watermark) FROM exports WHERE config = e.config)
                     ORDER BY config",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(config, watermark, npz, sha256, rows, at_ms)| {
                Ok(Export {
                    config: self.config(Table::Exports, config)?,
                    watermark,
                    npz,
                    sha256,
                    rows: u64::try_from(rows).unwrap_or(0),
                    at_ms,
                })
            })
            .collect()
    }

    /// The stage of every config data_pipeline tracks, by config.
    pub async fn stages(&self) -> Result<Vec<StageRecord>, LedgerError> {
        let rows: Vec<(String, String, i64, i64)> = self
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT config, stage, generation, since_ms FROM stages ORDER BY config",
                )?;
                let rows =
                    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(config, stage, generation, since_ms)| {
                Ok(StageRecord {
                    config: self.config(Table::Stages, config)?,
                    stage,
                    generation: u32::try_from(generation).unwrap_or(u32::MAX),
                    since_ms,
                })
            })
            .collect()
    }

    /// The promotion decisions of `config`, newest first, at most `limit`.
    pub async fn promotions(
        &self,
        config: ConfigKey,
        limit: usize,
    ) -> Result<Vec<Promotion>, LedgerError> {
        let (key, limit) = (config.to_string(), i64::try_from(limit).unwrap_or(i64::MAX));
        let rows: Vec<(String, String, String, i64, String, i64)> = self
            .with(move |c| {
                let mut st = c.prepare(
                    "SELECT decision, model, model_sha256, promoted, reason, at_ms FROM promotions
                     WHERE config = ?1 ORDER BY at_ms DESC, decision LIMIT ?2",
                )?;
                let rows = st.query_map(params![key, limit], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?;
                rows.collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(decision, model, model_sha256, promoted, reason, at_ms)| Promotion {
                    decision,
                    config,
                    model,
                    model_sha256,
                    promoted: promoted != 0,
                    reason,
                    at_ms,
                },
            )
            .collect())
    }

    /// The decision recorded as `decision`, if any.
    pub async fn promotion(&self, decision: &str) -> Result<Option<Promotion>, LedgerError> {
        let d = decision.to_owned();
        let row: Option<(String, String, String, i64, String, i64)> = self
            .with(move |c| {
                c.query_row(
                    "SELECT config, model, model_sha256, promoted, reason, at_ms FROM promotions WHERE decision = ?1",
                    [d],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()
            })
            .await?;
        row.map(|(config, model, model_sha256, promoted, reason, at_ms)| {
            Ok(Promotion {
                decision: decision.to_owned(),
                config: self.config(Table::Promotions, config)?,
                model,
                model_sha256,
                promoted: promoted != 0,
                reason,
                at_ms,
            })
        })
        .transpose()
    }
}

/// Writes [`Table::Training`]; only [`Ledger::trainer`] makes one.
#[derive(Clone)]
pub struct TrainingWriter(Ledger);

impl TrainingWriter {
    /// Records a trained generation (committed before this returns; the same
    /// generation again replaces it).
    pub async fn record(&self, c: &Checkpoint) -> Result<(), LedgerError> {
        let (config, generation, watermark, model, at) = (
            c.config.to_string(),
            i64::from(c.generation),
            c.watermark,
            c.model.clone(),
            c.at_ms,
        );
        self.0
            .with(move |db| {
                db.execute(
                    "INSERT OR REPLACE INTO training (config, generation, watermark, model, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![config, generation, watermark, model, at],
                )
                .map(|_| ())
            })
            .await
    }
}

/// Writes [`Table::Exports`]; only [`Ledger::exporter`] makes one.
#[derive(Clone)]
pub struct ExportWriter(Ledger);

impl ExportWriter {
    /// Records an export (committed before this returns).
    pub async fn record(&self, e: &Export) -> Result<(), LedgerError> {
        let (config, watermark, npz, sha, rows, at) = (
            e.config.to_string(),
            e.watermark,
            e.npz.clone(),
            e.sha256.clone(),
            i64::try_from(e.rows).unwrap_or(i64::MAX),
            e.at_ms,
        );
        self.0
            .with(move |db| {
                db.execute(
                    "INSERT OR REPLACE INTO exports (config, watermark, npz, sha256, rows, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![config, watermark, npz, sha, rows, at],
                )
                .map(|_| ())
            })
            .await
    }
}

/// Writes [`Table::Stages`]; only [`Ledger::stager`] makes one.
#[derive(Clone)]
pub struct StageWriter(Ledger);

impl StageWriter {
    /// Sets the stage of a config (committed before this returns).
    pub async fn record(&self, s: &StageRecord) -> Result<(), LedgerError> {
        let (config, stage, generation, since) = (
            s.config.to_string(),
            s.stage.clone(),
            i64::from(s.generation),
            s.since_ms,
        );
        self.0
            .with(move |db| {
                db.execute(
                    "INSERT OR REPLACE INTO stages (config, stage, generation, since_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![config, stage, generation, since],
                )
                .map(|_| ())
            })
            .await
    }
}

/// Writes [`Table::Promotions`]; only [`Ledger::promoter`] makes one.
#[derive(Clone)]
pub struct PromotionWriter(Ledger);

impl PromotionWriter {
    /// Records a decision (committed before this returns; the same decision again
    /// replaces it).
    pub async fn record(&self, p: &Promotion) -> Result<(), LedgerError> {
        let p = p.clone();
        self.0
            .with(move |db| {
                db.execute(
                    "INSERT OR REPLACE INTO promotions (decision, config, model, model_sha256, promoted, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        p.decision,
                        p.config.to_string(),
                        p.model,
                        p.model_sha256,
                        i64::from(p.promoted),
                        p.reason,
                        p.at_ms
                    ],
                )
                .map(|_| ())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &'static str) -> DaemonInfo {
        DaemonInfo::unregistered(name, "test")
    }

    fn key(s: &str) -> ConfigKey {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn the_owner_writes_and_another_daemon_reads() {
        let dir = tempfile::tempdir().unwrap();
        let w = Ledger::open(dir.path())
            .unwrap()
            .trainer(&info("continuous_training_loop"))
            .unwrap();
        for (generation, watermark) in [(1, 40), (2, 90)] {
            w.record(&Checkpoint {
                config: key("hex8_2p"),
                generation,
                watermark,
                model: format!("gen{generation}.rrm"),
                at_ms: 1,
            })
            .await
            .unwrap();
        }
        let reader = Ledger::open(dir.path()).unwrap();
        let cps = reader.checkpoints().await.unwrap();
        assert_eq!(cps.len(), 1, "{cps:?}");
        assert_eq!((cps[0].generation, cps[0].watermark), (2, 90));
        assert_eq!(
            reader
                .checkpoint(key("hex8_2p"))
                .await
                .unwrap()
                .unwrap()
                .model,
            "gen2.rrm"
        );
        assert!(
            reader
                .checkpoint(key("square8_2p"))
                .await
                .unwrap()
                .is_none()
        );

        let e = reader.exporter(&info("auto_export")).unwrap();
        e.record(&Export {
            config: key("hex8_2p"),
            watermark: 90,
            npz: "a.npz".into(),
            sha256: "ab".into(),
            rows: 7,
            at_ms: 2,
        })
        .await
        .unwrap();
        assert_eq!(reader.exports().await.unwrap()[0].rows, 7);

        let s = reader.stager(&info("data_pipeline")).unwrap();
        s.record(&StageRecord {
            config: key("hex8_2p"),
            stage: "train".into(),
            generation: 2,
            since_ms: 3,
        })
        .await
        .unwrap();
        assert_eq!(reader.stages().await.unwrap()[0].stage, "train");

        let p = reader.promoter(&info("unified_promotion")).unwrap();
        let decision = Promotion {
            decision: "sha:canon".into(),
            config: key("hex8_2p"),
            model: "gen2.rrm".into(),
            model_sha256: "sha".into(),
            promoted: true,
            reason: "gate passed".into(),
            at_ms: 4,
        };
        p.record(&decision).await.unwrap();
        assert_eq!(
            reader.promotions(key("hex8_2p"), 10).await.unwrap(),
            vec![decision.clone()]
        );
        assert_eq!(reader.promotion("sha:canon").await.unwrap(), Some(decision));
        assert!(reader.promotion("other").await.unwrap().is_none());
    }

    #[test]
    fn a_daemon_that_does_not_own_a_table_is_refused_its_writer_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let maintenance = info("maintenance");
        let refusals = [
            l.trainer(&maintenance).err(),
            l.exporter(&maintenance).err(),
            l.stager(&maintenance).err(),
            l.promoter(&maintenance).err(),
        ];
        for (table, err) in Table::ALL.into_iter().zip(refusals) {
            let err = err.unwrap_or_else(|| panic!("maintenance got the writer of {table:?}"));
            let msg = err.to_string();
            assert!(
                matches!(err, LedgerError::NotOwner { .. })
                    && msg.contains(table.name())
                    && msg.contains(table.owner())
                    && msg.contains("maintenance"),
                "{msg}"
            );
        }
        // One owner does not write another's table either.
        assert!(l.exporter(&info("continuous_training_loop")).is_err());
    }

    #[tokio::test]
    async fn a_row_whose_config_does_not_parse_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        l.with(|c| {
            c.execute(
                "INSERT INTO stages (config, stage, generation, since_ms) VALUES ('nonsense', 'train', 1, 1)",
                [],
            )
        })
        .await
        .unwrap();
        let err = l.stages().await.unwrap_err().to_string();
        assert!(err.contains("stages") && err.contains("nonsense"), "{err}");
    }
}
