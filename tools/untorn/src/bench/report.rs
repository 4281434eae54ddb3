// SPDX-License-Identifier: GPL-2.0

//! What the benchmark reports: ratios between strategies of a cell, the issue's targets, the
//! terminal table, and the report directory (`results.json`, `summary.md`, SVG plots).

use super::{size_name, Cell, CellResult, Results};
use crate::{guest::Lower, table};
use anyhow::{Context, Result};
use serde::Serialize;
use std::{fmt::Write as _, fs, path::Path};

use super::strategy::{Strategy, Workload};

/// Fills in each result's ratios against the other strategies of its cell (`cell` holds the
/// results of one lower and one cell).
pub fn add_ratios(cell: &mut [CellResult]) {
    let iops_of = |cell: &[CellResult], s: Strategy| {
        cell.iter()
            .find(|r| r.strategy == s)
            .and_then(|r| r.median.as_ref())
            .map(|m| (m.iops, m.write_p99_us))
    };
    let direct = iops_of(cell, Strategy::DirectAtomic);
    let fdatasync = iops_of(cell, Strategy::Fdatasync);
    let doublewrite = iops_of(cell, Strategy::Doublewrite);
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    for r in cell.iter_mut() {
        let Some(m) = &r.median else { continue };
        r.iops_vs_direct_atomic = direct.and_then(|d| ratio(m.iops, d.0));
        r.p99_vs_direct_atomic = direct.and_then(|d| ratio(m.write_p99_us, d.1));
        r.iops_vs_fdatasync = fdatasync.and_then(|f| ratio(m.iops, f.0));
        r.iops_vs_doublewrite = doublewrite.and_then(|d| ratio(m.iops, d.0));
    }
}

/// One of the targets set for untorn writes, checked on one cell.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub lower: Lower,
    pub workload: Workload,
    pub page_size: usize,
    pub threads: usize,
    /// What is compared, e.g. `IOPS vs direct-atomic`.
    pub what: String,
    pub value: f64,
    /// `>= 0.9`, `<= 1.15`.
    pub target: String,
    pub met: bool,
}

/// The targets, on every random-overwrite cell at 1 and 16 threads: untorn-atomic reaches at
/// least 90% of direct-atomic's IOPS with a p99 write latency at most 1.15 times its, and at
/// least twice the IOPS of fdatasync and of doublewrite.
pub fn check_targets(results: &[CellResult]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for r in results {
        if r.strategy != Strategy::UntornAtomic
            || r.workload != Workload::Randwrite
            || !matches!(r.threads, 1 | 16)
        {
            continue;
        }
        // `at_least`: the value must reach the limit; else stay at or below it.
        let check = |what: &str, value: Option<f64>, at_least: bool, limit: f64| {
            value.map(|value| TargetCheck {
                lower: r.lower,
                workload: r.workload,
                page_size: r.page_size,
                threads: r.threads,
                what: what.to_string(),
                value,
                target: format!("{} {limit}", if at_least { ">=" } else { "<=" }),
                met: if at_least {
                    value >= limit
                } else {
                    value <= limit
                },
            })
        };
        checks.extend(
            [
                check("IOPS vs direct-atomic", r.iops_vs_direct_atomic, true, 0.9),
                check("p99 vs direct-atomic", r.p99_vs_direct_atomic, false, 1.15),
                check("IOPS vs fdatasync", r.iops_vs_fdatasync, true, 2.0),
                check("IOPS vs doublewrite", r.iops_vs_doublewrite, true, 2.0),
            ]
            .into_iter()
            .flatten(),
        );
    }
    checks
}

fn ratio_cell(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.2}"))
}

