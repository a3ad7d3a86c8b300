//! DTMF carried in SIP INFO request bodies.
//!
//! Two formats are in use, neither formally specified, so parsing is lenient in the ways
//! real phones differ and strict about what the digit is:
//!
//! - `application/dtmf-relay`: lines of `Key=Value`, e.g. `Signal=5\r\nDuration=160\r\n`.
//!   Keys are matched case-insensitively, spaces around keys and values are ignored, lines
//!   may end in CRLF, LF or CR, and unknown keys are skipped. Some phones send the RFC 4733
//!   event code instead of the character (`Signal=10` for `*`, `11` for `#`, 12-15 for
//!   `A`-`D`). `Duration` is in milliseconds and optional; an unreadable one is ignored.
//! - `application/dtmf`: the body is the digit alone (or its event code), with optional
//!   surrounding whitespace.

use super::{event_code_to_digit, DtmfError, DtmfEvent, DtmfSource, DtmfStart};

/// A digit body is a few dozen bytes; anything much larger is not one.
const MAX_BODY: usize = 1024;

/// Parses the body of a SIP INFO request. `content_type` is the Content-Type header value;
/// parameters after `;` are ignored.
pub fn parse_info_body(content_type: &str, body: &[u8]) -> Result<DtmfEvent, DtmfError> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let relay = if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
        true
    } else if media_type.eq_ignore_ascii_case("application/dtmf") {
        false
    } else {
        return Err(DtmfError::UnsupportedContentType(media_type.to_owned()));
    };
    if body.len() > MAX_BODY {
        return Err(DtmfError::BodyTooLarge(body.len()));
    }
    let text = std::str::from_utf8(body)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or(DtmfError::BodyNotText)?;
    let (digit, duration_ms) = if relay {
        parse_relay(text)?
    } else {
        (parse_signal(text)?, None)
    };
    Ok(DtmfEvent {
        digit,
        source: DtmfSource::SipInfo,
        start: DtmfStart::AtReceipt,
        duration_ms,
    })
}

fn parse_relay(text: &str) -> Result<(char, Option<u32>), DtmfError> {
    let mut signal = None;
    let mut duration = None;
    for line in text.split(['\r', '\n']) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("signal") {
            if signal.is_none() {
                signal = Some(parse_signal(value)?);
            }
        } else if key.eq_ignore_ascii_case("duration") && duration.is_none() {
            duration = value.trim().parse::<u32>().ok();
        }
    }
    signal
        .map(|s| (s, duration))
        .ok_or(DtmfError::MissingSignal)
}

