//! JSON forms of the apimachinery types whose Go `MarshalJSON` is custom: times and
//! durations. Formats follow k8s-openapi, which follows Go (`time.RFC3339` for `Time`,
//! `RFC3339Micro` for `MicroTime`, `time.Duration.String` for `Duration`).

use api_types::k8s_openapi::jiff::{self, Timestamp};

/// Seconds of Go's zero `time.Time` (January 1, year 1, UTC): Go renders it as JSON `null`.
pub const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Formats `meta/v1.Time`. Go drops the nanoseconds when it decodes protobuf and prints whole
/// seconds, so they are ignored here too.
pub fn format_time(seconds: i64) -> Result<String, String> {
    let ts = Timestamp::from_second(seconds).map_err(|e| format!("time out of range: {e}"))?;
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", ts).map_err(|e| e.to_string())
}

/// Formats `meta/v1.MicroTime` with exactly six fractional digits.
pub fn format_micro_time(seconds: i64, nanos: i32) -> Result<String, String> {
    let ts = Timestamp::new(seconds, nanos).map_err(|e| format!("time out of range: {e}"))?;
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%.6fZ", ts).map_err(|e| e.to_string())
}

/// Parses an RFC 3339 time into `(seconds, nanos)`, as Go's `time.Parse(time.RFC3339, ..)`.
pub fn parse_time(text: &str) -> Result<(i64, i32), String> {
    let ts: Timestamp = text
        .parse()
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?;
    Ok((ts.as_second(), ts.subsec_nanosecond()))
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Formats nanoseconds the way Go's `time.Duration.String` does: `1h0m0s`, `1m30s`, `1.5s`,
/// `100ms`, `0s`.
pub fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u < NANOS_PER_SECOND {
        let (scale, unit) = match u {
            0..1_000 => (1, "ns"),
            1_000..1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{sign}{}{unit}", decimal(u, scale));
    }
    let seconds = u / NANOS_PER_SECOND;
    let (hours, minutes, secs) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let secs = decimal(
        secs * NANOS_PER_SECOND + u % NANOS_PER_SECOND,
        NANOS_PER_SECOND,
    );
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{secs}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{secs}s")
    } else {
        format!("{sign}{secs}s")
    }
}

/// `value / scale` with the fraction's trailing zeros removed, as Go prints durations.
fn decimal(value: u64, scale: u64) -> String {
    let (whole, frac) = (value / scale, value % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a Go duration string (`time.ParseDuration`): a sign, then one or more decimal
/// numbers each followed by a unit among `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("{text:?} is not a Go duration");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut fraction: u128 = 0;
        let mut place = scale;
        for digit in frac.bytes() {
            place /= 10;
            fraction += u128::from(digit - b'0') * place;
        }
        let value = whole
            .checked_mul(scale)
            .and_then(|v| v.checked_add(fraction))
            .ok_or_else(invalid)?;
        total = total.checked_add(value).ok_or_else(invalid)?;
        rest = tail;
    }
    let total = i128::try_from(total).map_err(|_| invalid())?;
    let signed = if negative { -total } else { total };
    i64::try_from(signed).map_err(|_| format!("{text:?} overflows a Go duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_like_go() {
        assert_eq!(format_time(0).as_deref(), Ok("1970-01-01T00:00:00Z"));
        assert_eq!(
            format_time(1_764_390_000).as_deref(),
            Ok("2025-11-29T04:20:00Z")
        );
        assert_eq!(
            format_micro_time(1_764_390_000, 123_456_789).as_deref(),
            Ok("2025-11-29T04:20:00.123456Z")
        );
        assert_eq!(
            format_micro_time(0, 0).as_deref(),
            Ok("1970-01-01T00:00:00.000000Z")
        );
        assert!(format_time(i64::MAX).is_err());
    }

    #[test]
    fn times_parse_with_offsets() {
        assert_eq!(parse_time("2025-11-29T04:20:00Z"), Ok((1_764_390_000, 0)));
        assert_eq!(
            parse_time("2025-11-29T06:20:00+02:00"),
            Ok((1_764_390_000, 0))
        );
        assert_eq!(
            parse_time("2025-11-29T04:20:00.5Z"),
            Ok((1_764_390_000, 500_000_000))
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn durations_format_like_go() {
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-3_723_000_000_000, "-1h2m3s"),
        ] {
            assert_eq!(format_duration(nanos), text);
            assert_eq!(parse_duration(text), Ok(nanos), "{text}");
        }
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("2m3.25s"), Ok(123_250_000_000));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration("3000000h").is_err());
    }
}