fn us(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

const HEADER: [&str; 16] = [
    "lower",
    "workload",
    "page",
    "thr",
    "strategy",
    "IOPS",
    "spread",
    "MB/s",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "CPU µs/op",
    "dev B/B",
    "×direct",
    "p99×direct",
    "×fdatasync",
];

/// The rows of the results table (the header first).
fn rows(results: &[CellResult]) -> Vec<Vec<String>> {
    let mut rows = vec![HEADER.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in results {
        let mut row = vec![
            r.lower.name().to_string(),
            r.workload.name().to_string(),
            size_name(r.page_size),
            r.threads.to_string(),
            r.strategy.name().to_string(),
        ];
        match (&r.median, &r.spread) {
            (Some(m), Some(s)) => row.extend([
                format!("{:.0}", m.iops),
                format!("±{:.0}%", s.iops_relative * 50.0),
                format!("{:.1}", m.mb_per_s),
                us(m.write_p50_us),
                us(m.write_p99_us),
                us(m.write_p999_us),
                us(m.cpu_us_per_op),
                format!("{:.2}", m.device_bytes_per_byte),
                ratio_cell(r.iops_vs_direct_atomic),
                ratio_cell(r.p99_vs_direct_atomic),
                ratio_cell(r.iops_vs_fdatasync),
            ]),
            _ => row.push(match (&r.skipped, &r.error) {
                (Some(why), _) => format!("skipped: {why}"),
                (_, Some(e)) => format!("error: {e}"),
                _ => "no runs".to_string(),
            }),
        }
        rows.push(row);
    }
    rows
}

/// The results as a terminal table, then the targets.
pub fn text(results: &Results) -> String {
    let mut out = table::render(&rows(&results.results));
    if !results.targets.is_empty() {
        out.push('\n');
        out.push_str(&targets_text(&results.targets));
    }
    out
}

/// The targets as rows (the header first); a missed one is marked `missed`.
fn target_rows(targets: &[TargetCheck], missed: &str) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "lower",
        "page",
        "threads",
        "untorn-atomic",
        "value",
        "target",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for t in targets {
        rows.push(vec![
            t.lower.name().to_string(),
            size_name(t.page_size),
            t.threads.to_string(),
            t.what.clone(),
            format!("{:.2}", t.value),
            t.target.clone(),
            if t.met { "met" } else { missed }.to_string(),
        ]);
    }
    rows
}

fn targets_text(targets: &[TargetCheck]) -> String {
    table::render(&target_rows(targets, "MISSED"))
}

fn markdown_table(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let _ = writeln!(out, "|{}", " --- |".repeat(row.len()));
        }
    }
    out
}

/// Writes the report directory: `results.json`, `summary.md`, `table.txt` and the plots.
pub fn write(dir: &Path, results: &Results) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("results.json", &serde_json::to_string_pretty(results)?)?;
    write("table.txt", &text(results))?;
    let mut plots = Vec::new();
    for (name, title, svg) in cdf_plots(&results.results)
        .into_iter()
        .chain(thread_plots(&results.results))
    {
        write(&name, &svg)?;
        plots.push((name, title));
    }
    write("summary.md", &summary(results, &plots))?;
    Ok(())
}

