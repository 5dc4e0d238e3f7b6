//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) as exact integers.
//!
//! Admission (LimitRanger, ResourceQuota) compares and sums quantities, and its error messages
//! print them back the way kube-apiserver does. Floating point would make `0.1 + 0.2` disagree
//! with upstream, so a quantity is held as an exact `i128` count of milli-units: every value a
//! container request can carry fits (upstream itself caps at about 9.2e18), and milli is the
//! finest unit any admission decision looks at (upstream compares `MilliValue()`s).
//!
//! Deliberate differences from apimachinery's `resource.Quantity`:
//! * precision below milli (`1u`, `1.0001`) is rounded up (away from zero) to the next milli at
//!   parse time, as upstream's `MilliValue()` would; upstream keeps nano precision in the value
//!   itself, so such inputs print differently (`1001m` here, `1000100u` upstream);
//! * values beyond the `i128` milli range are a parse error instead of being capped.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Add, Neg, Sub};
use std::str::FromStr;

/// Which notation a quantity was written in; [`Quantity::to_canonical_string`] answers in the
/// same family, as upstream does, so `1Gi` prints as `1Gi` and not `1073741824`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Decimal SI suffixes (`m`, `k`, `M`, ...) or none at all.
    #[default]
    DecimalSi,
    /// Binary suffixes (`Ki`, `Mi`, ...).
    BinarySi,
    /// Scientific notation (`1e3`, `5E-3`).
    DecimalExponent,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the `<sign><digits>[.<digits>]<suffix>` shape.
    /// Worded like upstream's `ErrFormatWrong`.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// The suffix is not one Kubernetes knows (upstream's `ErrSuffix`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value does not fit the exact milli representation.
    #[error("quantity is too large")]
    TooLarge,
}

/// An exact Kubernetes quantity: a count of milli-units plus the notation it was written in.
///
/// Equality, ordering and hashing look at the value only (`1Gi == 1073741824`), because that is
/// what every comparison in admission means.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantity {
    milli: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.milli.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli.cmp(&other.milli)
    }
}

/// `10^n` for the small exponents quantities use, `None` once it would overflow.
fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// Division rounding the magnitude up, so a value is never understated (upstream rounds up
/// when it loses precision, e.g. `MilliValue()` of `1u` is 1).
fn div_round_up(num: i128, den: i128) -> i128 {
    let q = num / den;
    if num % den != 0 {
        if (num < 0) == (den < 0) {
            q + 1
        } else {
            q - 1
        }
    } else {
        q
    }
}

impl Quantity {
    /// Zero in decimal notation.
    pub const ZERO: Quantity = Quantity {
        milli: 0,
        format: Format::DecimalSi,
    };

    /// A quantity of `milli` thousandths, in decimal notation.
    pub fn from_milli(milli: i128) -> Quantity {
        Quantity {
            milli,
            format: Format::DecimalSi,
        }
    }

    /// A whole-unit quantity (a count of objects, bytes, cores), in decimal notation.
    pub fn from_value(value: i64) -> Quantity {
        Quantity::from_milli(i128::from(value) * 1000)
    }

    /// The same value, printed in another notation family.
    pub fn with_format(self, format: Format) -> Quantity {
        Quantity { format, ..self }
    }

