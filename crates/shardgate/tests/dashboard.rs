//! The admin server's live dashboard, loaded in a real browser (Debian's `chromium`, headless)
//! against `shardgate run` under load: the test reads the figures from the page's DOM after
//! its scripts ran, and saves a phone-sized screenshot as a test artefact.

#[allow(dead_code)]
#[path = "ops/harness.rs"]
mod harness;

use harness::*;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "dashboard-token-0123";

fn config(ports: &Ports, app: &Upstream, dead: u16, extra_route: &str) -> String {
    format!(
        "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n\
         [admin]\naddress = \"127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n\
         [upstreams.app]\nendpoints = [\"{}\", \"127.0.0.1:{dead}\"]\n\
         [[routes]]\nname = \"main\"\nprefix = \"/\"\nupstream = \"app\"\n\
         [[routes]]\nname = \"limited\"\nprefix = \"/limited\"\nupstream = \"app\"\n\
         filters = [{{ type = \"rate-limit\", rate = 20, key = \"route\" }}]\n{extra_route}",
        ports.listen, ports.admin, app.addr
    )
}

/// Headless Chromium: `args` before the URL.
fn chromium(args: &[&str], url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg("--virtual-time-budget=4000")
        .arg(format!(
            "--user-data-dir={}",
            std::env::temp_dir()
                .join(format!("shardgate-chromium-{}", std::process::id()))
                .display()
        ))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium (apt-get install chromium)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} in the page"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].to_string()
}

/// The cells' texts of the table row carrying `attr="value"`.
fn row_cells(dom: &str, attr: &str) -> Vec<String> {
    let at = dom
        .find(attr)
        .unwrap_or_else(|| panic!("{attr} in the page"));
    let row = &dom[at..at + dom[at..].find("</tr>").unwrap()];
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let inner = &cell[cell.find('>').unwrap() + 1..];
            // Strip nested tags (a health dot).
            let mut text = String::new();
            let mut depth = 0;
            for c in inner.chars() {
                match c {
                    '<' => depth += 1,
                    '>' => depth -= 1,
                    _ if depth == 0 => text.push(c),
                    _ => {}
                }
            }
            text
        })
        .collect()
}

fn number(text: &str) -> f64 {
    text.replace(',', "")
        .trim_end_matches(" ms")
        .parse()
        .unwrap_or_else(|_| panic!("a number: {text:?}"))
}

#[test]
fn the_dashboard_shows_the_gateway_under_load_in_a_browser() {
    let app = Upstream::start("app");
    let dead = free_port();
    let ports = Ports::pick();
    let cfg = ConfigFile::new("dashboard");
    cfg.write(&config(&ports, &app, dead, ""));
    let _gw = Gateway::start(&cfg, &ports);
    // A reload that applies (version 2), then one that is refused: the page shows both.
    cfg.write(&config(
        &ports,
        &app,
        dead,
        "[[routes]]\nname = \"extra\"\npath = \"/extra\"\nupstream = \"app\"\n",
    ));
    let reload = |expect: u16| {
        let (status, body) = harness::request_with(
            ports.admin,
            "POST",
            "/reload",
            &format!("Authorization: Bearer {TOKEN}\r\n"),
        );
        assert_eq!(status, expect, "{body}");
    };
    reload(200);
    cfg.write("workers = 2\n[[routes]]\nname = \"broken\"\n");
    reload(400);
    // Long enough for a slow browser start; stopped once the page has been read.
    let main = Load::start_with(&ports, 120, "main", &["-c", "6"]);
    let limited = Load::start_on(&ports, "/limited", 120, "limited", &["-c", "2"]);
    // Two samples at least, two seconds apart, while the load runs.
    std::thread::sleep(Duration::from_secs(5));

    // The page itself holds no data and needs no token; its data does.
    let (status, body) = harness::request_with(ports.admin, "GET", "/dashboard.json", "");
    assert_eq!(status, 401, "{body}");
    let url = format!("http://127.0.0.1:{}/#token={TOKEN}", ports.admin);
    // A phone-sized screenshot, kept as an artefact of the test run.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            "--window-size=412,1700",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    println!("screenshot: {}", shot.display());
    let dom = chromium(&["--dump-dom"], &url);
    assert!(
        dom.contains("class=\"on\""),
        "the page fetched its data: {dom}"
    );
    let rps = number(&text_of(&dom, "total-rps"));
    assert!(rps > 100.0, "requests per second under load: {rps}");
    let p99 = number(&text_of(&dom, "total-p99"));
    assert!(p99 > 0.0, "{p99}");
    let route = row_cells(&dom, "data-route=\"main\"");
    assert!(number(&route[2]) > 100.0, "main's rps: {route:?}");
    let limited_row = row_cells(&dom, "data-route=\"limited\"");
    assert!(number(&limited_row[7]) > 0.0, "limited/s: {limited_row:?}");
    // Both shards, with connections open (the load is running).
    let open: f64 = (0..2)
        .map(|s| number(&row_cells(&dom, &format!("id=\"shard-{s}\""))[1]))
        .sum();
    assert!(open >= 8.0, "open connections: {open}");
    // The dead endpoint is seen (ejected by outlier detection, or down).
    let dead_row = row_cells(&dom, &format!("data-endpoint=\"127.0.0.1:{dead}\""));
    assert!(
        dead_row[1].contains("ejected") || dead_row[1].contains("down"),
        "{dead_row:?}"
    );
    let live_row = row_cells(&dom, &format!("data-endpoint=\"{}\"", app.addr));
    assert!(live_row[1].contains("up"), "{live_row:?}");
    assert_eq!(text_of(&dom, "config-version"), "2");
    assert!(
        dom.contains("last reload refused"),
        "the last error is shown"
    );
    assert!(dom.contains("applied version 2"), "the history");

    // The loads stop when dropped.
    drop((main, limited));
}
