//! The latency percentile curve as SVG (plotters, SVG backend only).
//!
//! The x axis is `log10(1 / (1 - p))`, so 90%, 99%, 99.9% ... are evenly spaced and the tail
//! gets as much room as the median; y is latency in milliseconds.

use std::path::Path;

use plotters::prelude::*;

use crate::report::LoadReport;

/// Rightmost x: the 99.9999th percentile (the maximum is drawn there too).
const MAX_X: f64 = 6.0;

fn x_of(percentile: f64) -> f64 {
    let tail = (1.0 - percentile / 100.0).max(10f64.powf(-MAX_X));
    (1.0 / tail).log10().clamp(0.0, MAX_X)
}

fn x_label(x: &f64) -> String {
    let nines = x.round() as i32;
    if nines == 0 {
        return "0%".into();
    }
    // 1 -> 90%, 2 -> 99%, 3 -> 99.9%, ...
    let p = 100.0 * (1.0 - 10f64.powi(-nines));
    let decimals = (nines - 2).max(0) as usize;
    format!("{p:.decimals$}%")
}

/// One named curve of `(percentile, µs)` points.
pub struct Curve<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
}

/// Draws the curves into an SVG file.
pub fn draw(path: &Path, title: &str, curves: &[Curve<'_>]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    draw_percentiles(&root, title, curves).map_err(|e| err(&e))
}

/// The curves as an SVG document in a string (for the HTML report).
pub fn percentiles_svg(title: &str, curves: &[Curve<'_>], size: (u32, u32)) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        if let Err(e) = draw_percentiles(&root, title, curves) {
            return format!("<p>cannot draw: {e}</p>");
        }
    }
    out
}

/// Line colours, by run.
pub const COLORS: [RGBColor; 6] = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];

type Drawn<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_percentiles<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    curves: &[Curve<'_>],
) -> Drawn<DB> {
    let max_ms = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1 / 1000.0))
        .fold(0.0f64, f64::max);
    let top = if max_ms > 0.0 { max_ms * 1.1 } else { 1.0 };
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..MAX_X, 0f64..top)?;
    chart
        .configure_mesh()
        .x_labels(MAX_X as usize + 1)
        .x_label_formatter(&x_label)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    for (i, curve) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = curve
            .points
            .iter()
            .map(|&(p, us)| (x_of(p), us / 1000.0))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(curve.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One run's `(seconds, requests/s, errors/s)` samples.
pub struct Timeline<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64, f64)],
}

/// Throughput (solid) and errors (dashed, when any) over time, as an SVG string.
pub fn throughput_svg(title: &str, runs: &[Timeline<'_>], size: (u32, u32)) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        if let Err(e) = draw_throughput(&root, title, runs) {
            return format!("<p>cannot draw: {e}</p>");
        }
    }
    out
}

fn draw_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    runs: &[Timeline<'_>],
) -> Drawn<DB> {
    let all = || runs.iter().flat_map(|r| r.points.iter());
    let x0 = all().map(|p| p.0).fold(0.0f64, f64::min);
    let x1 = all().map(|p| p.0).fold(1.0f64, f64::max);
    let top = all().map(|p| p.1.max(p.2)).fold(0.0f64, f64::max).max(1.0) * 1.1;
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(x0..x1, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds (warm-up before 0)")
        .y_desc("per second")
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let rps: Vec<(f64, f64)> = run.points.iter().map(|p| (p.0, p.1)).collect();
        chart
            .draw_series(LineSeries::new(rps, color.stroke_width(2)))?
            .label(format!("{} responses/s", run.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if run.points.iter().any(|p| p.2 > 0.0) {
            let errors: Vec<(f64, f64)> = run.points.iter().map(|p| (p.0, p.2)).collect();
            chart
                .draw_series(DashedLineSeries::new(errors, 6, 4, color.stroke_width(1)))?
                .label(format!("{} errors/s", run.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws a load run's latency curve (and the uncorrected one for open-loop runs).
pub fn write_load_plot(path: &Path, r: &LoadReport) -> Result<(), String> {
    let mut curves = vec![Curve {
        name: if r.service_curve.is_some() {
            "latency (from scheduled send)"
        } else {
            "latency"
        },
        points: &r.latency_curve,
    }];
    if let Some(s) = &r.service_curve {
        curves.push(Curve {
            name: "service time (uncorrected)",
            points: s,
        });
    }
    let title = format!(
        "{} - {} conns, {:.0} req/s",
        r.url, r.connections, r.throughput_rps
    );
    draw(path, &title, &curves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis() {
        assert_eq!(x_of(0.0), 0.0);
        assert!((x_of(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(x_of(100.0), MAX_X);
        assert_eq!(x_label(&0.0), "0%");
        assert_eq!(x_label(&1.0), "90%");
        assert_eq!(x_label(&2.0), "99%");
        assert_eq!(x_label(&4.0), "99.99%");
    }
}
