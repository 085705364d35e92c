//! Kubernetes resource quantities (`4`, `3800m`, `16Gi`, `1e3`, `250u`), parsed as Kubernetes
//! parses them (`k8s.io/apimachinery/pkg/api/resource`, `ParseQuantity`), issue 21.
//!
//! Why our own parser: k8s-openapi's `Quantity` is only the text, kube-rs has no parser, and the
//! maintained crate that has one (kube_quantity 0.9) reads the number with nom's `f64` parser
//! before the suffix, so it accepts what Kubernetes refuses (`1e3Ki`: an exponent and a suffix)
//! and rounds values to a float; it would also add nom 8 and rust_decimal to the locked set. This module follows Kubernetes' scanner byte for byte (including
//! its quirks: `.`, `+` and `Ki` are zero, `1.G` is one giga) and its value rules (rounded up,
//! away from zero, to a nano; a binary-SI value capped at 2^63-1 and shown as decimal below one);
//! the tests are Kubernetes' own tables (`quantity_test.go`). One departure, said in
//! [`QuantityError::OutOfRange`]: a value needing more than 128 bits in nanos (over about 1.7e29,
//! or more than 38 significant digits) is refused rather than carried as a big decimal.

use std::fmt;

/// How Kubernetes writes a quantity back (`Format` in apimachinery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// Decimal suffixes (`m`, `k`, `M`, ...) or none.
    DecimalSi,
    /// Binary suffixes (`Ki`, `Mi`, ...).
    BinarySi,
    /// An exponent (`1e3`, `5E-3`).
    DecimalExponent,
}

/// A parsed quantity: its value in nanos (10^-9 units), as Kubernetes rounds it, and its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

/// Why a text is no quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// Not `<sign><number><suffix>` (Kubernetes' `ErrFormatWrong`).
    Format,
    /// The suffix is none of Kubernetes' (`ErrSuffix`).
    Suffix,
    /// A number without digits where Kubernetes needs to read one (`ErrNumeric`).
    Numeric,
    /// Valid for Kubernetes, but beyond what this provider computes with (see the module doc).
    OutOfRange,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantityError::Format => "not a number with an optional suffix",
            QuantityError::Suffix => "unknown suffix",
            QuantityError::Numeric => "no digits in the number",
            QuantityError::OutOfRange => "too large or too precise (at most about 1.7e29)",
        })
    }
}

impl std::error::Error for QuantityError {}

/// The accepted forms, for error messages.
pub const QUANTITY_FORMS: &str = "a number with an optional suffix: n u m k M G T P E, \
                                  Ki Mi Gi Ti Pi Ei, or an exponent such as e3; e.g. 4, 3800m, \
                                  16Gi, 1e3";

const NANOS_PER_UNIT: i128 = 1_000_000_000;

impl Quantity {
    /// Parses `text` exactly as Kubernetes' `ParseQuantity` does (no surrounding blanks).
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        if text.is_empty() {
            return Err(QuantityError::Format);
        }
        if text == "0" {
            return Ok(Quantity {
                nanos: 0,
                format: QuantityFormat::DecimalSi,
            });
        }
        let parts = scan(text)?;
        let (base2, exponent, format) = interpret(parts.suffix)?;
        value(&parts, base2, exponent, format)
    }

    /// The value in nanos (10^-9 units), rounded up away from zero as Kubernetes rounds it.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in units (cores, bytes, pods), as a float.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }

    /// Below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// How Kubernetes would write it back.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }
}

/// What Kubernetes' scanner (`parseQuantityString`) cuts a quantity into.
struct Parts<'a> {
    positive: bool,
    /// The integer digits without leading zeros; `"0"` when there are none.
    num: &'a str,
    /// The digits after the point (may be empty).
    denom: &'a str,
    /// Everything after the number.
    suffix: &'a str,
    /// The number as written (sign, digits, point) has at least one digit.
    has_digit: bool,
}

