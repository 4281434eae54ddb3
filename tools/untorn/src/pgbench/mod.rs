// SPDX-License-Identifier: GPL-2.0

//! `untorn pgbench`: what PostgreSQL gains from untorn (issue 8, part 2;
//! Documentation/admin-guide/untorn-postgresql.rst). pgbench's TPC-B-like workload on the same
//! data with the same settings in three cases: XFS with full_page_writes on (the safe default),
//! XFS with it off (unsafe: the ceiling), and untorn over XFS with the relation files in
//! writethrough and full_page_writes off.
//!
//! One fresh XFS on the device holds everything. `pgbench -i` in a copy of the installation's
//! data directory template (data checksums on) makes a template cluster once; each case gets a
//! copy (on untorn for the untorn case). Then each run of each case, the cases taken in turns:
//! the server starts, a warm-up fills its buffers, a CHECKPOINT starts every case's timed run
//! from the same point, and the timed run follows with a per-transaction log; what the run left
//! dirty is synced before the device's counters are read.

pub mod log;
pub mod report;

use crate::{
    bench::{self, stats, DeviceChoice, Environment},
    check::{self, writethrough},
    guest::{self, Mounted},
    postgres::{self, copy_dir, Cluster, Install},
    progress::Progress,
    sys,
};
use anyhow::{bail, ensure, Context, Result};
use log::{Summary, TransactionLog, Variability};
use serde::Serialize;
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// What is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// XFS, full_page_writes=on: today's safe default, the baseline of the ratios.
    XfsFpwOn,
    /// XFS, full_page_writes=off: unsafe on a device that can tear pages; the ceiling.
    XfsFpwOff,
    /// untorn over XFS, relation files in writethrough, full_page_writes=off.
    UntornFpwOff,
}

impl Case {
    pub const ALL: [Case; 3] = [Case::XfsFpwOn, Case::XfsFpwOff, Case::UntornFpwOff];

    pub fn name(self) -> &'static str {
        match self {
            Case::XfsFpwOn => "xfs-fpw-on",
            Case::XfsFpwOff => "xfs-fpw-off",
            Case::UntornFpwOff => "untorn-fpw-off",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Case::XfsFpwOn => {
                "XFS, full_page_writes=on: today's safe default (the baseline of the ratios)"
            }
            Case::XfsFpwOff => {
                "XFS, full_page_writes=off: unsafe (a torn page is lost), the ceiling"
            }
            Case::UntornFpwOff => {
                "untorn over XFS, relation files in writethrough (the patched server sets it), \
                 full_page_writes=off"
            }
        }
    }

    pub fn full_page_writes(self) -> bool {
        self == Case::XfsFpwOn
    }

    pub fn on_untorn(self) -> bool {
        self == Case::UntornFpwOff
    }
}

/// The command line of `untorn pgbench`.
#[derive(clap::Args)]
pub struct Options {
    /// pgbench's scale factor (100,000 accounts, about 15 MiB, per unit).
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// pgbench clients.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// pgbench threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Length of a timed run, e.g. 90s. The default, a little over two checkpoint_timeouts,
    /// starts two timed checkpoints in each run (more with full_page_writes on, whose WAL
    /// reaches max_wal_size).
    #[arg(long, default_value = "65s", value_parser = crate::exercise::parse_duration)]
    pub run_time: Duration,
    /// Length of the warm-up before each timed run.
    #[arg(long, default_value = "5s", value_parser = crate::exercise::parse_duration)]
    pub warmup: Duration,
    /// Timed runs per case (the report gives their medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The server's checkpoint_timeout, in seconds (30 is PostgreSQL's least).
    #[arg(long, default_value_t = 30)]
    pub checkpoint_timeout: u32,
    /// The server's max_wal_size (PostgreSQL units, e.g. 64MB).
    #[arg(long, default_value = "64MB")]
    pub max_wal_size: String,
    /// The server's shared_buffers (PostgreSQL units).
    #[arg(long, default_value = "256MB")]
    pub shared_buffers: String,
    /// Cases to run (default: all three; the ratios need xfs-fpw-on).
    #[arg(long = "case", value_delimiter = ',', value_enum)]
    pub cases: Vec<Case>,
    #[command(flatten)]
    pub output: bench::Output,
}