fn parse_signal(value: &str) -> Result<char, DtmfError> {
    let v = value.trim();
    let invalid = || DtmfError::InvalidSignal(v.chars().take(32).collect());
    let mut chars = v.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => match c.to_ascii_uppercase() {
            d @ ('0'..='9' | '*' | '#' | 'A'..='D') => Ok(d),
            _ => Err(invalid()),
        },
        (Some(_), Some(_)) => v
            .parse::<u8>()
            .ok()
            .filter(|code| (10..=15).contains(code))
            .and_then(event_code_to_digit)
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(body: &str) -> Result<(char, Option<u32>), DtmfError> {
        parse_info_body("application/dtmf-relay", body.as_bytes()).map(|e| (e.digit, e.duration_ms))
    }

    #[test]
    fn dtmf_relay_variants_seen_in_the_field() {
        let cases: &[(&str, char, Option<u32>)] = &[
            ("Signal=5\r\nDuration=160\r\n", '5', Some(160)),
            ("Signal=*\r\nDuration=250\r\n", '*', Some(250)),
            ("Signal= *\r\nDuration= 100\r\n", '*', Some(100)),
            ("signal=#\nduration=120\n", '#', Some(120)),
            ("SIGNAL = 2\r\nDURATION = 90", '2', Some(90)),
            ("Signal=10\r\nDuration=160\r\n", '*', Some(160)),
            ("Signal=11\r\nDuration=160\r\n", '#', Some(160)),
            ("Signal=12\r\n", 'A', None),
            ("Signal=d\r\n", 'D', None),
            ("Duration=200\r\nSignal=0\r\n", '0', Some(200)),
            ("Signal=9", '9', None),
            ("Signal=1\rDuration=100\r", '1', Some(100)),
            ("Signal=3\r\nDuration=abc\r\n", '3', None),
            (
                "\r\nSignal=4\r\nDuration=160\r\nVolume=10\r\n\r\n",
                '4',
                Some(160),
            ),
            ("Signal=7\r\nSignal=8\r\n", '7', None),
        ];
        for &(body, digit, dur) in cases {
            assert_eq!(relay(body), Ok((digit, dur)), "{body:?}");
        }
    }

    #[test]
    fn event_fields() {
        let ev = parse_info_body(
            "Application/DTMF-Relay; charset=utf-8",
            b"Signal=*\r\nDuration=160\r\n",
        )
        .unwrap();
        assert_eq!(
            ev,
            DtmfEvent {
                digit: '*',
                source: DtmfSource::SipInfo,
                start: DtmfStart::AtReceipt,
                duration_ms: Some(160),
            }
        );
    }

    #[test]
    fn application_dtmf_bodies() {
        for (body, digit) in [
            (&b"5"[..], '5'),
            (b"*", '*'),
            (b"#\r\n", '#'),
            (b" 2 \n", '2'),
            (b"10", '*'),
            (b"11", '#'),
            (b"b", 'B'),
            (b"12", 'A'),
        ] {
            let ev = parse_info_body("application/dtmf", body).unwrap();
            assert_eq!(ev.digit, digit, "{body:?}");
            assert_eq!(ev.duration_ms, None);
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let bad_relay = [
            ("", DtmfError::MissingSignal),
            ("Duration=160\r\n", DtmfError::MissingSignal),
            ("Signal 5\r\n", DtmfError::MissingSignal),
            ("Signal=\r\n", DtmfError::InvalidSignal(String::new())),
            ("Signal=E\r\n", DtmfError::InvalidSignal("E".into())),
            ("Signal=55\r\n", DtmfError::InvalidSignal("55".into())),
            ("Signal=16\r\n", DtmfError::InvalidSignal("16".into())),
            ("Signal=05\r\n", DtmfError::InvalidSignal("05".into())),
            ("Signal=-1\r\n", DtmfError::InvalidSignal("-1".into())),
            (
                "Signal=12345678901234567890\r\n",
                DtmfError::InvalidSignal("12345678901234567890".into()),
            ),
            ("Signal=*#\r\n", DtmfError::InvalidSignal("*#".into())),
        ];
        for (body, err) in bad_relay {
            assert_eq!(relay(body), Err(err), "{body:?}");
        }
        for body in [
            &b""[..],
            b"  \r\n",
            b"5 5",
            b"Signal=5",
            b"x",
            b"16",
            b"7\r\n8",
        ] {
            assert!(
                matches!(
                    parse_info_body("application/dtmf", body),
                    Err(DtmfError::InvalidSignal(_))
                ),
                "{body:?}"
            );
        }
        assert_eq!(
            parse_info_body("application/dtmf-relay", &[b'S', 0xff, 0xfe]),
            Err(DtmfError::BodyNotText)
        );
        assert_eq!(
            parse_info_body("application/dtmf-relay", "Signal=５".as_bytes()),
            Err(DtmfError::BodyNotText)
        );
        assert_eq!(
            parse_info_body("application/dtmf", &[b'5'; 2000]),
            Err(DtmfError::BodyTooLarge(2000))
        );
        assert_eq!(
            parse_info_body("application/sdp", b"Signal=5"),
            Err(DtmfError::UnsupportedContentType("application/sdp".into()))
        );
        assert_eq!(
            parse_info_body("", b"5"),
            Err(DtmfError::UnsupportedContentType(String::new()))
        );
    }
}
