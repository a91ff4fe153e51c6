//! Rate limits shared by a fleet of gateways through a real Redis (Debian's `redis-server`,
//! started per test on loopback and stopped by pid): three `shardgate run` processes with one
//! fleet limit, loaded by the bundled load generator in open loop.

#[allow(dead_code)]
#[path = "ops/harness.rs"]
mod harness;

use harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tests take turns: each offers thousands of requests a second to three gateways.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fleet limit every test uses, per second.
const LIMIT: f64 = 600.0;

/// `redis-server` on loopback, without persistence.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// More `redis-server` flags (TLS, a password), kept across restarts.
    flags: Vec<String>,
}

impl Redis {
    fn start(name: &str) -> Redis {
        Redis::start_with(name, &[])
    }

    /// Serving TLS only (a certificate for 127.0.0.1 from a CA made here) and asking for
    /// `password`; the CA's path.
    fn start_tls(name: &str, password: &str) -> (Redis, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("shardgate-redis-pki-{}-{name}", std::process::id()));
        let pki = make_pki(&dir);
        let tls_port = free_port();
        let f = |p: &PathBuf| p.display().to_string();
        let mut r = Redis {
            child: None,
            port: tls_port,
            dir: dir.clone(),
            flags: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                f(&pki.server.0),
                "--tls-key-file".into(),
                f(&pki.server.1),
                "--tls-ca-cert-file".into(),
                f(&pki.ca),
                "--tls-auth-clients".into(),
                "no".into(),
                "--requirepass".into(),
                password.into(),
            ],
        };
        r.launch();
        (r, pki.ca)
    }

    fn start_with(name: &str, flags: &[&str]) -> Redis {
        let dir =
            std::env::temp_dir().join(format!("shardgate-redis-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let port = self.port.to_string();
        let plain = ["--port", port.as_str()];
        let child = Command::new("redis-server")
            .args(if self.flags.is_empty() {
                &plain[..]
            } else {
                &[]
            })
            .args(&self.flags)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (apt-get install redis-server)");
        self.child = Some(child);
        assert!(
            wait_for(Duration::from_secs(10), || if self.flags.is_empty() {
                self.ping()
            } else {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            }),
            "redis-server did not start"
        );
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// The sum of the counters whose keys match `pattern` (`redis-cli`).
    fn quota_total(&self, pattern: &str) -> u64 {
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &self.port.to_string()])
                .args(args)
                .output()
                .expect("redis-cli (apt-get install redis-tools)");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        cli(&["--scan", "--pattern", pattern])
            .lines()
            .filter(|k| !k.is_empty())
            .map(|k| cli(&["GET", k]).trim().parse::<u64>().unwrap_or(0))
            .sum()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three gateways (one, one and two shards) with the fleet limit on one route.
struct Fleet {
    gateways: Vec<(Gateway, Ports)>,
    _upstream: Upstream,
}

fn fleet(redis: &Redis, name: &str) -> Fleet {
    let upstream = Upstream::start("app");
    let gateways = [1, 1, 2]
        .iter()
        .enumerate()
        .map(|(i, workers)| {
            let ports = Ports::pick();
            let file = ConfigFile::new(&format!("fleet-limits-{name}-{i}"));
            file.write(&format!(
                "workers = {workers}\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n\
                 [admin]\naddress = \"127.0.0.1:{}\"\n\
                 [fleet]\nredis = \"redis://127.0.0.1:{}\"\nkey_prefix = \"{name}:\"\n\
                 [upstreams.app]\nendpoints = [\"{}\"]\n\
                 [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n\
                 filters = [{{ type = \"rate-limit\", rate = {LIMIT}, key = \"route\", scope = \"fleet\" }}]\n",
                ports.listen, ports.admin, redis.port, upstream.addr
            ));
            (Gateway::start(&file, &ports), ports)
        })
        .collect();
    Fleet {
        gateways,
        _upstream: upstream,
    }
}

/// One open-loop run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    admitted: u64,
    limited: u64,
    /// Transport errors and any status but 200 and 429.
    failed: u64,
    p99_us: f64,
}

/// Starts `loadtest -R rate` on a gateway: `secs` measured after `warmup`.
fn load(port: u16, rate: u32, warmup: f64, secs: f64, tag: &str) -> (Child, PathBuf) {
    let json = std::env::temp_dir().join(format!(
        "shardgate-fleet-limits-{}-{port}-{tag}.json",
        std::process::id()
    ));
    let loadtest = std::path::Path::new(SHARDGATE).with_file_name("loadtest");
    let child = Command::new(loadtest)
        .args(["-t", "1", "-c", "8", "--no-progress", "--timeout", "5s"])
        .args([
            "-R",
            &rate.to_string(),
            "-w",
            &format!("{warmup}s"),
            "-d",
            &format!("{secs}s"),
        ])
        .arg("--json")
        .arg(&json)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("loadtest");
    (child, json)
}

fn finish((mut child, json): (Child, PathBuf)) -> Run {
    assert!(child.wait().unwrap().success(), "loadtest failed");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let status = |s: &str| v["status"][s].as_u64().unwrap_or(0);
    let total = v["requests"].as_u64().unwrap();
    let (ok, limited) = (status("200"), status("429"));
    Run {
        admitted: ok,
        limited,
        failed: v["errors_total"].as_u64().unwrap() + (total - ok - limited),
        p99_us: v["latency"]["p99_us"].as_f64().unwrap(),
    }
}

/// The admitted rate of runs that measured `secs`, as a share of the limit.
fn share(runs: &[Run], secs: f64) -> f64 {
    runs.iter().map(|r| r.admitted).sum::<u64>() as f64 / secs / LIMIT
}

#[test]
fn one_limit_holds_across_three_gateways_whatever_the_traffic_does() {
    let _turn = turn();
    let redis = Redis::start("shapes");
    let f = fleet(&redis, "shapes");
    let port = |i: usize| f.gateways[i].1.listen;

    // All of it on one gateway: 1,500/s offered against 600/s; the first second is warm-up.
    let one = finish(load(port(0), 1500, 1.0, 5.0, "one"));
    // Split evenly.
    let runs: Vec<_> = (0..3)
        .map(|i| load(port(i), 700, 1.0, 5.0, "even"))
        .collect();
    let even: Vec<Run> = runs.into_iter().map(finish).collect();
    // Moving: on gateway 0 for 3 s, then on gateway 1 for 3 s (no warm-up on the second).
    let first = finish(load(port(0), 1500, 1.0, 2.0, "from"));
    let second = finish(load(port(1), 1500, 0.0, 3.0, "to"));

    let figures = [
        ("all on one gateway", share(&[one], 5.0)),
        ("split evenly", share(&even, 5.0)),
        ("moving mid-run", share(&[first, second], 5.0)),
    ];
    eprintln!("admitted / limit: {figures:?}");
    for (shape, s) in figures {
        assert!(
            (0.9..=1.1).contains(&s),
            "{shape}: admitted {s:.3} of the limit"
        );
    }
    for r in even.iter().chain([&one, &first, &second]) {
        assert_eq!(r.failed, 0, "{r:?}");
        assert!(r.limited > 0, "{r:?}");
    }
    // Every gateway saw the others through Redis.
    for (_, p) in &f.gateways {
        let m = admin_get(p, "/metrics");
        assert!(m.contains("shardgate_fleet_gateways 3"), "{m}");
    }
}

#[test]
fn redis_down_fails_nothing_holds_the_limit_roughly_and_recovers() {
    let _turn = turn();
    let mut redis = Redis::start("outage");
    let f = fleet(&redis, "outage");
    let phase = |warmup: f64, secs: f64, tag: &str| -> Vec<Run> {
        let runs: Vec<_> = (0..3)
            .map(|i| load(f.gateways[i].1.listen, 700, warmup, secs, tag))
            .collect();
        runs.into_iter().map(finish).collect()
    };
    let before = phase(1.0, 3.0, "before");
    redis.kill();
    let during = phase(0.0, 4.0, "during");
    let ready = request(f.gateways[0].1.admin, "GET", "/ready");
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(
        ready.1.contains("fleet limits fall back to rate / 3"),
        "{}",
        ready.1
    );
    assert!(admin_get(&f.gateways[0].1, "/metrics").contains("shardgate_fleet_redis_up 0"));
    redis.launch();
    let after = phase(1.0, 3.0, "after");
    assert!(admin_get(&f.gateways[0].1, "/metrics").contains("shardgate_fleet_redis_up 1"));
    assert!(
        !request(f.gateways[0].1.admin, "GET", "/ready")
            .1
            .contains("fall back")
    );

    let p99 = |runs: &[Run]| runs.iter().map(|r| r.p99_us).fold(0.0, f64::max);
    let figures = [
        ("before", share(&before, 3.0), p99(&before)),
        ("during the outage", share(&during, 4.0), p99(&during)),
        ("after", share(&after, 3.0), p99(&after)),
    ];
    eprintln!("admitted / limit, worst p99 (us): {figures:?}");
    for r in before.iter().chain(&during).chain(&after) {
        assert_eq!(r.failed, 0, "{r:?}");
    }
    assert!((0.9..=1.1).contains(&figures[0].1), "{figures:?}");
    assert!((0.7..=1.3).contains(&figures[1].1), "{figures:?}");
    assert!((0.9..=1.1).contains(&figures[2].1), "{figures:?}");
    // No request waited for Redis (a wait would be a connect or read timeout of 500 ms).
    assert!(figures[1].2 < 100_000.0, "{figures:?}");
    let log = f.gateways[0].0.log.lock().unwrap().clone();
    assert_eq!(
        log.matches("Redis at").count(),
        2,
        "one line down, one up: {log}"
    );
}

/// `GET /` with `X-Consumer: who` on a new connection: the status and the response head.
fn get_as(port: u16, who: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Consumer: {who}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split("\r\n\r\n").next().unwrap_or("").to_string(),
    )
}

