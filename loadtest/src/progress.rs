//! The live line: once a second on stderr when it is a terminal, nothing otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stats::Progress;

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Waits for every worker; if `show`, redraws `line(elapsed)` once a second meanwhile, and
/// calls `tick` every few milliseconds.
pub fn wait<T>(
    handles: &[JoinHandle<T>],
    show: bool,
    mut line: impl FnMut(Duration) -> String,
    mut tick: impl FnMut(),
) {
    let began = Instant::now();
    let mut next = began + Duration::from_secs(1);
    while !handles.iter().all(JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(20));
        tick();
        let now = Instant::now();
        if show && now >= next {
            next += Duration::from_secs(1);
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", line(now - began));
            let _ = err.flush();
        }
    }
    if show {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// State between two load progress lines.
pub struct LoadLine {
    last_total: u64,
    last_at: Duration,
}

fn sum(cells: &[Arc<Progress>], pick: impl Fn(&Progress) -> u64) -> u64 {
    cells.iter().map(|c| pick(c)).sum()
}

/// `[  3s] 123456 req/s  total 370000  errors 0 (warm-up)`.
pub fn load_line(
    cells: &[Arc<Progress>],
    elapsed: Duration,
    warmup: Duration,
    state: &mut LoadLine,
) -> String {
    let total = sum(cells, |c| Progress::get(&c.completed));
    let errors = sum(cells, |c| Progress::get(&c.errors));
    let dt = (elapsed - state.last_at).as_secs_f64().max(1e-3);
    let rate = (total - state.last_total) as f64 / dt;
    state.last_total = total;
    state.last_at = elapsed;
    let phase = if elapsed < warmup { " (warm-up)" } else { "" };
    format!(
        "[{:>4}s] {rate:>10.0} req/s  total {total}  errors {errors}{phase}",
        elapsed.as_secs()
    )
}

impl LoadLine {
    pub fn new() -> Self {
        LoadLine {
            last_total: 0,
            last_at: Duration::ZERO,
        }
    }
}

/// `[  3s] alive 9998  failed 2  heartbeats 1234`.
pub fn hold_line(cells: &[Arc<Progress>], elapsed: Duration) -> String {
    format!(
        "[{:>4}s] alive {}  failed {}  heartbeats {}",
        elapsed.as_secs(),
        sum(cells, |c| Progress::get(&c.alive)),
        sum(cells, |c| Progress::get(&c.failed)),
        sum(cells, |c| Progress::get(&c.completed)),
    )
}
