// SPDX-License-Identifier: GPL-2.0

//! The figures of a benchmark run, and how runs become one result: percentiles of latency
//! samples, medians and spread over runs, and the counters read around a run (CPU time from
//! `/proc/stat` and `getrusage`, bytes written from the device's `stat`).

use anyhow::{Context, Result};
use serde::Serialize;
use std::{fs, path::Path, time::Duration};

/// Latency samples of one kind of operation in one run, in nanoseconds.
#[derive(Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn push(&mut self, latency: Duration) {
        self.0
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn append(&mut self, other: &mut Samples) {
        self.0.append(&mut other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sorted, for the percentiles.
    pub fn into_sorted(mut self) -> Sorted {
        self.0.sort_unstable();
        Sorted(self.0)
    }
}

/// Latency samples in ascending order.
pub struct Sorted(Vec<u64>);

impl Sorted {
    /// The `q`-quantile (0 to 1) in microseconds, by the nearest-rank method; `None` without
    /// samples.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        // Nearest rank: the smallest sample with at least q*n samples at or below it.
        let rank = (q * n as f64).ceil().clamp(1.0, n as f64) as usize;
        Some(self.0[rank - 1] as f64 / 1000.0)
    }

    /// Back to samples (still sorted).
    pub fn into_samples(self) -> Samples {
        Samples(self.0)
    }

    /// `points` quantiles evenly spaced from 0 to 1 (as `[quantile, microseconds]`), for a
    /// latency CDF plot that does not need every sample.
    pub fn cdf(&self, points: usize) -> Vec<[f64; 2]> {
        if self.0.is_empty() || points < 2 {
            return Vec::new();
        }
        (0..points)
            .filter_map(|i| {
                let q = i as f64 / (points - 1) as f64;
                self.quantile_us(q).map(|us| [q, us])
            })
            .collect()
    }
}

/// System-wide and own CPU time, and the device's written bytes, at one moment.
#[derive(Clone, Copy)]
pub struct Counters {
    /// Busy CPU time of all CPUs (`/proc/stat`: all but idle and iowait), in seconds.
    system_busy: f64,
    /// This process's user and system time (`getrusage`), in seconds.
    process: f64,
    /// Bytes written to the device (`/sys/block/<disk>/stat`).
    device_written: u64,
}

impl Counters {
    /// Reads the counters; `disk` is the name under `/sys/block`.
    pub fn read(disk: &str) -> Result<Self> {
        Ok(Self {
            system_busy: system_busy_seconds()?,
            process: process_cpu_seconds(),
            device_written: device_written_bytes(disk)?,
        })
    }

    /// What changed since `earlier`.
    pub fn since(&self, earlier: &Counters) -> Delta {
        Delta {
            system_busy: (self.system_busy - earlier.system_busy).max(0.0),
            process: (self.process - earlier.process).max(0.0),
            device_written: self.device_written.saturating_sub(earlier.device_written),
        }
    }
}

/// Counter changes over a run.
#[derive(Clone, Copy)]
pub struct Delta {
    pub system_busy: f64,
    pub process: f64,
    pub device_written: u64,
}

fn system_busy_seconds() -> Result<f64> {
    let text = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = text.lines().next().unwrap_or_default();
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...; guest time is already in user.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(busy as f64 / hz)
}

