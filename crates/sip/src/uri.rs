//! SIP URIs, name-addr values (From/To/Contact/Route) and Via values.
//!
//! These are parsed from header values after line folding has been undone. Parsing is strict
//! about structure (a `<` needs its `>`, a SIP URI needs a host, ports are numbers) and lenient
//! about whitespace where RFC 3261 allows LWS.

use std::borrow::Cow;
use std::fmt;

use crate::ParseError;

/// Generic `;name[=value]` parameters, order kept for faithful printing.
///
/// Held as one normalized string (`;a=b;c`, no LWS) rather than a list of owned pairs: every
/// Via, From, To and Contact of every message has parameters, and a pair list cost two
/// allocations per parameter where this costs one per list. Lookups scan the string; lists
/// are a handful of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(String);

impl Params {
    /// Every parameter in order: (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        // Normalized on the way in: parts are non-empty and trimmed.
        split_unquoted(self.0.get(1..).unwrap_or(""), b';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Value of a parameter that carries one (`branch=…`); `None` when absent or bare.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets a parameter, in place of an existing one of that name or else at the end.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        let mut out = String::with_capacity(self.0.len() + name.len() + 16);
        let mut done = false;
        for (n, v) in self.iter() {
            if n.eq_ignore_ascii_case(name) {
                if !done {
                    push_param(&mut out, n, value.as_deref());
                    done = true;
                }
            } else {
                push_param(&mut out, n, v);
            }
        }
        if !done {
            push_param(&mut out, name, value.as_deref());
        }
        self.0 = out;
    }

    pub fn remove(&mut self, name: &str) {
        if !self.contains(name) {
            return;
        }
        let mut out = String::with_capacity(self.0.len());
        for (n, v) in self.iter().filter(|(n, _)| !n.eq_ignore_ascii_case(name)) {
            push_param(&mut out, n, v);
        }
        self.0 = out;
    }

    /// Parses `;a=b;c` (leading `;` optional), trimming LWS around `;` and `=`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let mut out = String::new();
        for part in split_unquoted(s, b';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((n, v)) => {
                    let n = n.trim();
                    if n.is_empty() || !n.bytes().all(is_token_char) {
                        return Err(ParseError::bad("malformed parameter name"));
                    }
                    if out.is_empty() {
                        out.reserve(s.len() + 1);
                    }
                    push_param(&mut out, n, Some(v.trim()));
                }
                None => {
                    if !part.bytes().all(is_token_char) {
                        return Err(ParseError::bad("malformed parameter"));
                    }
                    if out.is_empty() {
                        out.reserve(s.len() + 1);
                    }
                    push_param(&mut out, part, None);
                }
            }
        }
        Ok(Params(out))
    }
}

fn push_param(out: &mut String, name: &str, value: Option<&str>) {
    out.push(';');
    out.push_str(name);
    if let Some(v) = value {
        out.push('=');
        out.push_str(v);
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 3261 token characters.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Splits on `sep` outside double quotes and angle brackets.
///
/// An iterator rather than a `Vec`: it runs for every list header and parameter list of
/// every message, and callers mostly want the first part or walk the parts once.
pub fn split_unquoted(s: &str, sep: u8) -> SplitUnquoted<'_> {
    SplitUnquoted {
        s,
        start: 0,
        sep: Some(sep),
        done: false,
    }
}

/// `s` as the only part, for headers that are not lists.
pub(crate) fn unsplit(s: &str) -> SplitUnquoted<'_> {
    SplitUnquoted {
        s,
        start: 0,
        sep: None,
        done: false,
    }
}

/// The parts of a string split by [`split_unquoted`].
#[derive(Debug, Clone)]
pub struct SplitUnquoted<'a> {
    s: &'a str,
    start: usize,
    sep: Option<u8>,
    done: bool,
}

impl<'a> SplitUnquoted<'a> {
    /// What the parts not yet taken span, separators included.
    pub fn rest(&self) -> &'a str {
        if self.done {
            ""
        } else {
            &self.s[self.start..]
        }
    }
}

impl<'a> Iterator for SplitUnquoted<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let Some(sep) = self.sep else {
            self.done = true;
            return Some(self.s);
        };
        // Bytes, not chars: every delimiter is ASCII, and no byte of a multi-byte UTF-8
        // sequence is ASCII, so each cut falls on a char boundary.
        let bytes = self.s.as_bytes();
        let mut in_quote = false;
        let mut escaped = false;
        let mut angle = 0u32;
        for (i, &c) in bytes.iter().enumerate().skip(self.start) {
            if in_quote {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_quote = false;
                }
                continue;
            }
            match c {
                b'"' => in_quote = true,
                b'<' => angle += 1,
                b'>' => angle = angle.saturating_sub(1),
                c if c == sep && angle == 0 => {
                    let part = &self.s[self.start..i];
                    self.start = i + 1;
                    return Some(part);
                }
                _ => {}
            }
        }
        self.done = true;
        Some(&self.s[self.start..])
    }
}

