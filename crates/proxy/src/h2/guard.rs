//! Abuse protection for a downstream HTTP/2 connection. The `h2` crate
//! limits resets of streams not yet accepted, CONTINUATION frames, decoded
//! header lists, small DATA frames and refused streams, ending the
//! connection with an ENHANCE_YOUR_CALM GOAWAY ([`Abuse::of_h2_error`]
//! names which). What it does not limit is counted here, from the frame
//! headers read off the wire:
//! - SETTINGS, PING and PRIORITY frames, per second;
//! - streams the client resets early (Rapid Reset against a gateway that
//!   accepts streams at once): after [`MIN_RESETS`] resets, more resets
//!   than half the streams opened.
//!
//! A limit crossed trips the connection's [`Tripwire`]; the connection
//! sends GOAWAY and closes. Nothing else about the frames is parsed.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Why an abusive connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Abuse {
    RapidReset,
    ContinuationFlood,
    HeaderListTooLarge,
    SettingsFlood,
    PingFlood,
    PriorityFlood,
    EmptyDataFlood,
    TooManyStreams,
    Stalled,
}

impl Abuse {
    pub(crate) const ALL: [Abuse; 9] = [
        Abuse::RapidReset,
        Abuse::ContinuationFlood,
        Abuse::HeaderListTooLarge,
        Abuse::SettingsFlood,
        Abuse::PingFlood,
        Abuse::PriorityFlood,
        Abuse::EmptyDataFlood,
        Abuse::TooManyStreams,
        Abuse::Stalled,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Abuse::RapidReset => "rapid_reset",
            Abuse::ContinuationFlood => "continuation_flood",
            Abuse::HeaderListTooLarge => "header_list_too_large",
            Abuse::SettingsFlood => "settings_flood",
            Abuse::PingFlood => "ping_flood",
            Abuse::PriorityFlood => "priority_flood",
            Abuse::EmptyDataFlood => "empty_data_flood",
            Abuse::TooManyStreams => "too_many_streams",
            Abuse::Stalled => "stalled",
        }
    }

    pub(crate) fn index(self) -> usize {
        Abuse::ALL.iter().position(|a| *a == self).unwrap_or(0)
    }

    /// Which of `h2`'s limits ended the connection, from the debug data
    /// of the GOAWAY it sent (`None` for anything else).
    pub(crate) fn of_goaway(debug: &[u8]) -> Option<Abuse> {
        let kinds: [(&[u8], Abuse); 5] = [
            (b"too_many_resets", Abuse::RapidReset),
            (b"too_many_continuations", Abuse::ContinuationFlood),
            (b"header_list_way_too_large", Abuse::HeaderListTooLarge),
            (b"too_many_data_frames", Abuse::EmptyDataFlood),
            (b"too_many_internal_resets", Abuse::TooManyStreams),
        ];
        kinds
            .iter()
            .find(|(d, _)| *d == debug)
            .map(|&(_, kind)| kind)
    }
}

/// Frames of each kind a connection may send per second.
pub(crate) const SETTINGS_PER_SECOND: u32 = 100;
pub(crate) const PINGS_PER_SECOND: u32 = 1000;
pub(crate) const PRIORITIES_PER_SECOND: u32 = 1000;
/// Resets the client may send before the ratio to streams opened counts.
pub(crate) const MIN_RESETS: u32 = 100;

/// Shared between the connection's reader and its serving loop.
#[derive(Default)]
pub(super) struct Tripwire {
    tripped: Cell<Option<Abuse>>,
    waker: Cell<Option<Waker>>,
    /// The debug data of the GOAWAY `h2` sent, if it sent one.
    goaway: std::cell::RefCell<Vec<u8>>,
}

impl Tripwire {
    pub(super) fn tripped(&self) -> Option<Abuse> {
        self.tripped.get()
    }

    /// Why the connection was closed as abusive: by this guard, or by one
    /// of `h2`'s limits (its GOAWAY says which).
    pub(super) fn abuse(&self) -> Option<Abuse> {
        self.tripped
            .get()
            .or_else(|| Abuse::of_goaway(self.goaway.borrow().get(8..).unwrap_or_default()))
    }

