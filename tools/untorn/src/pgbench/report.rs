// SPDX-License-Identifier: GPL-2.0

//! What `untorn pgbench` reports: ratios against the baseline case, the targets, the
//! terminal table, and the report directory (`results.json`, `summary.md`, `table.txt`, SVG
//! plots), as `untorn bench` does.

use super::{Case, CaseResult, Results};
use crate::{
    bench::report::{environment_rows, write_dir, Limit},
    plot::{Chart, Series},
    table::{self, markdown_table},
};
use anyhow::Result;
use serde::Serialize;
use std::{fmt::Write as _, path::Path};

/// The case the ratios are against.
pub const BASELINE: Case = Case::XfsFpwOn;

/// A case's median figures over the baseline's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ratios {
    pub tps: f64,
    pub latency_avg: f64,
    pub latency_p99: f64,
    pub wal_bytes: f64,
    pub wal_fpi: f64,
    pub device_bytes: f64,
}

/// Fills in each result's ratios against the baseline's, if it ran.
pub fn add_ratios(results: &mut [CaseResult]) {
    let Some(base) = results
        .iter()
        .find(|r| r.case == BASELINE)
        .map(|r| r.median.clone())
    else {
        return;
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    for r in results.iter_mut() {
        let m = &r.median;
        r.vs_baseline = Some(Ratios {
            tps: ratio(m.tps, base.tps),
            latency_avg: ratio(m.latency_avg_us, base.latency_avg_us),
            latency_p99: ratio(m.latency_p99_us, base.latency_p99_us),
            wal_bytes: ratio(m.wal_bytes as f64, base.wal_bytes as f64),
            wal_fpi: ratio(m.wal_fpi as f64, base.wal_fpi as f64),
            device_bytes: ratio(m.device_bytes as f64, base.device_bytes as f64),
        });
    }
}

/// One of the targets for untorn-fpw-off.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared, e.g. `TPS vs xfs-fpw-on`.
    pub what: String,
    pub value: f64,
    /// `>= 1.3`.
    pub target: String,
    pub met: bool,
}

