//! SIP messages: parsing from bytes, validation and printing.
//!
//! A B2BUA relays headers it does not understand, so headers are kept as an ordered list of
//! (name, value) pairs with typed accessors for the ones tapir acts on. Parsing undoes line
//! folding and compact header names, then checks what RFC 3261 requires of a message before any
//! element may act on it (see [`parse`]). A failure carries enough of the request, when it could
//! be read, for the caller to answer `400`/`505` with a reason phrase that names the problem.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use crate::uri::{split_unquoted, NameAddr, NameAddrRef, Uri, Via, ViaRef};
use crate::{ParseError, ParseErrorKind};

/// Largest message tapir accepts; anything bigger is dropped (UDP) or closes the stream (TCP).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Refer,
    Notify,
    Subscribe,
    Message,
    Prack,
    Publish,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Self {
        match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "REFER" => Self::Refer,
            "NOTIFY" => Self::Notify,
            "SUBSCRIBE" => Self::Subscribe,
            "MESSAGE" => Self::Message,
            "PRACK" => Self::Prack,
            "PUBLISH" => Self::Publish,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Refer => "REFER",
            Self::Notify => "NOTIFY",
            Self::Subscribe => "SUBSCRIBE",
            Self::Message => "MESSAGE",
            Self::Prack => "PRACK",
            Self::Publish => "PUBLISH",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Expands RFC 3261 §7.3.3 compact forms and gives known headers their usual spelling, so that
/// lookups compare one form and printed messages look conventional.
fn canonical_name(name: &str) -> Cow<'static, str> {
    let known: &[&str] = &[
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Route",
        "Record-Route",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Allow",
        "Expires",
        "Subject",
        "Content-Encoding",
        "Event",
        "Refer-To",
        "Referred-By",
        "Replaces",
        "Session-Expires",
        "Min-SE",
        "Allow-Events",
        "WWW-Authenticate",
        "Authorization",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "User-Agent",
        "Server",
        "Reason",
        "Retry-After",
        "Min-Expires",
        "Accept",
        "Date",
        "Subscription-State",
    ];
    if name.len() == 1 {
        let full = match name.as_bytes()[0].to_ascii_lowercase() {
            b'i' => "Call-ID",
            b'm' => "Contact",
            b'e' => "Content-Encoding",
            b'l' => "Content-Length",
            b'c' => "Content-Type",
            b'f' => "From",
            b's' => "Subject",
            b'k' => "Supported",
            b't' => "To",
            b'v' => "Via",
            b'o' => "Event",
            b'r' => "Refer-To",
            b'b' => "Referred-By",
            b'x' => "Session-Expires",
            b'u' => "Allow-Events",
            _ => return Cow::Owned(name.to_string()),
        };
        return Cow::Borrowed(full);
    }
    known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(|k| Cow::Borrowed(*k))
        .unwrap_or_else(|| Cow::Owned(name.to_string()))
}

/// Headers whose comma-separated values are separate entries (RFC 3261 §7.3.1); others (e.g.
/// WWW-Authenticate, Date) contain commas inside a single value and must not be split.
fn is_list_header(name: &str) -> bool {
    [
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Allow",
        "Allow-Events",
        "Accept",
        "Content-Encoding",
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(name))
}

/// Ordered header list; names are stored in canonical spelling, borrowed for the headers
/// tapir knows (no allocation per name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(Cow<'static, str>, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, with comma-joined list headers split into entries.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let split = is_list_header(name);
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(move |(_, v)| {
                if split {
                    split_unquoted(v, b',')
                } else {
                    crate::uri::unsplit(v)
                }
            })
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    pub fn count(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((canonical_name(name), value.into()));
    }

    /// Inserts before every other header (used for Via and Record-Route).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(0, (canonical_name(name), value.into()));
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some(pos) = self
            .0
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            self.0[pos].1 = value;
            let mut i = pos + 1;
            while i < self.0.len() {
                if self.0[i].0.eq_ignore_ascii_case(name) {
                    self.0.remove(i);
                } else {
                    i += 1;
                }
            }
        } else {
            self.push(name, value);
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Removes the first entry of a list header (the top Via), keeping the rest. The first
    /// entry is the one [`Headers::get_all`] gives first: empty list elements (`Via: ,a`) are
    /// skipped there, so they are here, or the top Via would stay and be sent on twice.
    pub fn remove_first_value(&mut self, name: &str) {
        for pos in 0..self.0.len() {
            if !self.0[pos].0.eq_ignore_ascii_case(name) {
                continue;
            }
            let mut parts = split_unquoted(&self.0[pos].1, b',');
            if !parts.by_ref().any(|p| !p.trim().is_empty()) {
                continue;
            }
            let rest = parts.rest().trim();
            if rest.is_empty() {
                self.0.remove(pos);
            } else {
                self.0[pos].1 = rest.to_string();
            }
            return;
        }
    }
}

