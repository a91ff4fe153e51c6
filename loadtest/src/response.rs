//! Incremental HTTP/1.1 message framing for the client and the upstream.
//!
//! The response head is parsed with httparse into a stack array of headers; the body is never
//! kept, only counted past: `Content-Length`, `chunked` (with extensions and trailers) or
//! until-close. The caller owns the buffer and feeds whatever it has read; [`ResponseReader`]
//! says how many bytes it consumed and whether a whole response is done.

/// Headers parsed per response head; more is treated as a malformed response.
pub const MAX_HEADERS: usize = 64;

/// Why a peer's bytes could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The head is not valid HTTP/1.x.
    Head,
    /// `Content-Length` missing a number, repeated with different values, or with chunked.
    Length,
    /// A chunk size line or chunk terminator is malformed.
    ChunkSyntax,
}

/// What one call to [`ResponseReader::advance`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Needs more bytes; `consumed` bytes at the front may be dropped by the caller.
    NeedMore { consumed: usize },
    /// A whole response ended after `consumed` bytes.
    Done {
        consumed: usize,
        status: u16,
        keep_alive: bool,
    },
}

/// How the remainder of a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading the hex size; `digits` counts hex digits seen.
    Size {
        size: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to the end of the size line.
    Extension {
        size: u64,
    },
    /// Saw CR at the end of the size line.
    SizeLf {
        size: u64,
    },
    /// Skipping chunk data.
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Inside the trailer section; `line_start` is true at the start of a line.
    Trailer {
        line_start: bool,
    },
    TrailerLf {
        line_start: bool,
    },
}

/// Outcome of feeding bytes to a body decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStep {
    /// All of the input was body; more is expected.
    More,
    /// The body ended after this many bytes of the input.
    End(usize),
}

impl Body {
    /// Consumes body bytes from `input`. `UntilClose` bodies only end at EOF.
    pub fn feed(&mut self, input: &[u8]) -> Result<BodyStep, FrameError> {
        match self {
            Body::Length(remaining) => {
                let avail = input.len() as u64;
                if avail >= *remaining {
                    let used = *remaining as usize;
                    *remaining = 0;
                    Ok(BodyStep::End(used))
                } else {
                    *remaining -= avail;
                    Ok(BodyStep::More)
                }
            }
            Body::UntilClose => Ok(BodyStep::More),
            Body::Chunked(state) => feed_chunked(state, input),
        }
    }
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// State after a complete size line.
fn after_size_line(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Trailer { line_start: true }
    } else {
        Chunk::Data { remaining: size }
    }
}

fn feed_chunked(state: &mut Chunk, input: &[u8]) -> Result<BodyStep, FrameError> {
    let mut i = 0;
    while i < input.len() {
        if let Chunk::Data { remaining } = state {
            let take = (*remaining).min((input.len() - i) as u64);
            *remaining -= take;
            i += take as usize;
            if *remaining == 0 {
                *state = Chunk::DataCr;
            }
            continue;
        }
        let b = input[i];
        i += 1;
        *state = match *state {
            Chunk::Size { size, digits } => match (hex_value(b), b) {
                (Some(v), _) if digits < 16 => Chunk::Size {
                    size: size * 16 + v,
                    digits: digits + 1,
                },
                (None, b';' | b' ' | b'\t') if digits > 0 => Chunk::Extension { size },
                (None, b'\r') if digits > 0 => Chunk::SizeLf { size },
                (None, b'\n') if digits > 0 => after_size_line(size),
                _ => return Err(FrameError::ChunkSyntax),
            },
            Chunk::Extension { size } => match b {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => after_size_line(size),
                _ => Chunk::Extension { size },
            },
            Chunk::SizeLf { size } if b == b'\n' => after_size_line(size),
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataCr | Chunk::DataLf if b == b'\n' => Chunk::Size { size: 0, digits: 0 },
            Chunk::Trailer { line_start } => match b {
                b'\r' => Chunk::TrailerLf { line_start },
                b'\n' if line_start => return Ok(BodyStep::End(i)),
                b'\n' => Chunk::Trailer { line_start: true },
                _ => Chunk::Trailer { line_start: false },
            },
            Chunk::TrailerLf { line_start } if b == b'\n' => {
                if line_start {
                    return Ok(BodyStep::End(i));
                }
                Chunk::Trailer { line_start: true }
            }
            _ => return Err(FrameError::ChunkSyntax),
        };
    }
    Ok(BodyStep::More)
}

