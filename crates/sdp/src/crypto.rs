//! SDES (RFC 4568): the `a=crypto` attribute that carries SRTP master keys in SDP, and how a
//! media stream is secured: plain RTP, SRTP keyed by SDES (which tapir can terminate), or
//! keyed in the media path by DTLS-SRTP or ZRTP (which it cannot decrypt).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use srtp::{Keying, MasterKey, Mki, Suite};
use thiserror::Error;

use crate::Sdp;

/// Standard alphabet; padding written, and accepted when present or absent (some phones
/// leave it out).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an `a=crypto` line cannot be used. The text is fit for a 488 reason phrase.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("a=crypto is not 'tag suite inline:key': {0}")]
    Malformed(String),
    #[error("a=crypto tag {0} is not 1 to 9 digits")]
    BadTag(String),
    #[error("unknown crypto suite {0}")]
    UnknownSuite(String),
    #[error("key method {0} is not inline")]
    KeyMethod(String),
    #[error("inline key is not base64")]
    BadBase64,
    #[error("{suite} needs {expected} bytes of key and salt, not {got}")]
    KeyLength {
        suite: Suite,
        expected: usize,
        got: usize,
    },
    #[error("more than one master key in one a=crypto line is not supported")]
    MultipleKeys,
    #[error("bad key lifetime {0}")]
    BadLifetime(String),
    #[error("MKI {0} is not supported (1 to 4 bytes)")]
    Mki(String),
    #[error("session parameter {0} is not supported")]
    SessionParam(String),
}

/// One `a=crypto` line: a tag, a suite and one master key with its lifetime and MKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub keying: Keying,
}

impl Crypto {
    pub fn suite(&self) -> Suite {
        self.keying.master.suite()
    }

    /// Parses the value after `crypto:`.
    pub fn parse(value: &str) -> Result<Self, CryptoError> {
        let mut it = value.split_ascii_whitespace();
        let (Some(tag), Some(suite), Some(params)) = (it.next(), it.next(), it.next()) else {
            return Err(CryptoError::Malformed(value.to_string()));
        };
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::BadTag(tag.to_string()));
        }
        let tag = tag.parse().expect("1 to 9 digits");
        let suite =
            Suite::from_name(suite).ok_or_else(|| CryptoError::UnknownSuite(suite.to_string()))?;
        if params.contains(';') {
            return Err(CryptoError::MultipleKeys);
        }
        let info = params
            .strip_prefix("inline:")
            .ok_or_else(|| CryptoError::KeyMethod(params.split(':').next().unwrap_or("").into()))?;
        let mut parts = info.split('|');
        let key = B64
            .decode(parts.next().unwrap_or(""))
            .map_err(|_| CryptoError::BadBase64)?;
        let master = MasterKey::new(suite, &key).map_err(|_| CryptoError::KeyLength {
            suite,
            expected: suite.master_len(),
            got: key.len(),
        })?;
        let mut keying = Keying::new(master);
        for (i, p) in parts.enumerate() {
            if let Some((v, len)) = p.split_once(':') {
                let bad = || CryptoError::Mki(p.to_string());
                let (Ok(v), Ok(len)) = (v.parse::<u64>(), len.parse::<usize>()) else {
                    return Err(bad());
                };
                if keying.mki.is_some() {
                    return Err(bad());
                }
                keying.mki = Some(Mki::new(v, len).map_err(|_| bad())?);
            } else if i == 0 {
                keying.lifetime = Some(parse_lifetime(p)?);
            } else {
                return Err(CryptoError::Malformed(value.to_string()));
            }
        }
        for sp in it {
            // KDR=0 is the default key derivation rate; WSH is only a window-size hint.
            if sp == "KDR=0" || sp.starts_with("WSH=") {
                continue;
            }
            return Err(CryptoError::SessionParam(sp.to_string()));
        }
        Ok(Self { tag, keying })
    }

    /// The value after `crypto:`, as [`Crypto::parse`] reads it.
    pub fn to_value(&self) -> String {
        let mut s = format!(
            "{} {} inline:{}",
            self.tag,
            self.suite(),
            B64.encode(self.keying.master.as_bytes())
        );
        if let Some(l) = self.keying.lifetime {
            if l.is_power_of_two() {
                s.push_str(&format!("|2^{}", l.trailing_zeros()));
            } else {
                s.push_str(&format!("|{l}"));
            }
        }
        if let Some(m) = self.keying.mki {
            s.push_str(&format!("|{}:{}", m.value(), m.size()));
        }
        s
    }
}