    /// Parse a Kubernetes quantity string.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        // No trimming: upstream rejects surrounding whitespace too.
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err(QuantityError::Format);
        }

        // The value is digits / 10^frac.len() * multiplier; the multiplier is 10^exp or 2^exp.
        let (format, base2, exp): (Format, bool, i32) = match suffix {
            "" => (Format::DecimalSi, false, 0),
            "n" => (Format::DecimalSi, false, -9),
            "u" => (Format::DecimalSi, false, -6),
            "m" => (Format::DecimalSi, false, -3),
            "k" => (Format::DecimalSi, false, 3),
            "M" => (Format::DecimalSi, false, 6),
            "G" => (Format::DecimalSi, false, 9),
            "T" => (Format::DecimalSi, false, 12),
            "P" => (Format::DecimalSi, false, 15),
            "E" => (Format::DecimalSi, false, 18),
            "Ki" => (Format::BinarySi, true, 10),
            "Mi" => (Format::BinarySi, true, 20),
            "Gi" => (Format::BinarySi, true, 30),
            "Ti" => (Format::BinarySi, true, 40),
            "Pi" => (Format::BinarySi, true, 50),
            "Ei" => (Format::BinarySi, true, 60),
            other => {
                let Some(e) = other.strip_prefix(['e', 'E']) else {
                    return Err(
                        if other
                            .chars()
                            .all(|c| "eEinumkKMGTP+-0123456789".contains(c))
                        {
                            QuantityError::Suffix
                        } else {
                            QuantityError::Format
                        },
                    );
                };
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(QuantityError::Suffix);
                }
                let exp: i32 = e.parse().map_err(|_| QuantityError::TooLarge)?;
                (Format::DecimalExponent, false, exp)
            }
        };

        let digits: String = whole.chars().chain(frac.chars()).collect();
        let digits = digits.trim_start_matches('0');
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| QuantityError::TooLarge)?
        };
        let frac_len = u32::try_from(frac.len()).map_err(|_| QuantityError::TooLarge)?;

        // milli = mantissa * 1000 * multiplier / 10^frac_len, rounded up.
        let mut num = mantissa.checked_mul(1000).ok_or(QuantityError::TooLarge)?;
        let mut den = pow10(frac_len).ok_or(QuantityError::TooLarge)?;
        if base2 {
            num = num
                .checked_mul(1i128 << exp)
                .ok_or(QuantityError::TooLarge)?;
        } else if exp >= 0 {
            let m = pow10(exp.unsigned_abs()).ok_or(QuantityError::TooLarge)?;
            num = num.checked_mul(m).ok_or(QuantityError::TooLarge)?;
        } else if mantissa != 0 {
            match pow10(exp.unsigned_abs()).and_then(|m| den.checked_mul(m)) {
                Some(d) => den = d,
                // Smaller than any milli: rounds up to one milli.
                None => {
                    return Ok(Quantity {
                        milli: if negative { -1 } else { 1 },
                        format,
                    })
                }
            }
        }
        let milli = div_round_up(num, den);
        // A binary value below one unit has nothing binary to show (upstream switches too).
        let format = if format == Format::BinarySi && milli < 1000 {
            Format::DecimalSi
        } else {
            format
        };
        Ok(Quantity {
            milli: if negative { -milli } else { milli },
            format,
        })
    }

    /// The exact value in thousandths.
    pub fn milli(&self) -> i128 {
        self.milli
    }

    /// The value in whole units, rounded up (upstream's `Value()`: `500m` is 1).
    pub fn value(&self) -> i128 {
        div_round_up(self.milli, 1000)
    }

    /// The notation this quantity prints in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }

    /// Upstream's canonical spelling, in the notation family the quantity was parsed from:
    /// * decimal: the mantissa carries no factor of 1000 it could shed into the suffix, and the
    ///   exponent is a multiple of three (`1500m`, `2`, `1500`, `2k`, `120k`);
    /// * binary: the largest power-of-1024 suffix that divides the value (`1Gi`, `1536Mi`); a
    ///   value that is not a whole number of units or is below 1024 in magnitude falls back to
    ///   decimal, as upstream does so that nothing is lost or rounded;
    /// * exponent: as decimal but with `e<n>` instead of a suffix (`1e3`, `1500e-3`).
    pub fn to_canonical_string(&self) -> String {
        if self.milli == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        if format == Format::BinarySi && (self.milli % 1000 != 0 || self.milli.abs() < 1024 * 1000)
        {
            format = Format::DecimalSi;
        }
        if format == Format::BinarySi {
            let mut v = self.milli / 1000;
            let mut exp = 0usize;
            while exp < 6 && v % 1024 == 0 {
                v /= 1024;
                exp += 1;
            }
            const SUFFIX: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            return format!("{v}{}", SUFFIX[exp]);
        }
        // Decimal: strip factors of ten, then pad the exponent down to a multiple of three.
        let mut mantissa = self.milli;
        let mut exp: i32 = -3;
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exp += 1;
        }
        match exp.rem_euclid(3) {
            1 => {
                mantissa *= 10;
                exp -= 1;
            }
            2 => {
                mantissa *= 100;
                exp -= 2;
            }
            _ => {}
        }
        if format == Format::DecimalExponent {
            return if exp == 0 {
                mantissa.to_string()
            } else {
                format!("{mantissa}e{exp}")
            };
        }
        // Past exa there is no suffix; keep the mantissa larger instead.
        while exp > 18 {
            mantissa *= 1000;
            exp -= 3;
        }
        let suffix = match exp {
            -3 => "m",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => "",
        };
        format!("{mantissa}{suffix}")
    }

    /// Checked addition (the quota arithmetic must not wrap silently).
    pub fn checked_add(self, rhs: Quantity) -> Option<Quantity> {
        self.milli.checked_add(rhs.milli).map(|milli| Quantity {
            milli,
            format: self.format,
        })
    }

    /// Checked subtraction.
    pub fn checked_sub(self, rhs: Quantity) -> Option<Quantity> {
        self.milli.checked_sub(rhs.milli).map(|milli| Quantity {
            milli,
            format: self.format,
        })
    }
}