/// Framing of a message body from its headers, shared by requests and responses.
/// Returns `None` when neither header is present.
pub fn body_from_headers(headers: &[httparse::Header<'_>]) -> Result<Option<Body>, FrameError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| FrameError::Length)?;
            let n: u64 = text.trim().parse().map_err(|_| FrameError::Length)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(FrameError::Length);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the final coding; anything else cannot be framed by length.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        }
    }
    match (chunked, length) {
        (true, Some(_)) => Err(FrameError::Length),
        (true, None) => Ok(Some(Body::Chunked(Chunk::Size { size: 0, digits: 0 }))),
        (false, Some(n)) => Ok(Some(Body::Length(n))),
        (false, None) => Ok(None),
    }
}

/// Whether the `Connection` header (or the version default) keeps the connection open.
pub fn keep_alive(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    let mut keep = version >= 1;
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    return false;
                }
                if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep = true;
                }
            }
        }
    }
    keep
}

/// Frames one response after another on a connection.
#[derive(Debug, Clone)]
pub struct ResponseReader {
    head_request: bool,
    state: Option<(Body, u16, bool)>,
}

impl ResponseReader {
    /// `head_request`: responses answer HEAD requests and so carry no body.
    pub fn new(head_request: bool) -> Self {
        ResponseReader {
            head_request,
            state: None,
        }
    }