fn summary(results: &Results, plots: &[(String, String)]) -> String {
    let env = &results.environment;
    let dev = &env.device;
    let set = &results.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# untorn bench report\n");
    let accel = env.accel.as_deref().unwrap_or("unknown");
    let _ = writeln!(md, "| | |\n| --- | --- |");
    let _ = writeln!(
        md,
        "| tool | untorn {} ({}) |",
        env.tool_version,
        env.revision.as_deref().unwrap_or("revision unknown")
    );
    let _ = writeln!(md, "| kernel | {} |", env.kernel);
    let _ = writeln!(
        md,
        "| guest | {} CPUs, {} MiB, {} |",
        env.cpus, env.memory_mib, accel
    );
    let _ = writeln!(
        md,
        "| device | {} ({}{}), {}, logical block {} B, cache: {} |",
        dev.path.display(),
        dev.kind,
        dev.model
            .as_deref()
            .map_or(String::new(), |m| format!(", {m}")),
        size_name(dev.size_bytes as usize),
        dev.logical_block_size,
        dev.write_cache.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        md,
        "| device atomic writes | unit {}..{}, max {}, boundary {} |",
        size_name(dev.atomic.unit_min_bytes as usize),
        size_name(dev.atomic.unit_max_bytes as usize),
        size_name(dev.atomic.max_bytes as usize),
        dev.atomic.boundary_bytes
    );
    if let Some(lat) = dev.modelled_latency_us {
        let _ = writeln!(
            md,
            "| modelled device latency | {lat:.0} µs per command (scsi_debug) |"
        );
    }
    if !dev.parameters.is_empty() {
        let params: Vec<String> = dev
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(md, "| device parameters | {} |", params.join(" "));
    }
    for lower in &results.lowers {
        let _ = writeln!(
            md,
            "| {} | {}; atomic unit through untorn {}..{}, on the lower {}..{} |",
            lower.fs.name(),
            lower.mkfs,
            size_name(lower.untorn_file.unit_min as usize),
            size_name(lower.untorn_file.unit_max as usize),
            size_name(lower.lower_file.unit_min as usize),
            size_name(lower.lower_file.unit_max as usize),
        );
    }
    let _ = writeln!(
        md,
        "| method | {} timed runs of {} s after a {} s warm-up per strategy and cell, runs \
         of all strategies taken in turns; medians; spread = (max - min) / 2 / median of IOPS; \
         data file {}; doublewrite batch {} pages; checkpoint {} pages; mixed {}% reads; seed {} |",
        set.runs,
        set.run_seconds,
        set.warmup_seconds,
        size_name(set.file_size_bytes as usize),
        set.doublewrite_batch,
        set.checkpoint_pages,
        set.read_percent,
        set.seed
    );
    if accel == "tcg" {
        let _ = writeln!(
            md,
            "\nThe guest ran under **TCG**: every CPU instruction is emulated, so CPU work costs \
             far more against the device than on hardware. Compare ratios and CPU µs/op, not \
             absolute IOPS, with KVM runs."
        );
    }
    let _ = writeln!(md, "\n## Strategies\n");
    for s in &set.strategies {
        let _ = writeln!(md, "- `{}`: {}", s.name(), s.description());
    }
    if !results.targets.is_empty() {
        let _ = writeln!(md, "\n## Targets (untorn-atomic, random overwrites)\n");
        let rows = target_rows(&results.targets, "**missed**");
        md.push_str(&markdown_table(&rows));
    }
    let _ = writeln!(
        md,
        "\n## Results\n\nIOPS: pages per second (mixed: read and written). Latencies are of \
         page writes (checkpoint: of a whole checkpoint; doublewrite: from a page's queueing \
         to the end of its batch). CPU µs/op: busy time of all CPUs per page. dev B/B: bytes \
         the device wrote per byte written. ×direct, ×fdatasync: IOPS over those strategies' \
         in the same cell; p99×direct: p99 write latency over direct-atomic's.\n"
    );
    md.push_str(&markdown_table(&rows(&results.results)));
    if !plots.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for (name, title) in plots {
            let _ = writeln!(md, "### {title}\n\n![{title}]({name})\n");
        }
    }
    md
}

