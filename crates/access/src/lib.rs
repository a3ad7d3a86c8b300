//! Who may see and do what on tapir's review page and API.
//!
//! The decisions live here, free of I/O: the caller passes the time (`now_ms`, unix
//! milliseconds) and what it read from the catalog, and gets an answer. The catalog
//! (`store`) keeps users, sessions, tokens and the audit log; the binary wires HTTP to both.
//!
//! * [`user`]: [`Role`], [`User`], username rules.
//! * [`viewer`]: [`Viewer`] (a user or an API token), [`Scope`]s, [`Visibility`] with
//!   [`scope`] (the mandatory filter of every search) and [`may_view`] (every fetch by id),
//!   and [`allows`] for everything else ([`Need`]).
//! * [`password`]: argon2id PHC hashes, verification that takes as long for a user that
//!   does not exist.
//! * [`session`]: session and CSRF tokens, idle and absolute expiry, cookie attributes.
//! * [`token`]: API tokens and the `Authorization: Bearer` header.
//! * [`throttle`]: failed logins per username and per client address.
//! * [`authn`]: the credential of a request, its session or token, the CSRF check, logins.
//! * [`audit`]: the actions audited, the entries they make, export as JSON lines or CSV;
//!   the hash chain itself is [`store::audit`].

mod error;

pub mod audit;
pub mod authn;
pub mod password;
pub mod session;
pub mod throttle;
pub mod token;
pub mod user;
pub mod viewer;

pub use audit::Action;
pub use error::AccessError;
pub use session::{SessionCheck, SessionPolicy};
pub use throttle::{Throttle, ThrottleConfig, Throttled};
pub use user::{Role, User};
pub use viewer::{allows, may_view, scope, Need, Scope, Scopes, Viewer, Visibility};
