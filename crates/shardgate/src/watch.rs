//! Reload when the configuration file changes: its modification time and
//! length are checked once a second from a thread of their own.

use shardgate_proxy::GatewayHandle;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

const EVERY: Duration = Duration::from_secs(1);

pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watcher {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub fn spawn(path: PathBuf, handle: GatewayHandle) -> Watcher {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("shardgate-watch".into())
        .spawn(move || {
            let mut last = stamp(&path);
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(EVERY);
                let now = stamp(&path);
                if now.is_some() && now != last {
                    last = now;
                    log::info!("{} changed: reloading", path.display());
                    let _ = handle.reload_from_file();
                }
            }
        })
        .expect("spawning the config watcher");
    Watcher { stop, thread }
}
