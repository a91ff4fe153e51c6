//! Out of file descriptors, the accept loop backs off instead of spinning,
//! keeps serving the connections it has, and recovers when descriptors free
//! up. Runs the real binary under a small `ulimit -n`, on both drivers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A keep-alive upstream answering `200 ok` to anything.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0
                        || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn get(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    if s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.ends_with(b"ok") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn connect_when_up(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = TcpStream::connect(addr) {
            return s;
        }
        assert!(Instant::now() < deadline, "proxy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fd_exhaustion_backs_off_and_recovers() {
    let up = upstream();
    for driver in ["uring", "legacy"] {
        let listen = free_port();
        let cmd = format!(
            "ulimit -n 48 && exec {} proxy --listen {listen} --to {up} --workers 1 --driver {driver}",
            env!("CARGO_BIN_EXE_shardgate")
        );
        let child = Command::new("bash")
            .args(["-c", &cmd])
            .env("SHARDGATE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut proxy = Proxy(child);
        let mut first = connect_when_up(listen);
        assert!(get(&mut first), "{driver}: first request");

        // Far more connections than descriptors: the rest wait in the backlog.
        let flood: Vec<TcpStream> = (0..80)
            .filter_map(|_| TcpStream::connect(listen).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let cpu_before = cpu_seconds(pid);
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let burned = (cpu_seconds(pid) - cpu_before) / t.elapsed().as_secs_f64();
        assert!(
            burned < 0.5,
            "{driver}: accept loop spins at {:.0}% CPU",
            burned * 100.0
        );
        assert!(
            get(&mut first),
            "{driver}: an existing connection is still served"
        );

        // Free descriptors: new connections are served again.
        drop(flood);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = TcpStream::connect(listen).unwrap();
            if get(&mut s) {
                break;
            }
            assert!(Instant::now() < deadline, "{driver}: never recovered");
        }
        let _ = proxy.0.kill();
        let mut log = String::new();
        let _ = proxy.0.stderr.take().unwrap().read_to_string(&mut log);
        assert!(
            log.contains("accept failed"),
            "{driver}: the exhaustion is logged: {log}"
        );
        assert!(
            log.lines().filter(|l| l.contains("accept failed")).count() <= 3,
            "{driver}: logged once per interval: {log}"
        );
    }
}
