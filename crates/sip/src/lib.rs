//! The SIP core of tapir, sans-IO.
//!
//! Layout:
//! - [`message`]: parse, validate and print SIP messages; typed access to the headers tapir uses;
//!   the UAS/UAC checks on well-formed messages ([`check_request_semantics`],
//!   [`check_response_semantics`]).
//! - [`uri`]: SIP URIs, name-addr values, Via values and parameters.
//! - [`transaction`]: the RFC 3261 §17 transaction layer (client and server, INVITE and
//!   non-INVITE) as a state machine driven by `handle_*` calls and a caller-supplied `now`.
//! - [`dialog`]: dialog identifiers and in-dialog request construction.
//!
//! Nothing here reads a clock or owns a socket: the binary feeds datagrams, stream frames and
//! timeouts in, and drains [`transaction::Output`] for what to send and when to wake up.

pub mod dialog;
pub mod message;
pub mod transaction;
pub mod uri;

pub use message::{
    check_request_semantics, check_response_semantics, frame_len, parse, CSeq, HeaderAccess,
    Headers, Message, Method, Rejection, Request, Response,
};
pub use uri::{
    Host, HostRef, NameAddr, NameAddrRef, Params, SipUri, SipUriRef, Transport, Uri, UriRef, Via,
    ViaRef,
};

use thiserror::Error;

/// How a message that failed to parse should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Answer 400 when the request could be read far enough; otherwise drop.
    BadRequest,
    /// Answer 505 (RFC 3261 §8.2.2... the version check of §8.1.1).
    VersionNotSupported,
}

/// A message that could not be parsed or failed validation.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{reason}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// Human-readable; used as the reason phrase of the 400.
    pub reason: String,
    /// The request's headers, when they could be read, so the caller can answer it.
    pub partial: Option<Box<message::PartialRequest>>,
}

impl ParseError {
    pub(crate) fn bad(reason: &'static str) -> Self {
        Self::bad_owned(reason.to_string())
    }

    pub(crate) fn bad_owned(reason: String) -> Self {
        Self {
            kind: ParseErrorKind::BadRequest,
            reason,
            partial: None,
        }
    }

    /// The response to send for this error, if one can be sent (requests only).
    pub fn response(&self) -> Option<Response> {
        let p = self.partial.as_ref()?;
        match self.kind {
            ParseErrorKind::BadRequest => p.error_response(400, &self.reason),
            ParseErrorKind::VersionNotSupported => {
                p.error_response(505, "SIP Version Not Supported")
            }
        }
    }
}
