//! The one error type of the store library.

use std::path::PathBuf;

impl From<ringrift_contracts::config_key::InvalidConfigKey> for StoreError {
    fn from(e: ringrift_contracts::config_key::InvalidConfigKey) -> Self {
        StoreError::InvalidConfigKey(e.0)
    }
}

impl From<ringrift_sqlite::SqliteError> for StoreError {
    fn from(e: ringrift_sqlite::SqliteError) -> Self {
        use ringrift_sqlite::SqliteError as E;
        match e {
            E::Sqlite { path, source } => StoreError::Sqlite { path, source },
            E::Io {
                action,
                path,
                source,
            } => StoreError::Io {
                action,
                path,
                source,
            },
            E::SchemaTooNew { path, found, known } => {
                StoreError::SchemaTooNew { path, found, known }
            }
            E::NotUtf8 { path } => StoreError::Invalid(format!("{} is not UTF-8", path.display())),
        }
    }
}

/// Errors of every store. Callers tell apart bad input (`InvalidConfigKey`, `Corrupt`,
/// `NotFound`) from environment failures (`Sqlite`, `Io`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid config key {0:?}: expected {{square8,square19,hex8,hexagonal}}_{{2,3,4}}p")]
    InvalidConfigKey(String),
    #[error("sqlite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {path} has schema version {found}, newer than this build knows ({known})")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("corrupt data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("blocking task failed: {0}")]
    Join(String),
    /// A leader-only write carried a fencing token lower than one the store has already
    /// accepted: the writer was deposed (see `ringrift_cluster::leader`).
    #[error("fencing token {token} refused: a newer leader (token {seen}) has written here")]
    Fenced { token: u64, seen: u64 },
    /// A model file that is not a valid `.rrm` file (see `models`).
    #[error("bad model file {path}: {reason}")]
    BadModel { path: PathBuf, reason: String },
    /// Promotion found a model file whose payload is not the one evaluated.
    #[error("model file {path} has payload SHA-256 {found}, but {evaluated} was evaluated")]
    ModelChanged {
        path: PathBuf,
        found: String,
        evaluated: String,
    },
    /// Promotion found a canonical model other than the one the candidate was compared with.
    #[error(
        "canonical changed since evaluation: the candidate was compared with {}, the canonical model is now {}",
        evaluated.as_deref().unwrap_or("none"),
        found.as_deref().unwrap_or("none")
    )]
    CanonicalChanged {
        found: Option<String>,
        evaluated: Option<String>,
    },
    /// A store on another engine (e.g. the JetStream work queue) failed.
    #[error("{backend}: {reason}")]
    Backend {
        backend: &'static str,
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Adds the database path to a rusqlite error.
pub(crate) trait SqlContext<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, path: &std::path::Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    }
}
