//! A strict, incremental scanner for the chunked transfer coding
//! (RFC 9112 §7.1).
//!
//! The proxy forwards chunked bodies byte for byte (extensions and trailers
//! included) while this scanner walks them to find where the body ends and to
//! refuse anything ambiguous: a bare LF, whitespace where none is allowed, a
//! size that is not hex or overflows, control bytes in extensions or trailers.
//! When the peer cannot take chunked (an HTTP/1.0 client) the same scanner
//! reports the data ranges so the caller can pass on only the payload.

use std::fmt;
use std::ops::Range;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// The chunk size is missing, not hexadecimal, or too large.
    BadSize,
    /// Bad bytes in a chunk extension.
    BadExtension,
    /// A line ended without CR LF (bare LF or stray CR).
    BadLineEnding,
    /// Chunk data not followed by CR LF.
    MissingDataTerminator,
    /// A malformed trailer field.
    BadTrailer,
    /// Trailer section or extensions larger than allowed.
    TooLarge,
    /// The decoded body is over the configured limit.
    BodyTooLarge,
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkedError::BadSize => "invalid chunk size",
            ChunkedError::BadExtension => "invalid chunk extension",
            ChunkedError::BadLineEnding => "chunked framing line not ended by CRLF",
            ChunkedError::MissingDataTerminator => "chunk data not followed by CRLF",
            ChunkedError::BadTrailer => "invalid trailer field",
            ChunkedError::TooLarge => "chunk metadata too large",
            ChunkedError::BodyTooLarge => "chunked body over the size limit",
        })
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line; no digit seen yet.
    SizeStart,
    /// Inside the hex digits.
    Size,
    /// Whitespace after the size: only `;` may follow.
    SizeWs,
    /// Inside a chunk extension, up to CR.
    Ext,
    /// Inside a quoted-string within an extension.
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedEscape,
    /// Saw CR ending the size line; LF must follow.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After the data: expect CR.
    DataCr,
    /// After the data's CR: expect LF.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw CR ending a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// The result of one [`ChunkedDecoder::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to this body (all of them unless the
    /// body ended inside the input).
    pub consumed: usize,
    /// The body's last byte was among the consumed bytes.
    pub done: bool,
    /// Where in the input the trailer section's first field begins, when it
    /// began in this input (a body without trailer fields never sets it).
    pub trailers_at: Option<usize>,
}

/// Incremental chunked scanner. See the module docs.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of chunk data left in the current chunk, or the size being read.
    remaining: u64,
    /// Hex digits read for the current size.
    digits: u8,
    /// Bytes of metadata (extensions + trailers) seen, against `max_meta`.
    meta: usize,
    max_meta: usize,
    /// Payload bytes seen so far, against `max_body`.
    body: u64,
    max_body: Option<u64>,
    /// A trailer field has begun.
    trailers: bool,
}

