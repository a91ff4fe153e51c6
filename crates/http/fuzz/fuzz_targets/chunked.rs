//! Any bytes through `ChunkedDecoder::feed` as the start of a chunked body.
//! - Fed whole, byte by byte, and in pieces split where the input's hash says, the decoder
//!   agrees on (consumed, done, error kind, payload), under small and unlimited limits.
//! - A metadata limit only ever turns an answer into `TooLarge` (payload seen so far a prefix).
//! - With no metadata limit, it agrees with `reference` below: a direct transcription of the
//!   RFC 9112 §7.1 grammar with the crate's documented strictness (no whitespace after the size
//!   except before `;`, CRLF only, at most 16 hex digits counting leading zeros and at most 15
//!   significant ones, extensions checked byte
//!   by byte: tchar `=` `;` SP HTAB, or quoted-strings; trailer fields `tchar+ ":" value`).
//!
//! Run: `cargo +nightly fuzz run chunked`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_http::{ChunkedDecoder, ChunkedError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The body ended after this many bytes.
    Done(usize),
    /// Every byte belongs to the body; more are needed.
    Incomplete,
    Error(ChunkedError),
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng(fnv(data) | 1);
    let max_body = match rng.next() % 4 {
        0 => Some(rng.next() % 64),
        1 => Some(rng.next() % 0x1_0000),
        _ => None,
    };
    let max_meta = [4, 16, 64, usize::MAX][(rng.next() % 4) as usize];

    let unlimited = decode(data, usize::MAX, max_body, &[data.len()]);
    let want = reference(data, max_body);
    assert_eq!(unlimited, want, "decoder vs reference");

    let limited = decode(data, max_meta, max_body, &[data.len()]);
    let bytewise = decode(data, max_meta, max_body, &vec![1; data.len()]);
    assert_eq!(limited, bytewise, "whole vs byte by byte");
    for _ in 0..4 {
        let mut sizes = Vec::new();
        let mut left = data.len();
        while left > 0 {
            let n = (1 + rng.next() as usize % (1 + left / 2)).min(left);
            sizes.push(n);
            left -= n;
        }
        let split = decode(data, max_meta, max_body, &sizes);
        assert_eq!(limited, split, "whole vs pieces {sizes:?}");
    }
    if limited.0 != Outcome::Error(ChunkedError::TooLarge) {
        assert_eq!(limited, unlimited, "the metadata limit changed the answer");
    } else {
        assert!(unlimited.1.starts_with(&limited.1));
    }
});

/// Feeds `input` to a fresh decoder in pieces of the given sizes (summing to its length).
fn decode(
    input: &[u8],
    max_meta: usize,
    max_body: Option<u64>,
    sizes: &[usize],
) -> (Outcome, Vec<u8>) {
    let mut d = ChunkedDecoder::new(max_meta, max_body);
    let mut payload = Vec::new();
    let mut at = 0;
    for &n in sizes {
        let piece = &input[at..at + n];
        match d.feed(piece, |r| payload.extend_from_slice(&piece[r])) {
            Err(e) => return (Outcome::Error(e), payload),
            Ok(p) if p.done => {
                assert!(d.is_done() && p.consumed <= n);
                assert_eq!(d.body_len(), payload.len() as u64);
                return (Outcome::Done(at + p.consumed), payload);
            }
            Ok(p) => assert_eq!(p.consumed, n, "not done yet every byte is consumed"),
        }
        at += n;
    }
    assert!(!d.is_done());
    assert!(d.body_len() >= payload.len() as u64);
    (Outcome::Incomplete, payload)
}

// ---- reference ----------------------------------------------------------------------------

