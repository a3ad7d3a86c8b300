//! SDP from untrusted message bodies: parse, inspect every media section, anchor it the way
//! the B2BUA does, print, and parse the printed form again.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use sdp::{Direction, Sdp};

fuzz_target!(|data: &[u8]| {
    let Ok(mut sdp) = Sdp::parse(data) else {
        return;
    };
    let _ = sdp.audio_index();
    for i in 0..sdp.media.len() {
        let _ = sdp.connection(i);
        let _ = sdp.direction(i);
        let _ = sdp.rtpmaps(i);
    }
    let _ = Sdp::parse(&sdp.to_bytes()).expect("printed SDP reparses");
    if let Some(i) = sdp.audio_index() {
        sdp.anchor(i, IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
        sdp.set_direction(i, Direction::SendRecv);
        let again = Sdp::parse(&sdp.to_bytes()).expect("anchored SDP reparses");
        assert_eq!(again.connection(i), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
});