/// `CSeq: 42 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let mut it = s.split_whitespace();
        let (Some(n), Some(m), None) = (it.next(), it.next(), it.next()) else {
            return Err(ParseError::bad("malformed CSeq"));
        };
        // RFC 3261 §8.1.1.5: the number is a 32-bit unsigned integer below 2^31.
        let seq = n
            .parse::<u32>()
            .ok()
            .filter(|n| *n < 1 << 31)
            .ok_or_else(|| ParseError::bad("CSeq number out of range"))?;
        if !m.bytes().all(crate::uri::is_token_char) {
            return Err(ParseError::bad("malformed CSeq method"));
        }
        Ok(CSeq {
            seq,
            method: Method::parse(m),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Typed access to the headers every message carries, shared by requests and responses.
pub trait HeaderAccess {
    fn headers(&self) -> &Headers;
    fn headers_mut(&mut self) -> &mut Headers;

    fn call_id(&self) -> &str {
        self.headers().get("Call-ID").unwrap_or("")
    }
    fn cseq(&self) -> Option<CSeq> {
        self.headers().get("CSeq").and_then(|v| CSeq::parse(v).ok())
    }
    fn from(&self) -> Option<NameAddr> {
        self.headers()
            .get("From")
            .and_then(|v| NameAddr::parse(v).ok())
    }
    fn to(&self) -> Option<NameAddr> {
        self.headers()
            .get("To")
            .and_then(|v| NameAddr::parse(v).ok())
    }
    // Named after the From header, not a conversion.
    #[allow(clippy::wrong_self_convention)]
    fn from_tag(&self) -> Option<String> {
        self.headers()
            .get("From")
            .and_then(crate::uri::name_addr_tag)
            .map(str::to_string)
    }
    fn to_tag(&self) -> Option<String> {
        self.headers()
            .get("To")
            .and_then(crate::uri::name_addr_tag)
            .map(str::to_string)
    }
    fn top_via(&self) -> Option<Via> {
        self.headers()
            .get_all("Via")
            .next()
            .and_then(|v| Via::parse(v).ok())
    }
    /// The top Via as received, without copying it.
    fn top_via_ref(&self) -> Option<ViaRef<'_>> {
        self.headers()
            .get_all("Via")
            .next()
            .and_then(|v| ViaRef::parse(v).ok())
    }
    fn contact(&self) -> Option<NameAddr> {
        self.headers()
            .get_all("Contact")
            .next()
            .and_then(|v| NameAddr::parse(v).ok())
    }
    fn content_type(&self) -> Option<&str> {
        self.headers().get("Content-Type")
    }
    /// True when the body is SDP (`application/sdp`, parameters ignored).
    fn has_sdp(&self) -> bool {
        self.content_type()
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/sdp")
            })
            .unwrap_or(false)
    }
}

impl HeaderAccess for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}