#[test]
fn a_daily_quota_is_shared_by_gateways_and_survives_a_restart() {
    let _turn = turn();
    let redis = Redis::start("quota");
    let upstream = Upstream::start("app");
    let config = |ports: &Ports| {
        format!(
            "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n\
             [admin]\naddress = \"127.0.0.1:{}\"\n\
             [fleet]\nredis = \"redis://127.0.0.1:{}\"\nkey_prefix = \"quota:\"\nsecret = \"s3cret\"\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n\
             filters = [{{ type = \"quota\", limit = 50, per = \"day\", key = \"header:x-consumer\" }}]\n",
            ports.listen, ports.admin, redis.port, upstream.addr
        )
    };
    let (pa, pb) = (Ports::pick(), Ports::pick());
    let (fa, fb) = (ConfigFile::new("quota-a"), ConfigFile::new("quota-b"));
    fa.write(&config(&pa));
    fb.write(&config(&pb));
    let count = |port: u16, who: &str, n: usize| -> (usize, Vec<String>) {
        let mut ok = 0;
        let mut refused = Vec::new();
        for _ in 0..n {
            // 50 a second: five requests per sync interval.
            std::thread::sleep(Duration::from_millis(20));
            match get_as(port, who) {
                (200, _) => ok += 1,
                (429, head) => refused.push(head),
                (s, head) => panic!("{s}: {head}"),
            }
        }
        (ok, refused)
    };
    {
        let a = Gateway::start(&fa, &pa);
        assert_eq!(count(pa.listen, "alice", 30).0, 30);
        assert_eq!(count(pa.listen, "bob", 4).0, 4);
        assert_eq!(get_as(pa.listen, "bob").0, 200);
        // Stopped at once (SIGQUIT) after the last request: its last counts still reach Redis.
        a.signal("QUIT");
        assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(true));
    }
    assert_eq!(redis.quota_total("quota:q:*"), 35);
    // A restarted gateway and a second one carry on from Redis's counts.
    let a = Gateway::start(&fa, &pa);
    let b = Gateway::start(&fb, &pb);
    let (first, _) = count(pa.listen, "alice", 1);
    std::thread::sleep(Duration::from_millis(400));
    let (ok_a, _) = count(pa.listen, "alice", 10);
    std::thread::sleep(Duration::from_millis(400));
    let (ok_b, refused) = count(pb.listen, "alice", 20);
    let admitted = 30 + first + ok_a + ok_b;
    eprintln!("alice: {admitted} admitted of a quota of 50 across a restart and two gateways");
    // The overshoot is what one sync interval admits (5 requests at this pace) on a gateway
    // that had not seen the key yet.
    assert!((50..=56).contains(&admitted), "{admitted}");
    let head = refused.last().expect("refusals once the quota is spent");
    assert!(head.contains("RateLimit-Limit: 50"), "{head}");
    assert!(head.contains("RateLimit-Remaining: 0"), "{head}");
    assert!(head.contains("Retry-After: "), "{head}");
    // Bob's count is his own.
    assert_eq!(count(pb.listen, "bob", 5).0, 5);
    drop((a, b));
}

