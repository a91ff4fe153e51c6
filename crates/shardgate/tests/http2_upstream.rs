//! HTTP/2 to upstreams, through `shardgate run` and the one-liner, with nginx 1.22 as the
//! upstream (`listen ... http2`, cleartext and TLS): the request arrives as HTTP/2 with
//! `te: trailers`; the peer's max concurrent streams opens more connections; GOAWAYs do not
//! fail requests, POSTs included; health checks probe over HTTP/2.

#[allow(dead_code)]
#[path = "ops/harness.rs"]
mod harness;

use harness::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// nginx in the foreground with `servers` (server blocks) in its http block.
fn nginx(name: &str, servers: &str) -> Nginx {
    let dir = std::env::temp_dir().join(format!("shardgate-h2up-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         {servers}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx_bin())
        .args(["-p", &d.to_string(), "-c"])
        .arg(dir.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx)");
    Nginx { child, dir }
}

fn wait_port(port: u16) {
    assert!(
        wait_for(std::time::Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "nothing listens on {port}"
    );
}

fn metric(ports: &Ports, name: &str) -> u64 {
    admin_get(ports, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

fn h2load(url: &str, args: &[&str]) -> String {
    let out = Command::new("h2load")
        .args(args)
        .arg(url)
        .output()
        .expect("h2load (apt-get install nghttp2-client)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn groups_speak_h2c_with_more_connections_at_the_stream_limit_and_through_goaways() {
    let (wide, narrow, goaway, sick) = (free_port(), free_port(), free_port(), free_port());
    let _n = nginx(
        "h2c",
        &format!(
            "server {{ listen 127.0.0.1:{wide} http2; location / {{ return 200 \"$server_protocol te=$http_te\\n\"; }} }}\n\
             server {{ listen 127.0.0.1:{narrow} http2; http2_max_concurrent_streams 2;\n\
                location / {{ return 200 \"narrow\\n\"; }} }}\n\
             server {{ listen 127.0.0.1:{goaway} http2; keepalive_requests 5;\n\
                location / {{ return 200 \"goaway\\n\"; }} }}\n\
             server {{ listen 127.0.0.1:{sick} http2; location /health {{ return 503; }}\n\
                location / {{ return 200 \"sick\\n\"; }} }}\n"
        ),
    );
    for p in [wide, narrow, goaway, sick] {
        wait_port(p);
    }
    let ports = Ports::pick();
    let cfg = ConfigFile::new("h2-upstream");
    let group = |name: &str, port: &str, extra: &str| {
        format!(
            "[upstreams.{name}]\nendpoints = [{port}]\nprotocol = \"h2c\"\n{extra}\n\
             [[routes]]\nname = \"{name}\"\nprefix = \"/{name}\"\nupstream = \"{name}\"\n"
        )
    };
    let health = "[upstreams.HEALTH.health]\npath = \"/health\"\ninterval = \"200ms\"\n";
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\nhttp2 = true\n\
         [admin]\naddress = \"127.0.0.1:{}\"\n{}{}{}{}{}",
        ports.listen,
        ports.admin,
        group("wide", &format!("\"127.0.0.1:{wide}\""), ""),
        group("narrow", &format!("\"127.0.0.1:{narrow}\""), ""),
        group(
            "goaway",
            &format!("\"127.0.0.1:{goaway}\""),
            "[upstreams.goaway.retry]\nattempts = 1\n"
        ),
        group(
            "sick",
            &format!("\"127.0.0.1:{sick}\", \"127.0.0.1:{wide}\""),
            &health.replace("HEALTH", "sick")
        ),
        "",
    ));
    let gw = Gateway::start(&cfg, &ports);
    let base = format!("http://127.0.0.1:{}", ports.listen);

    // An HTTP/1.1 client; the upstream gets HTTP/2, with te: trailers.
    let (status, text) = raw_get(ports.listen, "/wide");
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("HTTP/2.0 te=trailers\n"), "{text}");

    // Streams at once past the peer's limit of 2: more connections, none failed.
    let before = metric(&ports, "shardgate_upstream_connects_total");
    let out = h2load(
        &format!("{base}/narrow"),
        &["-c", "1", "-m", "16", "-n", "800"],
    );
    assert!(out.contains("800 succeeded, 0 failed"), "{out}");
    let opened = metric(&ports, "shardgate_upstream_connects_total") - before;
    assert!(
        (4..=16).contains(&opened),
        "{opened} connections for 16 streams at a limit of 2"
    );

    // nginx sends GOAWAY every 5 requests; POSTs (not idempotent) and GETs all succeed, on
    // one new connection each 5.
    let before = metric(&ports, "shardgate_upstream_connects_total");
    let data = std::env::temp_dir().join(format!("shardgate-h2up-{}.txt", std::process::id()));
    std::fs::write(&data, b"payload").unwrap();
    let out = h2load(
        &format!("{base}/goaway"),
        &[
            "-c",
            "1",
            "-m",
            "4",
            "-n",
            "300",
            "-d",
            data.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&data);
    assert!(out.contains("300 succeeded, 0 failed"), "{out}");
    assert!(out.contains("300 2xx"), "{out}");
    let opened = metric(&ports, "shardgate_upstream_connects_total") - before;
    assert!(
        opened >= 300 / 5,
        "{opened} connections for 300 requests, 5 a connection"
    );

    // Health probes speak HTTP/2 (nginx's h2c ports speak nothing else): the endpoint
    // whose /health answers 503 goes down, and the healthy one answers every request.
    assert!(
        gw.wait_log(
            std::time::Duration::from_secs(5),
            "healthy -> unhealthy after 3 failed probes (last: status 503)"
        ),
        "{}",
        gw.log.lock().unwrap()
    );
    assert!(
        !gw.log
            .lock()
            .unwrap()
            .contains(&format!(":{wide} endpoint #1 healthy -> unhealthy"))
    );
    // The verdict reaches the shards a moment after it is logged.
    let by_wide = || raw_get(ports.listen, "/sick").1.ends_with("te=trailers\n");
    assert!(wait_for(std::time::Duration::from_secs(3), || by_wide() && by_wide()));
    for _ in 0..20 {
        let (status, text) = raw_get(ports.listen, "/sick");
        assert_eq!(status, 200);
        assert!(
            text.ends_with("te=trailers\n"),
            "the healthy endpoint answers: {text}"
        );
    }
}

#[test]
fn the_one_liner_speaks_h2_over_tls_and_h2c_to_upstreams() {
    let dir = std::env::temp_dir().join(format!("shardgate-h2up-pki-{}", std::process::id()));
    let pki = make_pki(&dir);
    let (plain, tls) = (free_port(), free_port());
    let _n = nginx(
        "oneliner",
        &format!(
            "server {{ listen 127.0.0.1:{plain} http2; location / {{ return 200 \"h2c $server_protocol\\n\"; }} }}\n\
             server {{ listen 127.0.0.1:{tls} ssl http2; ssl_certificate {}; ssl_certificate_key {};\n\
                location / {{ return 200 \"tls $server_protocol $http_te\\n\"; }} }}\n",
            pki.server.0.display(),
            pki.server.1.display()
        ),
    );
    wait_port(plain);
    wait_port(tls);
    for (to, protocol, extra, want) in [
        (plain, "h2c", vec![], "h2c HTTP/2.0\n"),
        (
            tls,
            "h2",
            vec!["--upstream-ca".to_string(), pki.ca.display().to_string()],
            "tls HTTP/2.0 trailers\n",
        ),
    ] {
        let ports = Ports::pick();
        let mut args: Vec<String> = [
            "proxy",
            "--listen",
            &format!("127.0.0.1:{}", ports.listen),
            "--to",
            &format!("127.0.0.1:{to}"),
            "--workers",
            "1",
            "--upstream-protocol",
            protocol,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        let gw = Gateway::spawn(&args);
        gw.wait_started();
        let (status, text) = raw_get(ports.listen, "/x");
        assert_eq!(
            status,
            200,
            "{protocol}: {text}\n{}",
            gw.log.lock().unwrap()
        );
        assert!(text.ends_with(want), "{protocol}: {text}");
        // And the one-liner's listener speaks HTTP/2 itself (h2c with prior knowledge).
        let out = Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "-w", "%{http_version}"])
            .arg(format!("http://127.0.0.1:{}/x", ports.listen))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{want}2"),
            "{protocol}"
        );
    }
    // A TLS upstream that does not verify is a failed connect: 502.
    let ports = Ports::pick();
    let gw = Gateway::spawn(
        &[
            "proxy",
            "--listen",
            &format!("127.0.0.1:{}", ports.listen),
            "--to",
            &format!("127.0.0.1:{tls}"),
            "--workers",
            "1",
            "--upstream-protocol",
            "h2",
        ]
        .map(String::from),
    );
    gw.wait_started();
    assert_eq!(raw_get(ports.listen, "/x").0, 502);
    let _ = std::fs::remove_dir_all(&dir);
}
