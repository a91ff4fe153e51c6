//! Durations (`250ms`, `10s`, `5m`, `1h`), sizes (`512`, `16KiB`, `10MB`) and base64, as
//! configuration writes them (shared by the config crate and the filters' syntax).

use serde::Deserialize;
use std::time::Duration;

/// A size as written: a number of bytes or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected e.g. \"250ms\", \"10s\", \"5m\"")
    })?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => return Err(format!("duration {text:?} needs a unit (ms, s, m or h)")),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(d)
}

/// Parses a size: a whole number of bytes, optionally with a unit
/// (`KiB`, `MiB`, `GiB` are powers of 1024; `KB`, `MB`, `GB` powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. 16384, \"16KiB\", \"10MB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Decodes base64 in the standard (`+/`) or URL-safe (`-_`) alphabet,
/// padding optional; `None` for anything else.
pub fn parse_base64(text: &str) -> Option<Vec<u8>> {
    let t = text.trim().trim_end_matches('=');
    if t.len() % 4 == 1 {
        return None; // a lone 6-bit tail holds no whole byte
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in t.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Encodes in the standard base64 alphabet with padding (what etcd's JSON
/// API takes for keys and values).
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &b)| w | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= n {
                out.push(char::from(ALPHABET[(word >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `v` read by `read`; `default` when absent, or when refused (the reason
/// goes to `refused`). Configuration readers collect every problem this way
/// instead of stopping at the first.
pub fn or_default<V, T>(
    v: Option<V>,
    default: T,
    read: impl FnOnce(V) -> Result<T, String>,
    refused: impl FnOnce(String),
) -> T {
    match v.map(read) {
        None => default,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            refused(e);
            default
        }
    }
}

/// A duration that must be above zero, as written.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// A size as written: bytes (not negative) or text with a unit.
pub fn size_of(raw: &RawSize) -> Result<u64, String> {
    match raw {
        RawSize::Bytes(n) => {
            u64::try_from(*n).map_err(|_| format!("must not be negative (got {n})"))
        }
        RawSize::Text(t) => parse_size(t),
    }
}

/// A whole number in `min..=max`.
pub fn int_between(n: i64, min: u64, max: u64) -> Result<u64, String> {
    u64::try_from(n)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("must be between {min} and {max} (got {n})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            (" 3s ", Duration::from_secs(3)),
        ];
        for (t, d) in ok {
            assert_eq!(parse_duration(t), Ok(d), "{t}");
        }
        for bad in ["", "10", "s", "1.5s", "-1s", "10 parsecs", "10d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        let ok = [
            ("512", 512),
            ("16KiB", 16384),
            ("1MiB", 1 << 20),
            ("10MB", 10_000_000),
            ("1GiB", 1 << 30),
        ];
        for (t, n) in ok {
            assert_eq!(parse_size(t), Ok(n), "{t}");
        }
        for bad in ["", "KiB", "1.5MiB", "10 apples", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_round_trips() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "/shardgate/config",
        ] {
            let encoded = encode_base64(text.as_bytes());
            assert_eq!(encoded.len() % 4, 0);
            assert_eq!(parse_base64(&encoded).unwrap(), text.as_bytes());
        }
        assert_eq!(encode_base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(encode_base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn base64() {
        let ok: &[(&str, &[u8])] = &[
            ("", b""),
            ("Zg==", b"f"),
            ("Zg", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("aGVsbG8gd29ybGQ=", b"hello world"),
            ("+/8=", &[0xfb, 0xff]),
            ("-_8", &[0xfb, 0xff]),
        ];
        for (t, want) in ok {
            assert_eq!(parse_base64(t).as_deref(), Some(*want), "{t}");
        }
        for bad in ["Z", "Zm9vY", "Zm 9v", "Zm9v!", "Zm=9v"] {
            assert_eq!(parse_base64(bad), None, "{bad}");
        }
    }

    #[test]
    fn checked_readers() {
        assert_eq!(positive_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(
            positive_duration("0s"),
            Err("must be greater than zero".into())
        );
        assert_eq!(size_of(&RawSize::Bytes(7)), Ok(7));
        assert_eq!(size_of(&RawSize::Text("2KiB".into())), Ok(2048));
        assert_eq!(
            size_of(&RawSize::Bytes(-1)),
            Err("must not be negative (got -1)".into())
        );
        assert_eq!(int_between(3, 1, 5), Ok(3));
        assert_eq!(
            int_between(-3, 1, 5),
            Err("must be between 1 and 5 (got -3)".into())
        );
        assert_eq!(
            int_between(6, 1, 5),
            Err("must be between 1 and 5 (got 6)".into())
        );
        let mut seen = Vec::new();
        assert_eq!(
            or_default(Some(9), 1, |n| int_between(n, 1, 5), |e| seen.push(e)),
            1
        );
        assert_eq!(
            or_default(None, 1, |n| int_between(n, 1, 5), |e| seen.push(e)),
            1
        );
        assert_eq!(
            or_default(Some(4), 1, |n| int_between(n, 1, 5), |e| seen.push(e)),
            4
        );
        assert_eq!(seen, ["must be between 1 and 5 (got 9)"]);
    }
}
