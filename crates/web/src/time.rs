//! Times and durations as the pages print and read them.
//!
//! Pages print times in UTC inside `<time datetime="…Z">`; `app.js` rewrites them in the
//! viewer's time zone with `Intl.DateTimeFormat`, so without JavaScript they stay correct,
//! in UTC. Form fields of type `datetime-local` carry no zone: the script sends them as
//! RFC 3339 UTC, and a value without a zone (no script) is read as UTC.

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: i64,
    mi: i64,
    s: i64,
}

fn parts(ms: i64) -> Parts {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    Parts {
        y,
        mo,
        d,
        h: rem / 3600,
        mi: rem % 3600 / 60,
        s: rem % 60,
    }
}

/// `2026-03-01T09:30:00Z`: the `datetime` of a `<time>` and the RFC 3339 form the API reads.
pub fn iso_utc(ms: i64) -> String {
    let p = parts(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s
    )
}

/// `2026-03-01 09:30:00 UTC`: the text of a `<time>` before the script localizes it.
pub fn human_utc(ms: i64) -> String {
    let p = parts(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        p.y, p.mo, p.d, p.h, p.mi, p.s
    )
}

/// `2026-03-01T09:30`: the value of a `datetime-local` field, in UTC.
pub fn datetime_local(ms: i64) -> String {
    let p = parts(ms);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}", p.y, p.mo, p.d, p.h, p.mi)
}

fn num(s: &str, min: i64, max: i64) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| (min..=max).contains(n))
}

/// Reads a `datetime-local` value (`2026-03-01T09:30`, seconds optional) as UTC; unix
/// milliseconds, or `None` when it is not of that shape (or not a real date).
pub fn parse_datetime_local(v: &str) -> Option<i64> {
    let (date, clock) = v.trim().split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    let y = d
        .next()
        .filter(|y| y.len() == 4)
        .and_then(|y| num(y, 1, 9999))?;
    let mo = d
        .next()
        .filter(|m| m.len() == 2)
        .and_then(|m| num(m, 1, 12))? as u32;
    let day = d
        .next()
        .filter(|x| x.len() == 2)
        .and_then(|x| num(x, 1, 31))? as u32;
    let mut c = clock.splitn(3, ':');
    let h = c
        .next()
        .filter(|h| h.len() == 2)
        .and_then(|h| num(h, 0, 23))?;
    let mi = c
        .next()
        .filter(|m| m.len() == 2)
        .and_then(|m| num(m, 0, 59))?;
    let s = match c.next() {
        None => 0,
        Some(s) => num(s.split('.').next().unwrap_or(""), 0, 59)?,
    };
    let days = days_from_civil(y, mo, day);
    // 2026-02-31 is not a date: it would come back as March.
    let (y2, mo2, d2) = civil_from_days(days);
    if (y2, mo2, d2) != (y, mo, day) {
        return None;
    }
    Some(((days * 86_400) + h * 3600 + mi * 60 + s) * 1000)
}

/// A duration as a clock: `0:07`, `12:05`, `1:02:03`.
pub fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Seconds with one decimal: `4.5 s`.
pub fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_print_and_read_back() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        // 2026-03-01T09:30:05.250Z
        let t = 1_772_357_405_250;
        assert_eq!(iso_utc(t), "2026-03-01T09:30:05Z");
        assert_eq!(human_utc(t), "2026-03-01 09:30:05 UTC");
        assert_eq!(datetime_local(t), "2026-03-01T09:30");
        assert_eq!(
            parse_datetime_local("2026-03-01T09:30"),
            Some(1_772_357_400_000)
        );
        assert_eq!(
            parse_datetime_local("2026-03-01T09:30:05"),
            Some(1_772_357_405_000)
        );
        assert_eq!(
            parse_datetime_local("2024-02-29T00:00"),
            Some(1_709_164_800_000)
        );
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59Z");
        for bad in [
            "",
            "2026-03-01",
            "2026-02-30T00:00",
            "2026-13-01T00:00",
            "2026-03-01T24:00",
            "2026-03-01T09:30Z",
            "26-03-01T09:30",
            "2026-03-01T9:30",
            "<script>",
        ] {
            assert_eq!(parse_datetime_local(bad), None, "{bad}");
        }
        // Every day of a few years round-trips.
        for day in -800..20_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn durations_print_as_clocks() {
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(7_999), "0:07");
        assert_eq!(clock(725_000), "12:05");
        assert_eq!(clock(3_723_000), "1:02:03");
        assert_eq!(clock(-5), "0:00");
        assert_eq!(seconds(4_450), "4.5 s");
    }
}
