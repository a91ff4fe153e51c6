//! The access log: one line per request, JSON or text, written per shard
//! into a buffer and handed to a writer thread, so a slow or full disk never
//! blocks a shard. When the writer falls behind, whole buffers are dropped
//! and their lines counted (`shardgate_access_log_dropped_lines_total`);
//! requests never wait. The writer reopens the file when asked (SIGUSR1,
//! for logrotate).

use crate::pool::Pools;
use crate::request::{IpText, Record};
use shardgate_config::{AccessLog, LogFormat};
use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buffers in flight to the writer per shard before lines are dropped.
const QUEUE_PER_SHARD: usize = 8;

/// The process-wide writer thread.
pub(crate) struct Writer {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    reopen: Arc<AtomicBool>,
    lost: Arc<AtomicU64>,
}

impl Writer {
    pub(crate) fn start(config: &AccessLog, shards: usize) -> std::io::Result<Writer> {
        let path = config.path.clone();
        let mut file = open(&path)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_PER_SHARD * shards.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicU64::new(0));
        let (flag, lost_lines) = (reopen.clone(), lost.clone());
        let thread = std::thread::Builder::new()
            .name("shardgate-access-log".into())
            .spawn(move || write_loop(&path, &mut file, &rx, &flag, &lost_lines))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            reopen,
            lost,
        })
    }

    pub(crate) fn sender(&self) -> Option<SyncSender<Vec<u8>>> {
        self.tx.clone()
    }

    /// A handle that asks the writer to reopen the file.
    pub(crate) fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    /// Lines the writer could not write (disk full, I/O errors).
    pub(crate) fn lost_counter(&self) -> Arc<AtomicU64> {
        self.lost.clone()
    }

    /// Waits for the lines already handed over to be written.
    pub(crate) fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_loop(
    path: &Path,
    file: &mut File,
    rx: &Receiver<Vec<u8>>,
    reopen: &AtomicBool,
    lost: &AtomicU64,
) {
    let mut failing = false;
    // Ends when every shard has dropped its sender.
    while let Ok(buf) = rx.recv() {
        if reopen.swap(false, Ordering::AcqRel) {
            match open(path) {
                Ok(f) => {
                    *file = f;
                    log::info!("access log {} reopened", path.display());
                }
                Err(e) => log::error!("cannot reopen access log {}: {e}", path.display()),
            }
        }
        match file.write_all(&buf) {
            Ok(()) => failing = false,
            Err(e) => {
                let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
                lost.fetch_add(lines, Ordering::Relaxed);
                if !failing {
                    failing = true;
                    log::error!(
                        "access log {}: {e}; lines are being dropped and counted",
                        path.display()
                    );
                }
            }
        }
    }
    let _ = file.flush();
}

/// One shard's side of the log.
pub(crate) struct ShardLog {
    format: LogFormat,
    threshold: usize,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    /// Taken when the shard stops, so the writer can finish.
    tx: RefCell<Option<SyncSender<Vec<u8>>>>,
    pub written: Cell<u64>,
    pub dropped: Cell<u64>,
    /// The formatted date and time of `second`, reused within the second.
    stamp: RefCell<(u64, [u8; 19])>,
}

impl ShardLog {
    pub(crate) fn new(config: &AccessLog, tx: SyncSender<Vec<u8>>) -> ShardLog {
        ShardLog {
            format: config.format,
            threshold: config.buffer,
            buf: RefCell::new(Vec::with_capacity(config.buffer + 1024)),
            lines: Cell::new(0),
            tx: RefCell::new(Some(tx)),
            written: Cell::new(0),
            dropped: Cell::new(0),
            stamp: RefCell::new((u64::MAX, [0; 19])),
        }
    }

    /// Appends the line for one request; hands the buffer over when full.
    pub(crate) fn append(
        &self,
        rec: &Record,
        client: &IpText,
        tenant: &str,
        route: &str,
        pools: &Pools,
    ) {
        let names = (tenant, route);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut buf = self.buf.borrow_mut();
        {
            let mut stamp = self.stamp.borrow_mut();
            if stamp.0 != now.as_secs() {
                *stamp = (now.as_secs(), civil_time(now.as_secs()));
            }
            let b = &mut *buf;
            match self.format {
                LogFormat::Json => {
                    json_line(b, &stamp.1, now.subsec_millis(), rec, client, names, pools)
                }
                LogFormat::Text => {
                    text_line(b, &stamp.1, now.subsec_millis(), rec, client, names, pools)
                }
            }
        }
        self.lines.set(self.lines.get() + 1);
        let full = buf.len() >= self.threshold;
        drop(buf);
        if full {
            self.flush();
        }
    }

    /// Hands what is buffered to the writer (at every tick, and when full).
    pub(crate) fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let lines = self.lines.replace(0);
        let full = std::mem::replace(&mut *buf, Vec::with_capacity(self.threshold + 1024));
        let sent = match self.tx.borrow().as_ref() {
            Some(tx) => tx.try_send(full),
            None => Err(TrySendError::Disconnected(full)),
        };
        match sent {
            Ok(()) => self.written.set(self.written.get() + lines),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.set(self.dropped.get() + lines);
            }
        }
    }

    /// Flushes and lets go of the writer (the shard is stopping).
    pub(crate) fn close(&self) {
        self.flush();
        self.tx.borrow_mut().take();
    }
}

