//! Instants and spans as people read them: `2026-11-22 01:52:56 UTC`, `17:02 UTC`,
//! `3 min 12 s`. One home, so a prompt, an alert and the audit log say a time alike.

/// `2026-11-22 01:52:56 UTC` from Unix milliseconds.
pub fn utc(ms: i64) -> String {
    let (y, m, d, secs) = civil(ms);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `17:02 UTC` from Unix milliseconds: the time of day, for a span within a day or so.
pub fn clock(ms: i64) -> String {
    let (_, _, _, secs) = civil(ms);
    format!("{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60)
}

/// `45 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`: a duration in its two largest units.
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 if s % 3600 / 60 == 0 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ if s % 86_400 / 3600 == 0 => format!("{} d", s / 86_400),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// (year, month, day, seconds into the day) in UTC; Howard Hinnant's civil_from_days.
fn civil(ms: i64) -> (i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_005_999), "2026-11-18 11:06:45 UTC");
        assert_eq!(clock(1_795_000_005_999), "11:06 UTC");
    }

    #[test]
    fn spans_read_in_their_two_largest_units() {
        assert_eq!(span(-5), "0 s");
        assert_eq!(span(45_999), "45 s");
        assert_eq!(span(180_000), "3 min");
        assert_eq!(span(192_000), "3 min 12 s");
        assert_eq!(span(7_500_000), "2 h 5 min");
        assert_eq!(span(7_200_000), "2 h");
        assert_eq!(span(3 * 86_400_000 + 4 * 3_600_000 + 99), "3 d 4 h");
        assert_eq!(span(86_400_000), "1 d");
    }
}
