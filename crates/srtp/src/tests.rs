use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const B3_MASTER: &str = "E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6";
const GCM_MASTER: &str = "000102030405060708090a0b0c0d0e0f 517569642070726f2071756f";

fn keying(suite: Suite) -> Keying {
    let m = if suite.is_aead() {
        GCM_MASTER
    } else {
        B3_MASTER
    };
    Keying::new(MasterKey::new(suite, &hex(m)).unwrap())
}

fn pair(k: &Keying) -> (Context, Context) {
    (Context::new(k).unwrap(), Context::new(k).unwrap())
}

/// An RTP packet of `payload` bytes in a buffer with room for any trailer; returns the
/// buffer and the packet's length.
fn rtp(seq: u16, ssrc: u32, payload: usize) -> (Vec<u8>, usize) {
    let mut b = vec![0u8; 12 + payload + MAX_RTP_TRAILER];
    b[0] = 0x80;
    b[2..4].copy_from_slice(&seq.to_be_bytes());
    b[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    b[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for (i, x) in b[12..12 + payload].iter_mut().enumerate() {
        *x = (i as u8) ^ (seq as u8);
    }
    (b, 12 + payload)
}

fn protect(tx: &mut Context, seq: u16) -> Vec<u8> {
    let (mut b, len) = rtp(seq, 0x1234_5678, 160);
    let n = tx.protect_rtp(&mut b, len).unwrap();
    b.truncate(n);
    b
}

fn unprotect(rx: &mut Context, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut b = packet.to_vec();
    let n = rx.unprotect_rtp(&mut b)?;
    b.truncate(n);
    Ok(b)
}

// RFC 3711 appendix B.2: the AES-CM keystream of session key 2B7E... and session salt
// F0F1...FD, for SSRC 0 and index 0, at blocks 0, 1, 2 and 0xFEFF, 0xFF00, 0xFF01.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let s = Session::from_session_keys(
        Suite::AesCm128HmacSha1_80,
        &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
        &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
        &[0; 20],
        10,
    );
    let iv = s.cm_iv(0, 0);
    assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let Transform::Cm { aes, .. } = &s.transform else {
        unreachable!()
    };
    let mut stream = vec![0u8; 0xff02 * 16];
    Session::cm_crypt(aes, iv, &mut stream);
    let block = |i: usize| stream[i * 16..(i + 1) * 16].to_vec();
    assert_eq!(block(0x0000), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
    assert_eq!(block(0x0001), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
    assert_eq!(block(0x0002), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
    assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
    assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
    assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
}

// RFC 3711 appendix B.3: session keys derived from master key E1F9... and salt 0EC6....
#[test]
fn rfc3711_b3_key_derivation() {
    let m = MasterKey::new(Suite::AesCm128HmacSha1_80, &hex(B3_MASTER)).unwrap();
    let mut key = [0u8; 16];
    derive(&m, 0, &mut key);
    assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut salt = [0u8; 14];
    derive(&m, 2, &mut salt);
    assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut auth = [0u8; 20];
    derive(&m, 1, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
}

const RFC7714_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const RFC7714_SALT: &str = "517569642070726f2071756f";

fn rfc7714_context() -> Context {
    let s = || {
        Session::from_session_keys(
            Suite::AeadAes128Gcm,
            &hex(RFC7714_KEY),
            &hex(RFC7714_SALT),
            &[],
            16,
        )
    };
    Context::from_sessions(Suite::AeadAes128Gcm, s(), s())
}

const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
    20646976 69736120 696e2070 61727465 73207472 6573";
const RFC7714_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
    be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce";
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
    4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
const RFC7714_SRTCP: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
    6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade
    800005d4";

// RFC 7714 §16.1.1: AEAD_AES_128_GCM SRTP, ROC 0, sequence number 0xf17b.
#[test]
fn rfc7714_srtp_aes_128_gcm() {
    let plain = hex(RFC7714_RTP);
    let mut b = plain.clone();
    b.resize(plain.len() + MAX_RTP_TRAILER, 0);
    let mut tx = rfc7714_context();
    let n = tx.protect_rtp(&mut b, plain.len()).unwrap();
    assert_eq!(b[..n], hex(RFC7714_SRTP)[..]);
    assert_eq!(
        tx.rtp.gcm_rtp_iv(0x5501_a0b2, 0xf17b).to_vec(),
        hex("51753c6580c2726f20718414")
    );

    let mut rx = rfc7714_context();
    assert_eq!(unprotect(&mut rx, &hex(RFC7714_SRTP)).unwrap(), plain);

    // §16.1.2: a flipped bit anywhere (here in the tag) fails authentication.
    let mut bad = hex(RFC7714_SRTP);
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        unprotect(&mut rfc7714_context(), &bad),
        Err(SrtpError::AuthFailed)
    );
}

// RFC 7714 §17.1.1: AEAD_AES_128_GCM SRTCP, SRTCP index 0x5d4.
#[test]
fn rfc7714_srtcp_aes_128_gcm() {
    let plain = hex(RFC7714_RTCP);
    let mut b = plain.clone();
    b.resize(plain.len() + MAX_RTCP_TRAILER, 0);
    let mut tx = rfc7714_context();
    tx.stream_mut(0x4d61_7273).rtcp_sent = 0x5d3;
    let n = tx.protect_rtcp(&mut b, plain.len()).unwrap();
    assert_eq!(b[..n], hex(RFC7714_SRTCP)[..]);
    assert_eq!(
        tx.rtcp.gcm_rtcp_iv(0x4d61_7273, 0x5d4).to_vec(),
        hex("517524055203726f207170bb")
    );

    let mut rx = rfc7714_context();
    let mut b = hex(RFC7714_SRTCP);
    let n = rx.unprotect_rtcp(&mut b).unwrap();
    assert_eq!(b[..n], plain[..]);
    // The same packet again is a replay.
    let mut b = hex(RFC7714_SRTCP);
    assert_eq!(rx.unprotect_rtcp(&mut b), Err(SrtpError::Replayed));
}

/// Packets protected by libsrtp 2 (tests/libsrtp_vectors.py prints them): (plain, protected).
/// The CM suites use the B.3 master key, GCM the RFC 7714 key and salt as master key. RTP
/// sequence numbers 65534, 65535 (with a CSRC and a header extension), 0, 1: the rollover
/// counter moves to 1 in the middle. Then two SRTCP packets, indexes 1 and 2.
const LIBSRTP_CM80: [(&str, &str); 6] = [
    ("8000fffe009ffec0deadbeeffeff000102030405060708090a0b0c0d0e0f1011", "8000fffe009ffec0deadbeef4936d5539da5c32e0ba0de0be4dd1450e9f3b6f31a10254d4eea4a843b72"),
    ("9100ffff009fff60deadbeef01020304bede000110aa0000ff000102030405060708090a0b0c0d0e0f101112", "9100ffff009fff60deadbeef01020304bede000110aa0000432240386942963b15895338c98d4d4d28fbe9db3ceca87f984e236339eb"),
    ("8000000000000000deadbeef000102030405060708090a0b0c0d0e0f10111213", "8000000000000000deadbeef491dd5a221c3259d77e117b2464cbe5b4d5aee3fa6d45ffa51455106c839"),
    ("80000001000000a0deadbeef0102030405060708090a0b0c0d0e0f1011121314", "80000001000000a0deadbeefd48bfc5a4b53dda03debad409619dae596ab5bd4b55df33131f886a76522"),
    ("80c80006deadbeef0000000100000002000000030000000400000005", "80c80006deadbeef1ffa1594870f8d8ef1f18915acd0e676f22ff13380000001785b5c47786eda53ccfd"),
    ("80c80006deadbeef0000000100000002000000030000000400000005", "80c80006deadbeefaa0a95f1ca38669034b244c926cf233fd3ebf82d800000027fa6b387713df1022ed9"),
];
const LIBSRTP_CM32: [(&str, &str); 6] = [
    ("8000fffe009ffec0deadbeeffeff000102030405060708090a0b0c0d0e0f1011", "8000fffe009ffec0deadbeef4936d5539da5c32e0ba0de0be4dd1450e9f3b6f31a10254d"),
    ("9100ffff009fff60deadbeef01020304bede000110aa0000ff000102030405060708090a0b0c0d0e0f101112", "9100ffff009fff60deadbeef01020304bede000110aa0000432240386942963b15895338c98d4d4d28fbe9db3ceca87f"),
    ("8000000000000000deadbeef000102030405060708090a0b0c0d0e0f10111213", "8000000000000000deadbeef491dd5a221c3259d77e117b2464cbe5b4d5aee3fa6d45ffa"),
    ("80000001000000a0deadbeef0102030405060708090a0b0c0d0e0f1011121314", "80000001000000a0deadbeefd48bfc5a4b53dda03debad409619dae596ab5bd4b55df331"),
    ("80c80006deadbeef0000000100000002000000030000000400000005", "80c80006deadbeef1ffa1594870f8d8ef1f18915acd0e676f22ff13380000001785b5c47786eda53ccfd"),
    ("80c80006deadbeef0000000100000002000000030000000400000005", "80c80006deadbeefaa0a95f1ca38669034b244c926cf233fd3ebf82d800000027fa6b387713df1022ed9"),
];
const LIBSRTP_GCM: [(&str, &str); 6] = [
    ("8000fffe009ffec0deadbeeffeff000102030405060708090a0b0c0d0e0f1011", "8000fffe009ffec0deadbeefcff6130a61916ce400ef203a7be438f2830f6d5faa5df792df71409514d1464bc6864e8d"),
    ("9100ffff009fff60deadbeef01020304bede000110aa0000ff000102030405060708090a0b0c0d0e0f101112", "9100ffff009fff60deadbeef01020304bede000110aa0000d846219a4d5aca68a1d9d195f05e891f44c1caab7cf0d1f995479c107342bc5a08c38dca"),
    ("8000000000000000deadbeef000102030405060708090a0b0c0d0e0f10111213", "8000000000000000deadbeefcf130d060e92f7d5bc09bc19459df8c72b1bbc3081c5902e197f09642b3aa898fe777013"),
    ("80000001000000a0deadbeef0102030405060708090a0b0c0d0e0f1011121314", "80000001000000a0deadbeefb4166adfbdd8cb98d2f4719611f44d60d2a2bb38fe2b1ebeabef3e28893e5b0136a2eae5"),
    ("80c80006deadbeef0000000100000002000000030000000400000005", "80c80006deadbeef42624973999e7bc3813e607a2369d6b385fcfcd38598e4b74c625d98eb741fd63d66f38580000001"),
    ("80c80006deadbeef0000000100000002000000030000000400000005", "80c80006deadbeefd23e09c72715c1c14b39f13cea480361aa82db6e05c95f5ef783dd2c57f42af09a96c70f80000002"),
];

#[test]
fn interoperates_with_libsrtp() {
    for (suite, vectors) in [
        (Suite::AesCm128HmacSha1_80, LIBSRTP_CM80),
        (Suite::AesCm128HmacSha1_32, LIBSRTP_CM32),
        (Suite::AeadAes128Gcm, LIBSRTP_GCM),
    ] {
        let (mut tx, mut rx) = pair(&keying(suite));
        for (i, (plain, protected)) in vectors.iter().enumerate() {
            let (plain, protected) = (hex(plain), hex(protected));
            let rtcp = i >= 4;
            let mut b = plain.clone();
            b.resize(plain.len() + MAX_RTCP_TRAILER, 0);
            let n = if rtcp {
                tx.protect_rtcp(&mut b, plain.len())
            } else {
                tx.protect_rtp(&mut b, plain.len())
            }
            .unwrap();
            assert_eq!(b[..n], protected[..], "{suite} protect #{i}");
            let mut b = protected.clone();
            let n = if rtcp {
                rx.unprotect_rtcp(&mut b)
            } else {
                rx.unprotect_rtp(&mut b)
            }
            .unwrap_or_else(|e| panic!("{suite} unprotect #{i}: {e}"));
            assert_eq!(b[..n], plain[..], "{suite} unprotect #{i}");
        }
        assert_eq!((rx.rtp_packets(), rx.rtcp_packets()), (4, 2));
    }
}

#[test]
fn round_trips_every_suite_with_and_without_mki() {
    for suite in Suite::ALL {
        for mki in [None, Some(Mki::new(7, 2).unwrap())] {
            let mut k = keying(suite);
            k.mki = mki;
            let (mut tx, mut rx) = pair(&k);
            for seq in [10u16, 11, 13, 12] {
                let (plain, len) = rtp(seq, 0x1234_5678, 160);
                let p = protect(&mut tx, seq);
                assert_eq!(
                    p.len(),
                    len + suite.rtp_tag_len() + mki.map_or(0, |m| m.size())
                );
                assert_ne!(p[12..len], plain[12..len], "payload is encrypted");
                assert_eq!(unprotect(&mut rx, &p).unwrap(), plain[..len]);
            }
            let sr = hex("80c80006000000630000000100000002000000030000000400000005");
            let mut b = sr.clone();
            b.resize(sr.len() + MAX_RTCP_TRAILER, 0);
            let n = tx.protect_rtcp(&mut b, sr.len()).unwrap();
            assert_eq!(n, sr.len() + tx.rtcp_trailer_len());
            let n = rx.unprotect_rtcp(&mut b[..n]).unwrap();
            assert_eq!(b[..n], sr[..]);
        }
    }
}

#[test]
fn mki_is_placed_and_checked() {
    let mut k = keying(Suite::AesCm128HmacSha1_80);
    k.mki = Some(Mki::new(0x0102_0304, 4).unwrap());
    let mut tx = Context::new(&k).unwrap();
    let p = protect(&mut tx, 1);
    // CM: MKI, then the 10-byte tag.
    assert_eq!(p[p.len() - 14..p.len() - 10], [1, 2, 3, 4]);
    k.mki = Some(Mki::new(0x0102_0305, 4).unwrap());
    assert_eq!(
        unprotect(&mut Context::new(&k).unwrap(), &p),
        Err(SrtpError::BadMki)
    );

    let mut k = keying(Suite::AeadAes128Gcm);
    k.mki = Some(Mki::new(9, 1).unwrap());
    let mut tx = Context::new(&k).unwrap();
    let p = protect(&mut tx, 1);
    // GCM: the tag, then the MKI (RFC 7714 §8).
    assert_eq!(p[p.len() - 1], 9);
    k.mki = Some(Mki::new(8, 1).unwrap());
    assert_eq!(
        unprotect(&mut Context::new(&k).unwrap(), &p),
        Err(SrtpError::BadMki)
    );

    assert_eq!(
        Mki::new(256, 1),
        Err(SrtpError::MkiTooLarge { value: 256, len: 1 })
    );
    assert_eq!(Mki::new(1, 5), Err(SrtpError::BadMkiLength(5)));
    assert_eq!(Mki::new(1, 0), Err(SrtpError::BadMkiLength(0)));
    assert_eq!(Mki::new(0xabcd, 3).unwrap().value(), 0xabcd);
}

#[test]
fn replays_are_refused_and_reordering_within_the_window_is_not() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(&keying(suite));
        let packets: Vec<Vec<u8>> = (0..300u16).map(|s| protect(&mut tx, 1000 + s)).collect();
        // 0, 2, 1: out of order within the window is fine.
        unprotect(&mut rx, &packets[0]).unwrap();
        unprotect(&mut rx, &packets[2]).unwrap();
        unprotect(&mut rx, &packets[1]).unwrap();
        assert_eq!(unprotect(&mut rx, &packets[1]), Err(SrtpError::Replayed));
        assert_eq!(unprotect(&mut rx, &packets[2]), Err(SrtpError::Replayed));
        for p in &packets[3..200] {
            unprotect(&mut rx, p).unwrap();
        }
        // Highest is 199: 199 - 127 = 72 is the oldest the window still knows.
        assert_eq!(unprotect(&mut rx, &packets[71]), Err(SrtpError::TooOld));
        assert_eq!(unprotect(&mut rx, &packets[72]), Err(SrtpError::Replayed));
        // A gap: 250 arrives before 200..250, which are still accepted afterwards.
        unprotect(&mut rx, &packets[250]).unwrap();
        for p in &packets[200..250] {
            unprotect(&mut rx, p).unwrap();
        }
        assert_eq!(unprotect(&mut rx, &packets[250]), Err(SrtpError::Replayed));
    }
}

#[test]
fn a_forged_packet_moves_nothing() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(&keying(suite));
        let first = protect(&mut tx, 100);
        let second = protect(&mut tx, 101);
        unprotect(&mut rx, &first).unwrap();
        // Far ahead and with a broken tag: if it were accepted into the state, the window
        // would jump and the genuine 101 would be refused as too old, or the ROC would move.
        let mut forged = protect(&mut tx, 40000);
        let last = forged.len() - 1;
        forged[last] ^= 0x80;
        assert_eq!(unprotect(&mut rx, &forged), Err(SrtpError::AuthFailed));
        let mut payload = protect(&mut tx, 102);
        payload[20] ^= 1;
        assert_eq!(unprotect(&mut rx, &payload), Err(SrtpError::AuthFailed));
        unprotect(&mut rx, &second).unwrap();
        assert_eq!(rx.rtp_packets(), 2);
    }
}