/// A `sip:` or `sips:` URI; any other scheme is kept as [`Uri::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    /// `tel:`, `http:` and other absolute URIs, kept verbatim.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// User part with any `:password` kept, escapes left as received.
    pub user: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// `?h=v&…` part, verbatim without the `?`.
    pub headers: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A name or an IPv4 address, as written.
    Name(String),
    /// An IPv6 reference, printed with brackets; stored without them.
    V6(String),
}

impl Host {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| ParseError::bad("unterminated IPv6 reference"))?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| ParseError::bad("malformed IPv6 address"))?;
            return Ok(Host::V6(inner.to_string()));
        }
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ParseError::bad("malformed host"));
        }
        Ok(Host::Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Host::Name(s) | Host::V6(s) => s,
        }
    }

    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.as_str().parse().ok()
    }
}

impl From<std::net::IpAddr> for Host {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(v4) => Host::Name(v4.to_string()),
            std::net::IpAddr::V6(v6) => Host::V6(v6.to_string()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(s) => f.write_str(s),
            Host::V6(s) => write!(f, "[{s}]"),
        }
    }
}

/// Splits `host[:port]`, minding IPv6 brackets.
pub fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), ParseError> {
    let s = s.trim();
    let (h, p) = if s.starts_with('[') {
        match s.find(']') {
            Some(end) => {
                let rest = &s[end + 1..];
                let port = match rest.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if rest.is_empty() => None,
                    None => return Err(ParseError::bad("garbage after IPv6 reference")),
                };
                (&s[..=end], port)
            }
            None => return Err(ParseError::bad("unterminated IPv6 reference")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = Host::parse(h)?;
    let port = match p {
        Some(p) => Some(
            p.trim()
                .parse::<u16>()
                .map_err(|_| ParseError::bad("malformed port"))?,
        ),
        None => None,
    };
    Ok((host, port))
}

impl Uri {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.bytes().any(|b| b <= b' ' || b == b'<' || b == b'>') {
            return Err(ParseError::bad("whitespace or angle bracket inside URI"));
        }
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| ParseError::bad("URI without scheme"))?;
        let secure = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            if scheme.is_empty()
                || !scheme.as_bytes()[0].is_ascii_alphabetic()
                || !scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            {
                return Err(ParseError::bad("malformed URI scheme"));
            }
            return Ok(Uri::Other(s.to_string()));
        };
        // The userinfo may contain ';', '?', '/', ',' and more (user-unreserved, RFC 3261
        // §25.1, RFC 4475 §3.1.1.2) but never an unescaped '@', and neither may the parameters
        // or headers after the host: the first '@' is the only possible end of the userinfo.
        let (user, rest) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (rest, None),
        };
        if let Some(u) = user {
            if u.is_empty() {
                return Err(ParseError::bad("empty user part in URI"));
            }
            check_escapes(u)?;
        }
        let (hostport, params) = match hostpart.split_once(';') {
            Some((hp, p)) => (hp, Params::parse(p)?),
            None => (hostpart, Params::default()),
        };
        let (host, port) = parse_hostport(hostport)?;
        Ok(Uri::Sip(SipUri {
            secure,
            user: user.map(str::to_string),
            host,
            port,
            params,
            headers,
        }))
    }

    pub fn sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }

    pub fn sip_mut(&mut self) -> Option<&mut SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }

    /// The user part without a password, if any.
    pub fn user(&self) -> Option<&str> {
        self.sip()
            .and_then(|u| u.user.as_deref())
            .map(|u| u.split(':').next().unwrap_or(u))
    }
}

fn check_escapes(s: &str) -> Result<(), ParseError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return Err(ParseError::bad("truncated escape in URI"));
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Err(ParseError::bad("malformed escape in URI"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other(s) => f.write_str(s),
        }
    }
}