impl HeaderAccess for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Self {
        Self {
            method,
            uri,
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.headers
            .get("Max-Forwards")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Builds a response that copies Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2).
    pub fn response(&self, status: u16, reason: &str) -> Response {
        let mut headers = Headers::default();
        for (n, v) in &self.headers.0 {
            if ["Via", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .any(|h| h.eq_ignore_ascii_case(n))
            {
                headers.0.push((n.clone(), v.clone()));
            }
        }
        Response {
            status,
            reason: reason.to_string(),
            headers,
            body: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        let _ = write!(out, "{} {} SIP/2.0\r\n", self.method, self.uri);
        write_headers(&mut out, &self.headers, self.body.len());
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        let _ = write!(out, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_headers(&mut out, &self.headers, self.body.len());
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }
}

impl Message {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

fn is_content_length(name: &str) -> bool {
    name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l")
}

fn write_headers(out: &mut String, headers: &Headers, body_len: usize) {
    // Content-Length is always written from the body we hold, so a rewritten SDP can never
    // disagree with its header. It stays where it was, so a relayed message keeps its order.
    let mut length_written = false;
    for (n, v) in &headers.0 {
        if is_content_length(n) {
            if !length_written {
                let _ = write!(out, "Content-Length: {body_len}\r\n");
                length_written = true;
            }
            continue;
        }
        // Pushed rather than `write!`: the formatting machinery cost more than the copy.
        out.push_str(n);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    if !length_written {
        let _ = write!(out, "Content-Length: {body_len}\r\n");
    }
    out.push_str("\r\n");
}

/// Where a stream of bytes holds one complete message: the length of head + body.
///
/// Used by stream transports (RFC 3261 §18.3): `Ok(None)` means more bytes are needed.
/// Leading CRLFs (keep-alives, RFC 5626 §3.5.1) must be skipped by the caller first.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::bad("message head too large"));
        }
        return Ok(None);
    };
    let total = message_total(buf, head_end)?;
    Ok((buf.len() >= total).then_some(total))
}

/// Length of the message whose head ends (before its blank line) at `head_end`.
fn message_total(buf: &[u8], head_end: usize) -> Result<usize, ParseError> {
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ParseError::bad("message head is not UTF-8"))?;
    let mut len = None;
    for line in head.split("\r\n").skip(1) {
        if let Some((n, v)) = line.split_once(':') {
            if is_content_length(n.trim()) {
                // Two lengths leave the framing unknowable (RFC 4475 §3.3.9): the stream is
                // unrecoverable and must be closed.
                if len.is_some() {
                    return Err(ParseError::bad("multiple Content-Length headers"));
                }
                len = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| ParseError::bad("malformed Content-Length"))?,
                );
            }
        }
    }
    // On a stream, Content-Length is mandatory (§18.3, §20.14).
    let len = len.ok_or_else(|| ParseError::bad("missing Content-Length on a stream transport"))?;
    if len > MAX_MESSAGE_SIZE {
        return Err(ParseError::bad("Content-Length too large"));
    }
    Ok(head_end + 4 + len)
}

/// An RFC 5626 keep-alive: CR and LF bytes only, not a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// A double CRLF: on a stream transport, the peer asks for a [`PONG`] (RFC 5626 §3.5.1,
    /// §4.4.1).
    Ping,
    /// Any other run of CRs and LFs: a pong, or the stray CRLF RFC 3261 §7.5 allows before a
    /// message; nothing answers it.
    Crlf,
}

/// The double CRLF a client sends to check its flow (RFC 5626 §3.5.1).
pub const PING: &[u8] = b"\r\n\r\n";

/// The single CRLF that answers a [`PING`] on a stream transport.
pub const PONG: &[u8] = b"\r\n";

/// Whether `data` (a datagram, or a unit a [`StreamFramer`] returned) is a CRLF keep-alive
/// rather than a message. Over UDP, RFC 5626 keeps flows alive with STUN, not CRLF; phones
/// send CRLFs over UDP nonetheless, as NAT keep-alives that expect no answer.
pub fn keepalive(data: &[u8]) -> Option<KeepAlive> {
    if data.is_empty() || !data.iter().all(|b| *b == b'\r' || *b == b'\n') {
        return None;
    }
    Some(if data.windows(4).any(|w| w == PING) {
        KeepAlive::Ping
    } else {
        KeepAlive::Crlf
    })
}