#[test]
fn rollover_counter_follows_wraps_and_reordering_across_them() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(&keying(suite));
        let seqs: Vec<u16> = (65500u32..65536 + 100).map(|s| s as u16).collect();
        let packets: Vec<Vec<u8>> = seqs.iter().map(|&s| protect(&mut tx, s)).collect();
        // Deliver with neighbours swapped, so 0 arrives before 65535.
        let mut order: Vec<usize> = (0..packets.len()).collect();
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        for i in order {
            let (plain, len) = rtp(seqs[i], 0x1234_5678, 160);
            assert_eq!(
                unprotect(&mut rx, &packets[i]).unwrap(),
                plain[..len],
                "seq {}",
                seqs[i]
            );
        }
        let i = rx.find(0x1234_5678).unwrap();
        assert_eq!(rx.streams[i].rtp.highest, (1 << 16) | 99, "ROC 1, seq 99");
        // Packets from before the wrap, still in the window, are replays; older ones too old.
        assert_eq!(unprotect(&mut rx, &packets[30]), Err(SrtpError::Replayed));
        assert_eq!(unprotect(&mut rx, &packets[0]), Err(SrtpError::TooOld));
    }
}

#[test]
fn index_estimation_matches_rfc3711_appendix_a() {
    let at = |roc: u64, seq: u16| (roc << 16) | u64::from(seq);
    assert_eq!(estimate_index(at(5, 100), 101), at(5, 101));
    assert_eq!(estimate_index(at(5, 100), 65000), at(4, 65000));
    assert_eq!(estimate_index(at(5, 65000), 10), at(6, 10));
    assert_eq!(estimate_index(at(5, 65000), 40000), at(5, 40000));
    assert_eq!(estimate_index(at(5, 30000), 64000), at(4, 64000));
    assert_eq!(estimate_index(at(5, 30000), 62000), at(5, 62000));
    // No ROC below zero: before the first wrap a high number is simply ahead.
    assert_eq!(estimate_index(at(0, 100), 65000), at(0, 65000));
}