    /// At EOF: finishes an until-close response, returning its status.
    pub fn finish_at_eof(&mut self) -> Option<u16> {
        match self.state.take() {
            Some((Body::UntilClose, status, _)) => Some(status),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// True when no response is partially read.
    pub fn idle(&self) -> bool {
        self.state.is_none()
    }

    /// Feeds the unconsumed bytes at the front of the caller's buffer.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Step, FrameError> {
        let mut consumed = 0;
        loop {
            let Some((body, status, keep)) = &mut self.state else {
                match self.parse_head(&buf[consumed..])? {
                    Some(n) => {
                        consumed += n;
                        continue;
                    }
                    None => return Ok(Step::NeedMore { consumed }),
                }
            };
            return match body.feed(&buf[consumed..])? {
                BodyStep::More => Ok(Step::NeedMore {
                    consumed: buf.len(),
                }),
                BodyStep::End(n) => {
                    let step = Step::Done {
                        consumed: consumed + n,
                        status: *status,
                        keep_alive: *keep,
                    };
                    self.state = None;
                    Ok(step)
                }
            };
        }
    }

    /// Parses a head; on success stores the body state and returns the head's length.
    /// Interim 1xx responses are skipped whole.
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(FrameError::Head),
        };
        let status = resp.code.ok_or(FrameError::Head)?;
        let version = resp.version.unwrap_or(1);
        if (100..200).contains(&status) && status != 101 {
            return Ok(Some(len));
        }
        let mut keep = keep_alive(version, resp.headers);
        let body = if self.head_request || status == 204 || status == 304 {
            Body::Length(0)
        } else {
            match body_from_headers(resp.headers)? {
                Some(body) => body,
                None => {
                    keep = false;
                    Body::UntilClose
                }
            }
        };
        self.state = Some((body, status, keep));
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every position and checks the result never depends on the split.
    fn parse_all(input: &[u8], head: bool) -> Result<Vec<(u16, bool)>, FrameError> {
        let mut out = Vec::new();
        let mut reader = ResponseReader::new(head);
        let mut pending: Vec<u8> = Vec::new();
        for &b in input {
            pending.push(b);
            loop {
                match reader.advance(&pending)? {
                    Step::NeedMore { consumed } => {
                        pending.drain(..consumed);
                        break;
                    }
                    Step::Done {
                        consumed,
                        status,
                        keep_alive,
                    } => {
                        pending.drain(..consumed);
                        out.push((status, keep_alive));
                        if pending.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
        if let Some(status) = reader.finish_at_eof() {
            out.push((status, false));
        }
        Ok(out)
    }

    fn whole(input: &[u8]) -> Result<Vec<(u16, bool)>, FrameError> {
        let mut out = Vec::new();
        let mut reader = ResponseReader::new(false);
        let mut at = 0;
        while at < input.len() {
            match reader.advance(&input[at..])? {
                Step::NeedMore { .. } => break,
                Step::Done {
                    consumed,
                    status,
                    keep_alive,
                } => {
                    at += consumed;
                    out.push((status, keep_alive));
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn framing_cases() {
        type Case<'a> = (&'a str, &'a [u8], &'a [(u16, bool)]);
        let cases: &[Case<'_>] = &[
            (
                "content-length",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                &[(200, true)],
            ),
            (
                "zero length",
                b"HTTP/1.1 204 No Content\r\n\r\n",
                &[(204, true)],
            ),
            (
                "two pipelined",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
                &[(200, true), (503, true)],
            ),
            (
                "chunked with extension and trailer",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
                &[(200, true)],
            ),
            (
                "chunked then another",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\nHTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n",
                &[(200, true), (404, true)],
            ),
            (
                "connection close",
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                &[(200, false)],
            ),
            (
                "http/1.0 keep-alive",
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                &[(200, true)],
            ),
            (
                "interim 100 skipped",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                &[(201, true)],
            ),
            (
                "until close",
                b"HTTP/1.1 200 OK\r\n\r\nstreamed until EOF",
                &[(200, false)],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse_all(input, false).as_deref(), Ok(*want), "{name}");
        }
    }

    #[test]
    fn whole_buffer_parses_in_one_call_per_response() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 500 E\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(whole(input), Ok(vec![(200, true), (500, true)]));
    }

    #[test]
    fn head_request_has_no_body() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(parse_all(input, true), Ok(vec![(200, true)]));
    }

    #[test]
    fn malformed_inputs() {
        let cases: &[(&str, &[u8], FrameError)] = &[
            ("garbage", b"NOPE\r\n\r\n", FrameError::Head),
            (
                "bad length",
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                FrameError::Length,
            ),
            (
                "conflicting lengths",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                FrameError::Length,
            ),
            (
                "chunked and length",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                FrameError::Length,
            ),
            (
                "bad chunk size",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                FrameError::ChunkSyntax,
            ),
            (
                "missing chunk terminator",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                FrameError::ChunkSyntax,
            ),
            (
                "chunk size overflow",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
                FrameError::ChunkSyntax,
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse_all(input, false), Err(*want), "{name}");
        }
    }

    #[test]
    fn partial_head_consumes_nothing() {
        let mut reader = ResponseReader::new(false);
        assert_eq!(
            reader.advance(b"HTTP/1.1 200 OK\r\nContent-"),
            Ok(Step::NeedMore { consumed: 0 })
        );
        assert!(reader.idle());
    }

    #[test]
    fn body_bytes_are_consumed_as_they_come() {
        let mut reader = ResponseReader::new(false);
        let step = reader.advance(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234");
        assert_eq!(step, Ok(Step::NeedMore { consumed: 43 }));
        assert!(!reader.idle());
        assert_eq!(
            reader.advance(b"567890"),
            Ok(Step::Done {
                consumed: 6,
                status: 200,
                keep_alive: true
            })
        );
    }
}