/// `[display-name] <uri>;params` or `uri;params` as in From, To, Contact, Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> Self {
        Self {
            display: None,
            uri,
            params: Params::default(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::bad("empty address"));
        }
        let (display, rest) = if let Some(q) = s.strip_prefix('"') {
            let end =
                closing_quote(q).ok_or_else(|| ParseError::bad("unterminated quoted string"))?;
            (
                Some(format!("\"{}\"", &q[..end])),
                q[end + 1..].trim_start(),
            )
        } else if let Some(lt) = s.find('<') {
            let d = s[..lt].trim();
            if !d.split_whitespace().all(|w| w.bytes().all(is_token_char)) {
                return Err(ParseError::bad("malformed display name"));
            }
            ((!d.is_empty()).then(|| d.to_string()), &s[lt..])
        } else {
            (None, s)
        };
        if let Some(r) = rest.strip_prefix('<') {
            let gt = r
                .find('>')
                .ok_or_else(|| ParseError::bad("unterminated <URI>"))?;
            let inner = &r[..gt];
            // `< sip:a@b >`: LAQUOT and RAQUOT allow no whitespace inside (RFC 4475 §3.1.2.14).
            if inner.starts_with([' ', '\t']) || inner.ends_with([' ', '\t']) {
                return Err(ParseError::bad("whitespace inside <URI>"));
            }
            let uri = Uri::parse(inner)?;
            let after = r[gt + 1..].trim();
            if !after.is_empty() && !after.starts_with(';') {
                return Err(ParseError::bad("garbage after <URI>"));
            }
            Ok(Self {
                display,
                uri,
                params: Params::parse(after)?,
            })
        } else {
            if display.is_some() {
                return Err(ParseError::bad("display name without <URI>"));
            }
            // Without brackets, parameters belong to the header, not the URI (§20.10).
            let (u, p) = match rest.split_once(';') {
                Some((u, p)) => (u, Params::parse(p)?),
                None => (rest, Params::default()),
            };
            if u.contains(['?', ',']) {
                return Err(ParseError::bad("URI with headers or comma needs <>"));
            }
            Ok(Self {
                display: None,
                uri: Uri::parse(u)?,
                params: p,
            })
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

/// The `tag` parameter of a From or To value, read without building the whole [`NameAddr`]:
/// the dialog code asks for tags of every message. Agrees with `NameAddr::parse(v)?.tag()` on
/// every value that parses.
pub(crate) fn name_addr_tag(v: &str) -> Option<&str> {
    let v = v.trim();
    let params = if let Some(q) = v.strip_prefix('"') {
        let rest = &q[closing_quote(q)? + 1..];
        &rest[rest.find('>')? + 1..]
    } else if let Some(lt) = v.find('<') {
        &v[lt + v[lt..].find('>')? + 1..]
    } else {
        v.split_once(';')?.1
    };
    split_unquoted(params, b';').find_map(|p| {
        let (n, val) = p.split_once('=')?;
        n.trim().eq_ignore_ascii_case("tag").then(|| val.trim())
    })
}

fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some(i);
        }
    }
    None
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// Transport named in a Via header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
}

impl Transport {
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Udp,
            Self::Tcp,
            Self::Tls,
            Self::Sctp,
            Self::Ws,
            Self::Wss,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Sctp => "SCTP",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// Reliable transports switch off retransmission timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: Transport,
    /// Unknown transports are kept by name so a response can still be routed by `received`.
    pub transport_name: Cow<'static, str>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let (via, version) = Self::parse_any_version(s)?;
        if version != "2.0" {
            return Err(ParseError::bad("Via protocol is not SIP/2.0"));
        }
        Ok(via)
    }

    /// Parses a Via whatever its SIP version, so that a request of another version can still
    /// be answered with 505 (RFC 4475 §3.1.2.16). Returns the version too.
    pub(crate) fn parse_any_version(s: &str) -> Result<(Self, &str), ParseError> {
        let s = s.trim();
        let (version, proto, rest) = take_via_protocol(s)?;
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.split_once(';') {
            Some((h, p)) => (h, Params::parse(p)?),
            None => (rest, Params::default()),
        };
        let (host, port) = parse_hostport(sent_by)?;
        let transport = Transport::parse(proto);
        let via = Via {
            transport: transport.unwrap_or(Transport::Udp),
            transport_name: match transport {
                Some(t) => Cow::Borrowed(t.as_str()),
                None => Cow::Owned(proto.to_ascii_uppercase()),
            },
            host,
            port,
            params,
        };
        Ok((via, version))
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
}

