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
/// Held as one normalized string (`;a=b;c`, no whitespace around `;` and `=`; a quoted value
/// keeps its own) rather than a list of owned pairs: every Via, From, To and Contact of every
/// message has parameters, and a pair list cost two allocations per parameter where this
/// costs one per list. Lookups scan the string; lists
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
            // The first of that name takes the value; any later one stays as it was.
            if !done && n.eq_ignore_ascii_case(name) {
                push_param(&mut out, n, value.as_deref());
                done = true;
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
        Self::each(s, |n, v| {
            if out.is_empty() {
                out.reserve(s.len() + 1);
            }
            push_param(&mut out, n, v);
        })?;
        Ok(Params(out))
    }

    /// Checks `;a=b;c` as [`parse`](Self::parse) does, copying nothing.
    pub fn validate(s: &str) -> Result<(), ParseError> {
        Self::each(s, |_, _| {})
    }

    /// Calls `f` with each trimmed (name, value), failing on the first malformed parameter.
    fn each<'a>(s: &'a str, mut f: impl FnMut(&'a str, Option<&'a str>)) -> Result<(), ParseError> {
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
                    f(n, Some(v.trim()));
                }
                None => {
                    if !part.bytes().all(is_token_char) {
                        return Err(ParseError::bad("malformed parameter"));
                    }
                    f(part, None);
                }
            }
        }
        Ok(())
    }
}

impl Params {
    /// Whether an unparsed list (`;a=b;c`) has parameter `name`, with or without a value.
    pub fn has(list: &str, name: &str) -> bool {
        Self::raw_get(list, name).is_some()
    }

    /// Whether an unparsed list has parameter `name` without a value (`;rport`).
    pub fn bare(list: &str, name: &str) -> bool {
        Self::raw_get(list, name) == Some(None)
    }

    /// The first parameter `name` of an unparsed list: `Some(None)` when bare.
    fn raw_get<'a>(list: &'a str, name: &str) -> Option<Option<&'a str>> {
        split_unquoted(list, b';').find_map(|p| {
            let (n, v) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v.trim())),
                None => (p, None),
            };
            n.trim().eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

/// The value of parameter `name` in an unparsed list (`;a=b;c`); `None` when absent or bare.
pub(crate) fn raw_param<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    // The first parameter of that name decides, as in `Params::value`.
    Params::raw_get(list, name).flatten()
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
    // Cuts must fall on char boundaries; only an ASCII byte guarantees that.
    debug_assert!(sep.is_ascii());
    SplitUnquoted {
        s,
        start: 0,
        sep: Some(sep),
        done: false,
        special: None,
    }
}

/// `s` as the only part, for headers that are not lists.
pub(crate) fn unsplit(s: &str) -> SplitUnquoted<'_> {
    SplitUnquoted {
        s,
        start: 0,
        sep: None,
        done: false,
        special: None,
    }
}

/// The parts of a string split by [`split_unquoted`].
#[derive(Debug, Clone)]
pub struct SplitUnquoted<'a> {
    s: &'a str,
    start: usize,
    sep: Option<u8>,
    done: bool,
    /// Where the first `"` or `<` at or after `start` is (`s.len()` if none), once looked
    /// for. Kept so that each byte is searched once over the whole walk: looking again for
    /// every part made a long list cost its length squared, and a peer chooses the list.
    special: Option<usize>,
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
        let special = match self.special {
            Some(at) if at >= self.start => at,
            _ => {
                let at = bytes[self.start..]
                    .iter()
                    .position(|&c| c == b'"' || c == b'<')
                    .map_or(bytes.len(), |i| self.start + i);
                self.special = Some(at);
                at
            }
        };
        // Most values have neither quotes nor brackets (Via, parameter lists): a separator
        // before the next quote or bracket is the cut, found by a plain byte search.
        if let Some(i) = bytes[self.start..special].iter().position(|&c| c == sep) {
            let part = &self.s[self.start..self.start + i];
            self.start += i + 1;
            return Some(part);
        }
        if special == bytes.len() {
            self.done = true;
            return Some(&self.s[self.start..]);
        }
        let mut in_quote = false;
        let mut escaped = false;
        let mut angle = 0u32;
        for (i, &c) in bytes.iter().enumerate().skip(special) {
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
        Ok(HostRef::parse(s)?.to_owned())
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

/// A host as received: a name or IPv4 address, or an IPv6 reference without its brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRef<'a> {
    pub v6: bool,
    pub text: &'a str,
}