impl Options {
    /// Checks the options; no case named means all.
    pub fn prepare(&mut self) -> Result<()> {
        ensure!(self.runs > 0, "--runs must be at least 1");
        ensure!(
            self.scale > 0 && self.clients > 0 && self.threads > 0,
            "--scale, --clients and --threads must be at least 1"
        );
        ensure!(
            self.clients % self.threads == 0,
            "--clients must be a multiple of --threads (pgbench's rule)"
        );
        ensure!(
            self.checkpoint_timeout >= 30,
            "--checkpoint-timeout: PostgreSQL's least is 30 s"
        );
        if self.cases.is_empty() {
            self.cases = Case::ALL.to_vec();
        }
        Ok(())
    }

    /// The server options of `case` (`-c name=value ...`): the same but full_page_writes.
    fn server_options(&self, case: Case) -> String {
        format!(
            "-c shared_buffers={} -c max_connections={} -c full_page_writes={} \
             -c checkpoint_timeout={}s -c max_wal_size={} -c synchronous_commit=on",
            self.shared_buffers,
            self.clients + 10,
            if case.full_page_writes() { "on" } else { "off" },
            self.checkpoint_timeout,
            self.max_wal_size,
        )
    }
}

/// Everything `untorn pgbench` found, as `results.json` holds it.
#[derive(Serialize)]
pub struct Results {
    pub environment: Environment,
    pub postgres_version: String,
    pub settings: Settings,
    pub results: Vec<CaseResult>,
    pub targets: Vec<report::Target>,
}

#[derive(Serialize)]
pub struct Settings {
    pub scale: u32,
    pub clients: u32,
    pub threads: u32,
    pub runs: usize,
    pub run_seconds: f64,
    pub warmup_seconds: f64,
    pub checkpoint_timeout_seconds: u32,
    pub max_wal_size: String,
    pub shared_buffers: String,
    /// The server options of each case but for full_page_writes (data checksums are on: initdb
    /// --data-checksums).
    pub server_options: String,
    pub mkfs: String,
}

/// The figures of one timed run, or (as medians) of several.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunFigures {
    /// Transactions per second (pgbench's, without the connection time).
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    /// Latency of a transaction, from the per-transaction log, in microseconds.
    pub latency_avg_us: f64,
    pub latency_p99_us: f64,
    /// How the transactions of each second vary (coefficient of variation), and the slowest
    /// second over the median one.
    pub tps_cv: f64,
    pub tps_min_over_median: f64,
    /// `pg_stat_wal` deltas: WAL bytes, records and full-page images.
    pub wal_bytes: u64,
    pub wal_records: u64,
    pub wal_fpi: u64,
    /// Checkpoints started during the run (`pg_stat_checkpointer`: timed and requested), and
    /// the buffers they wrote.
    pub checkpoints: u64,
    pub checkpoint_buffers: u64,
    /// Bytes the device wrote, over the run and the sync after it.
    pub device_bytes: u64,
    /// Busy time of all CPUs over the run and the sync, as a share of their time, and per
    /// transaction in microseconds: whether the run was bound by the CPU.
    pub cpu_busy: f64,
    pub cpu_us_per_transaction: f64,
    /// untorn's counts over the run and the sync (untorn only): untorn (REQ_ATOMIC) writes,
    /// and writes written through but not untorn (beyond the file's atomic write limits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untorn_writes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_untorn_writes: Option<u64>,
    pub seconds: f64,
}

/// One case: the medians of its runs and how they compare with the baseline's.
#[derive(Serialize)]
pub struct CaseResult {
    pub case: Case,
    pub median: RunFigures,
    /// The lowest and highest TPS of the runs, and (highest - lowest) / median.
    pub tps_min: f64,
    pub tps_max: f64,
    pub tps_relative_spread: f64,
    pub runs: Vec<RunFigures>,
    /// Median figures over the baseline's (xfs-fpw-on), when it ran.
    pub vs_baseline: Option<report::Ratios>,
    /// Latency CDF over all runs: `[quantile, microseconds]`.
    pub latency_cdf: Vec<[f64; 2]>,
    /// Transactions in each second of the run whose TPS is the median.
    pub tps_per_second: Vec<f64>,
}

