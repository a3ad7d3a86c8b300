//! SDP (RFC 4566) as tapir needs it: read the media a leg offers or answers, and rewrite the
//! connection address and ports so that media is anchored on tapir (RFC 3264 offer/answer).
//!
//! Lines are kept in order and unchanged unless tapir rewrites them, so attributes tapir does
//! not understand (ICE, fmtp, ptime...) pass through untouched. SDES keying (`a=crypto`) and
//! the other ways a stream may be secured are read and rewritten by [`crypto`].

pub mod crypto;

pub use crypto::{Crypto, CryptoError, Security};

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP line {0} is not of the form x=value")]
    BadLine(usize),
    #[error("SDP has no v= line first")]
    NoVersion,
    #[error("malformed m= line: {0}")]
    BadMedia(String),
    #[error("malformed c= line: {0}")]
    BadConnection(String),
}

/// Media direction attribute (RFC 3264 §5.1); `SendRecv` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sendrecv" => Self::SendRecv,
            "sendonly" => Self::SendOnly,
            "recvonly" => Self::RecvOnly,
            "inactive" => Self::Inactive,
            _ => return None,
        })
    }

    /// Whether the party that wrote this SDP sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
}

/// One `a=rtpmap` entry or a static payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    /// `/2` in `m=audio 49170/2 RTP/AVP 0`, kept for printing.
    pub port_count: Option<u16>,
    pub proto: String,
    pub formats: Vec<String>,
    /// Lines after the m= line, in order, as (type, value).
    pub lines: Vec<(char, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// Session-level lines before the first m=, in order.
    pub session: Vec<(char, String)>,
    pub media: Vec<Media>,
}

fn parse_connection(v: &str) -> Result<IpAddr, SdpError> {
    let mut it = v.split_whitespace();
    let (Some("IN"), Some(_ty), Some(addr)) = (it.next(), it.next(), it.next()) else {
        return Err(SdpError::BadConnection(v.to_string()));
    };
    // Multicast forms carry /ttl; only the address matters here.
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse()
        .map_err(|_| SdpError::BadConnection(v.to_string()))
}

