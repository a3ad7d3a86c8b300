//! Recording announcements: a prompt played to the customer before the call is connected.
//!
//! Inbound (the caller is the customer): tapir answers the caller's offer in a 183 with early
//! media anchored on its own port, the IO layer plays the prompt there, and only when it is
//! done does the INVITE go to the agent side. The codec is fixed by that 183 answer, so the
//! offer sent on leg B is narrowed to the same codec, and the 200 relayed to the caller
//! repeats the 183's answer (RFC 3264: one answer per offer).
//!
//! Outbound (the callee is the customer): when the callee answers, tapir acknowledges it, the
//! prompt plays to the callee, and the 200 is relayed to the agent afterwards.
//!
//! Calls marked as call-backs (`X-Tapir-Call-Type`, values configurable) are not announced, as
//! contact-centre products skip the prompt when the customer asked to be called back.

use std::net::IpAddr;

use sdp::{RtpMap, Sdp};
use sip::transaction::{Peer, TxKey};
use sip::{Request, Response};

/// What the route asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Prompt identifier for the IO layer (the WAV file's path in tapir).
    pub prompt: String,
    /// Collect the caller's consent after the prompt: 1 accepts, 2 refuses (RFC 4733).
    pub collect_consent: bool,
    /// `X-Tapir-Call-Type` values that skip the prompt.
    pub skip_call_types: Vec<String>,
}

/// Where an announced call stands.
pub(crate) enum Phase {
    /// Inbound: the INVITE for leg B waits for the prompt to end.
    Inbound { b_req: Request, b_peer: Peer },
    /// Outbound: the callee answered; the 200 for the agent waits for the prompt to end.
    Outbound { a_key: TxKey, response: Response },
}

/// Announcement state of a call.
#[derive(Default)]
pub(crate) struct CallAnnounce {
    /// Set while the prompt plays.
    pub phase: Option<Phase>,
    /// Outbound calls: the route's announcement, played when the callee answers.
    pub outbound: Option<AnnounceConfig>,
    /// Inbound calls: the answer sent to the caller in the 183, repeated in the 200.
    pub a_sdp: Option<Vec<u8>>,
}

/// The G.711 codec the prompt is sent in, and the telephone-event type for consent digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptCodec {
    pub payload_type: u8,
    /// `true` for PCMA (A-law), `false` for PCMU.
    pub alaw: bool,
    pub telephone_event: Option<u8>,
}

/// Picks the first G.711 codec of an offer (or answer) in its order of preference.
pub fn choose_codec(maps: &[RtpMap]) -> Option<PromptCodec> {
    let g711 = maps.iter().find(|m| {
        m.clock_rate == 8000
            && (m.encoding.eq_ignore_ascii_case("PCMA") || m.encoding.eq_ignore_ascii_case("PCMU"))
    })?;
    let te = maps
        .iter()
        .find(|m| m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate == 8000)
        .map(|m| m.payload_type);
    Some(PromptCodec {
        payload_type: g711.payload_type,
        alaw: g711.encoding.eq_ignore_ascii_case("PCMA"),
        telephone_event: te,
    })
}

/// Keeps only the chosen payload types in media `i` (and their rtpmap/fmtp lines).
pub fn narrow_offer(s: &mut Sdp, i: usize, codec: PromptCodec) {
    let keep = |pt: &str| {
        pt.parse::<u8>()
            .is_ok_and(|p| p == codec.payload_type || Some(p) == codec.telephone_event)
    };
    let Some(m) = s.media.get_mut(i) else { return };
    m.formats.retain(|f| keep(f));
    m.lines.retain(|(t, v)| {
        if *t != 'a' {
            return true;
        }
        for prefix in ["rtpmap:", "fmtp:"] {
            if let Some(rest) = v.strip_prefix(prefix) {
                let pt = rest.split_whitespace().next().unwrap_or("");
                return keep(pt);
            }
        }
        true
    });
}

/// tapir's own SDP answer for the announcement's early media (and the final answer).
pub fn answer(ip: IpAddr, port: u16, codec: PromptCodec, session: u64) -> Vec<u8> {
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let name = if codec.alaw { "PCMA" } else { "PCMU" };
    let mut s = format!(
        "v=0\r\no=tapir {session} {session} IN {fam} {ip}\r\ns=tapir\r\nc=IN {fam} {ip}\r\nt=0 0\r\n"
    );
    match codec.telephone_event {
        Some(te) => s.push_str(&format!(
            "m=audio {port} RTP/AVP {pt} {te}\r\na=rtpmap:{pt} {name}/8000\r\na=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n",
            pt = codec.payload_type
        )),
        None => s.push_str(&format!(
            "m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\n",
            pt = codec.payload_type
        )),
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

    #[test]
    fn picks_first_g711_and_narrows() {
        let mut s = Sdp::parse(OFFER.as_bytes()).unwrap();
        let c = choose_codec(&s.rtpmaps(0)).unwrap();
        assert_eq!(
            c,
            PromptCodec {
                payload_type: 0,
                alaw: false,
                telephone_event: Some(101)
            }
        );
        narrow_offer(&mut s, 0, c);
        assert_eq!(s.media[0].formats, vec!["0", "101"]);
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(!text.contains("G722") && !text.contains("PCMA"), "{text}");
        assert!(text.contains("a=fmtp:101 0-15"));
    }

    #[test]
    fn answer_parses_back() {
        let c = PromptCodec {
            payload_type: 8,
            alaw: true,
            telephone_event: None,
        };
        let a = answer("127.0.0.1".parse().unwrap(), 30000, c, 7);
        let s = Sdp::parse(&a).unwrap();
        assert_eq!(s.media[0].port, 30000);
        assert_eq!(s.rtpmaps(0)[0].encoding, "PCMA");
        assert!(choose_codec(&[RtpMap {
            payload_type: 9,
            encoding: "G722".into(),
            clock_rate: 8000
        }])
        .is_none());
    }
}
