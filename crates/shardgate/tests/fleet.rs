//! A fleet's configuration centre on a real etcd (Debian's `etcd-server`, started per test on
//! loopback with a temporary data directory and stopped by pid): `shardgate run --etcd`,
//! `shardgate config push|get`, registrations with leases, outages, compaction, and two
//! gateways on one prefix.

#[allow(dead_code)]
#[path = "ops/harness.rs"]
mod harness;

use harness::*;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Tests that run load take turns (see the ops tests).
static UNDER_LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn under_load() -> std::sync::MutexGuard<'static, ()> {
    UNDER_LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One etcd member on loopback, its data in a temporary directory.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// More `etcd` flags, kept across restarts.
    flags: Vec<String>,
    /// `user:password` for etcdctl and the test's client, once authentication is on.
    login: Option<(String, String)>,
    /// Serving TLS and asking for client certificates: (CA, client cert, client key).
    tls: Option<[PathBuf; 3]>,
}

impl Etcd {
    fn start(name: &str) -> Etcd {
        Etcd::start_with(name, &[])
    }

    /// Over TLS with client certificates, from a CA made here (files in `dir`).
    fn start_tls(name: &str, dir: &std::path::Path) -> Etcd {
        let pki = make_pki(dir);
        let f = |p: &PathBuf| p.display().to_string();
        let mut etcd = Etcd::new(
            name,
            &[
                "--cert-file",
                &f(&pki.server.0),
                "--key-file",
                &f(&pki.server.1),
                "--client-cert-auth",
                "--trusted-ca-file",
                &f(&pki.ca),
            ],
        );
        etcd.tls = Some([pki.ca, pki.client.0, pki.client.1]);
        etcd.launch();
        etcd
    }

    fn start_with(name: &str, flags: &[&str]) -> Etcd {
        let mut etcd = Etcd::new(name, flags);
        etcd.launch();
        etcd
    }

