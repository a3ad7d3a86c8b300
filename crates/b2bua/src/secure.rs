//! SRTP per leg, keyed by SDES (RFC 4568).
//!
//! tapir terminates SRTP on each leg on its own: it reads the key a party offers or answers
//! in `a=crypto`, strips it from the SDP it passes to the other leg, and writes there a fresh
//! key of its own instead. The relay then decrypts what arrives on a leg with that leg's key,
//! taps the plaintext to the recorder, and encrypts toward the other leg with tapir's key for
//! it ([`LegCrypto`] in a [`crate::MediaCommand::Crypto`]). So a trunk can speak SRTP while the
//! phones behind tapir stay on RTP, each leg as its route's [`RouteSrtp`] says.
//!
//! A stream tapir cannot decrypt (DTLS-SRTP, ZRTP, SRTP with no usable `a=crypto`) is either
//! refused with 488 or, when the route says `undecryptable = "relay"`, relayed untouched and
//! never recorded: a recording of ciphertext would be a file of noise.
//!
//! Key material comes from a [`KeySource`] the binary hands in (its random number
//! generator): this core never makes keys from a clock or a counter.

use sdp::{Crypto, Sdp};
use serde::Deserialize;
use srtp::{Keying, MasterKey, Suite};

use crate::Leg;

/// What a route does about SRTP on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SrtpMode {
    /// SRTP only: an offer from this leg without usable SDES keys gets 488, and tapir offers
    /// this leg SRTP.
    Require,
    /// Either: tapir accepts what this leg offers, and offers it what the other leg has.
    #[default]
    Allow,
    /// Plain RTP only: an RTP/SAVP offer from this leg gets 488; tapir offers it RTP.
    Off,
}

/// What happens to a stream tapir cannot decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Undecryptable {
    /// 488 Not Acceptable Here, with the reason.
    #[default]
    Refuse,
    /// Relay it untouched and record nothing (the recording is marked
    /// "encrypted: not recorded").
    Relay,
}

/// A route's SRTP settings (`srtp = { caller = "...", callee = "...", undecryptable = "..." }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSrtp {
    /// Leg A, toward the party that sent the INVITE.
    pub caller: SrtpMode,
    /// Leg B, toward the route's target.
    pub callee: SrtpMode,
    pub undecryptable: Undecryptable,
}

/// Random bytes for SRTP master keys.
pub trait KeySource: Send {
    fn fill(&mut self, buf: &mut [u8]);
}

/// What the relay does with one leg's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegCrypto {
    /// Plain RTP both ways.
    Plain,
    /// SRTP: what arrives is unprotected with `inbound` (the leg's own key; `None` until the
    /// leg has answered, and then every packet from it is dropped), what is sent is protected
    /// with `outbound` (tapir's key for the leg).
    Srtp {
        inbound: Option<Keying>,
        outbound: Keying,
    },
    /// Encrypted with keys tapir does not have: relayed untouched and never recorded.
    Opaque,
}

/// Whether an SDP body is an offer or an answer (RFC 3264), as the SIP message carrying it
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    Offer,
    Answer,
}

/// Why an offer cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpReject {
    /// Against the route's SRTP setting, or bad keying: 488 with this reason.
    Refuse(String),
    /// Encrypted in a way tapir cannot decrypt: 488 or relayed unrecorded, as the route says.
    Undecryptable(String),
}

impl SdpReject {
    pub fn reason(&self) -> &str {
        match self {
            Self::Refuse(r) | Self::Undecryptable(r) => r,
        }
    }
}

/// The suite tapir offers a leg when the other leg has none to follow: the one every SDES
/// implementation has (RFC 4568 §6.2).
const DEFAULT_SUITE: Suite = Suite::AesCm128HmacSha1_80;