/// Splits a stream transport's bytes into SIP messages (RFC 3261 §18.3), across partial reads
/// and several messages per read. CRLFs between messages are keep-alives: each double CRLF
/// (RFC 5626 §3.5.1 "ping", also when split across reads) is returned as a unit of its own,
/// [`PING`], for the receiver to answer with a [`PONG`]; other CRLFs are skipped. It remembers
/// how far it has looked, so every byte is scanned once: a peer that trickles a message byte by
/// byte costs linear, not quadratic, time.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for the end of the head.
    scanned: usize,
    /// Length of the message at the front, once its head is complete.
    total: Option<usize>,
    /// How much of a [`PING`] the CRLFs skipped since the last message have matched.
    ping: usize,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not form a complete message yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed, or an error after
    /// which the stream cannot be framed any more and must be closed.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, ParseError> {
        if self.total.is_none() && self.scanned == 0 {
            let mut skip = 0;
            while let Some(&b) = self.buf.get(skip) {
                if b != b'\r' && b != b'\n' {
                    // A message starts: CRLFs before it were no ping.
                    self.ping = 0;
                    break;
                }
                skip += 1;
                self.ping = if b == PING[self.ping] {
                    self.ping + 1
                } else if b == b'\r' {
                    1
                } else {
                    0
                };
                if self.ping == PING.len() {
                    self.ping = 0;
                    self.buf.drain(..skip);
                    return Ok(Some(PING.to_vec()));
                }
            }
            self.buf.drain(..skip);
        }
        if self.total.is_none() {
            let from = self.scanned.saturating_sub(3);
            match self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                Some(at) => self.total = Some(message_total(&self.buf, from + at)?),
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > MAX_MESSAGE_SIZE {
                        return Err(ParseError::bad("message head too large"));
                    }
                    return Ok(None);
                }
            }
        }
        match self.total {
            Some(total) if self.buf.len() >= total => {
                let rest = self.buf.split_off(total);
                let msg = std::mem::replace(&mut self.buf, rest);
                self.total = None;
                self.scanned = 0;
                Ok(Some(msg))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod framer_tests {
    use super::*;

    #[test]
    fn folded_values_and_list_edits() {
        let m = parse(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g\r\n\
              Subject:\r\n  first\r\n\tsecond  \r\nX-Empty:\r\nTo: <sip:a@b>\r\n\
              From: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n",
            true,
        )
        .unwrap();
        let Message::Request(mut r) = m else {
            panic!("a request")
        };
        assert_eq!(r.headers.get("Subject"), Some("first second"));
        assert_eq!(r.headers.get("X-Empty"), Some(""));
        r.headers.remove_first_value("Via");
        assert_eq!(r.headers.get("Via"), Some("SIP/2.0/UDP g"));
        r.headers.remove_first_value("Via");
        assert_eq!(r.headers.get("Via"), None);
        r.headers.push("Via", " , ");
        r.headers
            .push("Via", ", SIP/2.0/UDP h;branch=z9hG4bK1 ,SIP/2.0/UDP g");
        r.headers.remove_first_value("Via");
        assert_eq!(
            r.headers.get_all("Via").collect::<Vec<_>>(),
            ["SIP/2.0/UDP g"]
        );
    }

    fn msg(body: &str) -> String {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn byte_by_byte_and_batched() {
        let stream = format!("\r\n\r\n{}{}\r\n{}", msg("hello"), msg(""), msg("x"));
        let mut f = StreamFramer::new();
        let mut got = Vec::new();
        for b in stream.as_bytes() {
            f.push(std::slice::from_ref(b));
            while let Some(m) = f.next_message().unwrap() {
                got.push(String::from_utf8(m).unwrap());
            }
        }
        let ping = "\r\n\r\n".to_string();
        assert_eq!(got, vec![ping, msg("hello"), msg(""), msg("x")]);
        assert_eq!(f.pending(), 0);
        let mut f = StreamFramer::new();
        f.push(stream.as_bytes());
        let mut n = 0;
        while f.next_message().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 4);
    }

    /// Everything a framer returns for `chunks` pushed one after the other.
    fn frames(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = StreamFramer::new();
        let mut got = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(m) = f.next_message().unwrap() {
                got.push(m);
            }
        }
        got
    }

    #[test]
    fn double_crlf_between_messages_is_a_ping() {
        let m = msg("x");
        let mb = m.as_bytes();
        assert_eq!(frames(&[b"\r\n\r\n"]), [PING]);
        // Split across reads, twice in a row, before a message.
        let stream = [b"\r\n".as_slice(), b"\r", b"\n\r\n\r\n", mb].concat();
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(
                frames(&[a, b]),
                [PING.to_vec(), PING.to_vec(), mb.to_vec()],
                "split at {split}"
            );
        }
        // A lone CRLF (a pong, or RFC 3261's leading CRLF) and a CRLF after a message are no
        // ping; a ping after a message is.
        assert_eq!(frames(&[b"\r\n", mb, b"\r\n"]), [mb.to_vec()]);
        assert_eq!(frames(&[mb, b"\r\n\r\n"]), [mb.to_vec(), PING.to_vec()]);
        // A CRLF, then a message, then a CRLF: the two halves are not one ping.
        assert_eq!(
            frames(&[b"\r\n", mb, b"\r\n", mb]),
            [mb.to_vec(), mb.to_vec()]
        );
        // LF CR LF CR LF holds one ping.
        assert_eq!(frames(&[b"\n\r\n\r\n"]), [PING]);
    }

    #[test]
    fn keepalives_are_told_from_messages() {
        assert_eq!(keepalive(b"\r\n\r\n"), Some(KeepAlive::Ping));
        assert_eq!(keepalive(b"\r\n"), Some(KeepAlive::Crlf));
        assert_eq!(keepalive(b"\r\n\r\n\r\n"), Some(KeepAlive::Ping));
        assert_eq!(keepalive(b"\n"), Some(KeepAlive::Crlf));
        assert_eq!(keepalive(b""), None);
        assert_eq!(keepalive(b"\r\n\r\nX"), None);
        assert_eq!(keepalive(msg("").as_bytes()), None);
    }

    #[test]
    fn unframable_streams_fail() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert!(f.next_message().is_err(), "no Content-Length on a stream");
        let mut f = StreamFramer::new();
        f.push(&vec![b'a'; MAX_MESSAGE_SIZE + 1]);
        assert!(f.next_message().is_err(), "head too large");
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The lines of a message head, split at CRLF (a bare CR or LF stays inside its line).
///
/// By hand rather than `str::split("\r\n")`: a substring search per line cost more than the
/// rest of the line's parsing; a byte search for CR is what the pattern needs.
struct CrlfLines<'a>(&'a str);

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.0;
        if s.is_empty() {
            return None;
        }
        let b = s.as_bytes();
        let mut from = 0;
        while let Some(i) = b[from..].iter().position(|&c| c == b'\r') {
            let at = from + i;
            if b.get(at + 1) == Some(&b'\n') {
                self.0 = &s[at + 2..];
                return Some(&s[..at]);
            }
            from = at + 1;
        }
        self.0 = "";
        Some(s)
    }
}