/// The targets: untorn-fpw-off reaches at least 1.3 times the TPS of xfs-fpw-on with at most
/// a quarter of its WAL bytes, and at least 85% of xfs-fpw-off's TPS (within 15%).
pub fn check_targets(results: &[CaseResult]) -> Vec<Target> {
    let median = |case: Case| results.iter().find(|r| r.case == case).map(|r| &r.median);
    let (Some(untorn), Some(base)) = (median(Case::UntornFpwOff), median(BASELINE)) else {
        return Vec::new();
    };
    let ceiling = median(Case::XfsFpwOff);
    let mut targets = Vec::new();
    let mut check = |what: String, value: f64, limit: Limit| {
        targets.push(Target {
            what,
            value,
            target: limit.to_string(),
            met: limit.met(value),
        })
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    check(
        format!("TPS vs {}", BASELINE.name()),
        ratio(untorn.tps, base.tps),
        Limit::AtLeast(1.3),
    );
    check(
        format!("WAL bytes vs {}", BASELINE.name()),
        ratio(untorn.wal_bytes as f64, base.wal_bytes as f64),
        Limit::AtMost(0.25),
    );
    if let Some(ceiling) = ceiling {
        check(
            format!("TPS vs {}", Case::XfsFpwOff.name()),
            ratio(untorn.tps, ceiling.tps),
            Limit::AtLeast(0.85),
        );
    }
    targets
}

const HEADER: [&str; 17] = [
    "case",
    "TPS",
    "spread",
    "lat avg µs",
    "p99 µs",
    "TPS CV",
    "ckpts",
    "WAL MB",
    "FPI",
    "dev MB",
    "CPU",
    "CPU µs/tx",
    "×TPS",
    "×lat",
    "×p99",
    "×WAL",
    "×dev",
];

fn ratio_cell(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => "-".to_string(),
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The rows of the results table (the header first).
fn rows(results: &[CaseResult]) -> Vec<Vec<String>> {
    let mut rows = vec![HEADER.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in results {
        let m = &r.median;
        let v = r.vs_baseline.as_ref();
        rows.push(vec![
            r.case.name().to_string(),
            format!("{:.1}", m.tps),
            format!("±{:.0}%", r.tps_relative_spread * 50.0),
            format!("{:.0}", m.latency_avg_us),
            format!("{:.0}", m.latency_p99_us),
            format!("{:.2}", m.tps_cv),
            m.checkpoints.to_string(),
            megabytes(m.wal_bytes),
            m.wal_fpi.to_string(),
            megabytes(m.device_bytes),
            format!("{:.0}%", m.cpu_busy * 100.0),
            format!("{:.0}", m.cpu_us_per_transaction),
            ratio_cell(v.map(|v| v.tps)),
            ratio_cell(v.map(|v| v.latency_avg)),
            ratio_cell(v.map(|v| v.latency_p99)),
            ratio_cell(v.map(|v| v.wal_bytes)),
            ratio_cell(v.map(|v| v.device_bytes)),
        ]);
    }
    rows
}

/// The targets as rows (the header first); a missed one is marked `missed`.
fn target_rows(targets: &[Target], missed: &str) -> Vec<Vec<String>> {
    let mut rows = vec![[Case::UntornFpwOff.name(), "value", "target", ""]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for t in targets {
        rows.push(vec![
            t.what.clone(),
            format!("{:.2}", t.value),
            t.target.clone(),
            if t.met { "met" } else { missed }.to_string(),
        ]);
    }
    rows
}

/// The results as a terminal table, then the targets.
pub fn text(results: &Results) -> String {
    let mut out = table::render(&rows(&results.results));
    if !results.targets.is_empty() {
        out.push('\n');
        out.push_str(&table::render(&target_rows(&results.targets, "MISSED")));
    }
    out
}

/// Writes the report directory: `results.json`, `summary.md`, `table.txt` and the plots.
pub fn write(dir: &Path, results: &Results) -> Result<()> {
    write_dir(
        dir,
        results,
        &text(results),
        plots(&results.results),
        |plots| summary(results, plots),
    )
}

/// The TPS of each second (of each case's median run) and the latency CDFs:
/// `(file name, title, svg)`.
fn plots(results: &[CaseResult]) -> Vec<(String, String, String)> {
    let mut plots = Vec::new();
    let per_second: Vec<Series> = results
        .iter()
        .filter(|r| !r.tps_per_second.is_empty())
        .map(|r| Series {
            name: r.case.name().to_string(),
            points: r
                .tps_per_second
                .iter()
                .enumerate()
                .map(|(i, &tps)| ((i + 1) as f64, tps))
                .collect(),
        })
        .collect();
    if !per_second.is_empty() {
        let title = "TPS per second (each case's median run)".to_string();
        let seconds = per_second.iter().map(|s| s.points.len()).max().unwrap_or(1);
        // Whole seconds, a tick every ten (every one in a short run).
        let step = if seconds >= 20 { 10 } else { 1 };
        let mut ticks = vec![1.0];
        ticks.extend((step..=seconds).step_by(step).map(|s| s as f64));
        ticks.dedup();
        let chart = Chart {
            title: &title,
            x_label: "second of the run",
            y_label: "transactions",
            x_log: false,
            y_from_zero: true,
            x_ticks: Some(ticks),
        };
        plots.push((
            "tps-per-second.svg".to_string(),
            title.clone(),
            chart.svg(&per_second),
        ));
    }
    let cdfs: Vec<Series> = results
        .iter()
        .filter(|r| !r.latency_cdf.is_empty())
        .map(|r| Series {
            name: r.case.name().to_string(),
            points: r.latency_cdf.iter().map(|&[q, us]| (us, q)).collect(),
        })
        .collect();
    if !cdfs.is_empty() {
        let title = "Transaction latency CDF (all runs)".to_string();
        let chart = Chart {
            title: &title,
            x_label: "latency (µs, log scale)",
            y_label: "fraction of transactions",
            x_log: true,
            y_from_zero: true,
            x_ticks: None,
        };
        plots.push((
            "latency-cdf.svg".to_string(),
            title.clone(),
            chart.svg(&cdfs),
        ));
    }
    plots
}

fn summary(results: &Results, plots: &[(String, String)]) -> String {
    let env = &results.environment;
    let set = &results.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# untorn pgbench report\n");
    environment_rows(&mut md, env);
    let _ = writeln!(md, "| PostgreSQL | {} |", results.postgres_version);
    let _ = writeln!(md, "| filesystem | {} |", set.mkfs);
    let _ = writeln!(
        md,
        "| server settings | {}; data checksums on (initdb --data-checksums) |",
        set.server_options
    );
    let _ = writeln!(
        md,
        "| method | pgbench (TPC-B-like) at scale {}, {} clients, {} threads; per case {} \
         timed runs of {} s, each after a restart, a {} s warm-up and a CHECKPOINT, cases taken \
         in turns on copies of one initialized cluster; medians; spread = (max - min) / 2 / \
         median of TPS; TPS CV = standard deviation / mean of the transactions of each second |",
        set.scale, set.clients, set.threads, set.runs, set.run_seconds, set.warmup_seconds
    );
    if env.accel.as_deref() == Some("tcg") {
        let _ = writeln!(
            md,
            "\nThe guest ran under **TCG**: every CPU instruction is emulated, so PostgreSQL's \
             CPU work costs far more against the device than on hardware. Compare the ratios, \
             not the absolute TPS, with KVM or hardware runs."
        );
    }
    let _ = writeln!(md, "\n## Cases\n");
    for r in &results.results {
        let _ = writeln!(md, "- `{}`: {}", r.case.name(), r.case.description());
    }
    if !results.targets.is_empty() {
        let _ = writeln!(md, "\n## Targets\n");
        md.push_str(&markdown_table(&target_rows(
            &results.targets,
            "**missed**",
        )));
    }
    let _ = writeln!(
        md,
        "\n## Results\n\nTPS: transactions per second (pgbench's, without connection time). \
         Latencies are of whole transactions, from pgbench's per-transaction log. ckpts: \
         checkpoints started in the run (pg_stat_checkpointer). WAL MB, FPI: WAL bytes and \
         full-page images written (pg_stat_wal). dev MB: bytes the device wrote, over the run \
         and the sync after it. CPU: busy time of all CPUs over their time in the run (and the \
         sync); CPU µs/tx: that busy time per transaction. ×: the median over {}'s.\n",
        BASELINE.name()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgbench::RunFigures;

    fn result(case: Case, tps: f64, wal_bytes: u64, p99: f64) -> CaseResult {
        CaseResult {
            case,
            median: RunFigures {
                tps,
                wal_bytes,
                latency_avg_us: 1e6 / tps,
                latency_p99_us: p99,
                wal_fpi: wal_bytes / 10_000,
                device_bytes: wal_bytes * 2,
                ..RunFigures::default()
            },
            tps_min: tps,
            tps_max: tps,
            tps_relative_spread: 0.0,
            runs: Vec::new(),
            vs_baseline: None,
            latency_cdf: vec![[0.0, 100.0], [1.0, 1000.0]],
            tps_per_second: vec![tps; 5],
        }
    }

    #[test]
    fn ratios_are_against_fpw_on() {
        let mut results = vec![
            result(Case::XfsFpwOn, 100.0, 40_000_000, 2000.0),
            result(Case::XfsFpwOff, 160.0, 8_000_000, 1000.0),
            result(Case::UntornFpwOff, 140.0, 10_000_000, 1500.0),
        ];
        add_ratios(&mut results);
        let untorn = results[2].vs_baseline.clone().unwrap();
        assert_eq!(untorn.tps, 1.4);
        assert_eq!(untorn.wal_bytes, 0.25);
        assert_eq!(untorn.latency_p99, 0.75);
        assert_eq!(results[0].vs_baseline.as_ref().unwrap().tps, 1.0);
        let targets = check_targets(&results);
        let verdicts: Vec<(&str, bool)> =
            targets.iter().map(|t| (t.what.as_str(), t.met)).collect();
        // 1.4x TPS (met), exactly a quarter of the WAL (met), 0.875 of the ceiling (met).
        assert_eq!(
            verdicts,
            vec![
                ("TPS vs xfs-fpw-on", true),
                ("WAL bytes vs xfs-fpw-on", true),
                ("TPS vs xfs-fpw-off", true)
            ]
        );
        // 20% under the ceiling misses the third; more WAL misses the second.
        results[2] = result(Case::UntornFpwOff, 128.0, 10_000_001, 1500.0);
        let met: Vec<bool> = check_targets(&results).iter().map(|t| t.met).collect();
        assert_eq!(met, vec![false, false, false]);
    }

    #[test]
    fn no_baseline_no_ratios_nor_targets() {
        let mut results = vec![result(Case::UntornFpwOff, 140.0, 1, 1.0)];
        add_ratios(&mut results);
        assert!(results[0].vs_baseline.is_none());
        assert!(check_targets(&results).is_empty());
        // Without the ceiling, two targets.
        results.push(result(Case::XfsFpwOn, 100.0, 4, 1.0));
        assert_eq!(check_targets(&results).len(), 2);
    }

    #[test]
    fn plots_have_a_line_per_case() {
        let results = vec![
            result(Case::XfsFpwOn, 100.0, 40, 1.0),
            result(Case::UntornFpwOff, 140.0, 10, 1.0),
        ];
        let plots = plots(&results);
        let names: Vec<&str> = plots.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, vec!["tps-per-second.svg", "latency-cdf.svg"]);
        for (_, _, svg) in &plots {
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert!(svg.contains("untorn-fpw-off"));
        }
    }
}