fn parse_lifetime(p: &str) -> Result<u64, CryptoError> {
    let bad = || CryptoError::BadLifetime(p.to_string());
    let v = match p.strip_prefix("2^") {
        Some(e) => {
            let e: u32 = e.parse().map_err(|_| bad())?;
            if e > 48 {
                return Err(bad());
            }
            1u64 << e
        }
        None => p.parse().map_err(|_| bad())?,
    };
    if v == 0 {
        return Err(bad());
    }
    Ok(v)
}

/// How one media stream's packets are protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// RTP/AVP(F) with no keying: plain RTP.
    Plain,
    /// SDES keying: the stream's `a=crypto` lines in order, each parsed or with the reason
    /// it cannot be used. `savp` is whether the m= line says RTP/SAVP(F); crypto lines on an
    /// RTP/AVP line are an offer of SRTP that plain RTP may answer ("best effort").
    Sdes {
        savp: bool,
        lines: Vec<Result<Crypto, CryptoError>>,
    },
    /// DTLS-SRTP: a UDP/TLS profile or a certificate fingerprint; keys are agreed in the
    /// media path, so tapir cannot decrypt.
    Dtls,
    /// ZRTP (RFC 6189, `a=zrtp-hash`): keys are agreed in the media path as well.
    Zrtp,
    /// RTP/SAVP(F) without any keying tapir can see.
    NoKeys,
}

impl Security {
    /// The first usable crypto line, if any.
    pub fn first_usable(&self) -> Option<&Crypto> {
        match self {
            Self::Sdes { lines, .. } => lines.iter().find_map(|l| l.as_ref().ok()),
            _ => None,
        }
    }

    /// Why the stream cannot be decrypted, or `None` when it can (or is plain).
    pub fn undecryptable(&self) -> Option<String> {
        match self {
            Self::Plain => None,
            Self::Sdes { savp, lines } => {
                if !savp || self.first_usable().is_some() {
                    return None;
                }
                Some(match lines.first() {
                    Some(Err(e)) => e.to_string(),
                    _ => "no a=crypto line".to_string(),
                })
            }
            Self::Dtls => Some("DTLS-SRTP is not supported".into()),
            Self::Zrtp => Some("ZRTP is not supported".into()),
            Self::NoKeys => Some("SRTP profile without a=crypto".into()),
        }
    }
}

fn is_savp(proto: &str) -> bool {
    proto == "RTP/SAVP" || proto == "RTP/SAVPF"
}

impl Sdp {
    fn attrs(&self, i: usize) -> impl Iterator<Item = &str> {
        self.media
            .get(i)
            .into_iter()
            .flat_map(|m| m.lines.iter())
            .chain(self.session.iter())
            .filter(|(t, _)| *t == 'a')
            .map(|(_, v)| v.as_str())
    }

    /// How media `i` is protected.
    pub fn security(&self, i: usize) -> Security {
        let Some(m) = self.media.get(i) else {
            return Security::Plain;
        };
        let proto = m.proto.as_str();
        if proto.contains("TLS") {
            return Security::Dtls;
        }
        let savp = is_savp(proto);
        if savp && self.attrs(i).any(|a| a.starts_with("fingerprint:")) {
            return Security::Dtls;
        }
        let lines: Vec<_> = m
            .lines
            .iter()
            .filter(|(t, _)| *t == 'a')
            .filter_map(|(_, v)| v.strip_prefix("crypto:"))
            .map(Crypto::parse)
            .collect();
        if !lines.is_empty() {
            return Security::Sdes { savp, lines };
        }
        if self.attrs(i).any(|a| a.starts_with("zrtp-hash:")) {
            return Security::Zrtp;
        }
        if savp {
            return Security::NoKeys;
        }
        Security::Plain
    }