/// The setting that says where the patched server put its relation files, and what it says
/// when they are on untorn in writethrough.
const WHERE_SETTING: &str = "untorn_data_directory";
const WRITETHROUGH: &str = "writethrough";

/// Runs the benchmark.
pub fn run(options: &Options) -> Result<Results> {
    let install = postgres::patched_install()?;
    let pg = Install::new(&install)?;
    let postgres_version = postgres::checked(
        "postgres --version",
        pg.command("postgres", true, Path::new("/"))
            .arg("--version")
            .output(),
    )?
    .trim()
    .to_string();
    let _untorn_module = check::load_untorn(&options.output.modules)?;
    let disk = guest::scsi_debug_disk()?;
    let disk_name = bench::disk_name(&disk)?;
    let environment = bench::environment(&disk, &DeviceChoice::ScsiDebug)?;
    let total = 1 + options.cases.len() * options.runs;
    let mut progress = Progress::new(!options.output.json, total as u64, "pgbench", "runs");

    let place = Place::new(&disk)?;
    let start = Instant::now();
    place.make_template(&pg, options)?;
    progress.step(|| {
        format!(
            "pgbench -i -s {}: {:.0} s",
            options.scale,
            start.elapsed().as_secs_f64()
        )
    });
    let mut tallies: Vec<Tally> = Vec::new();
    for &case in &options.cases {
        let data = place.case_data(case);
        copy_dir(&place.template, &data)?;
        tallies.push(Tally {
            case,
            data,
            runs: Vec::new(),
            per_second: Vec::new(),
            samples: stats::Samples::default(),
        });
    }
    // The copies are the data now; the template's space is better free.
    fs::remove_dir_all(&place.template)
        .with_context(|| format!("cannot remove {}", place.template.display()))?;
    for round in 1..=options.runs {
        for tally in tallies.iter_mut() {
            let measured = place
                .run_once(&pg, tally, &disk_name, options)
                .with_context(|| format!("{} run {round}", tally.case.name()))?;
            tally.push(measured);
            progress.step(|| {
                let last = tally.runs.last().map(|r| r.tps).unwrap_or_default();
                format!("{} run {round}: {last:.0} TPS", tally.case.name())
            });
        }
    }
    progress.finish();
    let mut results: Vec<CaseResult> = tallies.into_iter().map(Tally::result).collect();
    report::add_ratios(&mut results);
    let targets = report::check_targets(&results);
    Ok(Results {
        environment,
        postgres_version,
        settings: Settings {
            scale: options.scale,
            clients: options.clients,
            threads: options.threads,
            runs: options.runs,
            run_seconds: options.run_time.as_secs_f64(),
            warmup_seconds: options.warmup.as_secs_f64(),
            checkpoint_timeout_seconds: options.checkpoint_timeout,
            max_wal_size: options.max_wal_size.clone(),
            shared_buffers: options.shared_buffers.clone(),
            server_options: options
                .server_options(Case::XfsFpwOn)
                .replace(" -c full_page_writes=on", ""),
            mkfs: format!(
                "mkfs.xfs -d {}; data directories with extsize {}",
                bench::XFS_DATA,
                bench::XFS_EXTSIZE
            ),
        },
        results,
        targets,
    })
}

/// A case's runs so far.
struct Tally {
    case: Case,
    data: PathBuf,
    runs: Vec<RunFigures>,
    /// Each run's transactions per second.
    per_second: Vec<Vec<f64>>,
    /// Latencies of all runs.
    samples: stats::Samples,
}

/// What a timed run measured.
struct Measured {
    figures: RunFigures,
    per_second: Vec<f64>,
    samples: stats::Samples,
}

impl Tally {
    fn push(&mut self, mut measured: Measured) {
        self.runs.push(measured.figures);
        self.per_second.push(measured.per_second);
        self.samples.append(&mut measured.samples);
    }