#[derive(Debug, Default)]
struct LegSrtp {
    mode: SrtpMode,
    /// The leg is on SRTP.
    secure: bool,
    /// tapir's key toward the leg; kept across re-offers so a refresh does not rekey.
    local: Option<Crypto>,
    /// The leg's own key.
    remote: Option<Keying>,
    /// m= profile of the leg's last offer, which tapir's answer repeats.
    offer_proto: Option<String>,
    /// tapir offered this leg SRTP and waits for its answer.
    offered_secure: bool,
    /// Last state handed to the relay.
    sent: Option<LegCrypto>,
}

/// SRTP state of one call.
#[derive(Debug, Default)]
pub(crate) struct CallSrtp {
    /// Why the call's media is relayed encrypted and unrecorded.
    opaque: Option<String>,
    a: LegSrtp,
    b: LegSrtp,
}

fn new_key(suite: Suite, tag: u32, keys: &mut dyn KeySource) -> Crypto {
    let mut buf = [0u8; 30];
    let n = suite.master_len();
    keys.fill(&mut buf[..n]);
    let master = MasterKey::new(suite, &buf[..n]).expect("length of the suite");
    buf.fill(0);
    Crypto {
        tag,
        keying: Keying::new(master),
    }
}

impl CallSrtp {
    pub(crate) fn new(policy: RouteSrtp) -> Self {
        Self {
            opaque: None,
            a: LegSrtp {
                mode: policy.caller,
                ..LegSrtp::default()
            },
            b: LegSrtp {
                mode: policy.callee,
                ..LegSrtp::default()
            },
        }
    }

    pub(crate) fn opaque(&self) -> Option<&str> {
        self.opaque.as_deref()
    }

    /// From now on the call's media is relayed untouched and not recorded.
    pub(crate) fn set_opaque(&mut self, reason: String) {
        self.opaque = Some(reason);
    }

    fn leg_mut(&mut self, l: Leg) -> &mut LegSrtp {
        match l {
            Leg::A => &mut self.a,
            Leg::B => &mut self.b,
        }
    }