    fn new(name: &str, flags: &[&str]) -> Etcd {
        let dir =
            std::env::temp_dir().join(format!("shardgate-fleet-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            login: None,
            tls: None,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Starts (or restarts) the member on its data directory and waits until it answers.
    fn launch(&mut self) {
        assert!(self.child.is_none());
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd (apt-get install etcd-server etcd-client)");
        self.child = Some(child);
        let client = self.client();
        assert!(
            wait_for(Duration::from_secs(15), || client.range("/", false).is_ok()),
            "etcd did not start: {}",
            std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
        );
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self) -> shardgate_etcd::Client {
        shardgate_etcd::Client::new(&shardgate_etcd::Settings {
            endpoints: vec![self.url()],
            username: self.login.as_ref().map(|l| l.0.clone()),
            password: self.login.as_ref().map(|l| l.1.clone()),
            ca: self.tls.as_ref().map(|t| t[0].clone()),
            cert: self.tls.as_ref().map(|t| t[1].clone()),
            key: self.tls.as_ref().map(|t| t[2].clone()),
        })
        .unwrap()
    }

    /// `etcdctl ARGS` against this member; its stdout.
    fn ctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url()]);
        if let Some((user, password)) = &self.login {
            cmd.args(["--user", &format!("{user}:{password}")]);
        }
        if let Some([ca, cert, key]) = &self.tls {
            cmd.arg("--cacert")
                .arg(ca)
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        let out = cmd.args(args).output().expect("running etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `config push -c FILE --bootstrap BOOTSTRAP EXTRA...`, to completion.
fn push_via(file: &ConfigFile, bootstrap: &str, extra: &[&str]) -> Output {
    let path = file.path.display().to_string();
    let mut args = vec!["config", "push", "-c", &path, "--bootstrap", bootstrap];
    args.extend(extra);
    shardgate(&args)
}

/// `shardgate ARGS`, to completion.
fn shardgate(args: &[&str]) -> Output {
    Command::new(SHARDGATE)
        .args(args)
        .output()
        .expect("running shardgate")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `config push -c FILE` to `prefix`; the revision it was written at.
fn push(etcd: &Etcd, prefix: &str, file: &ConfigFile, extra: &[&str]) -> i64 {
    let path = file.path.display().to_string();
    let mut args = vec!["config", "push", "-c", &path];
    let url = etcd.url();
    args.extend(["--etcd", &url, "--etcd-prefix", prefix]);
    args.extend(extra);
    let out = shardgate(&args);
    assert!(out.status.success(), "push: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .split("pushed at revision ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {stdout:?}"))
}

/// `config get` into `file`; its text.
fn get(etcd: &Etcd, prefix: &str, file: &ConfigFile) -> String {
    let out = shardgate(&[
        "config",
        "get",
        "--etcd",
        &etcd.url(),
        "--etcd-prefix",
        prefix,
    ]);
    assert!(out.status.success(), "get: {}", text(&out));
    let t = String::from_utf8(out.stdout).unwrap();
    file.write(&t);
    t
}

/// A state directory of its own.
fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "shardgate-fleet-state-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `shardgate run --etcd` on `prefix`, started.
fn run_from(etcd: &Etcd, prefix: &str, state: &std::path::Path, extra: &[&str]) -> Gateway {
    let gw = spawn_from(etcd, prefix, state, extra);
    gw.wait_started();
    gw
}

fn spawn_from(etcd: &Etcd, prefix: &str, state: &std::path::Path, extra: &[&str]) -> Gateway {
    let mut args: Vec<String> = [
        "run",
        "--etcd",
        &etcd.url(),
        "--etcd-prefix",
        prefix,
        "--state-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(state.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Gateway::spawn(&args)
}

fn config_json(ports: &Ports) -> serde_json::Value {
    serde_json::from_str(&admin_get(ports, "/config")).unwrap()
}

fn metric(ports: &Ports, name: &str) -> u64 {
    let text = admin_get(ports, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// One test's etcd, two upstreams `a` and `b`, the gateway's ports, its configuration file
/// and state directory; the prefix is `/<name>/`.
struct Fleet {
    etcd: Etcd,
    a: Upstream,
    b: Upstream,
    ports: Ports,
    file: ConfigFile,
    state: PathBuf,
}

impl Fleet {
    fn new(name: &str) -> Fleet {
        Fleet {
            etcd: Etcd::start(name),
            a: Upstream::start("a"),
            b: Upstream::start("b"),
            ports: Ports::pick(),
            file: ConfigFile::new(&format!("fleet-{name}")),
            state: state_dir(name),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

#[test]
fn a_push_is_watched_and_applied_and_a_bad_one_is_refused_while_the_old_one_serves() {
    let fleet = Fleet::new("apply");
    let Fleet {
        etcd,
        a,
        b,
        ports,
        file,
        state,
    } = &fleet;
    file.write(&config_text(ports, a, b, "a"));
    let first = push(etcd, "/apply/", file, &[]);
    let gw = run_from(etcd, "/apply/", state, &[]);
    assert_eq!(which(ports), "a");
    assert_eq!(config_json(ports)["etcd"]["revision"], first);

    // The operator's round: get, edit, push.
    let got = get(etcd, "/apply/", file);
    assert!(got.starts_with(&format!(
        "# shardgate config get: /apply/config revision {first}\n"
    )));
    file.write(&got.replace(
        "path = \"/which\"\nupstream = \"a\"",
        "path = \"/which\"\nupstream = \"b\"",
    ));
    let second = push(etcd, "/apply/", file, &[]);
    assert!(second > first);
    assert!(
        wait_for(Duration::from_secs(5), || which(ports) == "b"),
        "the push was not applied: {}",
        gw.log.lock().unwrap()
    );
    let c = config_json(ports);
    assert_eq!(c["etcd"]["revision"], second, "{c}");
    assert!(c["source"].as_str().unwrap().contains("revision"), "{c}");
    assert!(state.join("last-good.json").exists());

    // `config push` validates first: nothing is written.
    let bad = ConfigFile::new("fleet-apply-bad");
    bad.write(&config_text(ports, a, b, "b").replace("workers = 2", "workers = \"lots\""));
    let out = shardgate(&[
        "config",
        "push",
        "-c",
        &bad.path.display().to_string(),
        "--etcd",
        &etcd.url(),
        "--etcd-prefix",
        "/apply/",
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("workers"),
        "{}",
        text(&out)
    );
    let client = etcd.client();
    assert_eq!(
        client.range("/apply/config", false).unwrap().kvs[0].mod_revision,
        second
    );

    // A bad document written past the CLI is refused by the gateway; the old one serves.
    let failures = metric(ports, "shardgate_config_reload_failures_total");
    let broken = config_text(ports, a, b, "a").replace(
        "path = \"/which\"\nupstream = \"a\"",
        "path = \"/which\"\nupstream = \"nope\"",
    );
    client.put("/apply/config", broken.as_bytes()).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || {
            metric(ports, "shardgate_config_reload_failures_total") > failures
        }),
        "{}",
        gw.log.lock().unwrap()
    );
    assert_eq!(which(ports), "b");
    let c = config_json(ports);
    assert!(
        c["last_error"]
            .as_str()
            .unwrap()
            .contains("routes[1].upstream"),
        "{c}"
    );
    assert_eq!(c["etcd"]["revision"], second, "{c}");
    assert!(gw.log.lock().unwrap().contains("reload refused"));

    // A deleted key is refused the same way: the routing table stays.
    etcd.ctl(&["del", "/apply/config"]);
    assert!(wait_for(Duration::from_secs(5), || {
        config_json(ports)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("was deleted from etcd"))
    }));
    assert_eq!(which(ports), "b");
    assert_eq!(raw_get(ports.listen, "/").0, 200);

    // And a good document afterwards applies.
    file.write(&config_text(ports, a, b, "a"));
    push(etcd, "/apply/", file, &["--force"]);
    assert!(wait_for(Duration::from_secs(5), || which(ports) == "a"));
    assert!(config_json(ports)["last_error"].is_null());
}

#[test]
fn etcd_killed_under_load_fails_no_request_and_the_gateway_catches_up_after_it_returns() {
    let _turn = under_load();
    let mut fleet = Fleet::new("kill");
    let Fleet {
        etcd,
        a,
        b,
        ports,
        file,
        state,
    } = &mut fleet;
    file.write(&config_text(ports, a, b, "a"));
    push(etcd, "/kill/", file, &[]);
    let gw = run_from(etcd, "/kill/", state, &[]);
    let load = Load::start(ports, 6);
    std::thread::sleep(Duration::from_millis(800));
    etcd.kill();
    assert!(
        gw.wait_log(Duration::from_secs(5), "etcd is unreachable"),
        "{}",
        gw.log.lock().unwrap()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(metric(ports, "shardgate_etcd_connected"), 0);
    assert_eq!(which(ports), "a");
    etcd.launch();
    assert!(
        gw.wait_log(Duration::from_secs(10), "answers again"),
        "{}",
        gw.log.lock().unwrap()
    );
    file.write(&config_text(ports, a, b, "b"));
    push(etcd, "/kill/", file, &["--force"]);
    assert!(
        wait_for(Duration::from_secs(5), || which(ports) == "b"),
        "{}",
        gw.log.lock().unwrap()
    );
    let report = load.finish();
    assert!(report.requests > 1000, "{report:?}");
    assert_eq!((report.errors, report.non_2xx), (0, 0), "{report:?}");
    assert_eq!(metric(ports, "shardgate_etcd_connected"), 1);
}

#[test]
fn a_gateway_starts_from_its_state_directory_while_etcd_is_down_and_catches_up() {
    let mut fleet = Fleet::new("state");
    let Fleet {
        etcd,
        a,
        b,
        ports,
        file,
        state,
    } = &mut fleet;
    file.write(&config_text(ports, a, b, "a"));
    let first = push(etcd, "/state/", file, &[]);
    {
        let _gw = run_from(etcd, "/state/", state, &[]);
        assert!(wait_for(Duration::from_secs(5), || state
            .join("last-good.json")
            .exists()));
    }
    etcd.kill();

    // No state and no etcd: a clear refusal to start.
    let empty = state_dir("state-empty");
    let out = shardgate(&[
        "run",
        "--etcd",
        &etcd.url(),
        "--etcd-prefix",
        "/state/",
        "--state-dir",
        &empty.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("etcd is unreachable") && err.contains("no last good configuration"),
        "{err}"
    );

    let gw = run_from(etcd, "/state/", state, &[]);
    assert!(
        gw.log
            .lock()
            .unwrap()
            .contains("serving the last good configuration")
    );
    assert_eq!(which(ports), "a");
    let ready = request(ports.admin, "GET", "/ready");
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(ready.1.contains("last good configuration"), "{}", ready.1);
    assert_eq!(config_json(ports)["etcd"]["revision"], first);
    assert_eq!(metric(ports, "shardgate_etcd_config_from_state"), 1);

    etcd.launch();
    file.write(&config_text(ports, a, b, "b"));
    let second = push(etcd, "/state/", file, &["--force"]);
    assert!(
        wait_for(Duration::from_secs(10), || which(ports) == "b"),
        "{}",
        gw.log.lock().unwrap()
    );
    assert_eq!(config_json(ports)["etcd"]["revision"], second);
    assert!(
        !request(ports.admin, "GET", "/ready")
            .1
            .contains("last good")
    );
    assert_eq!(metric(ports, "shardgate_etcd_config_from_state"), 0);
}

#[test]
fn a_compaction_past_the_gateways_revision_is_followed_by_a_full_read() {
    let mut fleet = Fleet::new("compact");
    let Fleet {
        etcd,
        a,
        b,
        ports,
        file,
        state,
    } = &mut fleet;
    file.write(&config_text(ports, a, b, "a"));
    push(etcd, "/compact/", file, &[]);
    let gw = run_from(etcd, "/compact/", state, &[]);
    assert_eq!(which(ports), "a");
    // The gateway misses an etcd restart (paused), during which the configuration changes
    // and etcd compacts its history past the last revision the gateway saw.
    gw.signal("STOP");
    etcd.kill();
    etcd.launch();
    file.write(&config_text(ports, a, b, "b"));
    push(etcd, "/compact/", file, &["--force"]);
    let client = etcd.client();
    let mut last = 0;
    for i in 0..5 {
        last = client
            .put("/elsewhere/key", format!("{i}").as_bytes())
            .unwrap();
    }
    etcd.ctl(&["compaction", &last.to_string()]);
    gw.signal("CONT");
    assert!(
        wait_for(Duration::from_secs(10), || which(ports) == "b"),
        "{}",
        gw.log.lock().unwrap()
    );
    assert!(
        gw.log.lock().unwrap().contains("compacted past revision"),
        "{}",
        gw.log.lock().unwrap()
    );
    assert_eq!(metric(ports, "shardgate_etcd_full_reads_total"), 1);
}

#[test]
fn registered_endpoints_join_and_leave_with_their_lease_without_a_failed_request() {
    let _turn = under_load();
    let fleet = Fleet::new("lease");
    let Fleet {
        etcd,
        a,
        b,
        ports,
        file,
        state,
    } = &fleet;
    file.write(&format!(
        "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n\
         [upstreams.app]\ndiscovery = \"etcd\"\n\
         [[routes]]\nname = \"main\"\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen, ports.admin
    ));
    push(etcd, "/lease/", file, &[]);
    let gw = run_from(etcd, "/lease/", state, &[]);
    let (status, head) = raw_get(ports.listen, "/");
    assert_eq!(status, 503, "no endpoint is registered yet: {head}");

    let lease = |ttl: &str| {
        let out = etcd.ctl(&["lease", "grant", ttl]);
        out.split_whitespace().nth(1).unwrap().to_string()
    };
    let long = lease("60");
    etcd.ctl(&[
        "put",
        "--lease",
        &long,
        &format!("/lease/endpoints/app/{}", a.addr),
        "up",
    ]);
    let short = lease("3");
    etcd.ctl(&[
        "put",
        "--lease",
        &short,
        &format!("/lease/endpoints/app/{}", b.addr),
        "up",
    ]);
    let served = |name: &str| {
        (0..20).any(|_| {
            raw_get(ports.listen, "/")
                .1
                .lines()
                .any(|l| l.trim() == format!("X-Upstream: {name}"))
        })
    };
    assert!(
        wait_for(Duration::from_secs(5), || served("a") && served("b")),
        "{}",
        gw.log.lock().unwrap()
    );

    let load = Load::start(ports, 6);
    assert!(
        wait_for(Duration::from_secs(8), || !admin_get(ports, "/upstreams")
            .contains(&b.addr)),
        "the lease expired but b stayed: {}",
        gw.log.lock().unwrap()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!served("b"), "b still answers after its lease expired");
    let report = load.finish();
    assert_eq!((report.errors, report.non_2xx), (0, 0), "{report:?}");
    // The registrations are kept with the last good state.
    let saved = std::fs::read_to_string(state.join("last-good.json")).unwrap();
    assert!(
        saved.contains(&a.addr) && !saved.contains(&b.addr),
        "{saved}"
    );
}

#[test]
fn two_gateways_on_one_prefix_apply_a_push_within_a_second() {
    let etcd = Etcd::start("converge");
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let ports = Ports::pick();
    let second_admin = free_port();
    let file = ConfigFile::new("fleet-converge");
    file.write(&config_text(&ports, &a, &b, "a"));
    push(&etcd, "/converge/", &file, &[]);
    let (s1, s2) = (state_dir("converge-1"), state_dir("converge-2"));
    // One listener port (SO_REUSEPORT), an admin address each.
    let _g1 = run_from(&etcd, "/converge/", &s1, &[]);
    let admin2 = format!("127.0.0.1:{second_admin}");
    let _g2 = run_from(&etcd, "/converge/", &s2, &["--admin", &admin2]);
    let other = Ports {
        listen: ports.listen,
        admin: second_admin,
    };
    file.write(&config_text(&ports, &a, &b, "b"));
    let t0 = Instant::now();
    let revision = push(&etcd, "/converge/", &file, &["--force"]);
    let mut applied = [None, None];
    while t0.elapsed() < Duration::from_secs(5) && applied.iter().any(Option::is_none) {
        for (slot, p) in applied.iter_mut().zip([&ports, &other]) {
            if slot.is_none() && config_json(p)["etcd"]["revision"] == revision {
                *slot = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("applied {applied:?} after the push returned");
    for (i, t) in applied.iter().enumerate() {
        let t = t.unwrap_or_else(|| panic!("gateway {i} never applied revision {revision}"));
        assert!(t < Duration::from_secs(1), "gateway {i} took {t:?}");
    }
    let _ = (std::fs::remove_dir_all(&s1), std::fs::remove_dir_all(&s2));
}

#[test]
fn config_push_refuses_to_overwrite_a_newer_configuration_unless_forced() {
    let etcd = Etcd::start("stale");
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let ports = Ports::pick();
    let mine = ConfigFile::new("fleet-stale-mine");
    mine.write(&config_text(&ports, &a, &b, "a"));
    let first = push(&etcd, "/stale/", &mine, &[]);
    get(&etcd, "/stale/", &mine);

    // Someone else publishes after my read.
    let theirs = ConfigFile::new("fleet-stale-theirs");
    get(&etcd, "/stale/", &theirs);
    let t = std::fs::read_to_string(&theirs.path).unwrap();
    theirs.write(&t.replace("drain_timeout = \"5s\"", "drain_timeout = \"7s\""));
    let second = push(&etcd, "/stale/", &theirs, &[]);
    assert!(second > first);

    // My edit of the older read is refused, and etcd keeps theirs.
    let t = std::fs::read_to_string(&mine.path).unwrap();
    mine.write(&t.replace("drain_timeout = \"5s\"", "drain_timeout = \"9s\""));
    let path = mine.path.display().to_string();
    let url = etcd.url();
    let out = shardgate(&[
        "config",
        "push",
        "-c",
        &path,
        "--etcd",
        &url,
        "--etcd-prefix",
        "/stale/",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("newer in etcd (revision {second})")),
        "{err}"
    );
    let client = etcd.client();
    let kv = &client.range("/stale/config", false).unwrap().kvs[0];
    assert!(String::from_utf8_lossy(&kv.value).contains("7s"));

    // A file that was never read from etcd does not overwrite it either.
    let fresh = ConfigFile::new("fleet-stale-fresh");
    fresh.write(&config_text(&ports, &a, &b, "b"));
    let fresh_path = fresh.path.display().to_string();
    let out = shardgate(&[
        "config",
        "push",
        "-c",
        &fresh_path,
        "--etcd",
        &url,
        "--etcd-prefix",
        "/stale/",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--revision"),
        "{}",
        text(&out)
    );

    // --force does; the header line is not stored.
    let third = push(&etcd, "/stale/", &mine, &["--force"]);
    let kv = &client.range("/stale/config", false).unwrap().kvs[0];
    assert_eq!(kv.mod_revision, third);
    let stored = String::from_utf8_lossy(&kv.value);
    assert!(
        stored.contains("9s") && !stored.contains("# shardgate config get"),
        "{stored}"
    );
}

#[test]
fn a_gateway_logs_in_to_etcd_from_its_bootstrap_file_and_again_when_its_token_is_gone() {
    // Simple tokens that expire after a second.
    let mut etcd = Etcd::start_with("auth", &["--auth-token-ttl", "1"]);
    etcd.ctl(&["role", "add", "root"]);
    etcd.ctl(&["user", "add", "root", "--new-user-password=s3cret"]);
    etcd.ctl(&["user", "grant-role", "root", "root"]);
    etcd.ctl(&["auth", "enable"]);
    etcd.login = Some(("root".into(), "s3cret".into()));
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let ports = Ports::pick();
    let dir = state_dir("auth");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("password"), "s3cret\n").unwrap();
    let bootstrap = |password_file: &str| {
        let path = dir.join(format!("bootstrap-{password_file}.toml"));
        std::fs::write(
            &path,
            format!(
                "[etcd]\nendpoints = [\"{}\"]\nprefix = \"/auth/\"\nstate_dir = \"{}\"\n\
                 username = \"root\"\npassword_file = \"{}\"\n",
                etcd.url(),
                dir.join("state").display(),
                dir.join(password_file).display()
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let good = bootstrap("password");
    std::fs::write(dir.join("wrong"), "guess\n").unwrap();
    let wrong = bootstrap("wrong");
    let file = ConfigFile::new("fleet-auth");
    file.write(&config_text(&ports, &a, &b, "a"));
    let out = push_via(&file, &wrong, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication failed"),
        "{}",
        text(&out)
    );
    let out = push_via(&file, &good, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let gw = Gateway::spawn(&["run".into(), "--bootstrap".into(), good.clone()]);
    gw.wait_started();
    assert_eq!(which(&ports), "a");
    // The gateway's token outlives its use: etcd restarts (replaying its log, which brings
    // the token back) while the gateway is paused, and the token expires before it resumes.
    gw.signal("STOP");
    etcd.kill();
    etcd.launch();
    std::thread::sleep(Duration::from_millis(2500));
    gw.signal("CONT");
    file.write(&config_text(&ports, &a, &b, "b"));
    let out = push_via(&file, &good, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_for(Duration::from_secs(10), || which(&ports) == "b"),
        "{}",
        gw.log.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_state_directory_that_cannot_be_written_is_reported_and_serving_goes_on() {
    let etcd = Etcd::start("disk");
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let ports = Ports::pick();
    let file = ConfigFile::new("fleet-disk");
    file.write(&config_text(&ports, &a, &b, "a"));
    push(&etcd, "/disk/", &file, &[]);
    // A directory under a regular file cannot be made, by root either.
    let blocker = state_dir("disk");
    std::fs::write(&blocker, "not a directory").unwrap();
    let gw = run_from(&etcd, "/disk/", &blocker.join("state"), &[]);
    assert!(
        gw.log.lock().unwrap().contains("cannot be kept"),
        "{}",
        gw.log.lock().unwrap()
    );
    file.write(&config_text(&ports, &a, &b, "b"));
    push(&etcd, "/disk/", &file, &["--force"]);
    assert!(wait_for(Duration::from_secs(5), || which(&ports) == "b"));
    assert!(metric(&ports, "shardgate_etcd_state_write_failures_total") >= 2);
    let c = config_json(&ports);
    assert!(
        c["etcd"]["last_state_error"]
            .as_str()
            .unwrap()
            .contains("last-good.json"),
        "{c}"
    );
    assert!(
        gw.log
            .lock()
            .unwrap()
            .contains("cannot save the last good configuration")
    );
    let _ = std::fs::remove_file(&blocker);
}

#[test]
fn a_gateway_talks_to_etcd_over_tls_with_a_client_certificate() {
    let dir = state_dir("tls");
    let etcd = Etcd::start_tls("tls", &dir.join("pki"));
    let [ca, cert, key] = etcd.tls.clone().unwrap();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let ports = Ports::pick();
    let bootstrap = |with_cert: bool| {
        let path = dir.join(format!("bootstrap-{with_cert}.toml"));
        let mut t = format!(
            "[etcd]\nendpoints = [\"{}\"]\nprefix = \"/tls/\"\nstate_dir = \"{}\"\nca = \"{}\"\n",
            etcd.url(),
            dir.join("state").display(),
            ca.display()
        );
        if with_cert {
            t += &format!(
                "cert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                key.display()
            );
        }
        std::fs::write(&path, t).unwrap();
        path.display().to_string()
    };
    let (good, anonymous) = (bootstrap(true), bootstrap(false));
    let file = ConfigFile::new("fleet-tls");
    file.write(&config_text(&ports, &a, &b, "a"));
    // etcd asks for a client certificate: without one the handshake fails, and says so.
    let out = push_via(&file, &anonymous, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcd is unreachable"),
        "{}",
        text(&out)
    );
    let out = push_via(&file, &good, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let gw = Gateway::spawn(&["run".into(), "--bootstrap".into(), good.clone()]);
    gw.wait_started();
    assert_eq!(which(&ports), "a");
    file.write(&config_text(&ports, &a, &b, "b"));
    let out = push_via(&file, &good, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_for(Duration::from_secs(5), || which(&ports) == "b"),
        "{}",
        gw.log.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Which upstream answers `GET /` for `host`.
fn which_for(port: u16, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix("X-Upstream: "))
        .unwrap_or("?")
        .trim()
        .to_string()
}

#[test]
fn a_push_with_one_broken_tenant_applies_the_rest_as_a_file_reload_does() {
    let etcd = Etcd::start("tenants");
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let ports = Ports::pick();
    let text = |ta: &str, ta_filter: &str, tb: &str| {
        format!(
            "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n\
             [upstreams.a]\nendpoints = [\"{}\"]\n[upstreams.b]\nendpoints = [\"{}\"]\n\
             [[tenants]]\nname = \"ta\"\nhosts = [\"ta.test\"]\nfilters = [{ta_filter}]\n\
             [[tenants]]\nname = \"tb\"\nhosts = [\"tb.test\"]\n\
             [[routes]]\nname = \"ta-r\"\ntenant = \"ta\"\nprefix = \"/\"\nupstream = \"{ta}\"\n\
             [[routes]]\nname = \"tb-r\"\ntenant = \"tb\"\nprefix = \"/\"\nupstream = \"{tb}\"\n",
            ports.listen, ports.admin, a.addr, b.addr
        )
    };
    let file = ConfigFile::new("fleet-tenants");
    file.write(&text("a", "", "a"));
    push(&etcd, "/tenants/", &file, &[]);
    let state = state_dir("tenants");
    let gw = run_from(&etcd, "/tenants/", &state, &[]);
    assert_eq!(
        (
            which_for(ports.listen, "ta.test"),
            which_for(ports.listen, "tb.test")
        ),
        ("a".into(), "a".into())
    );
    // Tenant ta's new section is broken (written past the CLI, which would refuse it whole);
    // tb's change applies, ta keeps its previous sections.
    let broken = text("b", "{ type = \"rate-limit\", rate = -1 }", "b");
    etcd.client()
        .put("/tenants/config", broken.as_bytes())
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || which_for(
            ports.listen,
            "tb.test"
        ) == "b"),
        "{}",
        gw.log.lock().unwrap()
    );
    assert_eq!(which_for(ports.listen, "ta.test"), "a");
    let c = config_json(&ports);
    let e = c["last_error"].as_str().unwrap_or_default();
    assert!(
        e.contains("tenant \"ta\" keeps its previous configuration"),
        "{c}"
    );
    let _ = std::fs::remove_dir_all(&state);
}
