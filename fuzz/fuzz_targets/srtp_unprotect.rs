//! SRTP/SRTCP unprotect over untrusted datagrams: no panic for any suite, with or without an
//! MKI; a plaintext tapir protected comes back unchanged; and a protected packet with any one
//! byte changed is refused, never accepted as something else.
//!
//! Input: byte 0 chooses the suite, the MKI and RTP or RTCP; byte 1 the byte to corrupt (when
//! not 0xff); the rest is the datagram, unprotected as it is and, when it is a plausible RTP
//! or RTCP packet, also protected first.

#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp::{Context, Keying, MasterKey, Mki, Suite, MAX_RTCP_TRAILER};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (mode, corrupt, packet) = (data[0], data[1], &data[2..]);
    let suite = Suite::ALL[usize::from(mode & 3) % 3];
    let master = MasterKey::new(suite, &[0x5a; 30][..suite.master_len()]).unwrap();
    let mut keying = Keying::new(master);
    if mode & 4 != 0 {
        keying.mki = Some(Mki::new(u64::from(mode >> 4), 1 + usize::from(mode >> 6)).unwrap());
    }
    let rtcp = mode & 8 != 0;
    let mut rx = Context::new(&keying).unwrap();
    let mut tx = Context::new(&keying).unwrap();

    let mut buf = packet.to_vec();
    let r = if rtcp { rx.unprotect_rtcp(&mut buf) } else { rx.unprotect_rtp(&mut buf) };
    if let Ok(n) = r {
        assert!(n <= packet.len());
    }

    let mut buf = packet.to_vec();
    buf.resize(packet.len() + MAX_RTCP_TRAILER, 0);
    let p = if rtcp {
        tx.protect_rtcp(&mut buf, packet.len())
    } else {
        tx.protect_rtp(&mut buf, packet.len())
    };
    let Ok(n) = p else { return };
    buf.truncate(n);
    let mut rx = Context::new(&keying).unwrap();
    if usize::from(corrupt) < n {
        buf[usize::from(corrupt)] ^= 0x01;
        let r = if rtcp { rx.unprotect_rtcp(&mut buf) } else { rx.unprotect_rtp(&mut buf) };
        assert!(r.is_err(), "a changed byte was accepted");
    } else {
        let r = if rtcp { rx.unprotect_rtcp(&mut buf) } else { rx.unprotect_rtp(&mut buf) };
        let m = r.expect("what tapir protected unprotects");
        assert_eq!(&buf[..m], packet);
    }
});
