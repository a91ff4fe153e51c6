//! A small stderr logger: `2026-11-27T10:00:00.123Z WARN message`.
//! The level comes from `SHARDGATE_LOG` (error, warn, info, debug, trace;
//! default info).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

pub fn init() {
    let level = match std::env::var("SHARDGATE_LOG").as_deref() {
        Ok("error") => LevelFilter::Error,
        Ok("warn") => LevelFilter::Warn,
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        Ok("off") => LevelFilter::Off,
        _ => LevelFilter::Info,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let line = format!("{} {level} {}\n", utc_now(), r.args());
        // A full or broken stderr must not take the gateway down.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The current UTC time as RFC 3339 with milliseconds.
fn utc_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = shardgate_proxy::civil_time(d.as_secs());
    format!(
        "{}.{:03}Z",
        std::str::from_utf8(&stamp).unwrap_or("?"),
        d.subsec_millis()
    )
}