    fn result(self) -> CaseResult {
        let tps: Vec<f64> = self.runs.iter().map(|r| r.tps).collect();
        let (tps_min, tps_max, tps_relative_spread) = stats::min_max_relative(&tps);
        let median = median_figures(&self.runs);
        // The run nearest the median TPS (for an even count, the lower middle one).
        let mut order: Vec<usize> = (0..self.runs.len()).collect();
        order.sort_by(|&a, &b| tps[a].total_cmp(&tps[b]));
        let middle = order
            .get((order.len().max(1) - 1) / 2)
            .copied()
            .unwrap_or(0);
        CaseResult {
            case: self.case,
            median,
            tps_min,
            tps_max,
            tps_relative_spread,
            tps_per_second: self.per_second.get(middle).cloned().unwrap_or_default(),
            runs: self.runs,
            vs_baseline: None,
            latency_cdf: self.samples.into_sorted().cdf(101),
        }
    }
}

/// Field by field medians of runs.
fn median_figures(runs: &[RunFigures]) -> RunFigures {
    let med =
        |f: &dyn Fn(&RunFigures) -> f64| stats::median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let median_opt = |f: &dyn Fn(&RunFigures) -> Option<u64>| {
        let mut values: Vec<f64> = runs.iter().filter_map(|r| f(r).map(|v| v as f64)).collect();
        (!values.is_empty()).then(|| stats::median(&mut values) as u64)
    };
    RunFigures {
        tps: med(&|r| r.tps),
        transactions: med(&|r| r.transactions as f64) as u64,
        failed: med(&|r| r.failed as f64) as u64,
        latency_avg_us: med(&|r| r.latency_avg_us),
        latency_p99_us: med(&|r| r.latency_p99_us),
        tps_cv: med(&|r| r.tps_cv),
        tps_min_over_median: med(&|r| r.tps_min_over_median),
        wal_bytes: med(&|r| r.wal_bytes as f64) as u64,
        wal_records: med(&|r| r.wal_records as f64) as u64,
        wal_fpi: med(&|r| r.wal_fpi as f64) as u64,
        checkpoints: med(&|r| r.checkpoints as f64) as u64,
        checkpoint_buffers: med(&|r| r.checkpoint_buffers as f64) as u64,
        device_bytes: med(&|r| r.device_bytes as f64) as u64,
        cpu_busy: med(&|r| r.cpu_busy),
        cpu_us_per_transaction: med(&|r| r.cpu_us_per_transaction),
        untorn_writes: median_opt(&|r| r.untorn_writes),
        not_untorn_writes: median_opt(&|r| r.not_untorn_writes),
        seconds: med(&|r| r.seconds),
    }
}

/// The XFS on the device, untorn over a directory of it, and the template data directory.
struct Place {
    /// Dropped first: untorn, then the XFS under it.
    untorn: Mounted,
    xfs: Mounted,
    template: PathBuf,
}

impl Place {
    fn new(disk: &Path) -> Result<Self> {
        bench::mkfs_xfs_aligned(disk)?;
        let xfs = Mounted::mount("xfs", guest::path_str(disk)?, "")?;
        // Every directory, the one untorn stacks over too, gets the extent size hint that
        // keeps 8 KiB pages on aligned disk addresses (atomic writes need it on XFS).
        for dir in ["plain", "lower"] {
            let path = xfs.path().join(dir);
            fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
            guest::run(
                "xfs_io",
                &[
                    "-c",
                    &format!("extsize {}", bench::XFS_EXTSIZE),
                    guest::path_str(&path)?,
                ],
            )?;
        }
        let untorn = Mounted::mount("untorn", guest::path_str(&xfs.path().join("lower"))?, "")
            .context("cannot mount untorn")?;
        let template = xfs.path().join("plain").join("template");
        Ok(Self {
            untorn,
            xfs,
            template,
        })
    }

    /// `pgbench -i` in a copy of the installation's template (data checksums on).
    fn make_template(&self, pg: &Install, options: &Options) -> Result<()> {
        pg.new_pgbench_data_dir(
            &self.template,
            options.scale,
            &options.server_options(Case::XfsFpwOn),
            &[],
        )
    }