/// Kubernetes' scanner, step for step: sign, leading zeros, integer digits, an optional point
/// and fraction digits, then a suffix of `eEinumkKMGTP` letters with an optional signed digit
/// string after it.
fn scan(s: &str) -> Result<Parts<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos = 1;
        }
        Some(b'+') => pos = 1,
        _ => {}
    }
    let sign_len = pos;
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        // Only a sign and zeros: zero.
        return Ok(Parts {
            positive,
            num: "0",
            denom: "",
            suffix: "",
            has_digit: true,
        });
    }
    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = match &s[num_start..pos] {
        "" => "0",
        n => n,
    };
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[start..pos];
    }
    let has_digit = s[sign_len..pos].bytes().any(|c| c.is_ascii_digit());
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::Format);
    }
    Ok(Parts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
        has_digit,
    })
}

/// The suffix as (binary base, exponent, format), as Kubernetes' suffixer interprets it.
fn interpret(suffix: &str) -> Result<(bool, i64, QuantityFormat), QuantityError> {
    let decimal = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = decimal {
        return Ok((false, e, QuantityFormat::DecimalSi));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = binary {
        return Ok((true, e, QuantityFormat::BinarySi));
    }
    match suffix.as_bytes().first() {
        Some(b'e' | b'E') if suffix.len() > 1 => {
            // Go's strconv.ParseInt(s, 10, 64), then int32(): the conversion wraps, as `as` does.
            let e: i64 = suffix[1..].parse().map_err(|_| QuantityError::Suffix)?;
            Ok((false, i64::from(e as i32), QuantityFormat::DecimalExponent))
        }
        _ => Err(QuantityError::Suffix),
    }
}

/// The value in nanos, with Kubernetes' rounding (up, away from zero, to a nano), its cap on
/// binary-SI values and its format change for a binary-SI value below one.
fn value(
    p: &Parts<'_>,
    base2: bool,
    exponent: i64,
    mut format: QuantityFormat,
) -> Result<Quantity, QuantityError> {
    let digits = p.num.len() as i64 + p.denom.len() as i64;
    // Kubernetes' fast path (int64 arithmetic) reads the digits it has; the slow one reads the
    // number as written again, and fails on a number without digits (`.e-10`).
    let fast = if base2 {
        exponent >= 0
            && p.denom.is_empty()
            && 15 - p.num.len() as i64 - exponent * 3 / 10 > 0
            && p.num
                .parse::<i64>()
                .ok()
                .and_then(|v| v.checked_mul(1i64 << exponent))
                .is_some()
    } else {
        18 - digits >= 0 && exponent - p.denom.len() as i64 >= -9
    };
    if !fast && !p.has_digit {
        return Err(QuantityError::Numeric);
    }
    // value = D * 2^e2 * 10^e10, D the digits of num and denom.
    let mut significant = format!("{}{}", p.num, p.denom);
    let mut e10 = if base2 { 0 } else { exponent } - p.denom.len() as i64;
    let e2 = if base2 { exponent } else { 0 };
    let kept = significant.trim_start_matches('0').len();
    significant.drain(..significant.len() - kept);
    while significant.ends_with('0') {
        significant.pop();
        e10 += 1;
    }
    let d: i128 = if significant.is_empty() {
        0
    } else if significant.len() > 38 {
        return Err(QuantityError::OutOfRange);
    } else {
        significant.parse().map_err(|_| QuantityError::OutOfRange)?
    };
    let scaled = u32::try_from(e2)
        .ok()
        .and_then(|e| 2i128.checked_pow(e))
        .and_then(|m| d.checked_mul(m))
        .ok_or(QuantityError::OutOfRange)?;
    let k = e10 + 9;
    let mut nanos = if k >= 0 {
        u32::try_from(k)
            .ok()
            .and_then(|k| 10i128.checked_pow(k))
            .and_then(|m| scaled.checked_mul(m))
            .ok_or(QuantityError::OutOfRange)?
    } else {
        match u32::try_from(-k).ok().and_then(|k| 10i128.checked_pow(k)) {
            Some(div) => scaled / div + i128::from(scaled % div != 0),
            // Smaller than any nano: rounded up to one, zero stays zero.
            None => i128::from(scaled != 0),
        }
    };
    if base2 {
        let max = i128::from(i64::MAX) * NANOS_PER_UNIT;
        nanos = nanos.min(max);
        if nanos > 0 && nanos < NANOS_PER_UNIT {
            format = QuantityFormat::DecimalSi;
        }
    }
    if !p.positive {
        nanos = -nanos;
    }
    Ok(Quantity { nanos, format })
}

#[cfg(test)]
mod tests {
    use super::QuantityFormat::{BinarySi as Bin, DecimalExponent as Exp, DecimalSi as Dec};
    use super::*;

    /// `decQuantity(i, exponent, format)` of Kubernetes' tests, in nanos.
    fn q(i: i128, exponent: i32, format: QuantityFormat) -> Quantity {
        let nanos = if exponent + 9 >= 0 {
            i * 10i128.pow((exponent + 9) as u32)
        } else {
            i / 10i128.pow((-exponent - 9) as u32)
        };
        Quantity { nanos, format }
    }

    /// `TestQuantityParse`'s table (apimachinery `quantity_test.go`), each also with `-` and `+`
    /// in front, as the Go test runs it.
    #[test]
    fn kubernetes_parse_table() {
        let max_allowed = Quantity {
            nanos: i128::from(i64::MAX) * NANOS_PER_UNIT,
            format: Bin,
        };
        let table: Vec<(&str, Quantity)> = vec![
            ("0", q(0, 0, Dec)),
            ("0n", q(0, 0, Dec)),
            ("0u", q(0, 0, Dec)),
            ("0m", q(0, 0, Dec)),
            ("0Ki", q(0, 0, Bin)),
            ("0k", q(0, 0, Dec)),
            ("0Mi", q(0, 0, Bin)),
            ("0M", q(0, 0, Dec)),
            ("0Gi", q(0, 0, Bin)),
            ("0G", q(0, 0, Dec)),
            ("0Ti", q(0, 0, Bin)),
            ("0T", q(0, 0, Dec)),
            ("1", q(1, 0, Dec)),
            ("1Ki", q(1024, 0, Bin)),
            ("8Ki", q(8 * 1024, 0, Bin)),
            ("7Mi", q(7 * 1024 * 1024, 0, Bin)),
            ("6Gi", q(6 << 30, 0, Bin)),
            ("5Ti", q(5 << 40, 0, Bin)),
            ("4Pi", q(4 << 50, 0, Bin)),
            ("3Ei", q(3 << 60, 0, Bin)),
            ("10Ti", q(10 << 40, 0, Bin)),
            ("100Ti", q(100 << 40, 0, Bin)),
            ("5n", q(5, -9, Dec)),
            ("4u", q(4, -6, Dec)),
            ("3m", q(3, -3, Dec)),
            ("9", q(9, 0, Dec)),
            ("8k", q(8, 3, Dec)),
            ("50k", q(5, 4, Dec)),
            ("7M", q(7, 6, Dec)),
            ("6G", q(6, 9, Dec)),
            ("5T", q(5, 12, Dec)),
            ("40T", q(4, 13, Dec)),
            ("300T", q(3, 14, Dec)),
            ("2P", q(2, 15, Dec)),
            ("1E", q(1, 18, Dec)),
            ("1E-3", q(1, -3, Exp)),
            ("1e3", q(1, 3, Exp)),
            ("1E6", q(1, 6, Exp)),
            ("1e9", q(1, 9, Exp)),
            ("1E12", q(1, 12, Exp)),
            ("1e15", q(1, 15, Exp)),
            ("1E18", q(1, 18, Exp)),
            ("1e14", q(1, 14, Exp)),
            ("1e13", q(1, 13, Exp)),
            ("100.035k", q(100035, 0, Dec)),
            ("0.001", q(1, -3, Dec)),
            ("0.0005k", q(5, -1, Dec)),
            ("0.005", q(5, -3, Dec)),
            ("0.05", q(5, -2, Dec)),
            ("0.5", q(5, -1, Dec)),
            ("0.00050k", q(5, -1, Dec)),
            ("0.00500", q(5, -3, Dec)),
            ("0.05000", q(5, -2, Dec)),
            ("0.50000", q(5, -1, Dec)),
            ("0.5e0", q(5, -1, Exp)),
            ("0.5e-1", q(5, -2, Exp)),
            ("0.5e-2", q(5, -3, Exp)),
            ("10.035M", q(10035, 3, Dec)),
            ("1.2e3", q(12, 2, Exp)),
            ("1.3E+6", q(13, 5, Exp)),
            ("1.40e9", q(14, 8, Exp)),
            ("1.53E12", q(153, 10, Exp)),
            ("1.6e15", q(16, 14, Exp)),
            ("1.7E18", q(17, 17, Exp)),
            ("9.01", q(901, -2, Dec)),
            ("8.1k", q(81, 2, Dec)),
            ("7.123456M", q(7123456, 0, Dec)),
            ("6.987654321G", q(6987654321, 0, Dec)),
            ("5.444T", q(5444, 9, Dec)),
            ("40.1T", q(401, 11, Dec)),
            ("300.2T", q(3002, 11, Dec)),
            ("2.5P", q(25, 14, Dec)),
            ("1.01E", q(101, 16, Dec)),
            ("3.001n", q(4, -9, Dec)),
            ("1.1E-9", q(2, -9, Exp)),
            ("0.0000000001", q(1, -9, Dec)),
            ("0.0000000005", q(1, -9, Dec)),
            ("0.00000000050", q(1, -9, Dec)),
            ("0.5e-9", q(1, -9, Exp)),
            ("0.9n", q(1, -9, Dec)),
            ("0.00000012345", q(124, -9, Dec)),
            ("0.00000012354", q(124, -9, Dec)),
            ("9Ei", max_allowed),
            ("9223372036854775807Ki", max_allowed),
            ("12E", q(12, 18, Dec)),
            ("100.035Ki", q(10243584, -2, Bin)),
            ("0.5Mi", q(512 * 1024, 0, Bin)),
            ("0.05Gi", q(536870912, -1, Bin)),
            ("0.025Ti", q(274877906944, -1, Bin)),
            ("0.000000000001Ki", q(2, -9, Dec)),
            (".001", q(1, -3, Dec)),
            (".0001k", q(100, -3, Dec)),
            ("1.", q(1, 0, Dec)),
            ("1.G", q(1, 9, Dec)),
        ];
        for (input, want) in &table {
            assert_eq!(Quantity::parse(input).as_ref(), Ok(want), "{input}");
            let negative = Quantity {
                nanos: -want.nanos,
                format: want.format,
            };
            assert_eq!(
                Quantity::parse(&format!("-{input}")),
                Ok(negative),
                "-{input}"
            );
            assert_eq!(
                Quantity::parse(&format!("+{input}")).as_ref(),
                Ok(want),
                "+{input}"
            );
        }
        // TestParseQuantityString: a point alone is zero.
        for zero in [".", "-.", "+", "-", "000"] {
            assert_eq!(Quantity::parse(zero).map(|q| q.nanos()), Ok(0), "{zero}");
        }
        assert_eq!(Quantity::parse("1E-3").map(|q| q.format()), Ok(Exp));
    }

    /// The invalid list of `TestQuantityParse`, and the empty string.
    #[test]
    fn kubernetes_invalid_table() {
        for bad in [
            "", "1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i", "-3.01e-",
            " 1", "1 ",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
        // What a hand-written parser got wrong: an exponent is a suffix of its own, and a
        // number without digits cannot be read where Kubernetes reads the text again.
        assert_eq!(Quantity::parse("1e3Ki"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("4 cores"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("inf"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1e3m"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1Kim"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse(".e-10"), Err(QuantityError::Numeric));
        assert_eq!(Quantity::parse("1e40"), Err(QuantityError::OutOfRange));
    }

    #[test]
    fn values_read_as_units() {
        let cores = |t: &str| Quantity::parse(t).map(|q| q.as_f64());
        assert_eq!(cores("1500m"), Ok(1.5));
        assert_eq!(cores("250u"), Ok(0.00025));
        assert_eq!(cores("2"), Ok(2.0));
        assert_eq!(cores("1e-3"), Ok(0.001));
        assert!(Quantity::parse("-1").is_ok_and(|q| q.is_negative()));
    }
}