/// Reads `SIP / 2.0 / UDP` with optional LWS around the slashes: (version, transport, rest).
fn take_via_protocol(s: &str) -> Result<(&str, &str, &str), ParseError> {
    let mut parts = [""; 3];
    let mut rest = s;
    for (i, part) in parts.iter_mut().enumerate() {
        rest = rest.trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(ParseError::bad("malformed Via protocol"));
        }
        *part = &rest[..end];
        rest = &rest[end..];
        if i < 2 {
            rest = rest
                .trim_start()
                .strip_prefix('/')
                .ok_or_else(|| ParseError::bad("malformed Via protocol"))?;
        }
    }
    if !parts[0].eq_ignore_ascii_case("SIP") {
        return Err(ParseError::bad("Via protocol is not SIP"));
    }
    Ok((parts[1], parts[2], rest))
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport_name, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_with_user_params_and_v6() {
        let u =
            Uri::parse("sip:alice;day=tue@[2001:db8::10]:5070;transport=tcp?subject=x").unwrap();
        let s = u.sip().unwrap();
        assert_eq!(s.user.as_deref(), Some("alice;day=tue"));
        assert_eq!(s.host, Host::V6("2001:db8::10".into()));
        assert_eq!(s.port, Some(5070));
        assert_eq!(s.params.value("transport"), Some("tcp"));
        assert_eq!(
            u.to_string(),
            "sip:alice;day=tue@[2001:db8::10]:5070;transport=tcp?subject=x"
        );
    }

    #[test]
    fn other_schemes_are_kept() {
        assert_eq!(
            Uri::parse("tel:+1-555-0100").unwrap(),
            Uri::Other("tel:+1-555-0100".into())
        );
        assert!(Uri::parse("sip:user@host with space").is_err());
        assert!(Uri::parse("sip:user@[::1").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"J \\\"R\\\"\" <sip:j@example.com>;tag=x").unwrap();
        assert_eq!(n.tag(), Some("x"));
        let n = NameAddr::parse("sip:j@example.com;tag=y").unwrap();
        assert_eq!(n.tag(), Some("y"));
        assert!(n.uri.sip().unwrap().params.is_empty());
        assert!(NameAddr::parse("<sip:j@example.com").is_err());
    }

    #[test]
    fn via_with_lws() {
        let v = Via::parse(
            "SIP  /   2.0\r\n /UDP    192.0.2.2;branch=390skdjuw"
                .replace("\r\n", "")
                .as_str(),
        )
        .unwrap();
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v = Via::parse("SIP/2.0/TCP [::1]:5061;rport;branch=z9hG4bKa").unwrap();
        assert_eq!(v.port, Some(5061));
        assert!(v.params.contains("rport"));
    }

    #[test]
    fn split_unquoted_respects_quotes_brackets_and_non_ascii() {
        let s = "\"a, \\\"b\" <sip:x@h;p=1,2>;q=1, ü <sip:y@h>,";
        let parts: Vec<&str> = split_unquoted(s, b',').collect();
        assert_eq!(
            parts,
            ["\"a, \\\"b\" <sip:x@h;p=1,2>;q=1", " ü <sip:y@h>", ""]
        );
        let mut it = split_unquoted("a;b;c", b';');
        assert_eq!(it.next(), Some("a"));
        assert_eq!(it.rest(), "b;c");
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.rest(), "");
        assert_eq!(unsplit("a,b").collect::<Vec<_>>(), ["a,b"]);
    }

    #[test]
    fn params_normalize_and_edit_in_order() {
        let mut p = Params::parse(" ; lr ;Tag = a1 ; x=\"q;r\"").unwrap();
        assert_eq!(p.to_string(), ";lr;Tag=a1;x=\"q;r\"");
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.value("tag"), Some("a1"));
        assert_eq!(p.value("x"), Some("\"q;r\""));
        p.set("tag", Some("b2".into()));
        p.set("rport", None);
        assert_eq!(p.to_string(), ";lr;Tag=b2;x=\"q;r\";rport");
        p.remove("LR");
        p.remove("absent");
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [("Tag", Some("b2")), ("x", Some("\"q;r\"")), ("rport", None)]
        );
        assert!(Params::parse("").unwrap().is_empty());
        assert!(Params::parse(";a b").is_err());
    }

    #[test]
    fn tags_read_directly_agree_with_the_full_parse() {
        for v in [
            "<sip:a@b>;tag=1",
            " \"A <x>;tag=no\" <sip:a@b;tag=uri>; TAG = 2 ;x",
            "sip:a@b;tag=3",
            "sip:a@b",
            "A <sip:a@b>",
            "<sip:a@b>;x=\";tag=no\";tag=4",
            "<sip:a@b>;tagx=5",
        ] {
            let full = NameAddr::parse(v).unwrap();
            assert_eq!(name_addr_tag(v), full.tag(), "{v}");
        }
    }
}
