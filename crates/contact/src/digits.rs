//! DTMF on the agent's channel, whichever way it arrives: RFC 4733 telephone-events when the
//! agent's leg negotiated them, else tones in the G.711 audio (in-band). SIP INFO digits reach
//! the contact as events of their own.

use std::time::Instant;

use media::codec::{Codec, Decoder, PayloadMap};
use media::dtmf::{InbandConfig, InbandDetector, Rfc4733Config, Rfc4733Detector};

/// The detector for one contact's agent channel. Starts in-band until the agent's SDP says
/// otherwise, as a phone that negotiated nothing sends tones.
pub struct DigitTap {
    rfc4733: Option<Rfc4733Detector>,
    inband: Option<InbandDetector>,
    codecs: PayloadMap,
    decoder: Decoder,
    pcm: Box<[i16; 2048]>,
}

impl Default for DigitTap {
    fn default() -> Self {
        Self::new()
    }
}

impl DigitTap {
    pub fn new() -> Self {
        Self {
            rfc4733: None,
            inband: Some(InbandDetector::new(InbandConfig::default())),
            codecs: PayloadMap::with_static(),
            decoder: Decoder::new(),
            pcm: Box::new([0; 2048]),
        }
    }

    /// The agent leg's payload types changed (SDP): choose the detector to run.
    pub fn set_codecs(&mut self, codecs: &[sdp::RtpMap]) {
        let mut map = PayloadMap::with_static();
        let mut te = None;
        for c in codecs {
            map.insert_rtpmap(c.payload_type, &c.encoding, c.clock_rate);
            if c.encoding.eq_ignore_ascii_case("telephone-event") {
                te = Some((c.payload_type, c.clock_rate));
            }
        }
        self.codecs = map;
        match te {
            Some((pt, rate)) => {
                self.rfc4733 = Some(Rfc4733Detector::new(Rfc4733Config {
                    payload_type: pt,
                    clock_rate: rate,
                    ..Default::default()
                }));
                self.inband = None;
            }
            None => {
                self.rfc4733 = None;
                self.inband = Some(InbandDetector::new(InbandConfig::default()));
            }
        }
    }

    /// Whether tones are looked for in the audio (no telephone-event negotiated).
    pub fn is_inband(&self) -> bool {
        self.inband.is_some()
    }

    /// One RTP datagram from the agent's leg; detected digits go to `out`.
    pub fn handle_packet(&mut self, at: Instant, data: &[u8], out: &mut Vec<char>) {
        let Ok(v) = media::rtp::RtpView::parse(data) else {
            return;
        };
        if let Some(d) = self.rfc4733.as_mut() {
            let _ = d.handle_rtp(at, &v);
        } else if let Some(d) = self.inband.as_mut() {
            let codec = self.codecs.get(v.payload_type());
            if matches!(codec, Codec::Pcmu | Codec::Pcma) {
                if let Ok(n) = self.decoder.decode(codec, v.payload(), &mut self.pcm[..]) {
                    d.push_samples(&self.pcm[..n]);
                }
            }
        }
        self.collect(at, out);
    }

    /// Lets the RFC 4733 detector end a digit whose end packets were lost.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<char>) {
        self.collect(now, out);
    }

    fn collect(&mut self, at: Instant, out: &mut Vec<char>) {
        if let Some(d) = self.rfc4733.as_mut() {
            d.handle_timeout(at);
            while let Some(e) = d.poll_event() {
                out.push(e.digit);
            }
        }
        if let Some(d) = self.inband.as_mut() {
            while let Some(e) = d.poll_event() {
                out.push(e.digit);
            }
        }
    }
}