impl ChunkedDecoder {
    /// A scanner that refuses more than `max_meta` bytes of extensions and
    /// trailers, and more than `max_body` bytes of payload.
    pub fn new(max_meta: usize, max_body: Option<u64>) -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            remaining: 0,
            digits: 0,
            meta: 0,
            max_meta,
            body: 0,
            max_body,
            trailers: false,
        }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the trailer section has begun (with a field).
    pub fn in_trailers(&self) -> bool {
        self.trailers
    }

    /// Payload bytes seen so far.
    pub fn body_len(&self) -> u64 {
        self.body
    }

    /// Scans `input`, the next bytes of the body. `on_data` is called with
    /// each range of `input` that is chunk payload (for de-chunking).
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(Range<usize>),
    ) -> Result<Progress, ChunkedError> {
        let mut i = 0;
        let mut trailers_at = None;
        while i < input.len() {
            if self.state == State::Data {
                let n =
                    (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                on_data(i..i + n);
                i += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            let before = self.state;
            self.step(b)?;
            if before == State::TrailerStart && self.state == State::TrailerName && !self.trailers {
                self.trailers = true;
                trailers_at = Some(i - 1);
            }
            if self.state == State::Done {
                return Ok(Progress {
                    consumed: i,
                    done: true,
                    trailers_at,
                });
            }
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
            trailers_at,
        })
    }

    fn count_meta(&mut self) -> Result<(), ChunkedError> {
        self.meta += 1;
        if self.meta > self.max_meta {
            return Err(ChunkedError::TooLarge);
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        use State::*;
        self.state = match (self.state, b) {
            (SizeStart, _) => {
                let d = hex_value(b).ok_or(ChunkedError::BadSize)?;
                self.remaining = u64::from(d);
                self.digits = 1;
                Size
            }
            (Size, b'\r') => SizeLf,
            (Size, b';') => {
                self.count_meta()?;
                Ext
            }
            (Size, b' ' | b'\t') => SizeWs,
            (Size, _) => {
                let d = hex_value(b).ok_or(ChunkedError::BadSize)?;
                self.digits += 1;
                // 15 significant hex digits is over 10^18 bytes: nobody sends that.
                if self.digits > 16 || self.remaining >> 56 != 0 {
                    // More digits than a 64-bit size has, leading zeros
                    // included: a peer that pads sizes to slip past another
                    // parser's limit is not a peer to trust.
                    return Err(ChunkedError::BadSize);
                }
                self.remaining = (self.remaining << 4) | u64::from(d);
                Size
            }
            (SizeWs, b' ' | b'\t') => SizeWs,
            (SizeWs, b';') => Ext,
            (SizeWs, _) => return Err(ChunkedError::BadSize),
            (Ext, b'\r') => SizeLf,
            (Ext, b'"') => {
                self.count_meta()?;
                ExtQuoted
            }
            (Ext, b'\n') => return Err(ChunkedError::BadLineEnding),
            (Ext, _) => {
                self.count_meta()?;
                if !is_ext_byte(b) {
                    return Err(ChunkedError::BadExtension);
                }
                Ext
            }
            (ExtQuoted, b'"') => {
                self.count_meta()?;
                Ext
            }
            (ExtQuoted, b'\\') => {
                self.count_meta()?;
                ExtQuotedEscape
            }
            (ExtQuoted, _) => {
                self.count_meta()?;
                if !is_qd_byte(b) {
                    return Err(ChunkedError::BadExtension);
                }
                ExtQuoted
            }
            (ExtQuotedEscape, _) => {
                self.count_meta()?;
                if !is_qd_byte(b) && b != b'"' && b != b'\\' {
                    return Err(ChunkedError::BadExtension);
                }
                ExtQuoted
            }
            (SizeLf, b'\n') => {
                if self.remaining == 0 {
                    TrailerStart
                } else {
                    self.body += self.remaining;
                    if self.max_body.is_some_and(|max| self.body > max) {
                        return Err(ChunkedError::BodyTooLarge);
                    }
                    Data
                }
            }
            (SizeLf, _) => return Err(ChunkedError::BadLineEnding),
            (Data, _) => unreachable!("data is consumed in bulk by feed"),
            (DataCr, b'\r') => DataLf,
            (DataCr, _) => return Err(ChunkedError::MissingDataTerminator),
            (DataLf, b'\n') => {
                self.digits = 0;
                SizeStart
            }
            (DataLf, _) => return Err(ChunkedError::BadLineEnding),
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) => {
                self.count_meta()?;
                if !crate::header::is_tchar(b) {
                    return Err(ChunkedError::BadTrailer);
                }
                TrailerName
            }
            (TrailerName, b':') => {
                self.count_meta()?;
                TrailerValue
            }
            (TrailerName, _) => {
                self.count_meta()?;
                if !crate::header::is_tchar(b) {
                    return Err(ChunkedError::BadTrailer);
                }
                TrailerName
            }
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) => {
                self.count_meta()?;
                if b != b'\t' && (b < 0x20 || b == 0x7f) {
                    return Err(if b == b'\n' {
                        ChunkedError::BadLineEnding
                    } else {
                        ChunkedError::BadTrailer
                    });
                }
                TrailerValue
            }
            (TrailerLf, b'\n') => TrailerStart,
            (TrailerLf, _) => return Err(ChunkedError::BadLineEnding),
            (EndLf, b'\n') => Done,
            (EndLf, _) => return Err(ChunkedError::BadLineEnding),
            (Done, _) => Done,
        };
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes allowed in an extension outside quotes: tchar, `=`, `;`, whitespace.
fn is_ext_byte(b: u8) -> bool {
    crate::header::is_tchar(b) || matches!(b, b'=' | b';' | b' ' | b'\t')
}

/// qdtext (RFC 9110 §5.6.4): HTAB, SP, visible bytes but `"` and `\`, obs-text.
fn is_qd_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (b >= 0x21 && b != b'"' && b != b'\\' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` whole, then byte by byte; both must agree.
    fn run(input: &[u8]) -> Result<(usize, Vec<u8>), ChunkedError> {
        let mut whole = ChunkedDecoder::new(1024, None);
        let mut data = Vec::new();
        let p = whole.feed(input, |r| data.extend_from_slice(&input[r]))?;
        let mut bytewise = ChunkedDecoder::new(1024, None);
        let mut data2 = Vec::new();
        let mut consumed = 0;
        for (i, b) in input.iter().enumerate() {
            let q = bytewise.feed(std::slice::from_ref(b), |_| data2.push(*b))?;
            consumed = i + q.consumed;
            if q.done {
                break;
            }
        }
        assert_eq!(data, data2, "bytewise data differs");
        assert_eq!(p.done, bytewise.is_done());
        if p.done {
            assert_eq!(p.consumed, consumed);
            Ok((p.consumed, data))
        } else {
            Ok((usize::MAX, data))
        }
    }

    #[test]
    fn accepts_valid_bodies() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"0\r\n\r\n", b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;ext=1\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5 ;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;a=\"q;\\\"x\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"0005\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 1\r\nX-B: two\r\n\r\n",
                b"abcde",
            ),
            (b"000\r\n\r\n", b""),
        ];
        for (input, want) in cases {
            let (consumed, data) = run(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(consumed, input.len(), "{input:?}");
            assert_eq!(&data[..], *want, "{input:?}");
        }
    }

    #[test]
    fn stops_at_end_of_body() {
        let input = b"1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (consumed, _) = run(input).unwrap();
        assert_eq!(consumed, 11);
    }

    #[test]
    fn says_where_trailer_fields_begin() {
        let mut d = ChunkedDecoder::new(1024, None);
        let p = d.feed(b"1\r\nx\r\n0\r\n\r\n", |_| {}).unwrap();
        assert_eq!(
            p.trailers_at, None,
            "no field, no trailer section to filter"
        );
        let mut d = ChunkedDecoder::new(1024, None);
        let p = d.feed(b"1\r\nx\r\n0\r\nA:", |_| {}).unwrap();
        assert_eq!((p.trailers_at, p.done), (Some(9), false));
        assert!(d.in_trailers());
        let p = d.feed(b" 1\r\nB: 2\r\n\r\n", |_| {}).unwrap();
        assert_eq!((p.trailers_at, p.done, p.consumed), (None, true, 12));
    }

    #[test]
    fn rejects_smuggling_shapes() {
        let cases: &[(&[u8], ChunkedError)] = &[
            (b"5\nhello\r\n0\r\n\r\n", ChunkedError::BadSize),
            (
                b"5\r\nhello\n0\r\n\r\n",
                ChunkedError::MissingDataTerminator,
            ),
            (b"5\r\nhello\r0\r\n\r\n", ChunkedError::BadLineEnding),
            (
                b"5\r\nhelloXX0\r\n\r\n",
                ChunkedError::MissingDataTerminator,
            ),
            (b"0\r\n\n", ChunkedError::BadTrailer),
            (b"0\r\n\r\r", ChunkedError::BadLineEnding),
            (b"\r\n", ChunkedError::BadSize),
            (b"x\r\n", ChunkedError::BadSize),
            (b"0x5\r\nhello\r\n", ChunkedError::BadSize),
            (b"-5\r\n", ChunkedError::BadSize),
            (b"+5\r\n", ChunkedError::BadSize),
            (b" 5\r\n", ChunkedError::BadSize),
            (b"5 \r\n", ChunkedError::BadSize),
            (b"5\t\r\n", ChunkedError::BadSize),
            (b"fffffffffffffffff\r\n", ChunkedError::BadSize),
            (b"1000000000000000\r\n", ChunkedError::BadSize),
            (b"5;\x00\r\n", ChunkedError::BadExtension),
            (b"5;a\nb\r\n", ChunkedError::BadLineEnding),
            (b"5;a=\"\x01\"\r\n", ChunkedError::BadExtension),
            (b"0\r\nX-A: b\nc\r\n\r\n", ChunkedError::BadLineEnding),
            (b"0\r\nX A: b\r\n\r\n", ChunkedError::BadTrailer),
            (b"0\r\n X: b\r\n\r\n", ChunkedError::BadTrailer),
            (b"0\r\nX: \x00\r\n\r\n", ChunkedError::BadTrailer),
        ];
        for (input, want) in cases {
            assert_eq!(
                run(input).err(),
                Some(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn more_than_16_size_digits_are_refused_leading_zeros_included() {
        assert!(run(b"0000000000000001\r\nx\r\n0\r\n\r\n").is_ok());
        assert_eq!(
            run(b"00000000000000001\r\nx\r\n0\r\n\r\n").err(),
            Some(ChunkedError::BadSize)
        );
        assert_eq!(
            run(b"0000000000000000000001\r\nx\r\n0\r\n\r\n").err(),
            Some(ChunkedError::BadSize)
        );
    }

    #[test]
    fn body_limit_counts_declared_sizes() {
        let mut d = ChunkedDecoder::new(1024, Some(4));
        assert_eq!(d.feed(b"5\r\n", |_| {}), Err(ChunkedError::BodyTooLarge));
        let mut d = ChunkedDecoder::new(1024, Some(5));
        assert!(d.feed(b"5\r\nhello\r\n0\r\n\r\n", |_| {}).unwrap().done);
    }

    #[test]
    fn metadata_limit() {
        let mut d = ChunkedDecoder::new(8, None);
        assert_eq!(
            d.feed(b"0\r\nX-Long-Trailer: value\r\n\r\n", |_| {}),
            Err(ChunkedError::TooLarge)
        );
    }
}