/// The sum keeps the left operand's notation, as upstream's `Add` does.
impl Add for Quantity {
    type Output = Quantity;
    fn add(self, rhs: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_add(rhs.milli),
            format: self.format,
        }
    }
}

/// The difference keeps the left operand's notation, as upstream's `Sub` does.
impl Sub for Quantity {
    type Output = Quantity;
    fn sub(self, rhs: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_sub(rhs.milli),
            format: self.format,
        }
    }
}

impl Neg for Quantity {
    type Output = Quantity;
    fn neg(self) -> Quantity {
        Quantity {
            milli: -self.milli,
            format: self.format,
        }
    }
}

impl std::iter::Sum for Quantity {
    fn sum<I: Iterator<Item = Quantity>>(iter: I) -> Quantity {
        iter.fold(Quantity::ZERO, |a, b| {
            if a.is_zero() && a.format != b.format {
                // Adopt the first operand's notation, like upstream's zero-valued Quantity.
                Quantity {
                    milli: b.milli,
                    format: b.format,
                }
            } else {
                a + b
            }
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical_string())
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = QuantityError;
    fn try_from(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Quantity, QuantityError> {
        Quantity::parse(&q.0)
    }
}

impl From<Quantity> for k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    fn from(q: Quantity) -> Self {
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_canonical_string())
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_canonical_string())
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
        // Upstream accepts bare JSON numbers as quantities too.
        let v = serde_json::Value::deserialize(d)?;
        let s = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(serde::de::Error::custom(QuantityError::Format)),
        };
        Quantity::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_canonical() {
        // (input, milli, canonical)
        let cases: &[(&str, i128, &str)] = &[
            ("0", 0, "0"),
            ("0m", 0, "0"),
            ("1", 1000, "1"),
            ("1500m", 1500, "1500m"),
            ("2000m", 2000, "2"),
            ("0.1", 100, "100m"),
            ("1.5", 1500, "1500m"),
            ("1500", 1_500_000, "1500"),
            ("2000", 2_000_000, "2k"),
            ("120000", 120_000_000, "120k"),
            ("1k", 1_000_000, "1k"),
            ("1M", 1_000_000_000, "1M"),
            ("1.5G", 1_500_000_000_000, "1500M"),
            ("1E", 1_000_000_000_000_000_000_000, "1E"),
            ("1Ki", 1_024_000, "1Ki"),
            ("1Gi", 1_073_741_824_000, "1Gi"),
            ("1.5Gi", 1_610_612_736_000, "1536Mi"),
            ("1073741824", 1_073_741_824_000, "1073741824"),
            ("0.5Ki", 512_000, "512"),
            ("1536Ki", 1_572_864_000, "1536Ki"),
            ("1e3", 1_000_000, "1e3"),
            ("1E3", 1_000_000, "1e3"),
            ("5e-3", 5, "5e-3"),
            ("1.5e3", 1_500_000, "1500"),
            ("1u", 1, "1m"),
            ("1n", 1, "1m"),
            ("1.0001", 1001, "1001m"),
            ("-1", -1000, "-1"),
            ("-500m", -500, "-500m"),
            ("+2", 2000, "2"),
            (".5", 500, "500m"),
            ("5.", 5000, "5"),
            ("100Mi", 104_857_600_000, "100Mi"),
            ("128974848", 128_974_848_000, "128974848"),
            ("129e6", 129_000_000_000, "129e6"),
            ("123Mi", 128_974_848_000, "123Mi"),
        ];
        for (input, milli, canonical) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.milli(), *milli, "milli of {input}");
            assert_eq!(q.to_canonical_string(), *canonical, "canonical of {input}");
        }
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, QuantityError)] = &[
            ("", QuantityError::Format),
            ("abc", QuantityError::Format),
            ("1.2.3", QuantityError::Format),
            (" 1", QuantityError::Format),
            ("1 ", QuantityError::Format),
            (".", QuantityError::Format),
            ("1Ki2", QuantityError::Suffix),
            ("1kb", QuantityError::Format),
            ("1Zi", QuantityError::Format),
            ("1KK", QuantityError::Suffix),
            ("1e", QuantityError::Suffix),
            ("1e1000", QuantityError::TooLarge),
            (
                "99999999999999999999999999999999999999999",
                QuantityError::TooLarge,
            ),
        ];
        for (input, err) in cases {
            assert_eq!(Quantity::parse(input).err().as_ref(), Some(err), "{input}");
        }
    }

    #[test]
    fn value_rounds_up() {
        let cases: &[(&str, i128)] =
            &[("500m", 1), ("1", 1), ("1001m", 2), ("0", 0), ("-500m", -1)];
        for (input, value) in cases {
            let q = Quantity::parse(input).expect("parses");
            assert_eq!(q.value(), *value, "{input}");
        }
    }

    #[test]
    fn arithmetic_and_ordering() {
        let q = |s: &str| Quantity::parse(s).expect("parses");
        let cases: &[(&str, &str, &str, &str)] = &[
            // (a, b, a+b, a-b)
            ("1", "500m", "1500m", "500m"),
            ("1Gi", "1Gi", "2Gi", "0"),
            ("100m", "200m", "300m", "-100m"),
            ("1Gi", "512Mi", "1536Mi", "512Mi"),
        ];
        for (a, b, sum, diff) in cases {
            assert_eq!((q(a) + q(b)).to_canonical_string(), *sum, "{a}+{b}");
            assert_eq!((q(a) - q(b)).to_canonical_string(), *diff, "{a}-{b}");
        }
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1Gi"), q("1073741824"));
        assert!(q("999m") < q("1"));
        let total: Quantity = ["1Gi", "1Gi"].iter().map(|s| q(s)).sum();
        assert_eq!(total.to_string(), "2Gi");
    }

    #[test]
    fn serde_round_trip() {
        let q: Quantity = serde_json::from_str("\"1.5Gi\"").expect("string");
        assert_eq!(serde_json::to_string(&q).expect("ser"), "\"1536Mi\"");
        let n: Quantity = serde_json::from_str("2").expect("number");
        assert_eq!(n.milli(), 2000);
    }
}
