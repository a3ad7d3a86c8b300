use std::path::PathBuf;

/// Everything that can go wrong in the catalog or the storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The catalog URL is not one this crate understands.
    #[error("catalog url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The database could not be opened or reached at start.
    #[error("cannot open the catalog at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed; the schema is left at the last migration that succeeded.
    #[error("catalog migration failed at {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed during operation.
    #[error("catalog: {0}")]
    Db(#[from] sqlx::Error),
    /// A row holds a value this version does not know (a newer node wrote it, or it was edited).
    #[error("catalog row {contact_id}: {reason}")]
    Corrupt { contact_id: String, reason: String },
    /// A search parameter is out of range or malformed; `param` names it.
    #[error("invalid search parameter {param}: {reason}")]
    BadQuery { param: &'static str, reason: String },
    /// A request named a parameter the endpoint does not take.
    #[error("unknown parameter {param}")]
    UnknownParam { param: String },
    /// The storage configuration is unusable (bad endpoint, missing bucket...).
    #[error("storage config: {0}")]
    StorageConfig(String),
    /// The object store refused or failed a request.
    #[error("storage {op} {key}: {source}")]
    Storage {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// An object is not what was written: size or hash differ after the upload.
    #[error("storage verify {key}: {reason}")]
    Verify { key: String, reason: String },
    /// A local file could not be read or synced.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A user or token of that name exists already.
    #[error("{what} {name:?} exists already")]
    Exists { what: &'static str, name: String },
    /// An object key is not acceptable (empty, `..`, or characters the stores reject).
    #[error("invalid storage key {0:?}")]
    BadKey(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn storage(op: &'static str, key: &str, source: object_store::Error) -> Self {
        StoreError::Storage {
            op,
            key: key.to_string(),
            source,
        }
    }

    /// The request parameter at fault, for errors caused by the request's parameters.
    pub fn param(&self) -> Option<&str> {
        match self {
            StoreError::BadQuery { param, .. } => Some(param),
            StoreError::UnknownParam { param } => Some(param),
            _ => None,
        }
    }

    /// True when a request for the object found nothing.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}