/// Parses and validates one SIP message.
///
/// `datagram` selects the RFC 3261 §18.3 rule for a body longer than Content-Length: on a
/// datagram the excess is discarded; on a stream the caller has framed the message already.
/// A missing Content-Length on a datagram means "the rest of the datagram".
///
/// Validation: start line grammar and SIP/2.0 version (505 otherwise); no headers in the
/// Request-URI; To, From, Call-ID and CSeq present exactly once and Via at least once, all
/// well formed; CSeq method equal to the request method; Content-Length a single non-negative
/// number not larger than the body; numeric headers in range; on requests, a Date in RFC 1123
/// GMT form. Max-Forwards may be absent (RFC 2543 peers). Each failure names what is wrong.
/// The RFC 4475 and RFC 5118 torture messages pin these rules down (`tests/torture.rs`).
///
/// What a UAS decides about a well-formed request (416, 420, 415, 406, 483) is not a parse
/// error: see [`check_request_semantics`].
pub fn parse(buf: &[u8], datagram: bool) -> Result<Message, ParseError> {
    let head_end = find_head_end(buf);
    let (head, body) = match head_end {
        Some(e) => (&buf[..e], &buf[e + 4..]),
        // A message without body may end at the last header's CRLF on a datagram.
        None if datagram => (buf.strip_suffix(b"\r\n").unwrap_or(buf), &buf[buf.len()..]),
        None => return Err(ParseError::bad("incomplete message head")),
    };
    let head =
        std::str::from_utf8(head).map_err(|_| ParseError::bad("message head is not UTF-8"))?;
    let mut lines = CrlfLines(head);
    let start = lines.next().unwrap_or("");
    let headers = parse_headers(lines)?;

    let start_parts: Vec<&str> = start.split(' ').collect();
    if start.starts_with("SIP/") {
        let resp = parse_status_line(start, headers, body, datagram)?;
        return Ok(Message::Response(resp));
    }

    // Request line: exactly `Method SP Request-URI SP SIP-Version` (§25.1); extra spaces
    // or LWS inside the URI are a 400.
    let partial = |headers: Headers, method: &str, kind, reason| ParseError {
        kind,
        reason,
        partial: Some(Box::new(PartialRequest {
            method: Method::parse(method),
            headers,
        })),
    };
    let method = start_parts.first().copied().unwrap_or("");
    if start_parts.len() != 3 || method.is_empty() || !method.bytes().all(crate::uri::is_token_char)
    {
        return Err(partial(
            headers,
            method,
            ParseErrorKind::BadRequest,
            "Malformed Request-Line".into(),
        ));
    }
    let version = start_parts[2];
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        let kind = if version.len() > 4 && version.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/") {
            ParseErrorKind::VersionNotSupported
        } else {
            ParseErrorKind::BadRequest
        };
        return Err(partial(
            headers,
            method,
            kind,
            "SIP Version Not Supported".into(),
        ));
    }
    let uri = match Uri::parse(start_parts[1]) {
        Ok(u) => u,
        Err(e) => {
            return Err(partial(
                headers,
                method,
                ParseErrorKind::BadRequest,
                format!("Bad Request-URI: {}", e.reason),
            ))
        }
    };
    // §19.1.1 Table 1: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
    if uri.sip().is_some_and(|u| u.headers.is_some()) {
        return Err(partial(
            headers,
            method,
            ParseErrorKind::BadRequest,
            "Request-URI must not contain headers".into(),
        ));
    }
    let method_v = Method::parse(method);
    let body = match check_common(&headers, body, datagram, true) {
        Ok(b) => b,
        Err(reason) => {
            return Err(partial(headers, method, ParseErrorKind::BadRequest, reason));
        }
    };
    if let Some(cseq) = headers.get("CSeq").and_then(|v| CSeq::parse(v).ok()) {
        if cseq.method != method_v {
            return Err(partial(
                headers,
                method,
                ParseErrorKind::BadRequest,
                "CSeq method does not match Request-Line".into(),
            ));
        }
    }
    Ok(Message::Request(Request {
        method: method_v,
        uri,
        headers,
        body: body.to_vec(),
    }))
}