/// Why the reference stopped early.
enum Stop {
    Incomplete,
    Error(ChunkedError),
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, Stop> {
        let b = *self.input.get(self.pos).ok_or(Stop::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8, err: ChunkedError) -> Result<(), Stop> {
        if self.next()? == want {
            Ok(())
        } else {
            Err(Stop::Error(err))
        }
    }
}

fn reference(input: &[u8], max_body: Option<u64>) -> (Outcome, Vec<u8>) {
    let mut c = Cursor { input, pos: 0 };
    let mut payload = Vec::new();
    let outcome = match chunked_body(&mut c, max_body, &mut payload) {
        Ok(()) => Outcome::Done(c.pos),
        Err(Stop::Incomplete) => Outcome::Incomplete,
        Err(Stop::Error(e)) => Outcome::Error(e),
    };
    (outcome, payload)
}

/// chunked-body = *chunk last-chunk trailer-section CRLF
fn chunked_body(c: &mut Cursor<'_>, max_body: Option<u64>, out: &mut Vec<u8>) -> Result<(), Stop> {
    let mut total: u64 = 0;
    loop {
        let size = chunk_size_line(c)?;
        if size == 0 {
            return trailer_section(c);
        }
        total += size;
        if max_body.is_some_and(|m| total > m) {
            return Err(Stop::Error(ChunkedError::BodyTooLarge));
        }
        // chunk-data: `size` bytes, whatever they are.
        for _ in 0..size {
            out.push(c.next()?);
        }
        c.expect(b'\r', ChunkedError::MissingDataTerminator)?;
        c.expect(b'\n', ChunkedError::BadLineEnding)?;
    }
}

/// chunk-size [ BWS ";" chunk-ext ] CRLF, returning the size.
fn chunk_size_line(c: &mut Cursor<'_>) -> Result<u64, Stop> {
    let bad_size = || Stop::Error(ChunkedError::BadSize);
    let mut size = u64::from(hex(c.next()?).ok_or_else(bad_size)?);
    let mut significant = u32::from(size != 0);
    let mut digits = 1u32;
    loop {
        match c.next()? {
            b'\r' => break,
            b';' => {
                chunk_ext(c)?;
                break;
            }
            b' ' | b'\t' => {
                // Whitespace after the size is allowed only before an extension.
                loop {
                    match c.next()? {
                        b' ' | b'\t' => {}
                        b';' => break,
                        _ => return Err(bad_size()),
                    }
                }
                chunk_ext(c)?;
                break;
            }
            b => {
                let d = hex(b).ok_or_else(bad_size)?;
                if significant > 0 || d != 0 {
                    significant += 1;
                }
                digits += 1;
                if significant > 15 || digits > 16 {
                    return Err(bad_size());
                }
                size = size * 16 + u64::from(d);
            }
        }
    }
    c.expect(b'\n', ChunkedError::BadLineEnding)?;
    Ok(size)
}

/// Extension bytes after the first `;`, up to and including the CR.
fn chunk_ext(c: &mut Cursor<'_>) -> Result<(), Stop> {
    let bad = || Stop::Error(ChunkedError::BadExtension);
    loop {
        match c.next()? {
            b'\r' => return Ok(()),
            b'\n' => return Err(Stop::Error(ChunkedError::BadLineEnding)),
            b'"' => loop {
                match c.next()? {
                    b'"' => break,
                    b'\\' => {
                        let b = c.next()?;
                        if !(qdtext(b) || b == b'"' || b == b'\\') {
                            return Err(bad());
                        }
                    }
                    b if qdtext(b) => {}
                    _ => return Err(bad()),
                }
            },
            b if tchar(b) || matches!(b, b'=' | b';' | b' ' | b'\t') => {}
            _ => return Err(bad()),
        }
    }
}

/// trailer-section = *( field-line CRLF ), then the final CRLF.
fn trailer_section(c: &mut Cursor<'_>) -> Result<(), Stop> {
    let bad = || Stop::Error(ChunkedError::BadTrailer);
    loop {
        let first = c.next()?;
        if first == b'\r' {
            return c.expect(b'\n', ChunkedError::BadLineEnding);
        }
        if !tchar(first) {
            return Err(bad());
        }
        loop {
            match c.next()? {
                b':' => break,
                b if tchar(b) => {}
                _ => return Err(bad()),
            }
        }
        loop {
            match c.next()? {
                b'\r' => break,
                b'\n' => return Err(Stop::Error(ChunkedError::BadLineEnding)),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                _ => return Err(bad()),
            }
        }
        c.expect(b'\n', ChunkedError::BadLineEnding)?;
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// tchar (RFC 9110 §5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// qdtext (RFC 9110 §5.6.4).
fn qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

// ---- a tiny deterministic generator seeded from the input -------------------------------

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