    fn case_data(&self, case: Case) -> PathBuf {
        if case.on_untorn() {
            self.untorn.path().join(case.name())
        } else {
            self.xfs.path().join("plain").join(case.name())
        }
    }

    /// Writes back everything dirty: untorn's cache to the XFS, the XFS's to the device.
    fn sync(&self) -> Result<()> {
        for mount in [&self.untorn, &self.xfs] {
            let dir = mount.path();
            let file = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
            sys::syncfs(&file).with_context(|| format!("syncfs {}", dir.display()))?;
        }
        Ok(())
    }

    /// One warm-up and timed run of a case, with its checks.
    fn run_once(
        &self,
        pg: &Install,
        tally: &Tally,
        disk_name: &str,
        options: &Options,
    ) -> Result<Measured> {
        let case = tally.case;
        let mut cluster = Cluster::new(pg, &tally.data)?;
        cluster.start(&options.server_options(case))?;
        ensure_configured(&cluster, case)?;
        let (clients, threads) = (options.clients.to_string(), options.threads.to_string());
        let warmup = options.warmup.as_secs().max(1).to_string();
        cluster.pgbench(&["-c", &clients, "-j", &threads, "-T", &warmup])?;
        cluster.sql("CHECKPOINT")?;
        let before = ServerCounters::read(&cluster)?;
        let device_before = stats::Counters::read(disk_name)?;
        let untorn_before = self.untorn_writes(case)?;
        let log_dir = cluster.run.join("log");
        fs::create_dir(&log_dir)?;
        pg.user.own_dir(&log_dir)?;
        let prefix = log_dir.join("tx");
        let started = Instant::now();
        let output = cluster.pgbench(&[
            "-n",
            "-c",
            &clients,
            "-j",
            &threads,
            "-T",
            &options.run_time.as_secs().max(1).to_string(),
            "-l",
            &format!("--log-prefix={}", guest::path_str(&prefix)?),
        ])?;
        let seconds = started.elapsed().as_secs_f64();
        self.sync()?;
        let device = stats::Counters::read(disk_name)?.since(&device_before);
        let elapsed = started.elapsed().as_secs_f64();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let untorn = match (untorn_before, self.untorn_writes(case)?) {
            (Some(before), Some(after)) => Some(after.since(&before)),
            _ => None,
        };
        // Backends report their WAL statistics when they exit, just after pgbench.
        std::thread::sleep(Duration::from_millis(1500));
        let after = ServerCounters::read(&cluster)?;
        let summary = Summary::parse(&output)?;
        let mut log = TransactionLog::default();
        for entry in fs::read_dir(&log_dir)? {
            let path = entry?.path();
            log.add(
                &fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )?;
        }
        ensure!(log.len() > 0, "the pgbench log has no transaction");
        cluster.stop()?;
        let per_second = log.per_second();
        let variability = Variability::of(&per_second);
        let samples = log.samples();
        let sorted = samples.into_sorted();
        let figures = RunFigures {
            tps: summary.tps,
            transactions: summary.transactions,
            failed: summary.failed.max(log.failed),
            latency_avg_us: log.mean_latency_us(),
            latency_p99_us: sorted.quantile_us(0.99).unwrap_or(0.0),
            tps_cv: variability.cv,
            tps_min_over_median: variability.min_over_median,
            wal_bytes: after.wal_bytes.saturating_sub(before.wal_bytes),
            wal_records: after.wal_records.saturating_sub(before.wal_records),
            wal_fpi: after.wal_fpi.saturating_sub(before.wal_fpi),
            checkpoints: after.checkpoints.saturating_sub(before.checkpoints),
            checkpoint_buffers: after
                .checkpoint_buffers
                .saturating_sub(before.checkpoint_buffers),
            device_bytes: device.device_written,
            cpu_busy: device.system_busy / (cpus as f64 * elapsed).max(1e-9),
            cpu_us_per_transaction: device.system_busy * 1e6 / summary.transactions.max(1) as f64,
            untorn_writes: untorn.map(|u| u.untorn),
            not_untorn_writes: untorn.map(|u| u.not_eligible),
            seconds,
        };
        ensure_measured_as_configured(case, &figures)?;
        Ok(Measured {
            figures,
            per_second,
            samples: sorted.into_samples(),
        })
    }