fn parse_status_line(
    start: &str,
    headers: Headers,
    body: &[u8],
    datagram: bool,
) -> Result<Response, ParseError> {
    let mut it = start.splitn(3, ' ');
    let version = it.next().unwrap_or("");
    let code = it.next().unwrap_or("");
    let reason = it.next().unwrap_or("");
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::bad("response with unsupported SIP version"));
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (100..=699).contains(c) && code.len() == 3)
        .ok_or_else(|| ParseError::bad("malformed status code"))?;
    let body = check_common(&headers, body, datagram, false).map_err(ParseError::bad_owned)?;
    Ok(Response {
        status,
        reason: reason.to_string(),
        headers,
        body: body.to_vec(),
    })
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, ParseError> {
    let mut headers: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(16);
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Line folding (§7.3.1): a continuation line joins the previous value with one SP.
            let last = headers
                .last_mut()
                .ok_or_else(|| ParseError::bad("continuation line before any header"))?;
            let more = line.trim();
            if !more.is_empty() {
                // A value that was empty until folded gets no leading space.
                if !last.1.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(more);
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::bad("header line without colon"))?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(crate::uri::is_token_char) {
            return Err(ParseError::bad("malformed header name"));
        }
        headers.push((canonical_name(name), value.trim().to_string()));
    }
    Ok(Headers(headers))
}