    /// Reads the keying of SDP `s` that came from leg `from`, and rewrites `s` for the other
    /// leg: its keying replaced by tapir's key for that leg, or removed. `keys` is asked only
    /// when a new key is needed; without one, SRTP cannot be terminated and the offer is
    /// refused.
    pub(crate) fn on_sdp(
        &mut self,
        from: Leg,
        kind: SdpKind,
        s: &mut Sdp,
        keys: Option<&mut (dyn KeySource + '_)>,
    ) -> Result<(), SdpReject> {
        let Some(i) = s.audio_index() else {
            return Ok(());
        };
        if self.opaque.is_some() {
            return Ok(());
        }
        let sec = s.security(i);
        let to = from.other();
        let mut keys = keys;
        let mut key_for = |suite: Suite, tag: u32| -> Result<Crypto, SdpReject> {
            match keys.as_deref_mut() {
                Some(k) => Ok(new_key(suite, tag, k)),
                None => Err(SdpReject::Refuse("SRTP keys unavailable".into())),
            }
        };
        match kind {
            SdpKind::Offer => {
                if let Some(reason) = sec.undecryptable() {
                    return Err(SdpReject::Undecryptable(reason));
                }
                let savp = matches!(sec, sdp::Security::Sdes { savp: true, .. });
                let usable = sec.first_usable().cloned();
                let f = self.leg_mut(from);
                let secure = match (&usable, f.mode) {
                    (Some(_), SrtpMode::Off) if savp => {
                        return Err(SdpReject::Refuse(
                            "SRTP is not allowed on this route".into(),
                        ))
                    }
                    (Some(_), SrtpMode::Off) => false,
                    (Some(_), _) => true,
                    (None, SrtpMode::Require) => {
                        return Err(SdpReject::Refuse(
                            "SRTP (SDES) is required on this route".into(),
                        ))
                    }
                    (None, _) => false,
                };
                let local = match &usable {
                    Some(c) if secure => match &f.local {
                        Some(l) if l.suite() == c.suite() && l.tag == c.tag => Some(l.clone()),
                        _ => Some(key_for(c.suite(), c.tag)?),
                    },
                    _ => None,
                };
                let f = self.leg_mut(from);
                f.offer_proto = s.proto(i).map(str::to_string);
                f.secure = secure;
                f.offered_secure = false;
                if secure {
                    f.remote = usable.as_ref().map(|c| c.keying.clone());
                    f.local = local;
                } else {
                    f.remote = None;
                }
                // Now the offer to the other leg.
                let suite = usable.as_ref().map_or(DEFAULT_SUITE, |c| c.suite());
                let t = self.leg_mut(to);
                let want = match t.mode {
                    SrtpMode::Require => true,
                    SrtpMode::Off => false,
                    SrtpMode::Allow => secure,
                };
                if want {
                    let keep = t.local.as_ref().is_some_and(|l| l.suite() == suite);
                    if !keep {
                        t.local = Some(key_for(suite, 1)?);
                    }
                    let t = self.leg_mut(to);
                    s.set_crypto(i, std::slice::from_ref(t.local.as_ref().expect("set")));
                } else {
                    s.set_crypto(i, &[]);
                }
                let t = self.leg_mut(to);
                t.offered_secure = want;
                if !want {
                    t.secure = false;
                }
            }
            SdpKind::Answer => {
                let usable = sec.first_usable().cloned();
                let f = self.leg_mut(from);
                if f.offered_secure {
                    let ours = f.local.as_ref().map(|l| (l.tag, l.suite()));
                    match usable {
                        Some(c) if Some((c.tag, c.suite())) == ours => {
                            f.secure = true;
                            f.remote = Some(c.keying);
                        }
                        Some(c) => {
                            tracing::warn!(
                                tag = c.tag,
                                suite = %c.suite(),
                                "SRTP answer names a crypto line tapir did not offer"
                            );
                            f.secure = false;
                            f.remote = None;
                        }
                        None => {
                            tracing::warn!(
                                reason = sec.undecryptable().unwrap_or_default(),
                                "SRTP offer answered without usable SDES keys"
                            );
                            f.secure = false;
                            f.remote = None;
                        }
                    }
                } else if sec.first_usable().is_some() {
                    tracing::debug!("crypto in an answer to a plain offer ignored");
                }
                let t = self.leg_mut(to);
                let proto = t.offer_proto.clone();
                if t.secure {
                    let local = t.local.clone().expect("secure leg has a key");
                    s.set_crypto(i, std::slice::from_ref(&local));
                } else {
                    s.set_crypto(i, &[]);
                }
                if let Some(p) = proto {
                    s.set_proto(i, &p);
                }
            }
        }
        Ok(())
    }

    /// Legs whose media handling changed since the last call, with the new handling.
    pub(crate) fn changes(&mut self) -> Vec<(Leg, LegCrypto)> {
        let mut out = Vec::new();
        let opaque = self.opaque.is_some();
        for leg in [Leg::A, Leg::B] {
            let l = self.leg_mut(leg);
            let now = if opaque {
                LegCrypto::Opaque
            } else if let (true, Some(local)) = (l.secure || l.offered_secure, &l.local) {
                LegCrypto::Srtp {
                    inbound: if l.secure { l.remote.clone() } else { None },
                    outbound: local.keying.clone(),
                }
            } else {
                LegCrypto::Plain
            };
            if l.sent.as_ref() != Some(&now) {
                l.sent = Some(now.clone());
                out.push((leg, now));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl KeySource for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    fn sdp(m: &str) -> Sdp {
        Sdp::parse(
            format!("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{m}")
                .as_bytes(),
        )
        .unwrap()
    }

    fn srtp_offer() -> Sdp {
        sdp(&format!(
            "m=audio 4000 RTP/SAVP 0\r\na=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:{KEY}\r\n"
        ))
    }

    fn policy(caller: SrtpMode, callee: SrtpMode) -> CallSrtp {
        CallSrtp::new(RouteSrtp {
            caller,
            callee,
            undecryptable: Undecryptable::Refuse,
        })
    }

    #[test]
    fn srtp_caller_plain_callee() {
        let mut c = policy(SrtpMode::Allow, SrtpMode::Off);
        let mut keys = Counter(0);
        let mut s = srtp_offer();
        c.on_sdp(Leg::A, SdpKind::Offer, &mut s, Some(&mut keys))
            .unwrap();
        // Leg B gets plain RTP.
        assert_eq!(s.proto(0), Some("RTP/AVP"));
        assert_eq!(s.security(0), sdp::Security::Plain);
        let ch = c.changes();
        let LegCrypto::Srtp { inbound, outbound } = &ch[0].1 else {
            panic!("{ch:?}")
        };
        assert_eq!(ch[0].0, Leg::A);
        assert_eq!(inbound.as_ref().unwrap().master.as_bytes()[..3], *b"YS_");
        assert_eq!(outbound.master.suite(), Suite::AesCm128HmacSha1_32);
        assert_eq!(
            outbound.master.as_bytes()[..3],
            [1, 2, 3],
            "from the key source"
        );
        assert_eq!(ch[1], (Leg::B, LegCrypto::Plain));
        // B answers plain; A gets tapir's key with the tag it chose, on RTP/SAVP.
        let mut ans = sdp("m=audio 5000 RTP/AVP 0\r\n");
        c.on_sdp(Leg::B, SdpKind::Answer, &mut ans, Some(&mut keys))
            .unwrap();
        assert_eq!(ans.proto(0), Some("RTP/SAVP"));
        let ours = ans.security(0).first_usable().cloned().unwrap();
        assert_eq!((ours.tag, ours.suite()), (5, Suite::AesCm128HmacSha1_32));
        assert_eq!(&ours.keying, outbound);
        assert!(c.changes().is_empty(), "nothing changed for the relay");
        // A re-INVITE with the same key keeps tapir's key: no rekey.
        let mut again = srtp_offer();
        c.on_sdp(Leg::A, SdpKind::Offer, &mut again, Some(&mut keys))
            .unwrap();
        assert!(c.changes().is_empty());
    }

    #[test]
    fn plain_caller_srtp_required_callee() {
        let mut c = policy(SrtpMode::Allow, SrtpMode::Require);
        let mut keys = Counter(0);
        let mut s = sdp("m=audio 4000 RTP/AVP 0 8\r\n");
        c.on_sdp(Leg::A, SdpKind::Offer, &mut s, Some(&mut keys))
            .unwrap();
        assert_eq!(s.proto(0), Some("RTP/SAVP"));
        let offered = s.security(0).first_usable().cloned().unwrap();
        assert_eq!(
            (offered.tag, offered.suite()),
            (1, Suite::AesCm128HmacSha1_80)
        );
        let ch = c.changes();
        assert_eq!(ch[0], (Leg::A, LegCrypto::Plain));
        assert_eq!(
            ch[1],
            (
                Leg::B,
                LegCrypto::Srtp {
                    inbound: None,
                    outbound: offered.keying.clone()
                }
            )
        );
        let mut ans = sdp(&format!(
            "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        ));
        c.on_sdp(Leg::B, SdpKind::Answer, &mut ans, Some(&mut keys))
            .unwrap();
        // A gets a plain answer in its own profile.
        assert_eq!(ans.proto(0), Some("RTP/AVP"));
        assert_eq!(ans.security(0), sdp::Security::Plain);
        let ch = c.changes();
        let LegCrypto::Srtp {
            inbound: Some(k), ..
        } = &ch[0].1
        else {
            panic!("{ch:?}")
        };
        assert_eq!((ch[0].0, k.master.as_bytes()[0]), (Leg::B, b'Y'));
    }

    #[test]
    fn offers_against_the_policy_are_refused_with_a_reason() {
        let mut keys = Counter(0);
        let mut c = policy(SrtpMode::Off, SrtpMode::Allow);
        let e = c.on_sdp(Leg::A, SdpKind::Offer, &mut srtp_offer(), Some(&mut keys));
        assert_eq!(
            e,
            Err(SdpReject::Refuse(
                "SRTP is not allowed on this route".into()
            ))
        );
        let mut c = policy(SrtpMode::Require, SrtpMode::Allow);
        let e = c.on_sdp(
            Leg::A,
            SdpKind::Offer,
            &mut sdp("m=audio 1 RTP/AVP 0\r\n"),
            Some(&mut keys),
        );
        assert_eq!(
            e.unwrap_err().reason(),
            "SRTP (SDES) is required on this route"
        );
        let mut c = policy(SrtpMode::Allow, SrtpMode::Allow);
        let bad = format!(
            "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            &KEY[..20]
        );
        let e = c.on_sdp(Leg::A, SdpKind::Offer, &mut sdp(&bad), Some(&mut keys));
        assert_eq!(
            e,
            Err(SdpReject::Undecryptable(
                "AES_CM_128_HMAC_SHA1_80 needs 30 bytes of key and salt, not 15".into()
            ))
        );
        let dtls = "m=audio 4000 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:sha-256 AB\r\n";
        let e = c.on_sdp(Leg::A, SdpKind::Offer, &mut sdp(dtls), Some(&mut keys));
        assert_eq!(
            e,
            Err(SdpReject::Undecryptable(
                "DTLS-SRTP is not supported".into()
            ))
        );
        // No key source: SRTP cannot be terminated.
        let e = c.on_sdp(Leg::A, SdpKind::Offer, &mut srtp_offer(), None);
        assert_eq!(e, Err(SdpReject::Refuse("SRTP keys unavailable".into())));
    }

    #[test]
    fn best_effort_srtp_on_avp_is_answered_in_kind() {
        let mut keys = Counter(0);
        let mut c = policy(SrtpMode::Allow, SrtpMode::Off);
        let mut s = sdp(&format!(
            "m=audio 4000 RTP/AVP 0\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        ));
        c.on_sdp(Leg::A, SdpKind::Offer, &mut s, Some(&mut keys))
            .unwrap();
        let mut ans = sdp("m=audio 5000 RTP/AVP 0\r\n");
        c.on_sdp(Leg::B, SdpKind::Answer, &mut ans, Some(&mut keys))
            .unwrap();
        // The answer keeps the offer's RTP/AVP and carries tapir's key.
        assert_eq!(ans.proto(0), Some("RTP/AVP"));
        assert_eq!(ans.security(0).first_usable().unwrap().tag, 2);
        // With SRTP off for the caller, the same offer is answered in plain RTP.
        let mut c = policy(SrtpMode::Off, SrtpMode::Off);
        let mut s = sdp(&format!(
            "m=audio 4000 RTP/AVP 0\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        ));
        c.on_sdp(Leg::A, SdpKind::Offer, &mut s, Some(&mut keys))
            .unwrap();
        let mut ans = sdp("m=audio 5000 RTP/AVP 0\r\n");
        c.on_sdp(Leg::B, SdpKind::Answer, &mut ans, Some(&mut keys))
            .unwrap();
        assert_eq!(ans.security(0), sdp::Security::Plain);
    }

    #[test]
    fn an_opaque_call_passes_sdp_through() {
        let mut c = policy(SrtpMode::Allow, SrtpMode::Allow);
        c.set_opaque("ZRTP is not supported".into());
        let mut s = sdp("m=audio 4000 RTP/AVP 0\r\na=zrtp-hash:1.10 ab\r\n");
        let before = s.clone();
        c.on_sdp(Leg::A, SdpKind::Offer, &mut s, None).unwrap();
        assert_eq!(s, before);
        assert_eq!(
            c.changes(),
            vec![(Leg::A, LegCrypto::Opaque), (Leg::B, LegCrypto::Opaque)]
        );
    }
}