    /// untorn's counts of writes on the mount, for the untorn case.
    fn untorn_writes(&self, case: Case) -> Result<Option<UntornWrites>> {
        if !case.on_untorn() {
            return Ok(None);
        }
        let counters = writethrough::read_counters(self.untorn.path())?;
        let get = |name: &str| counters.get(name).copied().unwrap_or(0);
        Ok(Some(UntornWrites {
            untorn: get("untorn_writes"),
            not_eligible: get("writethrough_not_eligible"),
        }))
    }
}

/// untorn's counters of the mount that tell whether pages were written untorn.
#[derive(Clone, Copy)]
struct UntornWrites {
    untorn: u64,
    /// Written through, but not untorn: the write did not fit the file's atomic write limits.
    not_eligible: u64,
}

impl UntornWrites {
    fn since(self, earlier: &UntornWrites) -> Self {
        Self {
            untorn: self.untorn.saturating_sub(earlier.untorn),
            not_eligible: self.not_eligible.saturating_sub(earlier.not_eligible),
        }
    }
}

/// Fails unless the server runs the case as meant: full_page_writes, data checksums,
/// synchronous commits, and the relation files in writethrough exactly on untorn.
fn ensure_configured(cluster: &Cluster<'_>, case: Case) -> Result<()> {
    let fpw = if case.full_page_writes() { "on" } else { "off" };
    cluster.ensure_show("full_page_writes", fpw)?;
    cluster.ensure_show("data_checksums", "on")?;
    cluster.ensure_show("synchronous_commit", "on")?;
    let place = cluster.show(WHERE_SETTING)?;
    ensure!(
        place.starts_with(WRITETHROUGH) == case.on_untorn(),
        "{}: SHOW {WHERE_SETTING} is {place:?}",
        case.name()
    );
    Ok(())
}

/// Fails unless the run's figures show the case's configuration at work: full-page images
/// only with full_page_writes on, untorn writes on untorn, checkpoints in the run.
fn ensure_measured_as_configured(case: Case, f: &RunFigures) -> Result<()> {
    if case.full_page_writes() {
        ensure!(
            f.wal_fpi > 0,
            "full_page_writes=on, but the run logged no full-page image"
        );
    } else {
        // Some images are logged whatever the setting (e.g. of new index pages); a few.
        ensure!(
            f.wal_fpi * 100 <= f.transactions,
            "full_page_writes=off, but the run logged {} full-page images in {} transactions",
            f.wal_fpi,
            f.transactions
        );
    }
    if case.on_untorn() {
        ensure!(
            f.untorn_writes.unwrap_or(0) > 0,
            "the relation files are on untorn, but the run made no untorn write"
        );
        // A page written through but not untorn could tear. PostgreSQL's only writes of
        // several pages are those that extend a relation with zeroes (mdzeroextend), which
        // no tear can corrupt and which a length that is not a power of two makes not
        // eligible; they are a few. Pages beyond the files' limits would be most writes.
        let (untorn, not_untorn) = (f.untorn_writes.unwrap_or(0), f.not_untorn_writes);
        ensure!(
            not_untorn.is_some_and(|n| n * 100 <= untorn),
            "{} writes on untorn were written through but not untorn (beyond the files' \
             atomic write limits), against {untorn} untorn: full_page_writes=off is not \
             safe there",
            not_untorn.unwrap_or(0)
        );
    }
    if f.checkpoints == 0 {
        bail!("no checkpoint during the run: make it longer than checkpoint_timeout");
    }
    Ok(())
}

/// The server's cumulative counters that a run's figures are deltas of.
struct ServerCounters {
    wal_bytes: u64,
    wal_records: u64,
    wal_fpi: u64,
    checkpoints: u64,
    checkpoint_buffers: u64,
}