#[test]
fn the_key_lifetime_is_enforced() {
    for suite in Suite::ALL {
        let mut k = keying(suite);
        k.lifetime = Some(3);
        let (mut tx, mut rx) = pair(&k);
        let packets: Vec<Vec<u8>> = (1..=3).map(|s| protect(&mut tx, s)).collect();
        let (mut b, len) = rtp(4, 1, 20);
        assert_eq!(tx.protect_rtp(&mut b, len), Err(SrtpError::KeyExpired));
        for p in &packets {
            unprotect(&mut rx, p).unwrap();
        }
        let mut longer = Context::new(&keying(suite)).unwrap();
        for s in 1..=4 {
            protect(&mut longer, s);
        }
        assert_eq!(
            unprotect(&mut rx, &protect(&mut longer, 5)),
            Err(SrtpError::KeyExpired)
        );
        k.lifetime = Some(0);
        assert_eq!(Context::new(&k).err(), Some(SrtpError::BadLifetime));
    }
}

#[test]
fn bad_input_is_an_error() {
    assert_eq!(
        MasterKey::new(Suite::AesCm128HmacSha1_80, &[0; 28]),
        Err(SrtpError::BadKeyLength {
            expected: 30,
            got: 28
        })
    );
    assert_eq!(
        MasterKey::new(Suite::AeadAes128Gcm, &[0; 30]),
        Err(SrtpError::BadKeyLength {
            expected: 28,
            got: 30
        })
    );
    let (mut tx, mut rx) = pair(&keying(Suite::AesCm128HmacSha1_80));
    let (mut b, len) = rtp(1, 1, 20);
    assert_eq!(
        tx.protect_rtp(&mut b[..len + 9], len),
        Err(SrtpError::NoRoom)
    );
    let too_long = b.len() + 1;
    assert_eq!(tx.protect_rtp(&mut b, too_long), Err(SrtpError::NoRoom));
    assert_eq!(rx.unprotect_rtp(&mut [0x80; 11]), Err(SrtpError::TooShort));
    assert_eq!(
        rx.unprotect_rtp(&mut [0x40; 40]),
        Err(SrtpError::BadVersion)
    );
    // 15 CSRCs announced in a 40-byte packet.
    let mut csrc = [0u8; 40];
    csrc[0] = 0x8f;
    assert_eq!(rx.unprotect_rtp(&mut csrc), Err(SrtpError::Truncated));
    // Header alone, no room for the tag.
    assert_eq!(rx.unprotect_rtp(&mut b[..12]), Err(SrtpError::TooShort));
    assert_eq!(rx.unprotect_rtcp(&mut [0x80; 20]), Err(SrtpError::TooShort));
    assert_eq!(
        rx.unprotect_rtcp(&mut [0x00; 40]),
        Err(SrtpError::BadVersion)
    );
    assert_eq!(
        rx.unprotect_rtcp(&mut [0x80; 40]),
        Err(SrtpError::AuthFailed)
    );
    assert!(format!("{:?}", keying(Suite::AeadAes128Gcm).master).contains("AEAD_AES_128_GCM"));
    assert!(!format!("{:?}", keying(Suite::AeadAes128Gcm).master).contains("0102"));
}

