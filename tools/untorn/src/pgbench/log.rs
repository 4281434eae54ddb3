// SPDX-License-Identifier: GPL-2.0

//! What pgbench writes: its summary on standard output, and its per-transaction log (`-l`),
//! from which come the latency percentiles and the transactions of each second.

use crate::bench::stats::{self, Samples};
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// The figures of pgbench's summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// `tps = N (without initial connection time)`.
    pub tps: f64,
    /// `number of transactions actually processed: N`.
    pub transactions: u64,
    /// `number of failed transactions: N (x%)` (0 if the line is missing).
    pub failed: u64,
}

impl Summary {
    pub fn parse(text: &str) -> Result<Self> {
        let value = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
        };
        let tps = value("tps = ")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no `tps = ` in pgbench's output:\n{text}"))?;
        let transactions = value("number of transactions actually processed:")
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no transaction count in pgbench's output:\n{text}"))?;
        let failed = value("number of failed transactions:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Self {
            tps,
            transactions,
            failed,
        })
    }
}

/// The transactions of a per-transaction log: latency and completion time of each.
#[derive(Default)]
pub struct TransactionLog {
    /// Latencies in microseconds, in log order.
    latencies_us: Vec<u64>,
    /// Completion times in microseconds since the epoch.
    ends_us: Vec<u64>,
    /// Transactions logged as failed or skipped (no latency).
    pub failed: u64,
}

impl TransactionLog {
    /// Adds the lines of one log file: `client_id transaction_no time script_no time_epoch
    /// time_us [...]`, where `time` is the latency in µs, or `failed`/`skipped`.
    pub fn add(&mut self, text: &str) -> Result<()> {
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 {
                bail!("bad pgbench log line {line:?}");
            }
            let number = |i: usize| -> Result<u64> {
                fields[i]
                    .parse()
                    .with_context(|| format!("bad field {} in pgbench log line {line:?}", i + 1))
            };
            if matches!(fields[2], "failed" | "skipped") {
                self.failed += 1;
                continue;
            }
            let latency = number(2)?;
            let end = number(4)? * 1_000_000 + number(5)?;
            self.latencies_us.push(latency);
            self.ends_us.push(end);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.latencies_us.len()
    }

    /// The mean latency in microseconds (0 without transactions).
    pub fn mean_latency_us(&self) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.iter().sum::<u64>() as f64 / self.latencies_us.len() as f64
    }

    /// The latencies, as samples for the percentiles.
    pub fn samples(&self) -> Samples {
        let mut samples = Samples::default();
        for &us in &self.latencies_us {
            samples.push(Duration::from_micros(us));
        }
        samples
    }

    /// Transactions completed in each whole second of the run, from the first completion's
    /// second to the last's; those two seconds are left out, being partly outside the run.
    pub fn per_second(&self) -> Vec<f64> {
        let (Some(&first), Some(&last)) = (self.ends_us.iter().min(), self.ends_us.iter().max())
        else {
            return Vec::new();
        };
        let (first, last) = (first / 1_000_000, last / 1_000_000);
        let mut counts = vec![0u64; (last - first + 1) as usize];
        for &end in &self.ends_us {
            counts[(end / 1_000_000 - first) as usize] += 1;
        }
        if counts.len() <= 2 {
            return Vec::new();
        }
        counts[1..counts.len() - 1]
            .iter()
            .map(|&c| c as f64)
            .collect()
    }
}

/// How much per-second TPS varies.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Variability {
    /// Coefficient of variation: standard deviation over mean.
    pub cv: f64,
    /// The slowest second over the median second.
    pub min_over_median: f64,
}

impl Variability {
    pub fn of(per_second: &[f64]) -> Self {
        let n = per_second.len();
        if n == 0 {
            return Self::default();
        }
        let mean = per_second.iter().sum::<f64>() / n as f64;
        let variance = per_second.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let min = per_second.iter().copied().fold(f64::INFINITY, f64::min);
        let median = stats::median(&mut per_second.to_vec());
        Self {
            cv: if mean > 0.0 {
                variance.sqrt() / mean
            } else {
                0.0
            },
            min_over_median: if median > 0.0 { min / median } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgbench 17's summary of a timed run (shortened).
    const SUMMARY: &str = "pgbench (17.4)
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 60 s
number of transactions actually processed: 12345
number of failed transactions: 3 (0.024%)
latency average = 38.881 ms
initial connection time = 52.817 ms
tps = 205.747512 (without initial connection time)
";

    #[test]
    fn summary_gives_tps_and_counts() {
        let s = Summary::parse(SUMMARY).unwrap();
        assert_eq!(
            s,
            Summary {
                tps: 205.747512,
                transactions: 12345,
                failed: 3
            }
        );
        assert!(Summary::parse(&SUMMARY.replace("tps = ", "tps: ")).is_err());
        let no_failed = SUMMARY.replace("number of failed transactions: 3 (0.024%)\n", "");
        assert_eq!(Summary::parse(&no_failed).unwrap().failed, 0);
    }

    #[test]
    fn log_gives_latencies_and_seconds() {
        let mut log = TransactionLog::default();
        // Second 100: partial (left out); 101: three; 102: one; 103: partial (left out).
        log.add(
            "0 1 1500 0 100 999000\n\
             1 1 2500 0 101 100\n\
             0 2 3500 0 101 500000\n\
             1 2 failed 0 101 600000\n\
             1 3 500 0 101 999999\n\
             0 3 1000 0 102 0\n\
             0 4 1000 0 103 5\n",
        )
        .unwrap();
        assert_eq!(log.len(), 6);
        assert_eq!(log.failed, 1);
        assert_eq!(log.mean_latency_us(), 10000.0 / 6.0);
        assert_eq!(log.per_second(), vec![3.0, 1.0]);
        let p = log.samples().into_sorted();
        assert_eq!(p.quantile_us(0.99), Some(3500.0));
        assert_eq!(p.quantile_us(0.5), Some(1000.0));
        assert!(log.add("0 1 x 0 100 5\n").is_err());
        assert!(log.add("0 1 100\n").is_err());
    }

    #[test]
    fn variability_of_steady_and_stalling_runs() {
        let steady = Variability::of(&[100.0; 10]);
        assert_eq!(steady.cv, 0.0);
        assert_eq!(steady.min_over_median, 1.0);
        // One stalled second in four: mean 75, deviation sqrt(1875).
        let stall = Variability::of(&[100.0, 100.0, 0.0, 100.0]);
        assert!((stall.cv - 1875f64.sqrt() / 75.0).abs() < 1e-12);
        assert_eq!(stall.min_over_median, 0.0);
        assert_eq!(Variability::of(&[]), Variability::default());
    }
}