impl ServerCounters {
    fn read(cluster: &Cluster<'_>) -> Result<Self> {
        let row = cluster.sql(
            "SELECT w.wal_bytes, w.wal_records, w.wal_fpi, c.num_timed + c.num_requested, \
             c.buffers_written FROM pg_stat_wal w, pg_stat_checkpointer c",
        )?;
        let values: Vec<u64> = row
            .split('|')
            .map(|v| v.trim().parse())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("bad pg_stat_wal/pg_stat_checkpointer row {row:?}"))?;
        let [wal_bytes, wal_records, wal_fpi, checkpoints, checkpoint_buffers] = values[..] else {
            bail!("bad pg_stat_wal/pg_stat_checkpointer row {row:?}");
        };
        Ok(Self {
            wal_bytes,
            wal_records,
            wal_fpi,
            checkpoints,
            checkpoint_buffers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tps: f64, wal_fpi: u64, untorn: Option<(u64, u64)>) -> RunFigures {
        RunFigures {
            tps,
            transactions: 1000,
            wal_fpi,
            checkpoints: 2,
            untorn_writes: untorn.map(|u| u.0),
            not_untorn_writes: untorn.map(|u| u.1),
            ..RunFigures::default()
        }
    }

    #[test]
    fn medians_per_field() {
        let runs = [
            run(100.0, 7, Some((50, 0))),
            run(300.0, 3, Some((10, 0))),
            run(200.0, 5, Some((30, 2))),
        ];
        let m = median_figures(&runs);
        assert_eq!((m.tps, m.wal_fpi), (200.0, 5));
        assert_eq!((m.untorn_writes, m.not_untorn_writes), (Some(30), Some(0)));
        assert_eq!(median_figures(&[run(1.0, 0, None)]).untorn_writes, None);
    }

    #[test]
    fn misconfigured_runs_fail() {
        let ok = |case, f: &RunFigures| ensure_measured_as_configured(case, f).is_ok();
        assert!(ok(Case::XfsFpwOn, &run(1.0, 500, None)));
        assert!(!ok(Case::XfsFpwOn, &run(1.0, 0, None)));
        // Up to one image per hundred transactions with full_page_writes off.
        assert!(ok(Case::XfsFpwOff, &run(1.0, 10, None)));
        assert!(!ok(Case::XfsFpwOff, &run(1.0, 11, None)));
        assert!(ok(Case::UntornFpwOff, &run(1.0, 0, Some((100, 0)))));
        assert!(!ok(Case::UntornFpwOff, &run(1.0, 0, Some((0, 0)))));
        // Zero-extension writes of several pages: at most one in a hundred.
        assert!(ok(Case::UntornFpwOff, &run(1.0, 0, Some((100, 1)))));
        assert!(!ok(Case::UntornFpwOff, &run(1.0, 0, Some((100, 2)))));
        assert!(!ok(Case::UntornFpwOff, &run(1.0, 0, None)));
        let no_checkpoint = RunFigures {
            checkpoints: 0,
            ..run(1.0, 0, None)
        };
        assert!(!ok(Case::XfsFpwOff, &no_checkpoint));
    }

    #[test]
    fn cases_differ_only_in_full_page_writes() {
        let options = Options {
            scale: 10,
            clients: 8,
            threads: 2,
            run_time: Duration::from_secs(65),
            warmup: Duration::from_secs(5),
            runs: 3,
            checkpoint_timeout: 30,
            max_wal_size: "64MB".to_string(),
            shared_buffers: "256MB".to_string(),
            cases: Vec::new(),
            output: bench::Output {
                report: None,
                json: false,
                modules: PathBuf::new(),
            },
        };
        let on = options.server_options(Case::XfsFpwOn);
        assert!(on.contains("-c full_page_writes=on"));
        assert!(on.contains("-c checkpoint_timeout=30s"));
        for case in [Case::XfsFpwOff, Case::UntornFpwOff] {
            assert_eq!(
                options.server_options(case),
                on.replace("full_page_writes=on", "full_page_writes=off")
            );
        }
    }
}
