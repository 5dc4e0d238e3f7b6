//! Human-readable durations, as apimachinery's `util/duration` renders them for AGE columns.

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_MINUTE: i128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i128 = 60 * NANOS_PER_MINUTE;

/// Upstream `duration.HumanDuration`: two or three significant figures, e.g. `45s`, `3m12s`,
/// `25m`, `4h5m`, `30h`, `2d3h`, `90d`, `3y20d`, `12y`. Up to a second into the future reads
/// `0s` (clock skew between nodes); further reads `<invalid>`.
pub fn human_duration(nanos: i128) -> String {
    // Go truncates toward zero when converting seconds to int; so does `/` on i128.
    let seconds = nanos / NANOS_PER_SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / NANOS_PER_MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / NANOS_PER_HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{h}h", hours / 24);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{dy}d", hours / 24 / 365);
    }
    format!("{}y", hours / 24 / 365)
}

/// Upstream `duration.ShortHumanDuration`: one unit only (`45s`, `3m`, `4h`, `12d`, `2y`).
pub fn short_human_duration(nanos: i128) -> String {
    let seconds = nanos / NANOS_PER_SECOND;
    if seconds < -1 {
        "<invalid>".to_string()
    } else if seconds < 0 {
        "0s".to_string()
    } else if seconds < 60 {
        format!("{seconds}s")
    } else if nanos / NANOS_PER_MINUTE < 60 {
        format!("{}m", nanos / NANOS_PER_MINUTE)
    } else if nanos / NANOS_PER_HOUR < 24 {
        format!("{}h", nanos / NANOS_PER_HOUR)
    } else if nanos / NANOS_PER_HOUR < 24 * 365 {
        format!("{}d", nanos / NANOS_PER_HOUR / 24)
    } else {
        format!("{}y", nanos / NANOS_PER_HOUR / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i128) -> i128 {
        s * NANOS_PER_SECOND
    }

    #[test]
    fn human() {
        let cases: &[(i128, &str)] = &[
            (secs(-3), "<invalid>"),
            (secs(-2), "<invalid>"),
            (-1_500_000_000, "0s"),
            (secs(-1), "0s"),
            (-999_999_999, "0s"),
            (0, "0s"),
            (secs(5), "5s"),
            (secs(119), "119s"),
            (secs(120), "2m"),
            (secs(192), "3m12s"),
            (secs(599), "9m59s"),
            (secs(600), "10m"),
            (secs(179 * 60 + 59), "179m"),
            (secs(3 * 3600), "3h"),
            (secs(4 * 3600 + 5 * 60 + 9), "4h5m"),
            (secs(8 * 3600), "8h"),
            (secs(47 * 3600 + 3599), "47h"),
            (secs(48 * 3600), "2d"),
            (secs(51 * 3600), "2d3h"),
            (secs(8 * 86400), "8d"),
            (secs(729 * 86400), "729d"),
            (secs(730 * 86400), "2y"),
            (secs(750 * 86400), "2y20d"),
            (secs(8 * 365 * 86400), "8y"),
            (secs(12 * 365 * 86400 + 100 * 86400), "12y"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(*d), *want, "{d}");
        }
    }

    #[test]
    fn short() {
        assert_eq!(short_human_duration(secs(59)), "59s");
        assert_eq!(short_human_duration(secs(61)), "1m");
        assert_eq!(short_human_duration(secs(3600 * 5)), "5h");
        assert_eq!(short_human_duration(secs(86400 * 3)), "3d");
        assert_eq!(short_human_duration(secs(86400 * 800)), "2y");
        assert_eq!(short_human_duration(secs(-5)), "<invalid>");
    }
}
