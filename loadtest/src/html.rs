//! HTML reports: one self-contained page (inline SVG, no scripts or external assets) for a
//! run (`--html`), or for several runs side by side (`loadtest compare A.json B.json --html`).
//!
//! Both read the run's JSON report, so a comparison of runs made at different times needs only
//! their `--json` files; each page also carries its reports' JSON for tools.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::cli::CompareOpts;
use crate::plot::{COLORS, Curve, Timeline, percentiles_svg, throughput_svg};
use crate::report::{LoadReport, fmt_us};

/// Writes the page of one run.
pub fn write_run(path: &Path, report: &LoadReport) -> Result<(), String> {
    let v = serde_json::to_value(report).map_err(|e| format!("cannot encode the report: {e}"))?;
    write(path, &[("this run".to_string(), v)])
}

/// `loadtest compare`: the runs of the JSON reports, side by side.
pub fn compare(o: &CompareOpts) -> Result<i32, String> {
    let mut runs = Vec::new();
    for p in &o.reports {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a JSON report: {e}", p.display()))?;
        if v.get("tool").and_then(Value::as_str) != Some("shardgate-loadtest")
            || v.get("latency_curve").is_none()
        {
            return Err(format!(
                "{}: not a load report of loadtest --json",
                p.display()
            ));
        }
        let name = p.file_stem().map_or_else(
            || p.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        runs.push((name, v));
    }
    write(&o.html, &runs)?;
    println!("wrote {}", o.html.display());
    Ok(0)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "–".into(),
        Some(other) => other.to_string(),
    }
}

fn pairs(v: &Value, key: &str) -> Vec<(f64, f64)> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `(seconds, responses/s, errors/s)` samples.
type Samples = Vec<(f64, f64, f64)>;