/// The cells of `results` in order of first appearance, per lower.
fn cells(results: &[CellResult]) -> Vec<(Lower, Cell)> {
    let mut seen = Vec::new();
    for r in results {
        let key = (r.lower, r.cell());
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    seen
}

/// A latency CDF per cell: `(file name, title, svg)`.
fn cdf_plots(results: &[CellResult]) -> Vec<(String, String, String)> {
    let mut plots = Vec::new();
    for (lower, cell) in cells(results) {
        let series: Vec<Series> = results
            .iter()
            .filter(|r| r.lower == lower && r.cell() == cell && !r.write_latency_cdf.is_empty())
            .map(|r| Series {
                name: r.strategy.name().to_string(),
                points: r.write_latency_cdf.iter().map(|&[q, us]| (us, q)).collect(),
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let title = format!(
            "Write latency CDF: {} {} {} {} thread{}",
            lower.name(),
            cell.workload.name(),
            size_name(cell.page_size),
            cell.threads,
            if cell.threads == 1 { "" } else { "s" }
        );
        let name = format!(
            "cdf-{}-{}-{}k-{}t.svg",
            lower.name(),
            cell.workload.name(),
            cell.page_size / 1024,
            cell.threads
        );
        let chart = Chart {
            title: &title,
            x_label: "latency (µs, log scale)",
            y_label: "fraction of writes",
            x_log: true,
            y_from_zero: true,
            x_ticks: None,
        };
        plots.push((name, title.clone(), chart.svg(&series)));
    }
    plots
}

/// IOPS against threads for each (lower, workload, page size) measured at several thread
/// counts.
fn thread_plots(results: &[CellResult]) -> Vec<(String, String, String)> {
    let mut groups: Vec<(Lower, Workload, usize)> = Vec::new();
    for (lower, cell) in cells(results) {
        let key = (lower, cell.workload, cell.page_size);
        let threads = cells(results)
            .iter()
            .filter(|(l, c)| (*l, c.workload, c.page_size) == key)
            .count();
        if threads >= 2 && !groups.contains(&key) {
            groups.push(key);
        }
    }
    let mut plots = Vec::new();
    for (lower, workload, page) in groups {
        let mut series: Vec<Series> = Vec::new();
        for r in results
            .iter()
            .filter(|r| r.lower == lower && r.workload == workload && r.page_size == page)
        {
            let Some(m) = &r.median else { continue };
            let name = r.strategy.name().to_string();
            let point = (r.threads as f64, m.iops);
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(point),
                None => series.push(Series {
                    name,
                    points: vec![point],
                }),
            }
        }
        for s in &mut series {
            s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let title = format!(
            "IOPS against threads: {} {} {}",
            lower.name(),
            workload.name(),
            size_name(page)
        );
        let name = format!(
            "iops-threads-{}-{}-{}k.svg",
            lower.name(),
            workload.name(),
            page / 1024
        );
        let mut threads: Vec<f64> = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        threads.sort_by(f64::total_cmp);
        threads.dedup();
        let chart = Chart {
            title: &title,
            x_label: "threads (log scale)",
            y_label: "IOPS",
            x_log: true,
            y_from_zero: true,
            x_ticks: Some(threads),
        };
        plots.push((name, title.clone(), chart.svg(&series)));
    }
    plots
}

/// A named line of `(x, y)` points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line chart, drawn as SVG by hand (no plotting dependency for a few lines).
struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x_log: bool,
    y_from_zero: bool,
    /// Ticks at these x values (and the axis from the first to the last) instead of at
    /// powers of ten.
    x_ticks: Option<Vec<f64>>,
}

/// Distinguishable colours (Okabe-Ito, with grey before its pale yellow).
const COLOURS: [&str; 10] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#888888",
    "#F0E442", "#BBBBBB",
];

impl Chart<'_> {
    fn svg(&self, series: &[Series]) -> String {
        const W: f64 = 760.0;
        const H: f64 = 440.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 190.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 55.0;
        let tx = |x: f64| if self.x_log { x.max(1e-9).log10() } else { x };
        let points = series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points {
            x0 = x0.min(tx(x));
            x1 = x1.max(tx(x));
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if self.x_ticks.is_some() {
            if x1 <= x0 {
                x1 = x0 + 1.0;
            }
        } else if self.x_log {
            x0 = x0.floor();
            x1 = x1.ceil().max(x0 + 1.0);
        } else if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if self.y_from_zero {
            y0 = 0.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let y1 = nice_ceiling(y1);
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            (W - RIGHT + LEFT) / 2.0,
            escape(self.title)
        );
        // Grid and ticks.
        let x_ticks: Vec<f64> = if let Some(ticks) = &self.x_ticks {
            ticks.clone()
        } else if self.x_log {
            (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=5).map(|i| x0 + (x1 - x0) * i as f64 / 5.0).collect()
        };
        for x in x_ticks {
            let p = px(x);
            let _ = writeln!(
                svg,
                r##"<line x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{:.1}" stroke="#ddd"/><text x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 16.0,
                tick_label(x)
            );
        }
        for i in 0..=5 {
            let y = y0 + (y1 - y0) * i as f64 / 5.0;
            let p = py(y);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{p:.1}" x2="{:.1}" y2="{p:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                p + 4.0,
                tick_label(y)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (W - RIGHT + LEFT) / 2.0,
            H - 12.0,
            escape(self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (H - BOTTOM + TOP) / 2.0,
            escape(self.y_label)
        );
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            if s.points.len() <= 8 {
                for &(x, y) in &s.points {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                        px(x),
                        py(y)
                    );
                }
            }
            let ly = TOP + 10.0 + 18.0 * i as f64;
            let lx = W - RIGHT + 14.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * base >= v * (1.0 - 1e-12) {
            return m * base;
        }
    }
    10.0 * base
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Figures;

    fn result(strategy: Strategy, threads: usize, iops: f64, p99: f64) -> CellResult {
        CellResult {
            lower: Lower::Xfs,
            strategy,
            workload: Workload::Randwrite,
            page_size: 16384,
            threads,
            skipped: None,
            error: None,
            median: Some(Figures {
                iops,
                write_p99_us: p99,
                ..Figures::default()
            }),
            spread: None,
            runs: Vec::new(),
            iops_vs_direct_atomic: None,
            p99_vs_direct_atomic: None,
            iops_vs_fdatasync: None,
            iops_vs_doublewrite: None,
            write_latency_cdf: vec![[0.0, 10.0], [1.0, 100.0]],
        }
    }

    #[test]
    fn ratios_and_targets_follow_the_same_cell() {
        let mut cell = vec![
            result(Strategy::UntornAtomic, 1, 900.0, 115.0),
            result(Strategy::DirectAtomic, 1, 1000.0, 100.0),
            result(Strategy::Fdatasync, 1, 450.0, 300.0),
            result(Strategy::Doublewrite, 1, 451.0, 300.0),
        ];
        add_ratios(&mut cell);
        assert_eq!(cell[0].iops_vs_direct_atomic, Some(0.9));
        assert_eq!(cell[0].iops_vs_fdatasync, Some(2.0));
        let targets = check_targets(&cell);
        assert_eq!(targets.len(), 4);
        let met: Vec<bool> = targets.iter().map(|t| t.met).collect();
        // 0.9 of direct (met), p99 1.15x (met), 2x fdatasync (met), 1.996x doublewrite
        // (missed).
        assert_eq!(met, vec![true, true, true, false]);
        // At 4 threads no target applies.
        let mut four = vec![
            result(Strategy::UntornAtomic, 4, 1.0, 1.0),
            result(Strategy::DirectAtomic, 4, 1000.0, 1.0),
        ];
        add_ratios(&mut four);
        assert!(check_targets(&four).is_empty());
    }

    #[test]
    fn charts_are_svg_with_a_line_per_strategy() {
        let cell = vec![
            result(Strategy::UntornAtomic, 1, 900.0, 115.0),
            result(Strategy::DirectAtomic, 1, 1000.0, 100.0),
            result(Strategy::UntornAtomic, 16, 1800.0, 115.0),
            result(Strategy::DirectAtomic, 16, 2000.0, 100.0),
        ];
        let cdfs = cdf_plots(&cell);
        assert_eq!(cdfs.len(), 2);
        assert_eq!(cdfs[0].0, "cdf-xfs-randwrite-16k-1t.svg");
        assert_eq!(cdfs[0].2.matches("<polyline").count(), 2);
        let threads = thread_plots(&cell);
        assert_eq!(threads.len(), 1);
        assert!(threads[0].2.starts_with("<svg"));
        assert!(threads[0].2.contains("untorn-atomic"));
        assert_eq!(nice_ceiling(730.0), 1000.0);
        assert_eq!(nice_ceiling(2100.0), 2500.0);
    }
}
