//! The review pages of tapir, rendered on the server: plain data in, [`maud::Markup`] out.
//!
//! This crate does no I/O. The binary (`crates/tapir/src/http/pages.rs`) reads the catalog,
//! checks who asks (`crates/tapir/src/auth.rs`, the `access` crate's rules) and hands what it
//! found to these functions; everything a page decides about its input (the search form into
//! a [`store::Query`], the audit filter, the user forms) is decided here, so it is unit
//! tested without a server.
//!
//! * [`layout`]: the frame of every page (navigation by role, the logout form with its CSRF
//!   token, the assets), and the error pages.
//! * [`login`]: the login page and its messages (failed, throttled).
//! * [`search`]: the recordings list with the catalog's filters, sort links and cursor paging.
//! * [`recording`]: one recording: player, stereo waveform from precomputed peaks with its
//!   markers, contact details, segments, statements, conversation metrics, transcript pane.
//! * [`audit`]: the audit log for admins: filters, export links, the chain check's verdict.
//! * [`users`]: user management for admins: the list, the forms and their parsing.
//! * [`assets`]: the embedded static files (`app.js`, `app.css`, vendored wavesurfer.js 8),
//!   their content hashes, types and cache rules.
//! * [`time`]: times and durations as the pages print and read them.
//!
//! Every value from a recording, a user or a request is escaped by maud; the scripts build
//! the transcript with `textContent` only. Data the scripts need goes in `data-*`
//! attributes (escaped like any attribute), never in inline scripts, so the pages run under
//! a Content-Security-Policy without `'unsafe-inline'` scripts ([`layout::CSP`]).

mod error;

pub mod assets;
pub mod audit;
pub mod layout;
pub mod login;
pub mod recording;
pub mod search;
pub mod time;
pub mod users;

pub use error::WebError;
pub use layout::{Chrome, Nav, UserBadge};
pub use maud::Markup;
