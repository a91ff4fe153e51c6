//! Minimal, strict HTTP/1.1 message framing used by the mock upstream (to find request
//! boundaries) and by the raw client (to find response boundaries). Deliberately strict: a
//! message the proxy forwards must parse here, or the case fails.

/// Outcome of trying to frame a message from the front of a buffer.
pub enum Framed<T> {
    /// Not enough bytes yet.
    Partial,
    /// A complete message and the number of bytes it used.
    Complete(T, usize),
}

/// One parsed head: start line and fields, in order, as received.
#[derive(Clone, Debug, Default)]
pub struct Head {
    pub start: String,
    pub fields: Vec<(String, String)>,
}

impl Head {
    /// Every value of the field `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let fields = self.fields.iter();
        fields
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether any `Connection` value lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        let all = self.all("connection");
        all.iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Printable form of raw bytes for failure messages.
pub fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(600)];
    let mut s = cut.escape_ascii().to_string();
    if bytes.len() > cut.len() {
        s.push_str(&format!("...(+{} bytes)", bytes.len() - cut.len()));
    }
    s
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a head terminated by CRLF CRLF. Bare LF, obs-fold, bad names or bad value bytes are
/// errors: whatever the proxy emits must be this clean.
pub fn parse_head(buf: &[u8]) -> Result<Framed<Head>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(Framed::Partial);
    };
    let raw = &buf[..end + 4];
    let mut lines = Vec::new();
    let mut rest = &buf[..end];
    while let Some(i) = find(rest, b"\r\n") {
        lines.push(&rest[..i]);
        rest = &rest[i + 2..];
    }
    lines.push(rest);
    if lines.iter().any(|l| l.contains(&b'\n')) {
        return Err(format!("bare LF in head: {}", show(raw)));
    }
    let start = String::from_utf8(lines[0].to_vec()).map_err(|_| "start line not utf-8")?;
    let mut fields = Vec::new();
    for line in &lines[1..] {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(format!("obs-fold: {}", show(line)));
        }
        let colon = line.iter().position(|&b| b == b':');
        let colon = colon.ok_or_else(|| format!("field without colon: {}", show(line)))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(format!("bad field name: {}", show(line)));
        }
        if value.iter().any(|&b| b == 0 || b == b'\r' || b == 0x7f) {
            return Err(format!("bad field value: {}", show(line)));
        }
        let value = String::from_utf8_lossy(value)
            .trim_matches([' ', '\t'])
            .to_string();
        fields.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    Ok(Framed::Complete(Head { start, fields }, raw.len()))
}

/// Decodes a chunked body at the front of `buf` (after the head). Returns the decoded bytes.
pub fn parse_chunked(buf: &[u8]) -> Result<Framed<Vec<u8>>, String> {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            if buf[at..].contains(&b'\n') {
                return Err(format!("bare LF in chunk framing: {}", show(&buf[at..])));
            }
            return Ok(Framed::Partial);
        };
        let line = &buf[at..at + eol];
        let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
        if size_part.is_empty() || size_part.len() > 15 || line.contains(&b'\n') {
            return Err(format!("bad chunk size line: {}", show(line)));
        }
        if !size_part.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("bad chunk size line: {}", show(line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_part).unwrap_or("x"), 16)
            .map_err(|e| format!("chunk size {e}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailer section: fields until an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Ok(Framed::Partial);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Framed::Complete(out, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(Framed::Partial);
        }
        out.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(format!(
                "chunk data not followed by CRLF: {}",
                show(&buf[at..])
            ));
        }
        at += size + 2;
    }
}

/// How a body after a head is delimited.
#[derive(Debug, PartialEq)]
pub enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Framing from the head's fields; ambiguous or invalid framing is an error.
pub fn body_framing(head: &Head, is_request: bool) -> Result<Framing, String> {
    let te = head.all("transfer-encoding");
    let cl = head.all("content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    if !te.is_empty() {
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        return match codings.last().map(String::as_str) {
            Some("chunked") if codings.iter().filter(|c| *c == "chunked").count() == 1 => {
                Ok(Framing::Chunked)
            }
            _ if !is_request && !codings.iter().any(|c| c == "chunked") => Ok(Framing::UntilClose),
            _ => Err(format!("bad Transfer-Encoding {te:?}")),
        };
    }
    match cl.as_slice() {
        [] if is_request => Ok(Framing::Empty),
        [] => Ok(Framing::UntilClose),
        [v] if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && v.len() < 16 => {
            Ok(Framing::Length(v.parse().map_err(|_| "content-length")?))
        }
        _ => Err(format!("bad Content-Length {cl:?}")),
    }
}

/// A request as the mock upstream received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub head: Head,
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
    /// Every byte of the request as it crossed the wire.
    pub raw: Vec<u8>,
}

pub fn parse_request(buf: &[u8]) -> Result<Framed<Request>, String> {
    let (head, used) = match parse_head(buf)? {
        Framed::Partial => return Ok(Framed::Partial),
        Framed::Complete(h, n) => (h, n),
    };
    let parts: Vec<&str> = head.start.split(' ').collect();
    let [method, target, _version] = parts.as_slice() else {
        return Err(format!("bad request line {:?}", head.start));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let (body, total) = match body_framing(&head, true)? {
        Framing::Empty => (Vec::new(), used),
        Framing::Length(n) if buf.len() >= used + n => (buf[used..used + n].to_vec(), used + n),
        Framing::Length(_) => return Ok(Framed::Partial),
        Framing::Chunked => match parse_chunked(&buf[used..])? {
            Framed::Partial => return Ok(Framed::Partial),
            Framed::Complete(body, n) => (body, used + n),
        },
        Framing::UntilClose => unreachable!("requests are never close-delimited"),
    };
    let raw = buf[..total].to_vec();
    Ok(Framed::Complete(
        Request {
            head,
            method,
            target,
            body,
            raw,
        },
        total,
    ))
}