#[test]
fn unencrypted_srtcp_is_authenticated_and_left_as_is() {
    // E = 0: the sender chose not to encrypt; the tag still covers packet and index.
    let sr = hex("80c80006000000630000000100000002000000030000000400000005");
    let e_index = 7u32;
    for suite in Suite::ALL {
        let mut rx = Context::new(&keying(suite)).unwrap();
        let mut p = sr.clone();
        match &rx.rtcp.transform {
            Transform::Cm { hmac, .. } => {
                p.extend_from_slice(&e_index.to_be_bytes());
                let mut mac = hmac.clone();
                mac.update(&p);
                p.extend_from_slice(&mac.finalize().into_bytes()[..10]);
            }
            Transform::Gcm(gcm) => {
                let mut aad = sr.clone();
                aad.extend_from_slice(&e_index.to_be_bytes());
                let iv = rx.rtcp.gcm_rtcp_iv(0x63, e_index);
                let tag = gcm
                    .encrypt_inout_detached(&iv.into(), &aad, (&mut [][..]).into())
                    .unwrap();
                p.extend_from_slice(&tag);
                p.extend_from_slice(&e_index.to_be_bytes());
            }
        }
        let mut b = p.clone();
        b[10] ^= 1;
        assert_eq!(
            rx.unprotect_rtcp(&mut b),
            Err(SrtpError::AuthFailed),
            "{suite}"
        );
        let mut b = p.clone();
        let n = rx.unprotect_rtcp(&mut b).unwrap();
        assert_eq!(b[..n], sr[..], "{suite}");
    }
}

