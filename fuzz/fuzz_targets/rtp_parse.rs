//! The zero-copy RTP view over untrusted datagrams: no panic, and the payload it finds lies
//! inside the packet after the fixed header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtp::{is_rtcp, RtpView};

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    if let Ok(v) = RtpView::parse(data) {
        let _ = (v.marker(), v.payload_type(), v.sequence(), v.timestamp(), v.ssrc());
        let payload = v.payload();
        assert!(payload.len() + 12 <= data.len());
        let offset = payload.as_ptr() as usize - data.as_ptr() as usize;
        assert!(offset >= 12 && offset + payload.len() <= data.len());
        assert_eq!(v.as_bytes(), data);
    }
});