/// Checks shared by requests and responses; returns the body cut to Content-Length.
fn check_common<'b>(
    headers: &Headers,
    body: &'b [u8],
    datagram: bool,
    is_request: bool,
) -> Result<&'b [u8], String> {
    for h in ["To", "From", "Call-ID", "CSeq"] {
        match headers.count(h) {
            0 => return Err(format!("Missing {h} header")),
            1 => {}
            _ => return Err(format!("Duplicate {h} header")),
        }
    }
    if headers.get_all("Via").next().is_none() {
        return Err("Missing Via header".into());
    }
    // Checked through borrowed views: nothing is copied for a message that is well formed.
    for v in headers.get_all("Via") {
        ViaRef::parse(v).map_err(|e| format!("Malformed Via header: {}", e.reason))?;
    }
    let from = headers.get("From").unwrap_or("");
    NameAddrRef::parse(from).map_err(|e| format!("Malformed From header: {}", e.reason))?;
    let to = headers.get("To").unwrap_or("");
    NameAddrRef::parse(to).map_err(|e| format!("Malformed To header: {}", e.reason))?;
    if headers.get("Call-ID").unwrap_or("").is_empty() {
        return Err("Empty Call-ID header".into());
    }
    CSeq::parse(headers.get("CSeq").unwrap_or(""))
        .map_err(|e| format!("Malformed CSeq header: {}", e.reason))?;
    if is_request {
        if let Some(mf) = headers.get("Max-Forwards") {
            if headers.count("Max-Forwards") > 1 {
                return Err("Duplicate Max-Forwards header".into());
            }
            mf.parse::<u8>()
                .map_err(|_| "Max-Forwards out of range".to_string())?;
        }
        for h in ["Contact", "Route", "Record-Route"] {
            for v in headers.get_all(h) {
                if h == "Contact" && v == "*" {
                    continue;
                }
                let na = NameAddrRef::parse(v)
                    .map_err(|e| format!("Malformed {h} header: {}", e.reason))?;
                if let Some(exp) = na.param("expires") {
                    exp.parse::<u32>()
                        .map_err(|_| "Contact expires out of range".to_string())?;
                }
            }
        }
        if let Some(e) = headers.get("Expires") {
            e.parse::<u32>()
                .map_err(|_| "Expires out of range".to_string())?;
        }
        // Responses are not held to this: a sloppy Date must not cost an answered call.
        if let Some(d) = headers.get("Date") {
            if !is_sip_date(d) {
                return Err("Date is not an RFC 1123 GMT date".into());
            }
        }
    }
    let body = match headers.count("Content-Length") {
        0 => body,
        1 => {
            let v = headers.get("Content-Length").unwrap_or("");
            let n: usize = v
                .parse()
                .map_err(|_| "Malformed Content-Length".to_string())?;
            if n > body.len() {
                return Err("Content-Length larger than the body".into());
            }
            if !datagram && n < body.len() {
                return Err("Content-Length smaller than the body".into());
            }
            &body[..n]
        }
        _ => return Err("Multiple Content-Length headers".into()),
    };
    if !body.is_empty() && headers.get("Content-Type").is_none() {
        return Err("Body without Content-Type".into());
    }
    Ok(body)
}

/// `Date: Sat, 13 Nov 2010 23:29:00 GMT` (RFC 3261 §20.17: RFC 1123 form, GMT only).
fn is_sip_date(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    let p: Vec<&str> = s.split_whitespace().collect();
    let [wkday, day, month, year, time, zone] = p[..] else {
        return false;
    };
    let hms: Vec<&str> = time.split(':').collect();
    DAYS.contains(&wkday)
        && digits(day, 1..=2)
        && MONTHS.contains(&month)
        && digits(year, 4..=4)
        && hms.len() == 3
        && hms.iter().all(|f| digits(f, 2..=2))
        && zone == "GMT"
}

/// What could be read of a request that failed validation: enough to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialRequest {
    pub method: Method,
    pub headers: Headers,
}

impl PartialRequest {
    /// The response to a request that failed validation, built from what could be read.
    ///
    /// It needs a top Via to travel back on (of any SIP version, so a `SIP/7.0` request still
    /// gets its 505) and a CSeq for the client to match it; From, To and Call-ID are copied
    /// when present, the first of each if repeated, since the point is to tell the sender that
    /// exactly these are wrong (RFC 4475 §3.3.1, §3.3.8). An ACK is never answered (§17.2.1).
    pub fn error_response(&self, status: u16, reason: &str) -> Option<Response> {
        if self.method == Method::Ack {
            return None;
        }
        let via = self.headers.get_all("Via").next()?;
        Via::parse_any_version(via).ok()?;
        self.headers.get("CSeq")?;
        let mut headers = Headers::default();
        for (n, v) in &self.headers.0 {
            let copy = if n == "Via" {
                true
            } else {
                ["From", "To", "Call-ID", "CSeq"].contains(&n.as_ref()) && headers.count(n) == 0
            };
            if copy {
                headers.0.push((n.clone(), v.clone()));
            }
        }
        Some(Response {
            status,
            reason: reason.to_string(),
            headers,
            body: Vec::new(),
        })
    }
}