    /// Makes media `i` plain RTP (`secure` false: RTP/AVP, no crypto) or SRTP keyed by
    /// `crypto` (RTP/SAVP), keeping the feedback profile (AVPF/SAVPF) as it was. Other keying
    /// (fingerprints, ZRTP hashes) is removed: it belonged to the other leg.
    pub fn set_crypto(&mut self, i: usize, crypto: &[Crypto]) {
        let Some(m) = self.media.get_mut(i) else {
            return;
        };
        let feedback = m.proto.ends_with('F');
        m.proto = match (crypto.is_empty(), feedback) {
            (true, false) => "RTP/AVP",
            (true, true) => "RTP/AVPF",
            (false, false) => "RTP/SAVP",
            (false, true) => "RTP/SAVPF",
        }
        .to_string();
        m.lines.retain(|(t, v)| {
            !(*t == 'a'
                && ["crypto:", "fingerprint:", "setup:", "zrtp-hash:"]
                    .iter()
                    .any(|p| v.starts_with(p)))
        });
        for c in crypto {
            m.lines.push(('a', format!("crypto:{}", c.to_value())));
        }
    }

    /// The m= profile of media `i`.
    pub fn proto(&self, i: usize) -> Option<&str> {
        self.media.get(i).map(|m| m.proto.as_str())
    }