#[test]
fn more_ssrcs_than_slots_forget_the_oldest() {
    let (mut tx, mut rx) = pair(&keying(Suite::AesCm128HmacSha1_80));
    let mut first = Vec::new();
    for ssrc in 0..(STREAMS as u32 + 2) {
        let (mut b, len) = rtp(5, ssrc, 20);
        let n = tx.protect_rtp(&mut b, len).unwrap();
        b.truncate(n);
        rx.unprotect_rtp(&mut b.clone()).unwrap();
        first.push(b);
    }
    // SSRC 0 was forgotten: its replay is not recognised (the state was evicted), while the
    // most recent SSRC's replay is.
    assert!(rx.find(0).is_none());
    let last = first.last().unwrap().clone();
    assert_eq!(
        rx.unprotect_rtp(&mut last.clone()),
        Err(SrtpError::Replayed)
    );
}

#[test]
fn suite_names_round_trip() {
    for s in Suite::ALL {
        assert_eq!(Suite::from_name(s.name()), Some(s));
    }
    assert_eq!(Suite::from_name("F8_128_HMAC_SHA1_80"), None);
    assert_eq!(Suite::from_name("aes_cm_128_hmac_sha1_80"), None);
}

proptest::proptest! {
    #[test]
    fn unprotect_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                              suite in 0usize..3, mki in proptest::bool::ANY) {
        let mut k = keying(Suite::ALL[suite]);
        if mki {
            k.mki = Some(Mki::new(1, 2).unwrap());
        }
        let mut rx = Context::new(&k).unwrap();
        let _ = rx.unprotect_rtp(&mut data.clone());
        let _ = rx.unprotect_rtcp(&mut data.clone());
    }

    #[test]
    fn any_packet_round_trips(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                              seq in proptest::num::u16::ANY, suite in 0usize..3) {
        let (mut tx, mut rx) = pair(&keying(Suite::ALL[suite]));
        let mut b = vec![0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2];
        b[2..4].copy_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&payload);
        let plain = b.clone();
        b.resize(plain.len() + MAX_RTP_TRAILER, 0);
        let n = tx.protect_rtp(&mut b, plain.len()).unwrap();
        let n = rx.unprotect_rtp(&mut b[..n]).unwrap();
        proptest::prop_assert_eq!(&b[..n], &plain[..]);
    }
}