impl Sdp {
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut session = Vec::new();
        let mut media: Vec<Media> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(SdpError::BadLine(i + 1));
            }
            let ty = b[0] as char;
            let value = &line[2..];
            if i == 0 && ty != 'v' {
                return Err(SdpError::NoVersion);
            }
            if ty == 'm' {
                media.push(Self::parse_m(value)?);
            } else if let Some(m) = media.last_mut() {
                m.lines.push((ty, value.to_string()));
            } else {
                session.push((ty, value.to_string()));
            }
        }
        if session.first().map(|l| l.0) != Some('v') {
            return Err(SdpError::NoVersion);
        }
        let sdp = Sdp { session, media };
        // Validate every connection line now so later accessors can rely on them.
        for (t, v) in sdp
            .session
            .iter()
            .chain(sdp.media.iter().flat_map(|m| m.lines.iter()))
        {
            if *t == 'c' {
                parse_connection(v)?;
            }
        }
        Ok(sdp)
    }

    fn parse_m(v: &str) -> Result<Media, SdpError> {
        let mut it = v.split_whitespace();
        let kind = it.next().ok_or_else(|| SdpError::BadMedia(v.into()))?;
        let port_s = it.next().ok_or_else(|| SdpError::BadMedia(v.into()))?;
        let proto = it.next().ok_or_else(|| SdpError::BadMedia(v.into()))?;
        let (port, count) = match port_s.split_once('/') {
            Some((p, c)) => (p, Some(c)),
            None => (port_s, None),
        };
        let port = port.parse().map_err(|_| SdpError::BadMedia(v.into()))?;
        let port_count = match count {
            Some(c) => Some(c.parse().map_err(|_| SdpError::BadMedia(v.into()))?),
            None => None,
        };
        Ok(Media {
            kind: kind.to_string(),
            port,
            port_count,
            proto: proto.to_string(),
            formats: it.map(str::to_string).collect(),
            lines: Vec::new(),
        })
    }

    /// The connection address for media `i`: its own c= line, else the session's.
    pub fn connection(&self, i: usize) -> Option<IpAddr> {
        let m = self.media.get(i)?;
        m.lines
            .iter()
            .chain(self.session.iter())
            .find(|(t, _)| *t == 'c')
            .and_then(|(_, v)| parse_connection(v).ok())
    }

    /// Index of the first audio stream with a non-zero port.
    pub fn audio_index(&self) -> Option<usize> {
        self.media
            .iter()
            .position(|m| m.kind == "audio" && m.port != 0)
    }

    /// Direction of media `i` (media-level attribute over session-level).
    pub fn direction(&self, i: usize) -> Direction {
        let find = |lines: &[(char, String)]| {
            lines
                .iter()
                .filter(|(t, _)| *t == 'a')
                .find_map(|(_, v)| Direction::parse(v))
        };
        let Some(m) = self.media.get(i) else {
            return Direction::Inactive;
        };
        let dir = find(&m.lines)
            .or_else(|| find(&self.session))
            .unwrap_or(Direction::SendRecv);
        // RFC 3264 §8.4 (RFC 2543 hold): c=0.0.0.0 means the peer wants no media.
        if self.connection(i) == Some(IpAddr::from([0, 0, 0, 0])) {
            return match dir {
                Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
                d => d,
            };
        }
        dir
    }

    /// Payload types of media `i` with their encodings: rtpmap lines, then static types.
    pub fn rtpmaps(&self, i: usize) -> Vec<RtpMap> {
        let Some(m) = self.media.get(i) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in &m.formats {
            let Ok(pt) = f.parse::<u8>() else { continue };
            let mapped = m.lines.iter().find_map(|(t, v)| {
                if *t != 'a' {
                    return None;
                }
                let rest = v.strip_prefix("rtpmap:")?;
                let (p, enc) = rest.split_once(' ')?;
                if p.trim().parse::<u8>().ok()? != pt {
                    return None;
                }
                let mut parts = enc.trim().split('/');
                let name = parts.next()?.to_string();
                let rate = parts.next()?.parse().ok()?;
                Some(RtpMap {
                    payload_type: pt,
                    encoding: name,
                    clock_rate: rate,
                })
            });
            let entry = mapped.or_else(|| static_payload(pt));
            if let Some(e) = entry {
                out.push(e);
            }
        }
        out
    }

    /// Rewrites every connection address to `addr` and media `i`'s port to `port`, and
    /// replaces the origin address, so the peer sends media to tapir. RTCP attributes naming
    /// the old address/port (RFC 3605) are rewritten to `port + 1`.
    pub fn anchor(&mut self, i: usize, addr: IpAddr, port: u16) {
        let fam = if addr.is_ipv4() { "IP4" } else { "IP6" };
        let conn = format!("IN {fam} {addr}");
        let mut session_has_c = false;
        for (t, v) in &mut self.session {
            match t {
                'c' => {
                    *v = conn.clone();
                    session_has_c = true;
                }
                'o' => {
                    let parts: Vec<&str> = v.split_whitespace().collect();
                    if parts.len() == 6 {
                        *v = format!("{} {} {} IN {fam} {addr}", parts[0], parts[1], parts[2]);
                    }
                }
                _ => {}
            }
        }
        if let Some(m) = self.media.get_mut(i) {
            m.port = port;
            let mut has_c = false;
            for (t, v) in &mut m.lines {
                if *t == 'c' {
                    *v = conn.clone();
                    has_c = true;
                } else if *t == 'a' && v.starts_with("rtcp:") {
                    *v = format!("rtcp:{} IN {fam} {addr}", port.wrapping_add(1));
                }
            }
            if !has_c && !session_has_c {
                m.lines.insert(0, ('c', conn));
            }
        }
    }

    /// Sets the direction attribute of media `i`, replacing any present.
    pub fn set_direction(&mut self, i: usize, dir: Direction) {
        if let Some(m) = self.media.get_mut(i) {
            m.lines
                .retain(|(t, v)| !(*t == 'a' && Direction::parse(v).is_some()));
            m.lines.push(('a', dir.as_str().to_string()));
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

fn static_payload(pt: u8) -> Option<RtpMap> {
    let (name, rate) = match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    };
    Some(RtpMap {
        payload_type: pt,
        encoding: name.to_string(),
        clock_rate: rate,
    })
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(512);
        for (t, v) in &self.session {
            let _ = write!(s, "{t}={v}\r\n");
        }
        for m in &self.media {
            let _ = write!(s, "m={} {}", m.kind, m.port);
            if let Some(c) = m.port_count {
                let _ = write!(s, "/{c}");
            }
            let _ = write!(s, " {}", m.proto);
            for fmt in &m.formats {
                let _ = write!(s, " {fmt}");
            }
            s.push_str("\r\n");
            for (t, v) in &m.lines {
                let _ = write!(s, "{t}={v}\r\n");
            }
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendonly\r\nm=video 0 RTP/AVP 31\r\n";

    #[test]
    fn reads_media() {
        let s = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(s.audio_index(), Some(0));
        assert_eq!(s.connection(0), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(s.direction(0), Direction::SendOnly);
        let maps = s.rtpmaps(0);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[2].encoding, "telephone-event");
        assert_eq!(maps[1].encoding, "PCMA");
    }

    #[test]
    fn anchors_and_keeps_other_lines() {
        let mut s = Sdp::parse(OFFER.as_bytes()).unwrap();
        s.anchor(0, "2001:db8::1".parse().unwrap(), 30000);
        let out = String::from_utf8(s.to_bytes()).unwrap();
        assert!(out.contains("c=IN IP6 2001:db8::1\r\n"));
        assert!(out.contains("o=alice 2890844526 2890844526 IN IP6 2001:db8::1\r\n"));
        assert!(out.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"));
        assert!(out.contains("a=fmtp:101 0-15\r\n"));
        assert!(out.contains("m=video 0 RTP/AVP 31\r\n"));
        let again = Sdp::parse(out.as_bytes()).unwrap();
        assert_eq!(again.connection(0), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn hold_by_zero_address() {
        let s = Sdp::parse(b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        assert_eq!(s.direction(0), Direction::SendOnly);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Sdp::parse(b"hello").is_err());
        assert!(Sdp::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert!(Sdp::parse(b"v=0\r\nc=IN IP4 not-an-ip\r\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            if let Ok(mut s) = Sdp::parse(&data) {
                let _ = s.rtpmaps(0);
                let _ = s.direction(0);
                s.anchor(0, "127.0.0.1".parse().unwrap(), 1000);
                let _ = s.to_bytes();
            }
        }
    }
}