    pub(super) fn trip(&self, why: Abuse) {
        if self.tripped.get().is_none() {
            self.tripped.set(Some(why));
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Resolves when the connection is found abusive.
    pub(super) async fn wait(&self) -> Abuse {
        std::future::poll_fn(|cx| match self.tripped.get() {
            Some(why) => Poll::Ready(why),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

const HEADER_LEN: usize = 9;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;

/// Follows the frame headers in a byte stream split into reads anyhow.
struct Frames {
    /// Bytes to pass before the next frame header.
    skip: usize,
    head: [u8; HEADER_LEN],
    have: usize,
    /// Of the bytes to pass, how many go to `payload`.
    keep: usize,
}

impl Frames {
    fn new(skip: usize) -> Frames {
        Frames {
            skip,
            head: [0; HEADER_LEN],
            have: 0,
            keep: 0,
        }
    }

    /// `header(kind, length)` for each frame header in `bytes`, returning
    /// how many of the payload's bytes it wants; `payload` gets those.
    fn scan(
        &mut self,
        mut bytes: &[u8],
        mut header: impl FnMut(u8, usize) -> usize,
        mut payload: impl FnMut(&[u8]),
    ) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                let kept = self.keep.min(n);
                if kept > 0 {
                    payload(&bytes[..kept]);
                    self.keep -= kept;
                }
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER_LEN {
                self.have = 0;
                let h = self.head;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.skip = len;
                self.keep = header(h[3], len).min(len);
            }
        }
    }
}

/// Follows the frames a connection reads (counting what `h2` does not
/// limit) and writes (keeping the debug data of a GOAWAY).
pub(super) struct Guard {
    pub(super) wire: Rc<Tripwire>,
    read: Frames,
    written: Frames,
    budget: Budget,
}

/// What the client has sent that `h2` does not limit.
#[derive(Default)]
struct Budget {
    /// This second's SETTINGS, PING and PRIORITY frames, since `since`.
    counts: [u32; 3],
    since: Option<Instant>,
    opened: u32,
    resets: u32,
}

/// The GOAWAY debug data kept: `h2`'s reasons are short.
const GOAWAY_KEPT: usize = 8 + 64;

impl Guard {
    pub(super) fn new(wire: Rc<Tripwire>) -> Guard {
        Guard {
            wire,
            read: Frames::new(super::PREFACE.len()),
            written: Frames::new(0),
            budget: Budget::default(),
        }
    }

    pub(super) fn tripped(&self) -> bool {
        self.wire.tripped.get().is_some()
    }

    /// Follows `bytes`, the next read from the connection.
    pub(super) fn scan(&mut self, bytes: &[u8]) {
        let (budget, wire) = (&mut self.budget, &*self.wire);
        self.read.scan(
            bytes,
            |kind, _| {
                budget.frame(kind, wire);
                0
            },
            |_| {},
        );
    }

    /// Follows `bytes`, the next written to the connection.
    pub(super) fn scan_written(&mut self, bytes: &[u8]) {
        let wire = &self.wire;
        self.written.scan(
            bytes,
            |kind, _| {
                if kind == GOAWAY {
                    wire.goaway.borrow_mut().clear();
                    GOAWAY_KEPT
                } else {
                    0
                }
            },
            |p| wire.goaway.borrow_mut().extend_from_slice(p),
        );
    }
}

impl Budget {
    fn frame(&mut self, kind: u8, wire: &Tripwire) {
        let (slot, limit, why) = match kind {
            HEADERS => {
                self.opened = self.opened.saturating_add(1);
                return;
            }
            RST_STREAM => {
                self.resets = self.resets.saturating_add(1);
                if self.resets > MIN_RESETS && self.resets > self.opened / 2 {
                    wire.trip(Abuse::RapidReset);
                }
                return;
            }
            SETTINGS => (0, SETTINGS_PER_SECOND, Abuse::SettingsFlood),
            PING => (1, PINGS_PER_SECOND, Abuse::PingFlood),
            PRIORITY => (2, PRIORITIES_PER_SECOND, Abuse::PriorityFlood),
            _ => return,
        };
        let now = Instant::now();
        match self.since {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {}
            _ => {
                self.since = Some(now);
                self.counts = [0; 3];
            }
        }
        self.counts[slot] += 1;
        if self.counts[slot] > limit {
            wire.trip(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn guard() -> Guard {
        Guard::new(Rc::new(Tripwire::default()))
    }

    const DATA: u8 = 0;

    fn feed(g: &mut Guard, bytes: &[u8], step: usize) {
        for chunk in bytes.chunks(step) {
            g.scan(chunk);
        }
    }

    #[test]
    fn frames_are_followed_across_reads() {
        let mut bytes = super::super::PREFACE.to_vec();
        for _ in 0..PINGS_PER_SECOND {
            bytes.extend(frame(PING, 0, 0, &[0; 8]));
            // A DATA frame whose payload looks like PING headers is not counted.
            bytes.extend(frame(DATA, 0, 1, &frame(PING, 0, 0, &[0; 8])));
        }
        for step in [1, 7, 9, 4096] {
            let mut g = guard();
            feed(&mut g, &bytes, step);
            assert!(!g.tripped(), "{step}-byte reads");
            feed(&mut g, &frame(PING, 0, 0, &[0; 8]), step);
            assert_eq!(g.wire.tripped.get(), Some(Abuse::PingFlood));
        }
    }

    #[test]
    fn each_flood_has_its_limit() {
        for (kind, limit, why) in [
            (SETTINGS, SETTINGS_PER_SECOND, Abuse::SettingsFlood),
            (PRIORITY, PRIORITIES_PER_SECOND, Abuse::PriorityFlood),
        ] {
            let mut g = guard();
            let mut bytes = super::super::PREFACE.to_vec();
            for _ in 0..limit {
                bytes.extend(frame(kind, 0, 0, &[0; 6]));
            }
            feed(&mut g, &bytes, 4096);
            assert!(!g.tripped());
            feed(&mut g, &frame(kind, 0, 0, &[0; 6]), 4096);
            assert_eq!(g.wire.tripped.get(), Some(why));
        }
    }

    #[test]
    fn resets_trip_only_against_streams_opened() {
        let mut g = guard();
        let mut bytes = super::super::PREFACE.to_vec();
        // A client that cancels one stream in three is well behaved.
        for i in 0..3000u32 {
            bytes.extend(frame(HEADERS, 5, 2 * i + 1, &[0x82]));
            if i % 3 == 0 {
                bytes.extend(frame(RST_STREAM, 0, 2 * i + 1, &[0, 0, 0, 8]));
            }
        }
        feed(&mut g, &bytes, 4096);
        assert!(!g.tripped());
        // One that resets every stream it opens is not.
        let mut g = guard();
        let mut bytes = super::super::PREFACE.to_vec();
        for i in 0..=MIN_RESETS {
            bytes.extend(frame(HEADERS, 5, 2 * i + 1, &[0x82]));
            bytes.extend(frame(RST_STREAM, 0, 2 * i + 1, &[0, 0, 0, 8]));
        }
        feed(&mut g, &bytes, 4096);
        assert_eq!(g.wire.tripped.get(), Some(Abuse::RapidReset));
    }
}
