//! Just enough DER to read a certificate's `notAfter` (RFC 5280 §4.1):
//! webpki checks validity but does not expose it.

/// One tag-length-value: the tag, the contents, and what follows.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| a << 8 | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;

/// The fields of a certificate's TBSCertificate after the optional version:
/// serial, signature algorithm, issuer, validity, subject, ...
fn tbs_fields(cert: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, cert, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let (tag, _, after) = tlv(tbs)?;
    Some(if tag == 0xa0 { after } else { tbs })
}

/// Field `n` (0: the serial) of the TBSCertificate, a SEQUENCE's contents.
fn tbs_sequence(cert: &[u8], n: usize) -> Option<&[u8]> {
    let mut rest = tbs_fields(cert)?;
    for _ in 0..n {
        rest = tlv(rest)?.2;
    }
    match tlv(rest)? {
        (SEQUENCE, contents, _) => Some(contents),
        _ => None,
    }
}

/// The certificate's `notAfter`, in seconds since the Unix epoch.
pub(crate) fn not_after(cert: &[u8]) -> Option<i64> {
    let validity = tbs_sequence(cert, 3)?;
    let after_before = tlv(validity)?.2;
    let (tag, time, _) = tlv(after_before)?;
    parse_time(tag, time)
}

/// The subject Name of a certificate as RFC 4514 text (RDNs in reverse
/// order, values escaped); `None` when it does not parse.
pub(crate) fn subject(cert: &[u8]) -> Option<String> {
    let mut name = tbs_sequence(cert, 4)?;
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (0x31, mut set, next) = tlv(name)? else {
            return None;
        };
        name = next;
        let mut parts = Vec::new();
        while !set.is_empty() {
            let (SEQUENCE, atv, next) = tlv(set)? else {
                return None;
            };
            set = next;
            let (0x06, oid, value) = tlv(atv)? else {
                return None;
            };
            let (_, text, _) = tlv(value)?;
            parts.push(format!("{}={}", attribute_name(oid), escape(text)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// Short names of the usual attributes; the dotted OID otherwise.
fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        _ => {
            let mut out = String::new();
            if let Some((&first, rest)) = oid.split_first() {
                out = format!("{}.{}", first / 40, first % 40);
                let mut n: u64 = 0;
                for &b in rest {
                    n = n << 7 | u64::from(b & 0x7f);
                    if b & 0x80 == 0 {
                        out.push_str(&format!(".{n}"));
                        n = 0;
                    }
                }
            }
            out
        }
    }
}

/// An attribute value as RFC 4514 writes it: `,+"\<>;=` and a leading `#`
/// or space escaped with `\`, bytes outside printable ASCII as `\XX`.
fn escape(value: &[u8]) -> String {
    let mut out = String::new();
    for (i, &b) in value.iter().enumerate() {
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' | b'=' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'#' | b' ' if i == 0 => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:02X}")),
        }
    }
    out
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950 to 2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |a, &b| {
            b.is_ascii_digit().then(|| a * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (h, m, s) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x18, b"20000229010101Z"), Some(951_786_061));
        assert_eq!(parse_time(0x17, b"701301000000Z"), None);
        assert_eq!(parse_time(0x17, b"7001010000Z"), None);
    }
}
