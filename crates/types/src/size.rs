//! Parsers for human-written sizes (`512M`, `1.5GiB`) and durations (`30s`).

use std::time::Duration;

/// A size or duration string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty value")]
    Empty,
    #[error("`{0}` is not a number followed by an optional unit")]
    Syntax(String),
    #[error("unknown unit `{unit}` in `{input}` (use {expected})")]
    Unit { input: String, unit: String, expected: &'static str },
    #[error("`{0}` is too large")]
    Overflow(String),
}

fn split_number(input: &str) -> Result<(f64, &str), ParseError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(ParseError::Empty);
    }
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let value: f64 = num.parse().map_err(|_| ParseError::Syntax(input.to_owned()))?;
    if !value.is_finite() {
        return Err(ParseError::Syntax(input.to_owned()));
    }
    Ok((value, unit.trim()))
}

/// Parses a byte size: a plain number of bytes, or a number with one of the
/// units `K`, `M`, `G`, `T` (powers of 1024; `KB`, `KiB`, `k` are accepted too).
pub fn parse_size(input: &str) -> Result<u64, ParseError> {
    let (value, unit) = split_number(input)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(ParseError::Unit {
                input: input.to_owned(),
                unit: unit.to_owned(),
                expected: "B, K, M, G or T",
            })
        }
    };
    let bytes = value * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
        return Err(ParseError::Overflow(input.to_owned()));
    }
    Ok(bytes as u64)
}

/// Parses a duration: a number with `ms`, `s`, `m` or `h` (a bare number is seconds).
pub fn parse_duration(input: &str) -> Result<Duration, ParseError> {
    let (value, unit) = split_number(input)?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(ParseError::Unit { input: input.to_owned(), unit: unit.to_owned(), expected: "ms, s, m or h" })
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| ParseError::Overflow(input.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(matches!(parse_size("12Q"), Err(ParseError::Unit { .. })));
        assert!(matches!(parse_size("-1"), Err(ParseError::Syntax(_))));
        assert_eq!(parse_size(""), Err(ParseError::Empty));
        assert!(matches!(parse_size("99999999999T"), Err(ParseError::Overflow(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 days").is_err());
    }

    proptest! {
        #[test]
        fn size_parser_never_panics(s in "\\PC*") {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
        }

        #[test]
        fn size_roundtrip(n in 0u64..(1 << 40)) {
            prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
            prop_assert_eq!(parse_size(&format!("{n}K")), Ok(n << 10));
        }
    }
}