/// Why a well-formed request is refused before tapir acts on it, and what the answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    /// Headers the answer must carry: `Unsupported` for 420, `Accept` or `Accept-Encoding`
    /// for 415, `Warning` for 406.
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    fn new(status: u16, reason: &str) -> Self {
        Self {
            status,
            reason: reason.to_string(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The response to send (the caller adds a To tag where a dialog could follow).
    pub fn response(&self, req: &Request) -> Response {
        let mut r = req.response(self.status, &self.reason);
        for (n, v) in &self.headers {
            r.headers.push(n, v.clone());
        }
        r
    }
}

/// Request-URI schemes tapir routes; any other gets 416 (RFC 3261 §8.2.2.1).
pub const SUPPORTED_URI_SCHEMES: &[&str] = &["sip", "sips", "tel"];

/// Methods whose body tapir must understand, because it anchors the media they describe.
fn carries_session(method: &Method) -> bool {
    matches!(method, Method::Invite | Method::Update | Method::Prack)
}

fn media_type(v: &str) -> String {
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The checks a UAS makes on a request that parsed, before acting on it (RFC 3261 §8.2.2,
/// §8.2.3, §16.3 item 3), in the order the RFC lists them.
///
/// tapir terminates each request as a UAS and then originates its own on the other leg, so the
/// UAS rules apply: the Request-URI scheme (416), `Require` against `supported` option tags
/// (420; `Proxy-Require` is addressed to proxies and is relayed, not judged), the body type and
/// encoding of session-carrying methods (415) and an `Accept` that rules out the SDP the answer
/// must carry (406). Max-Forwards is where the B2BUA behaves like a proxy: it relays the request,
/// so 0 means a loop and gets 483, except for OPTIONS, which §16.3 lets the element answer as the
/// final recipient. `Ok` for an OPTIONS whose Max-Forwards is 0 therefore means "answer it here,
/// do not relay it". ACK and CANCEL are exempt: an ACK gets no response, and the transaction
/// layer has already answered a CANCEL.
pub fn check_request_semantics(req: &Request, supported: &[&str]) -> Result<(), Rejection> {
    if matches!(req.method, Method::Ack | Method::Cancel) {
        return Ok(());
    }
    let scheme = match &req.uri {
        Uri::Sip(u) if u.secure => "sips",
        Uri::Sip(_) => "sip",
        Uri::Other(s) => s.split(':').next().unwrap_or(""),
    };
    if !SUPPORTED_URI_SCHEMES
        .iter()
        .any(|k| k.eq_ignore_ascii_case(scheme))
    {
        return Err(Rejection::new(416, "Unsupported URI Scheme"));
    }
    if req.max_forwards() == Some(0) && req.method != Method::Options {
        return Err(Rejection::new(483, "Too Many Hops"));
    }
    let unsupported: Vec<&str> = req
        .headers
        .get_all("Require")
        .filter(|tag| !supported.iter().any(|s| s.eq_ignore_ascii_case(tag)))
        .collect();
    if !unsupported.is_empty() {
        return Err(
            Rejection::new(420, "Bad Extension").with("Unsupported", unsupported.join(", "))
        );
    }
    if carries_session(&req.method) {
        if !req.body.is_empty() {
            let ct = media_type(req.headers.get("Content-Type").unwrap_or(""));
            if ct != "application/sdp" && !ct.starts_with("multipart/") {
                return Err(Rejection::new(415, "Unsupported Media Type")
                    .with("Accept", "application/sdp, multipart/mixed"));
            }
            if req
                .headers
                .get_all("Content-Encoding")
                .any(|e| !e.eq_ignore_ascii_case("identity"))
            {
                return Err(Rejection::new(415, "Unsupported Media Type")
                    .with("Accept-Encoding", "identity"));
            }
        }
        if req.headers.count("Accept") > 0 {
            let takes_sdp = req.headers.get_all("Accept").any(|a| {
                matches!(
                    media_type(a).as_str(),
                    "application/sdp" | "application/*" | "*/*"
                )
            });
            if !takes_sdp {
                return Err(Rejection::new(406, "Not Acceptable").with(
                    "Warning",
                    "399 tapir \"the answer must carry application/sdp\"",
                ));
            }
        }
    }
    Ok(())
}

/// The check a UAC makes on a response that parsed (RFC 3261 §8.1.3.3): it must carry exactly
/// one Via, ours; anything else was misrouted and is discarded silently. tapir is a UAC toward
/// every next hop, so this also keeps it from relaying a response toward an address a second
/// Via names (RFC 4475 §3.3.10, a broadcast address there).
pub fn check_response_semantics(resp: &Response) -> Result<(), String> {
    match resp.headers.get_all("Via").count() {
        1 => Ok(()),
        n => Err(format!(
            "response with {n} Via values; a UAC expects exactly one"
        )),
    }
}