fn push_u64(b: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

/// Milliseconds with three decimals: `12.345`.
fn push_millis(b: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros() as u64;
    push_u64(b, micros / 1000);
    b.push(b'.');
    let frac = micros % 1000;
    b.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// A JSON string value: escapes quotes, backslashes and control bytes;
/// bytes that are not UTF-8 become `\u00XX`.
fn push_json_str(b: &mut Vec<u8>, s: &[u8]) {
    b.push(b'"');
    for &c in s {
        match c {
            b'"' => b.extend_from_slice(b"\\\""),
            b'\\' => b.extend_from_slice(b"\\\\"),
            0x20..=0x7e => b.push(c),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                b.extend_from_slice(b"\\u00");
                b.push(HEX[usize::from(c >> 4)]);
                b.push(HEX[usize::from(c & 15)]);
            }
        }
    }
    b.push(b'"');
}

/// A client-supplied value in a text line, as nginx escapes them: `"`, `\`
/// and every byte outside printable ASCII (space included) become `\xHH`, so
/// no value can end its field, forge another, or break the line.
fn push_text_escaped(b: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s {
        if c == b'"' || c == b'\\' || !(0x21..0x7f).contains(&c) {
            b.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        } else {
            b.push(c);
        }
    }
}

fn push_time(b: &mut Vec<u8>, stamp: &[u8; 19], millis: u32) {
    b.extend_from_slice(stamp);
    b.push(b'.');
    b.extend_from_slice(&[
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
    ]);
    b.push(b'Z');
}

fn json_line(
    b: &mut Vec<u8>,
    stamp: &[u8; 19],
    ms: u32,
    rec: &Record,
    client: &IpText,
    (tenant, route): (&str, &str),
    pools: &Pools,
) {
    b.extend_from_slice(b"{\"time\":\"");
    push_time(b, stamp, ms);
    b.extend_from_slice(b"\",\"tenant\":");
    push_json_str(b, tenant.as_bytes());
    b.extend_from_slice(b",\"route\":");
    push_json_str(b, route.as_bytes());
    b.extend_from_slice(b",\"method\":");
    push_json_str(b, rec.head.method());
    b.extend_from_slice(b",\"path\":");
    push_json_str(b, rec.head.path());
    b.extend_from_slice(b",\"status\":");
    push_u64(b, u64::from(rec.status));
    b.extend_from_slice(b",\"bytes_in\":");
    push_u64(b, rec.bytes_in);
    b.extend_from_slice(b",\"bytes_out\":");
    push_u64(b, rec.bytes_out);
    b.extend_from_slice(b",\"duration_ms\":");
    push_millis(b, rec.started.elapsed());
    b.extend_from_slice(b",\"upstream\":");
    match rec.upstream {
        Some(ep) => {
            b.push(b'"');
            pools.with_host(ep, |h| b.extend_from_slice(h));
            b.push(b'"');
        }
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"upstream_ms\":");
    match rec.upstream_time {
        Some(d) => push_millis(b, d),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"request_id\":");
    push_json_str(b, rec.head.request_id());
    b.extend_from_slice(b",\"trace_id\":");
    push_json_str(b, rec.head.trace_id());
    b.extend_from_slice(b",\"client\":\"");
    b.extend_from_slice(client.as_bytes());
    b.extend_from_slice(b"\"}\n");
}

fn text_line(
    b: &mut Vec<u8>,
    stamp: &[u8; 19],
    ms: u32,
    rec: &Record,
    client: &IpText,
    (tenant, route): (&str, &str),
    pools: &Pools,
) {
    b.extend_from_slice(client.as_bytes());
    b.extend_from_slice(b" - - [");
    push_time(b, stamp, ms);
    b.extend_from_slice(b"] \"");
    b.extend_from_slice(rec.head.method());
    b.push(b' ');
    push_text_escaped(b, rec.head.path());
    b.extend_from_slice(b"\" ");
    push_u64(b, u64::from(rec.status));
    b.push(b' ');
    push_u64(b, rec.bytes_out);
    b.extend_from_slice(b" tenant=");
    b.extend_from_slice(if tenant.is_empty() {
        b"-"
    } else {
        tenant.as_bytes()
    });
    b.extend_from_slice(b" route=");
    b.extend_from_slice(if route.is_empty() {
        b"-"
    } else {
        route.as_bytes()
    });
    b.extend_from_slice(b" upstream=");
    match rec.upstream {
        Some(ep) => pools.with_host(ep, |h| b.extend_from_slice(h)),
        None => b.push(b'-'),
    }
    b.extend_from_slice(b" ms=");
    push_millis(b, rec.started.elapsed());
    b.extend_from_slice(b" upstream_ms=");
    match rec.upstream_time {
        Some(d) => push_millis(b, d),
        None => b.push(b'-'),
    }
    b.extend_from_slice(b" request_id=");
    let id = rec.head.request_id();
    if id.is_empty() {
        b.push(b'-');
    } else {
        b.push(b'"');
        push_text_escaped(b, id);
        b.push(b'"');
    }
    b.push(b'\n');
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the epoch (UTC); shared with
/// the binary's log lines.
pub fn civil_time(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as u64;
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_times() {
        assert_eq!(&civil_time(0), b"1970-01-01T00:00:00");
        assert_eq!(&civil_time(951_782_400 + 3661), b"2000-02-29T01:01:01");
        assert_eq!(&civil_time(1_795_741_937), b"2026-11-27T01:12:17");
    }

    #[test]
    fn text_escapes() {
        let mut b = Vec::new();
        push_text_escaped(&mut b, b"/a\"b\\c d\n\x01\xff");
        assert_eq!(b, b"/a\\x22b\\x5Cc\\x20d\\x0A\\x01\\xFF");
    }

    #[test]
    fn json_escapes() {
        let mut b = Vec::new();
        push_json_str(&mut b, b"/a\"b\\c\x01\xff");
        assert_eq!(b, b"\"/a\\\"b\\\\c\\u0001\\u00ff\"");
        let mut b = Vec::new();
        push_millis(&mut b, Duration::from_micros(12_345));
        assert_eq!(b, b"12.345");
    }
}