impl<'a> HostRef<'a> {
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| ParseError::bad("unterminated IPv6 reference"))?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| ParseError::bad("malformed IPv6 address"))?;
            return Ok(HostRef {
                v6: true,
                text: inner,
            });
        }
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ParseError::bad("malformed host"));
        }
        Ok(HostRef { v6: false, text: s })
    }

    pub fn to_owned(self) -> Host {
        if self.v6 {
            Host::V6(self.text.to_string())
        } else {
            Host::Name(self.text.to_string())
        }
    }
}

impl fmt::Display for HostRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            write!(f, "[{}]", self.text)
        } else {
            f.write_str(self.text)
        }
    }
}

/// Splits `host[:port]`, minding IPv6 brackets.
pub fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), ParseError> {
    let (h, p) = parse_hostport_ref(s)?;
    Ok((h.to_owned(), p))
}

/// [`parse_hostport`] without copying the host.
pub fn parse_hostport_ref(s: &str) -> Result<(HostRef<'_>, Option<u16>), ParseError> {
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
    let host = HostRef::parse(h)?;
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

/// A URI as received, checked but not copied: what validation and lookups need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriRef<'a> {
    Sip(SipUriRef<'a>),
    Other(&'a str),
}

/// The parts of a `sip:`/`sips:` URI as received; `params` is the unparsed `;…` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUriRef<'a> {
    pub secure: bool,
    pub user: Option<&'a str>,
    pub host: HostRef<'a>,
    pub port: Option<u16>,
    pub params: &'a str,
    pub headers: Option<&'a str>,
}

impl<'a> UriRef<'a> {
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
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
            return Ok(UriRef::Other(s));
        };
        // The userinfo may contain ';', '?', '/', ',' and more (user-unreserved, RFC 3261
        // §25.1, RFC 4475 §3.1.1.2) but never an unescaped '@', and neither may the parameters
        // or headers after the host: the first '@' is the only possible end of the userinfo.
        let (user, rest) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h)),
            None => (rest, None),
        };
        if let Some(u) = user {
            if u.is_empty() {
                return Err(ParseError::bad("empty user part in URI"));
            }
            check_escapes(u)?;
        }
        let (hostport, params) = match hostpart.split_once(';') {
            Some((hp, p)) => {
                Params::validate(p)?;
                (hp, p)
            }
            None => (hostpart, ""),
        };
        let (host, port) = parse_hostport_ref(hostport)?;
        Ok(UriRef::Sip(SipUriRef {
            secure,
            user,
            host,
            port,
            params,
            headers,
        }))
    }

    pub fn to_owned(self) -> Uri {
        match self {
            UriRef::Other(s) => Uri::Other(s.to_string()),
            UriRef::Sip(u) => Uri::Sip(SipUri {
                secure: u.secure,
                user: u.user.map(str::to_string),
                host: u.host.to_owned(),
                port: u.port,
                // Validated above: this only normalizes.
                params: Params::parse(u.params).unwrap_or_default(),
                headers: u.headers.map(str::to_string),
            }),
        }
    }
}

