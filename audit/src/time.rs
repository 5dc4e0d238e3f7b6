//! `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits, the form audit events
//! carry their timestamps in (`2026-11-29T12:00:00.123456Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;

/// Formats `t` as upstream's MicroTime. Times before 1970 (never produced by a real clock) are
/// formatted as the epoch rather than failing an audit write.
pub fn format_micro_time(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX / 2);
    let (days, rem) = (
        secs.div_euclid(SECONDS_PER_DAY),
        secs.rem_euclid(SECONDS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Parses an RFC 3339 UTC timestamp (`Z`, any number of fractional digits up to nanoseconds),
/// as written by [`format_micro_time`] or by kube-apiserver. `None` if malformed.
pub fn parse_micro_time(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = parse_digits(date_parts.next()?, 4)?;
    let month: i64 = parse_digits(date_parts.next()?, 2)?;
    let day: i64 = parse_digits(date_parts.next()?, 2)?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut time_parts = hms.splitn(3, ':');
    let hour: i64 = parse_digits(time_parts.next()?, 2)?;
    let minute: i64 = parse_digits(time_parts.next()?, 2)?;
    let second: i64 = parse_digits(time_parts.next()?, 2)?;
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || year < 1970
    {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: u32 = frac.parse().ok()?;
        digits * 10u32.pow(9 - u32::try_from(frac.len()).ok()?)
    };
    let secs =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn parse_digits(s: &str, len: usize) -> Option<i64> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; Howard Hinnant's
/// well-known algorithm, which avoids any table or loop over years).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Serde adapter for [`SystemTime`] fields in MicroTime form.
pub(crate) mod serde_micro_time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_micro_time(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_micro_time(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_micro_time(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2026-11-29T12:00:00Z is 1_795_953_600 seconds after the epoch.
        let t = UNIX_EPOCH + Duration::new(1_795_953_600, 123_456_789);
        assert_eq!(format_micro_time(t), "2026-11-29T12:00:00.123456Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_micro_time(t), "2000-02-29T00:00:00.000000Z");
        // The last second of a year.
        let t = UNIX_EPOCH + Duration::from_secs(1_704_067_199);
        assert_eq!(format_micro_time(t), "2023-12-31T23:59:59.000000Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for secs in [
            0u64,
            951_782_400,
            1_704_067_199,
            1_795_953_600,
            4_102_444_800,
        ] {
            let t = UNIX_EPOCH + Duration::new(secs, 654_321_000);
            assert_eq!(parse_micro_time(&format_micro_time(t)), Some(t));
        }
        assert_eq!(
            parse_micro_time("2026-11-29T12:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_953_600))
        );
        for bad in [
            "",
            "2026-11-29",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-29T12:00:00+01:00",
            "2026-11-29T12:00:00.1234567890Z",
            "2026-11-29T25:00:00Z",
        ] {
            assert_eq!(parse_micro_time(bad), None, "{bad}");
        }
    }
}
