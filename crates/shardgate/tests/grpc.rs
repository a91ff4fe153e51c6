//! gRPC end to end through `shardgate run`: a gRPC client and server (Debian's
//! python3-grpcio, `tests/grpc/peer.py`) on either side of the gateway, which speaks
//! HTTP/2 downstream (h2c) and to the upstream group (`protocol = "h2c"`). Unary, server
//! streaming, a large stream read slowly, bidirectional streaming, trailers, the gateway's
//! own answers as gRPC statuses. (`grpc-timeout` is tested in `http2.rs`, against an
//! upstream that does not enforce it itself, as a gRPC server would.)

#[allow(dead_code)]
#[path = "ops/harness.rs"]
mod harness;

use harness::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Debian's Python, which has python3-grpcio (a pyenv or venv python may not).
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn peer_script() -> String {
    format!("{}/tests/grpc/peer.py", env!("CARGO_MANIFEST_DIR"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn grpc_server(port: u16, cancel_mark: &std::path::Path) -> Server {
    let mut child = Command::new(python())
        .args([&peer_script(), "server", &port.to_string()])
        .env("GRPC_CANCEL_MARK", cancel_mark)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with grpcio (apt-get install python3-grpcio)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the gRPC server did not start");
    Server(child)
}

#[test]
fn grpc_calls_pass_through_and_gateway_answers_are_grpc_statuses() {
    let up_port = free_port();
    let mark =
        std::env::temp_dir().join(format!("shardgate-grpc-{}.cancelled", std::process::id()));
    let unary_mark = mark.with_extension("cancelled.unary");
    let _ = std::fs::remove_file(&mark);
    let _ = std::fs::remove_file(&unary_mark);
    let _server = grpc_server(up_port, &mark);
    let ports = Ports::pick();
    let cfg = ConfigFile::new("grpc");
    cfg.write(&format!(
        "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:{listen}\"\nhttp2 = true\n\
         [admin]\naddress = \"127.0.0.1:{admin}\"\n\
         [timeouts]\nupstream_response = \"1s\"\n\
         [upstreams.echo]\nendpoints = [\"127.0.0.1:{up_port}\"]\nprotocol = \"h2c\"\n\
         [upstreams.dead]\nendpoints = [\"127.0.0.1:1\"]\nprotocol = \"h2c\"\n\
         [[routes]]\nname = \"echo\"\nprefix = \"/test.Echo/\"\nupstream = \"echo\"\n\
         [[routes]]\nname = \"locked\"\nprefix = \"/test.Locked/\"\nupstream = \"echo\"\n\
         filters = [{{ type = \"api-key\", keys = [{{ sha256 = \"85dbe15d75ef9308c7ae0f33c7a324cc6f4bf519a2ed2f3027bd33c140a4f9aa\", consumer = \"alice\" }}] }}]\n\
         [[routes]]\nname = \"limited\"\nprefix = \"/test.Limited/\"\nupstream = \"echo\"\n\
         filters = [{{ type = \"rate-limit\", rate = 1, per = \"1m\", burst = 1, key = \"route\" }}]\n\
         [[routes]]\nname = \"dead\"\nprefix = \"/test.Dead/\"\nupstream = \"dead\"\n",
        listen = ports.listen,
        admin = ports.admin,
    ));
    let gw = Gateway::start(&cfg, &ports);
    let out = Command::new(python())
        .args([
            &peer_script(),
            "client",
            &format!("127.0.0.1:{}", ports.listen),
        ])
        .env("GRPC_CANCEL_MARK", &mark)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}\ngateway: {}",
        String::from_utf8_lossy(&out.stderr),
        gw.log.lock().unwrap()
    );
    let case = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    // Unary, with the upstream's trailers.
    assert_eq!(case("unary"), "echo:hi trailer=yes");
    // The upstream's own status passes through.
    assert_eq!(case("error"), "NOT_FOUND no such thing");
    // The route's upstream timeout (1 s) caps the call: the gateway's 504, as a status.
    assert!(case("deadline").starts_with("DEADLINE_EXCEEDED"), "{text}");
    assert_eq!(case("stream"), "1000 m0 m999");
    assert_eq!(case("tiny"), "5000");
    assert_eq!(case("big"), (24 << 20).to_string());
    assert_eq!(case("bidi"), "100 in-order");
    // The client's reset reached the server, through the gateway.
    assert_eq!(case("cancel"), "3");
    assert!(
        wait_for(std::time::Duration::from_secs(5), || mark.exists()),
        "the server never saw the client's cancel"
    );
    let _ = std::fs::remove_file(&mark);
    // Also while the server is still working on a unary call (it answers after 5 s): the
    // gateway stops waiting and resets the upstream stream.
    // (The client waits for the server's mark with its connection open.)
    assert_eq!(
        case("cancel_unary"),
        "True seen",
        "gateway: {}",
        gw.log.lock().unwrap()
    );
    let _ = std::fs::remove_file(&unary_mark);
    // The gateway's own answers, Trailers-Only, each with a message.
    for (name, status) in [
        ("unauthenticated", "UNAUTHENTICATED"),
        ("exhausted", "RESOURCE_EXHAUSTED"),
        ("unimplemented", "UNIMPLEMENTED"),
        ("unavailable", "UNAVAILABLE"),
    ] {
        let got = case(name);
        let (code, message) = got.split_once(' ').unwrap_or((&got, ""));
        assert_eq!(code, status, "{name}: {got}");
        assert!(!message.trim().is_empty(), "{name} has a message: {got}");
    }
    // Each call took a stream on the shard's connection to the upstream: few connects.
    let metrics = admin_get(&ports, "/metrics");
    let connects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shardgate_upstream_connects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        connects <= 6,
        "{connects} upstream connects for ~20 calls:\n{metrics}"
    );
}
