//! Parsing of `resource.Quantity` strings into the integer units the scheduler compares:
//! millicores for CPU, plain units (bytes, counts) for everything else.

/// Parses a quantity (`100m`, `1.5`, `128Mi`, `1e3`, `2G`) into its value times 1000, rounded
/// up as upstream's `MilliValue` does. Unparseable text counts as 0 so one malformed request
/// cannot wedge the whole queue; the API server validates quantities anyway.
pub fn parse_milli(s: &str) -> i64 {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let Ok(n) = num.parse::<f64>() else {
        return 0;
    };
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => match e[1..].parse::<i32>() {
            Ok(x) => 10f64.powi(x),
            Err(_) => return 0,
        },
        _ => return 0,
    };
    let v = (n * mult * 1000.0).ceil();
    if v >= i64::MAX as f64 {
        i64::MAX
    } else {
        v as i64
    }
}

/// The quantity in whole units, rounded up (upstream's `Value`).
pub fn parse_value(s: &str) -> i64 {
    let m = parse_milli(s);
    m / 1000 + i64::from(m % 1000 > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (s, milli) in [
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("128Mi", 128 * 1024 * 1024 * 1000),
            ("1e3", 1_000_000),
            ("junk", 0),
        ] {
            assert_eq!(parse_milli(s), milli, "{s}");
        }
        assert_eq!(parse_value("1Gi"), 1 << 30);
        assert_eq!(parse_value("100m"), 1);
    }
}
