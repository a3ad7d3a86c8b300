//! SIP parsing from untrusted bytes, datagram and stream rules, plus stream framing.
//!
//! Beyond "no panic", a message that parses must print to bytes that parse back to the same
//! message (the printer always writes the Content-Length of the body it holds), and the checks
//! run on a parsed message and the error answer built for a rejected one must not panic either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::Message;

fn without_length(m: &Message) -> Message {
    let mut m = m.clone();
    match &mut m {
        Message::Request(r) => r.headers.remove("Content-Length"),
        Message::Response(r) => r.headers.remove("Content-Length"),
    }
    m
}

fuzz_target!(|data: &[u8]| {
    for datagram in [true, false] {
        match sip::parse(data, datagram) {
            Ok(m) => {
                let printed = m.to_bytes();
                let again = sip::parse(&printed, false).expect("a printed message reparses");
                assert_eq!(without_length(&again), without_length(&m));
                assert_eq!(again.to_bytes(), printed);
                match &m {
                    Message::Request(r) => {
                        if let Err(rej) = sip::check_request_semantics(r, &["timer"]) {
                            let _ = rej.response(r).to_bytes();
                        }
                    }
                    Message::Response(r) => {
                        let _ = sip::check_response_semantics(r);
                    }
                }
            }
            Err(e) => {
                if let Some(r) = e.response() {
                    let _ = r.to_bytes();
                }
            }
        }
    }
    if let Ok(Some(n)) = sip::frame_len(data) {
        assert!(n <= data.len());
        let _ = sip::parse(&data[..n], false);
    }
});
