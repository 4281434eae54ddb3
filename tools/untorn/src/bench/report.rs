// SPDX-License-Identifier: GPL-2.0

//! What the benchmark reports: ratios between strategies of a cell, the targets, the
//! terminal table, and the report directory (`results.json`, `summary.md`, SVG plots).

use super::{size_name, Cell, CellResult, Environment, Results};
use crate::{
    guest::Lower,
    plot::{Chart, Series},
    table::{self, markdown_table},
};
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

/// What a target asks of a ratio.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    AtLeast(f64),
    AtMost(f64),
}

impl Limit {
    pub fn met(self, value: f64) -> bool {
        match self {
            Limit::AtLeast(limit) => value >= limit,
            Limit::AtMost(limit) => value <= limit,
        }
    }
}

/// `>= 0.9`, `<= 1.15`.
impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::AtLeast(limit) => write!(f, ">= {limit}"),
            Limit::AtMost(limit) => write!(f, "<= {limit}"),
        }
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
        let check = |what: &str, value: Option<f64>, limit: Limit| {
            value.map(|value| TargetCheck {
                lower: r.lower,
                workload: r.workload,
                page_size: r.page_size,
                threads: r.threads,
                what: what.to_string(),
                value,
                target: limit.to_string(),
                met: limit.met(value),
            })
        };
        checks.extend(
            [
                check(
                    "IOPS vs direct-atomic",
                    r.iops_vs_direct_atomic,
                    Limit::AtLeast(0.9),
                ),
                check(
                    "p99 vs direct-atomic",
                    r.p99_vs_direct_atomic,
                    Limit::AtMost(1.15),
                ),
                check(
                    "IOPS vs fdatasync",
                    r.iops_vs_fdatasync,
                    Limit::AtLeast(2.0),
                ),
                check(
                    "IOPS vs doublewrite",
                    r.iops_vs_doublewrite,
                    Limit::AtLeast(2.0),
                ),
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

/// Writes the report directory: `results.json`, `summary.md`, `table.txt` and the plots.
pub fn write(dir: &Path, results: &Results) -> Result<()> {
    let plots = cdf_plots(&results.results)
        .into_iter()
        .chain(thread_plots(&results.results))
        .collect();
    write_dir(dir, results, &text(results), plots, |plots| {
        summary(results, plots)
    })
}

/// Writes a report directory: `results.json` (`results`), `table.txt` (`table`), each plot
/// (`(file name, title, svg)`) and `summary.md`, which `summary` makes from the plots' file
/// names and titles.
pub fn write_dir(
    dir: &Path,
    results: &impl Serialize,
    table: &str,
    plots: Vec<(String, String, String)>,
    summary: impl FnOnce(&[(String, String)]) -> String,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("results.json", &serde_json::to_string_pretty(results)?)?;
    write("table.txt", table)?;
    let mut titles = Vec::new();
    for (name, title, svg) in plots {
        write(&name, &svg)?;
        titles.push((name, title));
    }
    write("summary.md", &summary(&titles))
}

fn summary(results: &Results, plots: &[(String, String)]) -> String {
    let env = &results.environment;
    let set = &results.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# untorn bench report\n");
    environment_rows(&mut md, env);
    let accel = env.accel.as_deref().unwrap_or("unknown");
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

/// The head of a report's summary: a two-column Markdown table of where it was measured (the
/// rows after this are the report's own).
pub fn environment_rows(md: &mut String, env: &Environment) {
    let dev = &env.device;
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
    }
}