fn timeline(v: &Value) -> Samples {
    v.get("timeline")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((
                        num(p, "t_s")?,
                        num(p, "rps")?,
                        num(p, "errors_per_s").unwrap_or(0.0),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A table whose rows are `(label, one cell per run)`.
fn table(out: &mut String, head: &[String], rows: &[(&str, Vec<String>)]) {
    out.push_str("<table><thead><tr><th></th>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for (label, cells) in rows {
        let _ = write!(out, "<tr><th>{}</th>", escape(label));
        for c in cells {
            let _ = write!(out, "<td>{}</td>", escape(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn write(path: &Path, runs: &[(String, Value)]) -> Result<(), String> {
    let names: Vec<String> = runs.iter().map(|(n, _)| n.clone()).collect();
    let each =
        |f: &dyn Fn(&Value) -> String| -> Vec<String> { runs.iter().map(|(_, v)| f(v)).collect() };
    let latency = |key: &'static str| {
        move |v: &Value| {
            v.get("latency")
                .and_then(|l| num(l, key))
                .map_or_else(|| "–".into(), fmt_us)
        }
    };
    let mut out = String::with_capacity(64 * 1024);
    let title = if runs.len() == 1 {
        format!("loadtest: {}", text(&runs[0].1, "url"))
    } else {
        format!("loadtest: {}", names.join(" vs "))
    };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\
         <style>body{{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1f2328}}\
         table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}th,td{{padding:.25rem .75rem;border-bottom:1px solid #d0d7de;text-align:right;font-variant-numeric:tabular-nums}}\
         tbody th{{text-align:left;font-weight:normal;color:#57606a}}thead th{{text-align:right}}\
         .swatch{{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}}\
         svg{{max-width:100%;height:auto}}h2{{margin-top:2rem}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    // Which colour is which run.
    out.push_str("<p>");
    for (i, n) in names.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let _ = write!(
            out,
            "<span class=\"swatch\" style=\"background:rgb({},{},{})\"></span>{} &nbsp; ",
            c.0,
            c.1,
            c.2,
            escape(n)
        );
    }
    out.push_str("</p>\n<h2>Results</h2>");
    table(
        &mut out,
        &names,
        &[
            ("requests", each(&|v| text(v, "requests"))),
            (
                "throughput (req/s)",
                each(&|v| num(v, "throughput_rps").map_or("–".into(), |x| format!("{x:.1}"))),
            ),
            ("p50", each(&latency("p50_us"))),
            ("p90", each(&latency("p90_us"))),
            ("p99", each(&latency("p99_us"))),
            ("p99.9", each(&latency("p99_9_us"))),
            ("p99.99", each(&latency("p99_99_us"))),
            ("max", each(&latency("max_us"))),
            ("mean", each(&latency("mean_us"))),
            ("errors", each(&|v| text(v, "errors_total"))),
            ("non-2xx responses", each(&|v| text(v, "non_2xx"))),
            ("connects", each(&|v| text(v, "connects"))),
            (
                "harness CPU per request",
                each(&|v| {
                    num(v, "harness_cpu_us_per_request")
                        .map_or("–".into(), |x| format!("{x:.2}us"))
                }),
            ),
        ],
    );
    out.push_str("<h2>Throughput over time</h2>\n");
    let lines: Vec<(String, Samples)> =
        runs.iter().map(|(n, v)| (n.clone(), timeline(v))).collect();
    let series: Vec<Timeline<'_>> = lines
        .iter()
        .map(|(n, p)| Timeline { name: n, points: p })
        .collect();
    out.push_str(&throughput_svg("responses per second", &series, (960, 420)));
    out.push_str("\n<h2>Latency by percentile</h2>\n");
    let curves_data: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(n, v)| (n.clone(), pairs(v, "latency_curve")))
        .collect();
    let curves: Vec<Curve<'_>> = curves_data
        .iter()
        .map(|(n, p)| Curve { name: n, points: p })
        .collect();
    out.push_str(&percentiles_svg("latency", &curves, (960, 520)));
    out.push_str("\n<h2>Errors and statuses</h2>");
    let error_kinds = ["connect", "timeout", "reset", "eof", "parse"];
    let mut rows: Vec<(&str, Vec<String>)> = error_kinds
        .iter()
        .map(|k| {
            (
                *k,
                each(&|v| v.get("errors").map_or("–".into(), |e| text(e, k))),
            )
        })
        .collect();
    let mut statuses: Vec<String> = runs
        .iter()
        .filter_map(|(_, v)| v.get("status").and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect();
    statuses.sort();
    statuses.dedup();
    let status_labels: Vec<String> = statuses.iter().map(|s| format!("status {s}")).collect();
    for (label, s) in status_labels.iter().zip(&statuses) {
        rows.push((
            label.as_str(),
            each(&|v| {
                v.get("status")
                    .and_then(|m| m.get(s))
                    .map_or("0".into(), Value::to_string)
            }),
        ));
    }
    table(&mut out, &names, &rows);
    out.push_str("<h2>Settings</h2>");
    table(
        &mut out,
        &names,
        &[
            ("URL", each(&|v| text(v, "url"))),
            ("target", each(&|v| text(v, "target"))),
            ("mode", each(&|v| text(v, "mode"))),
            ("target rate (req/s)", each(&|v| text(v, "target_rate"))),
            ("driver", each(&|v| text(v, "driver"))),
            ("threads", each(&|v| text(v, "threads"))),
            ("connections", each(&|v| text(v, "connections"))),
            ("pipeline", each(&|v| text(v, "pipeline"))),
            ("warm-up (s)", each(&|v| text(v, "warmup_s"))),
            (
                "measured (s)",
                each(&|v| num(v, "duration_s").map_or("–".into(), |x| format!("{x:.2}"))),
            ),
        ],
    );
    // The reports themselves, for tools.
    let data: Vec<&Value> = runs.iter().map(|(_, v)| v).collect();
    let json = serde_json::to_string(&data).unwrap_or_default();
    let _ = write!(
        out,
        "\n<script type=\"application/json\" id=\"reports\">{}</script>\n</body></html>\n",
        json.replace("</", "<\\/")
    );
    std::fs::write(path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rps: f64) -> Value {
        serde_json::json!({
            "tool": "shardgate-loadtest", "mode": "closed", "url": "http://127.0.0.1:1/<x>",
            "target": "127.0.0.1:1", "driver": "legacy", "threads": 1, "connections": 4,
            "pipeline": 1, "target_rate": null, "warmup_s": 1.0, "duration_s": 2.0,
            "requests": 100, "throughput_rps": rps, "connects": 4, "errors_total": 1,
            "non_2xx": 2, "harness_cpu_us_per_request": 3.5,
            "errors": { "connect": 1, "timeout": 0, "reset": 0, "eof": 0, "parse": 0 },
            "status": { "200": 98, "503": 2 },
            "latency": { "p50_us": 120.0, "p99_us": 900.0, "max_us": 2000.0 },
            "latency_curve": [[0.0, 50.0], [50.0, 120.0], [99.0, 900.0], [100.0, 2000.0]],
            "timeline": [
                { "t_s": -0.5, "rps": rps, "errors_per_s": 0.0 },
                { "t_s": 0.5, "rps": rps, "errors_per_s": 1.0 }
            ]
        })
    }

    #[test]
    fn a_comparison_has_a_column_per_run_and_escapes_what_it_shows() {
        let dir = std::env::temp_dir().join(format!("loadtest-html-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let page = dir.join("cmp.html");
        write(
            &page,
            &[
                ("before".into(), report(1000.0)),
                ("after".into(), report(2000.0)),
            ],
        )
        .unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.contains("<th>before</th><th>after</th>"));
        assert!(
            html.contains("<td>1000.0</td><td>2000.0</td>"),
            "throughput row"
        );
        assert!(html.contains("<th>status 503</th><td>2</td><td>2</td>"));
        assert!(html.contains("http://127.0.0.1:1/&lt;x&gt;"), "escaped");
        assert_eq!(html.matches("<svg").count(), 2, "two charts");
        assert!(!html.contains("src=\"http"), "no external assets");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