#[test]
fn redis_over_tls_with_a_password_and_a_wrong_password_said_at_ready() {
    let _turn = turn();
    let (redis, ca) = Redis::start_tls("tls", "pw0rd");
    let upstream = Upstream::start("app");
    let gateway = |password: &str, name: &str| {
        let ports = Ports::pick();
        let file = ConfigFile::new(&format!("fleet-limits-tls-{name}"));
        file.write(&format!(
            "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n\
             [fleet]\nredis = \"rediss://:{password}@127.0.0.1:{}\"\nca = \"{}\"\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n\
             filters = [{{ type = \"rate-limit\", rate = 100, key = \"route\", scope = \"fleet\" }}]\n",
            ports.listen, ports.admin, redis.port, ca.display(), upstream.addr
        ));
        (Gateway::start(&file, &ports), ports)
    };
    let (_good, good) = gateway("pw0rd", "good");
    let (_bad, bad) = gateway("guess", "bad");
    for p in [&good, &bad] {
        assert_eq!(raw_get(p.listen, "/").0, 200);
    }
    let metric = |p: &Ports, name: &str| -> u64 {
        admin_get(p, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert!(wait_for(Duration::from_secs(5), || metric(
        &good,
        "shardgate_fleet_syncs_total"
    ) >= 3));
    assert_eq!(metric(&good, "shardgate_fleet_sync_failures_total"), 0);
    assert_eq!(metric(&good, "shardgate_fleet_redis_up"), 1);
    assert!(wait_for(Duration::from_secs(5), || metric(
        &bad,
        "shardgate_fleet_redis_up"
    ) == 0));
    let ready = request(bad.admin, "GET", "/ready");
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(
        ready.1.contains("fleet limits fall back") && ready.1.contains("WRONGPASS"),
        "{}",
        ready.1
    );
    assert!(
        !ready.1.contains("guess"),
        "the password stays out: {}",
        ready.1
    );
}
