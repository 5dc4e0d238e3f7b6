//! Go-style durations (`time.ParseDuration`), because the flags and the
//! `sim.coxswain.dev/exit-after` annotation are written by people used to kubelet flags.

use std::time::Duration;

use crate::Error;

/// Parses `0`, `1.5s`, `500ms`, `1h2m3s`, `250us`/`250µs`, `10ns`. Negative durations are
/// refused: a delay cannot go back in time.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let bad = |why| Error::Duration(s.to_string(), why);
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.starts_with('-') {
        return Err(bad("negative"));
    }
    let mut rest = t;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("missing unit"))?;
        if num_len == 0 {
            return Err(bad("expected a number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad("bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad("unknown unit (ns, us, ms, s, m, h)")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        for bad in ["", "5", "-1s", "1x", "s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
