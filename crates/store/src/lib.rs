//! The recordings catalog and durable storage.
//!
//! A finished recording moves from the spool to the shelf through two parts of this crate:
//! the [`Catalog`], where every contact has one entry that is the truth about it (call facts,
//! segments, decisions, statements, state, where its file is and its hash), and the
//! [`Storage`], where the audio itself is kept. The entry doubles as the upload journal: its
//! state says how far a file got, so a node that restarts resumes where it stopped.
//!
//! ## Layout
//! * [`model`]: [`Entry`], [`Statement`], [`Delivery`] and the mapping from the recorder's
//!   sidecar ([`Entry::from_metadata`]).
//! * [`search`]: [`Query`], [`Sort`] and the opaque paging cursor.
//! * [`catalog`]: the [`Catalog`] over SQLite (embedded, the default) or PostgreSQL.
//! * [`storage`]: [`Storage`] over a local directory (the default) or S3, keys by day.
//! * [`shelf`]: [`Shelf`], the way of a finished file from the spool's outbox into storage and
//!   the catalog, and the reconciliation at start.
//! * [`api`]: the recordings API's parameters, `Range` header and entity tags, as pure
//!   functions for the HTTP adapter.
//! * [`access`]: users, sessions, API tokens and the audit log of the review page, as
//!   [`Catalog`] methods; [`audit`]: the audit log's hash chain.

pub mod access;
pub mod api;
pub mod audit;
pub mod catalog;
mod error;
pub mod model;
pub mod search;
pub mod shelf;
pub mod storage;

pub use access::{
    AuditOrder, AuditPage, AuditQuery, ChainVerdict, NewToken, NewUser, SessionRecord, TokenRecord,
    UserRecord, UserUpdate,
};
pub use audit::{verify_chain, AuditEntry, BreakKind, ChainBreak, ChainVerifier, NewAudit};
pub use catalog::{redact_url, Catalog, CatalogUrl, DEFAULT_SQLITE_PATH};
pub use error::StoreError;
pub use model::{
    retain_until, Counters, DeleteOutcome, Delivery, Entry, RetentionRules, State, Statement,
};
pub use search::{Page, Query, Restriction, Sort, DEFAULT_LIMIT, MAX_LIMIT};
pub use shelf::{Delivered, Parcel, Reconciled, Shelf, ShelfConfig, OUTBOX_DIR, QUARANTINE_DIR};
pub use storage::{
    storage_key, Backoff, ObjectRead, S3Config, Storage, StorageConfig, StoredObject,
    DEFAULT_LOCAL_DIR, PART_SIZE,
};
