//! The run's plots, as SVG: the origin's egress over time, VMs booted over time, and what
//! each node received, one series per method.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

use crate::methods::MethodRun;
use crate::report::MIB;
use crate::sampler::rate_series;

const SIZE: (u32, u32) = (960, 540);

fn color(i: usize) -> RGBColor {
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// One chart of lines, one per (label, points), with a legend.
fn lines(
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let plot = || -> Result<(), Box<dyn std::error::Error>> {
        let x_max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .fold(1e-9, f64::max);
        let y_max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .fold(1e-9, f64::max);
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max * 1.02, 0f64..y_max * 1.08)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        for (i, (label, points)) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|e| anyhow!("plotting {}: {e}", path.display()))
}

/// Writes the plots into `dir`; returns (file name, caption) of each.
pub fn plots(dir: &Path, runs: &[MethodRun]) -> Result<Vec<(String, String)>> {
    let mut made = Vec::new();
    let throughput: Vec<_> = runs
        .iter()
        .map(|r| {
            let points = rate_series(&r.samples, 0)
                .into_iter()
                .map(|(t, b)| (t, b / MIB))
                .collect();
            (r.method.clone(), points)
        })
        .collect();
    let caption = "Origin egress over time";
    lines(
        &dir.join("origin-egress.svg"),
        caption,
        "seconds since the method started",
        "MiB/s",
        &throughput,
    )?;
    made.push(("origin-egress.svg".to_string(), caption.to_string()));

    let booted: Vec<_> = runs
        .iter()
        .map(|r| {
            let mut ends: Vec<f64> = r.boots.iter().map(|b| b.end).collect();
            ends.sort_by(f64::total_cmp);
            // A step line: the count rises by one at each boot.
            let mut points = vec![(0.0, 0.0)];
            for (i, t) in ends.iter().enumerate() {
                points.push((*t, i as f64));
                points.push((*t, (i + 1) as f64));
            }
            (r.method.clone(), points)
        })
        .collect();
    let caption = "VMs booted over time";
    lines(
        &dir.join("vms-booted.svg"),
        caption,
        "seconds since the method started",
        "VMs booted",
        &booted,
    )?;
    made.push(("vms-booted.svg".to_string(), caption.to_string()));

    let ingress: Vec<_> = runs
        .iter()
        .map(|r| {
            let points = r
                .node_ingress
                .iter()
                .enumerate()
                .map(|(i, (_, b))| ((i + 1) as f64, *b as f64 / MIB))
                .collect();
            (r.method.clone(), points)
        })
        .collect();
    let caption = "Bytes each node received";
    lines(
        &dir.join("node-ingress.svg"),
        caption,
        "node (tree order)",
        "MiB",
        &ingress,
    )?;
    made.push(("node-ingress.svg".to_string(), caption.to_string()));
    Ok(made)
}