impl Uri {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Ok(UriRef::parse(s)?.to_owned())
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
        let r = NameAddrRef::parse(s)?;
        Ok(Self {
            display: r.display.map(str::to_string),
            uri: r.uri.to_owned(),
            // Validated by `NameAddrRef::parse`: this only normalizes.
            params: Params::parse(r.params).unwrap_or_default(),
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

/// A name-addr as received, checked but not copied. `display` keeps its quotes, as
/// [`NameAddr::display`] does; `params` is the unparsed `;…` list after the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddrRef<'a> {
    pub display: Option<&'a str>,
    pub uri: UriRef<'a>,
    pub params: &'a str,
}

impl<'a> NameAddrRef<'a> {
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::bad("empty address"));
        }
        let (display, rest) = if let Some(q) = s.strip_prefix('"') {
            let end =
                closing_quote(q).ok_or_else(|| ParseError::bad("unterminated quoted string"))?;
            (Some(&s[..end + 2]), q[end + 1..].trim_start())
        } else if let Some(lt) = s.find('<') {
            let d = s[..lt].trim();
            if !d.split_whitespace().all(|w| w.bytes().all(is_token_char)) {
                return Err(ParseError::bad("malformed display name"));
            }
            ((!d.is_empty()).then_some(d), &s[lt..])
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
            let uri = UriRef::parse(inner)?;
            let after = r[gt + 1..].trim();
            if !after.is_empty() && !after.starts_with(';') {
                return Err(ParseError::bad("garbage after <URI>"));
            }
            Params::validate(after)?;
            Ok(Self {
                display,
                uri,
                params: after,
            })
        } else {
            if display.is_some() {
                return Err(ParseError::bad("display name without <URI>"));
            }
            // Without brackets, parameters belong to the header, not the URI (§20.10).
            let (u, p) = match rest.split_once(';') {
                Some((u, p)) => {
                    Params::validate(p)?;
                    (u, p)
                }
                None => (rest, ""),
            };
            if u.contains(['?', ',']) {
                return Err(ParseError::bad("URI with headers or comma needs <>"));
            }
            Ok(Self {
                display: None,
                uri: UriRef::parse(u)?,
                params: p,
            })
        }
    }

    /// The value of a header parameter (`tag`, `expires`).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        raw_param(self.params, name)
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
    raw_param(params, "tag")
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
        let r = ViaRef::parse_any_version(s)?;
        let transport = Transport::parse(r.transport);
        let via = Via {
            transport: transport.unwrap_or(Transport::Udp),
            transport_name: match transport {
                Some(t) => Cow::Borrowed(t.as_str()),
                None => Cow::Owned(r.transport.to_ascii_uppercase()),
            },
            host: r.host.to_owned(),
            port: r.port,
            // Validated by `ViaRef`: this only normalizes.
            params: Params::parse(r.params).unwrap_or_default(),
        };
        Ok((via, r.version))
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
}

/// A Via value as received, checked but not copied: enough to match a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaRef<'a> {
    pub version: &'a str,
    /// As written (any case).
    pub transport: &'a str,
    pub host: HostRef<'a>,
    pub port: Option<u16>,
    /// The unparsed `;…` list.
    pub params: &'a str,
}

impl<'a> ViaRef<'a> {
    /// A `SIP/2.0` Via.
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
        let v = Self::parse_any_version(s)?;
        if v.version != "2.0" {
            return Err(ParseError::bad("Via protocol is not SIP/2.0"));
        }
        Ok(v)
    }

    fn parse_any_version(s: &'a str) -> Result<Self, ParseError> {
        let s = s.trim();
        let (version, transport, rest) = take_via_protocol(s)?;
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.split_once(';') {
            Some((h, p)) => {
                Params::validate(p)?;
                (h, p)
            }
            None => (rest, ""),
        };
        let (host, port) = parse_hostport_ref(sent_by)?;
        Ok(ViaRef {
            version,
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&'a str> {
        raw_param(self.params, "branch")
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
        let mut dup = Params::parse(";tag=a;tag=b").unwrap();
        dup.set("tag", Some("x".into()));
        assert_eq!(dup.to_string(), ";tag=x;tag=b");
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