fn process_cpu_seconds() -> f64 {
    // SAFETY: `usage` is a valid, writable `struct rusage`.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Sectors written (the 7th field of `/sys/block/<disk>/stat`), in bytes: always 512-byte
/// sectors, whatever the device's block size (Documentation/block/stat.rst).
fn device_written_bytes(disk: &str) -> Result<u64> {
    let path = Path::new("/sys/block").join(disk).join("stat");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let sectors: u64 = text
        .split_whitespace()
        .nth(6)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no write sectors in {}: {text:?}", path.display()))?;
    Ok(sectors * 512)
}

/// The figures of one run, or (as medians) of several.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    /// Pages written per second (for the mixed workload, pages read and written).
    pub iops: f64,
    /// Megabytes (10^6 bytes) per second, read and written.
    pub mb_per_s: f64,
    /// Write latency percentiles, microseconds.
    pub write_p50_us: f64,
    pub write_p99_us: f64,
    pub write_p999_us: f64,
    /// Read latency percentiles (mixed workload only), microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_p99_us: Option<f64>,
    /// Busy CPU time of all CPUs (kernel threads and interrupts included) per page written
    /// (or read, in the mixed workload), microseconds.
    pub cpu_us_per_op: f64,
    /// The benchmark process's own CPU time per page written or read, microseconds.
    pub process_cpu_us_per_op: f64,
    /// Bytes the device wrote per byte the benchmark wrote (the run's data, and whatever the
    /// writeback that followed it wrote: journal, metadata, doublewrite copies).
    pub device_bytes_per_byte: f64,
    /// Pages written and read in the run.
    pub writes: u64,
    pub reads: u64,
    /// Latency samples, one per page write (for a checkpoint, one per checkpoint).
    pub write_samples: u64,
    pub seconds: f64,
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Field by field medians of runs.
pub fn median_figures(runs: &[Figures]) -> Figures {
    let med = |f: &dyn Fn(&Figures) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let med_opt = |f: &dyn Fn(&Figures) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    Figures {
        iops: med(&|r| r.iops),
        mb_per_s: med(&|r| r.mb_per_s),
        write_p50_us: med(&|r| r.write_p50_us),
        write_p99_us: med(&|r| r.write_p99_us),
        write_p999_us: med(&|r| r.write_p999_us),
        read_p50_us: med_opt(&|r| r.read_p50_us),
        read_p99_us: med_opt(&|r| r.read_p99_us),
        cpu_us_per_op: med(&|r| r.cpu_us_per_op),
        process_cpu_us_per_op: med(&|r| r.process_cpu_us_per_op),
        device_bytes_per_byte: med(&|r| r.device_bytes_per_byte),
        writes: med(&|r| r.writes as f64) as u64,
        reads: med(&|r| r.reads as f64) as u64,
        write_samples: med(&|r| r.write_samples as f64) as u64,
        seconds: med(&|r| r.seconds),
    }
}

/// How far the runs' IOPS spread: lowest, highest, and (highest - lowest) / median.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    pub iops_min: f64,
    pub iops_max: f64,
    pub iops_relative: f64,
}

pub fn spread(runs: &[Figures]) -> Spread {
    let (iops_min, iops_max, iops_relative) =
        min_max_relative(&runs.iter().map(|r| r.iops).collect::<Vec<_>>());
    Spread {
        iops_min,
        iops_max,
        iops_relative,
    }
}

/// The lowest and highest of `values`, and (highest - lowest) / median; zeros for none.
pub fn min_max_relative(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let med = median(&mut values.to_vec());
    (min, max, if med > 0.0 { (max - min) / med } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(values: &[u64]) -> Sorted {
        let mut s = Samples::default();
        for &v in values {
            s.push(Duration::from_nanos(v));
        }
        s.into_sorted()
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let s = sorted(&(1..=1000).map(|v| v * 1000).collect::<Vec<_>>());
        assert_eq!(s.quantile_us(0.5), Some(500.0));
        assert_eq!(s.quantile_us(0.99), Some(990.0));
        assert_eq!(s.quantile_us(0.999), Some(999.0));
        assert_eq!(s.quantile_us(0.0), Some(1.0));
        assert_eq!(s.quantile_us(1.0), Some(1000.0));
        assert_eq!(sorted(&[]).quantile_us(0.5), None);
        // A single slow sample among 100 shows at p99.9 but not at p99.
        let mut v = vec![1000; 99];
        v.push(50_000);
        let s = sorted(&v);
        assert_eq!(s.quantile_us(0.99), Some(1.0));
        assert_eq!(s.quantile_us(0.999), Some(50.0));
    }

    #[test]
    fn cdf_runs_from_the_fastest_to_the_slowest() {
        let s = sorted(&[3000, 1000, 2000]);
        let cdf = s.cdf(3);
        assert_eq!(cdf, vec![[0.0, 1.0], [0.5, 2.0], [1.0, 3.0]]);
    }

    #[test]
    fn medians_and_spread() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        let runs: Vec<Figures> = [100.0, 120.0, 80.0]
            .iter()
            .map(|&iops| Figures {
                iops,
                read_p50_us: (iops > 90.0).then_some(iops),
                ..Figures::default()
            })
            .collect();
        let m = median_figures(&runs);
        assert_eq!(m.iops, 100.0);
        assert_eq!(m.read_p50_us, Some(110.0));
        let s = spread(&runs);
        assert_eq!((s.iops_min, s.iops_max), (80.0, 120.0));
        assert!((s.iops_relative - 0.4).abs() < 1e-9);
    }
}