    /// Sets the m= profile of media `i` (an answer repeats the offer's).
    pub fn set_proto(&mut self, i: usize, proto: &str) {
        if let Some(m) = self.media.get_mut(i) {
            m.proto = proto.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn parses_rfc4568_examples() {
        let c = Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4")).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite(), Suite::AesCm128HmacSha1_80);
        assert_eq!(c.keying.lifetime, Some(1 << 20));
        assert_eq!(c.keying.mki, Some(Mki::new(1, 4).unwrap()));
        assert_eq!(&c.keying.master.as_bytes()[..5], b"YS___");
        assert_eq!(
            c.to_value(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4")
        );
        let c = Crypto::parse(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY} KDR=0")).unwrap();
        assert_eq!((c.tag, c.suite()), (2, Suite::AesCm128HmacSha1_32));
        assert_eq!((c.keying.lifetime, c.keying.mki), (None, None));
        // An MKI without a lifetime, and a decimal lifetime.
        let c = Crypto::parse(&format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|7:1")).unwrap();
        assert_eq!(c.keying.mki.unwrap().value(), 7);
        let c = Crypto::parse(&format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1000")).unwrap();
        assert_eq!(c.keying.lifetime, Some(1000));
        assert!(c.to_value().ends_with("|1000"));
        // GCM carries 28 bytes; padding may be left out.
        let gcm = B64.encode([7u8; 28]);
        let c = Crypto::parse(&format!(
            "9 AEAD_AES_128_GCM inline:{}",
            gcm.trim_end_matches('=')
        ))
        .unwrap();
        assert_eq!(c.suite(), Suite::AeadAes128Gcm);
        assert_eq!(Crypto::parse(&c.to_value()).unwrap(), c);
    }

    #[test]
    fn says_why_a_line_is_refused() {
        let e = |v: &str| Crypto::parse(v).unwrap_err();
        assert_eq!(
            e("1 AES_CM_128_HMAC_SHA1_80"),
            CryptoError::Malformed("1 AES_CM_128_HMAC_SHA1_80".into())
        );
        assert_eq!(
            e(&format!("x AES_CM_128_HMAC_SHA1_80 inline:{KEY}")),
            CryptoError::BadTag("x".into())
        );
        assert_eq!(
            e(&format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")),
            CryptoError::BadTag("1234567890".into())
        );
        assert_eq!(
            e(&format!("1 F8_128_HMAC_SHA1_80 inline:{KEY}")),
            CryptoError::UnknownSuite("F8_128_HMAC_SHA1_80".into())
        );
        assert_eq!(
            e(&format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}")),
            CryptoError::UnknownSuite("AES_256_CM_HMAC_SHA1_80".into())
        );
        assert_eq!(
            e("1 AES_CM_128_HMAC_SHA1_80 uri:https://x"),
            CryptoError::KeyMethod("uri".into())
        );
        assert_eq!(
            e("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!"),
            CryptoError::BadBase64
        );
        let short = B64.encode([1u8; 16]);
        let err = e(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{short}"));
        assert_eq!(
            err,
            CryptoError::KeyLength {
                suite: Suite::AesCm128HmacSha1_80,
                expected: 30,
                got: 16
            }
        );
        assert_eq!(
            err.to_string(),
            "AES_CM_128_HMAC_SHA1_80 needs 30 bytes of key and salt, not 16"
        );
        assert_eq!(
            e(&format!("1 AEAD_AES_128_GCM inline:{KEY}")),
            CryptoError::KeyLength {
                suite: Suite::AeadAes128Gcm,
                expected: 28,
                got: 30
            }
        );
        assert_eq!(
            e(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4;inline:{KEY}|2^20|2:4"
            )),
            CryptoError::MultipleKeys
        );
        assert_eq!(
            e(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^49")),
            CryptoError::BadLifetime("2^49".into())
        );
        assert_eq!(
            e(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|0")),
            CryptoError::BadLifetime("0".into())
        );
        assert_eq!(
            e(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:5")),
            CryptoError::Mki("1:5".into())
        );
        assert_eq!(
            e(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|300:1")),
            CryptoError::Mki("300:1".into())
        );
        assert_eq!(
            e(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:x")),
            CryptoError::Mki("1:x".into())
        );
        assert_eq!(
            e(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP"
            )),
            CryptoError::SessionParam("UNENCRYPTED_SRTP".into())
        );
        assert_eq!(
            e(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=3")),
            CryptoError::SessionParam("KDR=3".into())
        );
    }

    fn sdp(media: &str) -> Sdp {
        Sdp::parse(
            format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{media}"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn tells_how_a_stream_is_secured() {
        assert_eq!(
            sdp("m=audio 4000 RTP/AVP 0\r\n").security(0),
            Security::Plain
        );
        let s = sdp(&format!("m=audio 4000 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"));
        let sec = s.security(0);
        assert_eq!(sec.first_usable().unwrap().tag, 2);
        assert_eq!(sec.undecryptable(), None);
        let s = sdp(&format!(
            "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        ));
        assert_eq!(
            s.security(0).undecryptable().unwrap(),
            "unknown crypto suite F8_128_HMAC_SHA1_80"
        );
        // Best effort: crypto on RTP/AVP may be answered in plain RTP, never undecryptable.
        let s = sdp(&format!(
            "m=audio 4000 RTP/AVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        ));
        assert!(matches!(s.security(0), Security::Sdes { savp: false, .. }));
        assert_eq!(s.security(0).undecryptable(), None);
        let s = sdp("m=audio 4000 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\n");
        assert_eq!(s.security(0), Security::Dtls);
        assert_eq!(
            s.security(0).undecryptable().unwrap(),
            "DTLS-SRTP is not supported"
        );
        let s = sdp("a=fingerprint:sha-256 AB:CD\r\nm=audio 4000 RTP/SAVP 0\r\n");
        assert_eq!(s.security(0), Security::Dtls);
        let s = sdp("m=audio 4000 RTP/AVP 0\r\na=zrtp-hash:1.10 abcd\r\n");
        assert_eq!(s.security(0), Security::Zrtp);
        assert_eq!(
            sdp("m=audio 4000 RTP/SAVP 0\r\n").security(0),
            Security::NoKeys
        );
    }

    #[test]
    fn rewrites_keying_and_profile() {
        let mut s = sdp(&format!("m=audio 4000 RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"));
        s.set_crypto(0, &[]);
        let out = s.to_string();
        assert!(out.contains("m=audio 4000 RTP/AVPF 0\r\n"));
        assert!(!out.contains("crypto"));
        assert!(out.contains("a=rtpmap:0 PCMU/8000"));
        let ours = Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")).unwrap();
        let mut s = sdp("m=audio 4000 RTP/AVP 0\r\na=zrtp-hash:1.10 ab\r\n");
        s.set_crypto(0, std::slice::from_ref(&ours));
        let out = s.to_string();
        assert!(out.contains("m=audio 4000 RTP/SAVP 0\r\n"), "{out}");
        assert!(!out.contains("zrtp"));
        let back = Sdp::parse(out.as_bytes()).unwrap();
        assert_eq!(back.security(0).first_usable(), Some(&ours));
        let mut s = back;
        s.set_proto(0, "RTP/AVP");
        assert_eq!(s.proto(0), Some("RTP/AVP"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(v in "[0-9A-Za-z_:|^;=+/ ]{0,80}") {
            if let Ok(c) = Crypto::parse(&v) {
                proptest::prop_assert_eq!(Crypto::parse(&c.to_value()).unwrap(), c);
            }
        }
    }
}
