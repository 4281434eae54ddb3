// SPDX-License-Identifier: GPL-2.0

//! `untorn bench`: what writethrough costs against every alternative, on the same device,
//! lower filesystem and data, in one run (Documentation/dev-tools/bench.rst).
//!
//! For each lower filesystem it makes a fresh one on the device, mounts untorn over it and
//! makes three equal data files: one for the strategies through untorn, one for the direct
//! ones and one for the buffered ones on the lower, so that none finds another's page cache
//! (see [`DataFile`]). Then, cell by
//! cell of the matrix (workload, page size, threads), every strategy gets a warm-up and then
//! `runs` timed runs, taken in turns so that a drift of the machine spreads over all of them.

pub mod report;
pub mod stats;
pub mod strategy;

use crate::{
    check,
    guest::{self, FsType, Lower, Mounted},
    limits::{DeviceLimits, FileLimits},
    progress::Progress,
    sys,
};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use stats::{Counters, Figures, Samples, Spread};
use std::{
    fs::{self, File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Barrier,
    time::{Duration, Instant},
};
use strategy::{DataFile, DoublewriteArea, Job, Strategy, ThreadResult, Worker, Workload};
use untorn_logic::mount_options::FileMode;

/// Where the benchmark runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The scsi_debug disk (vm-run `--device scsi_debug`).
    ScsiDebug,
    /// A tornblk device the benchmark makes (no power cuts; 4 KiB to 64 KiB atomic writes).
    Tornblk,
    /// A block device by path (e.g. an NVMe disk).
    Path(PathBuf),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "scsi_debug" => DeviceChoice::ScsiDebug,
            "tornblk" => DeviceChoice::Tornblk,
            path if path.starts_with("/dev/") => DeviceChoice::Path(PathBuf::from(path)),
            other => return Err(format!("'{other}': scsi_debug, tornblk or a /dev/ path")),
        })
    }
}

/// A preset of cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Matrix {
    /// Four cells, one per workload: a smoke test of every code path.
    Quick,
    /// Page sizes at one thread, threads at 16 KiB, and each other workload once (about ten
    /// minutes under TCG).
    Default,
    /// Every workload at every page size and thread count (hours under TCG).
    Full,
}

/// One point of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub workload: Workload,
    pub page_size: usize,
    pub threads: usize,
}

const KIB: usize = 1024;

impl Matrix {
    pub fn cells(self) -> Vec<Cell> {
        let cell = |workload, page_kib: usize, threads| Cell {
            workload,
            page_size: page_kib * KIB,
            threads,
        };
        match self {
            Matrix::Quick => vec![
                cell(Workload::Randwrite, 16, 1),
                cell(Workload::Seqwrite, 8, 2),
                cell(Workload::Mixed, 16, 2),
                cell(Workload::Checkpoint, 16, 1),
            ],
            Matrix::Default => {
                let mut cells: Vec<Cell> = [4, 8, 16, 64]
                    .iter()
                    .map(|&kib| cell(Workload::Randwrite, kib, 1))
                    .collect();
                cells.push(cell(Workload::Randwrite, 16, 4));
                cells.push(cell(Workload::Randwrite, 16, 16));
                cells.push(cell(Workload::Seqwrite, 16, 1));
                cells.push(cell(Workload::Mixed, 16, 4));
                cells.push(cell(Workload::Checkpoint, 16, 1));
                cells
            }
            Matrix::Full => product(
                &[
                    Workload::Randwrite,
                    Workload::Seqwrite,
                    Workload::Mixed,
                    Workload::Checkpoint,
                ],
                &[4 * KIB, 8 * KIB, 16 * KIB, 64 * KIB],
                &[1, 4, 16],
            ),
        }
    }
}

/// The cells to run: the preset's, or, if any of `workloads`, `page_sizes` and `threads` is
/// given, the product of those given and of the preset's values for the others.
pub fn cells(
    matrix: Matrix,
    workloads: &[Workload],
    page_sizes: &[usize],
    threads: &[usize],
) -> Vec<Cell> {
    let preset = matrix.cells();
    if workloads.is_empty() && page_sizes.is_empty() && threads.is_empty() {
        return preset;
    }
    /// `given`, or the preset's distinct values in their first order.
    fn or_preset<T: Copy + PartialEq>(given: &[T], preset: impl Iterator<Item = T>) -> Vec<T> {
        if !given.is_empty() {
            return given.to_vec();
        }
        let mut values = Vec::new();
        for v in preset {
            if !values.contains(&v) {
                values.push(v);
            }
        }
        values
    }
    product(
        &or_preset(workloads, preset.iter().map(|c| c.workload)),
        &or_preset(page_sizes, preset.iter().map(|c| c.page_size)),
        &or_preset(threads, preset.iter().map(|c| c.threads)),
    )
}

/// Every combination, workload-major.
pub fn product(workloads: &[Workload], page_sizes: &[usize], threads: &[usize]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &workload in workloads {
        for &page_size in page_sizes {
            for &threads in threads {
                cells.push(Cell {
                    workload,
                    page_size,
                    threads,
                });
            }
        }
    }
    cells
}

/// The options `untorn bench` and `untorn pgbench` share: where the results go, and the modules
/// to load.
#[derive(clap::Args)]
pub struct Output {
    /// Write the report directory (results.json, summary.md, table.txt, SVG plots) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print JSON (what results.json holds) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where the built modules are (default: $UNTORN_MODULES, set by vm-run).
    #[arg(long, env = "UNTORN_MODULES")]
    pub modules: PathBuf,
}

/// What to run and how: the command line of `untorn bench`, and the cells it makes.
#[derive(clap::Args)]
pub struct Options {
    /// scsi_debug, tornblk (made by the benchmark), or a /dev/ path (e.g. an NVMe disk).
    #[arg(long, default_value = "scsi_debug")]
    pub device: DeviceChoice,
    /// What untorn is mounted on: a lower filesystem (xfs, ext4), or the device itself (raw).
    #[arg(long = "lower", value_delimiter = ',', default_value = "xfs")]
    pub lowers: Vec<Lower>,
    /// A preset matrix of cells (workload, page size, threads).
    #[arg(long, value_enum, default_value = "default")]
    pub matrix: Matrix,
    /// Workloads instead of the preset's (with --page-size and --threads: their product).
    #[arg(long = "workload", value_delimiter = ',', value_enum)]
    pub workloads: Vec<Workload>,
    /// Page sizes instead of the preset's, e.g. 8KiB,16KiB.
    #[arg(long = "page-size", value_delimiter = ',', value_parser = parse_page_size)]
    pub page_sizes: Vec<usize>,
    /// Thread counts instead of the preset's.
    #[arg(long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Strategies to compare (default: all).
    #[arg(long = "strategy", value_delimiter = ',', value_enum)]
    pub strategies: Vec<Strategy>,
    /// Timed runs per strategy and cell (the report gives their medians).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Length of a timed run, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = crate::exercise::parse_duration)]
    pub run_time: Duration,
    /// Length of the warm-up run before a strategy's timed runs in a cell.
    #[arg(long, default_value = "500ms", value_parser = crate::exercise::parse_duration)]
    pub warmup: Duration,
    /// Size of each data file.
    #[arg(long, default_value = "96MiB", value_parser = crate::exercise::parse_size)]
    pub file_size: u64,
    /// Pages per doublewrite batch (InnoDB's innodb_doublewrite_pages).
    #[arg(long, default_value_t = 8)]
    pub doublewrite_batch: usize,
    /// Pages per checkpoint.
    #[arg(long, default_value_t = 64)]
    pub checkpoint_pages: usize,
    /// Share of reads in the mixed workload, in percent.
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub read_percent: u32,
    /// Seed of the page offsets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub output: Output,
    /// The cells to run (from the matrix and the options above; see [`Options::prepare`]).
    #[arg(skip)]
    pub cells: Vec<Cell>,
    /// `--workload`, `--page-size` or `--threads` replaced the preset's cells.
    #[arg(skip)]
    pub custom: bool,
}

impl Options {
    /// Checks the options and makes the cells; no strategy named means all.
    pub fn prepare(&mut self) -> Result<()> {
        self.custom =
            !self.workloads.is_empty() || !self.page_sizes.is_empty() || !self.threads.is_empty();
        self.cells = cells(
            self.matrix,
            &self.workloads,
            &self.page_sizes,
            &self.threads,
        );
        if self.cells.iter().any(|c| c.threads == 0) {
            bail!("--threads must be at least 1");
        }
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if self.doublewrite_batch == 0 || self.checkpoint_pages == 0 {
            bail!("--doublewrite-batch and --checkpoint-pages must be at least 1");
        }
        if self.strategies.is_empty() {
            self.strategies = Strategy::ALL.to_vec();
        }
        Ok(())
    }
}

/// A page size such as `16KiB`: a power of two from 512 bytes to 1 MiB.
fn parse_page_size(s: &str) -> std::result::Result<usize, String> {
    let bytes = crate::exercise::parse_size(s)?;
    if !(512..=1 << 20).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!("{s}: a power of two from 512 B to 1 MiB"));
    }
    Ok(bytes as usize)
}

/// Everything the benchmark found, as `results.json` holds it.
#[derive(Serialize)]
pub struct Results {
    pub environment: Environment,
    pub settings: Settings,
    pub lowers: Vec<LowerInfo>,
    pub results: Vec<CellResult>,
    pub targets: Vec<report::TargetCheck>,
}

/// What makes results comparable: where they were measured.
#[derive(Serialize)]
pub struct Environment {
    pub tool_version: String,
    /// `git describe` of the repo (from the host, through vm-run).
    pub revision: Option<String>,
    pub kernel: String,
    /// `kvm` or `tcg` (from vm-run); under TCG every CPU instruction is emulated.
    pub accel: Option<String>,
    pub cpus: usize,
    pub memory_mib: u64,
    pub device: DeviceInfo,
}

#[derive(Serialize)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub kind: String,
    pub model: Option<String>,
    pub size_bytes: u64,
    pub logical_block_size: u64,
    /// `write back` (a volatile cache, so durability needs a flush or FUA) or `write through`.
    pub write_cache: Option<String>,
    pub atomic: DeviceLimits,
    /// The modelled latency of each command, if the device models one (scsi_debug `ndelay`
    /// or `delay`), in microseconds.
    pub modelled_latency_us: Option<f64>,
    /// Parameters of the device's driver that shape the results.
    pub parameters: Vec<(String, String)>,
}

#[derive(Serialize)]
pub struct Settings {
    pub matrix: Option<Matrix>,
    pub strategies: Vec<Strategy>,
    pub runs: usize,
    pub run_seconds: f64,
    pub warmup_seconds: f64,
    pub file_size_bytes: u64,
    pub doublewrite_batch: usize,
    pub checkpoint_pages: usize,
    pub read_percent: u32,
    pub seed: u64,
}

/// A lower filesystem as the benchmark set it up.
#[derive(Serialize)]
pub struct LowerInfo {
    pub fs: Lower,
    pub mkfs: String,
    /// statx atomic limits of the data file through untorn and on the lower.
    pub untorn_file: FileLimits,
    pub lower_file: FileLimits,
    /// Each data file's extents, after the runs (writes that took a copy-on-write path show
    /// as more extents, or unaligned ones).
    pub layouts: Vec<(String, Layout)>,
}

/// How a data file lies on the disk (from `filefrag -v`, FIEMAP).
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    pub extents: usize,
    /// Every extent starts at a file offset and a disk address that are multiples of 64 KiB,
    /// so that a naturally aligned write of up to 64 KiB can be one atomic device write.
    pub aligned_64k: bool,
}

impl Layout {
    pub fn of(path: &Path) -> Result<Self> {
        Self::parse(&guest::run("filefrag", &["-v", guest::path_str(path)?])?)
            .with_context(|| format!("cannot read the extents of {}", path.display()))
    }

    /// Parses `filefrag -v`: a `blocks of N bytes` header, then `i: logical..end:
    /// physical..end: length: ...` lines.
    fn parse(text: &str) -> Result<Self> {
        let block: u64 = text
            .split("blocks of ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("no block size in filefrag's output")?;
        let mut extents = 0;
        let mut aligned = true;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').map(str::trim).collect();
            if fields.len() < 4 || fields[0].parse::<u64>().is_err() {
                continue;
            }
            let start = |range: &str| -> Result<u64> {
                let first = range.split("..").next().unwrap_or_default().trim();
                first
                    .parse()
                    .with_context(|| format!("bad extent line {line:?}"))
            };
            let (logical, physical) = (start(fields[1])?, start(fields[2])?);
            extents += 1;
            aligned &= (logical * block) % ALIGNMENT == 0 && (physical * block) % ALIGNMENT == 0;
        }
        Ok(Self {
            extents,
            aligned_64k: aligned && extents > 0,
        })
    }
}

/// One strategy in one cell: the medians of its runs and how they compare.
#[derive(Serialize)]
pub struct CellResult {
    pub lower: Lower,
    pub strategy: Strategy,
    pub workload: Workload,
    pub page_size: usize,
    pub threads: usize,
    /// Why it did not run (e.g. the page size is beyond the atomic limits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The error that stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub median: Option<Figures>,
    pub spread: Option<Spread>,
    pub runs: Vec<Figures>,
    /// IOPS over direct-atomic's, fdatasync's and doublewrite's in the same cell; p99 write
    /// latency over direct-atomic's.
    pub iops_vs_direct_atomic: Option<f64>,
    pub p99_vs_direct_atomic: Option<f64>,
    pub iops_vs_fdatasync: Option<f64>,
    pub iops_vs_doublewrite: Option<f64>,
    /// Write latency CDF over all runs: `[quantile, microseconds]`.
    pub write_latency_cdf: Vec<[f64; 2]>,
}

impl CellResult {
    pub fn cell(&self) -> Cell {
        Cell {
            workload: self.workload,
            page_size: self.page_size,
            threads: self.threads,
        }
    }
}

/// XFS takes the device's atomic path only for a write that maps to one extent whose disk
/// address is aligned to the write's size; anything else takes its much slower copy-on-write
/// fallback (which also needs free space). So: a 64 KiB stripe unit, which aligns the disk
/// addresses of allocations (two allocation groups, or mkfs.xfs wants a 64 MiB log that a
/// 512 MiB disk cannot hold), and a 64 KiB extent size hint, which aligns file offsets.
pub const XFS_DATA: &str = "su=64k,sw=1,agcount=2";
pub const XFS_EXTSIZE: &str = "64k";
/// Makes the XFS of [`XFS_DATA`] on `disk`; files then need an extent size hint of
/// [`XFS_EXTSIZE`] (`xfs_io -c "extsize 64k"` on each, or on their directory before they are
/// made there).
pub fn mkfs_xfs_aligned(disk: &Path) -> Result<()> {
    guest::run(
        "mkfs.xfs",
        &["-f", "-q", "-d", XFS_DATA, guest::path_str(disk)?],
    )
    .map(drop)
}

/// The name of the one file of a raw-mode mount.
const RAW_FILE: &str = "data";
/// The device space raw mode keeps for doublewrite's areas, after the data regions.
const DOUBLEWRITE_AREA: u64 = 64 * MIB;
const MIB: u64 = 1 << 20;
/// The alignment [`Layout`] checks: the largest page size of the presets.
const ALIGNMENT: u64 = 64 * KIB as u64;

/// Runs the benchmark.
pub fn run(options: &Options) -> Result<Results> {
    let _untorn_module = check::load_untorn(&options.output.modules)?;
    let (disk, _device_owner) = open_device(options)?;
    let environment = environment(&disk, &options.device)?;
    // Skipped strategies count as done at once.
    let total =
        options.lowers.len() * options.cells.len() * options.strategies.len() * (options.runs + 1);
    let mut progress = Progress::new(!options.output.json, total as u64, "bench", "runs");
    let mut lowers = Vec::new();
    let mut results = Vec::new();
    for &lower in &options.lowers {
        let bench = Bench::new(lower, &disk, options)?;
        for (name, layout) in bench.layouts()? {
            if !layout.aligned_64k {
                eprintln!(
                    "bench: warning: {name} on {} is not 64 KiB aligned ({} extents): atomic \
                     writes may take a slow fallback",
                    lower.name(),
                    layout.extents
                );
            }
        }
        for cell in &options.cells {
            let mut cell_results = bench.run_cell(*cell, options, &mut progress)?;
            report::add_ratios(&mut cell_results);
            results.extend(cell_results);
        }
        lowers.push(bench.info()?);
    }
    progress.finish();
    let targets = report::check_targets(&results);
    Ok(Results {
        environment,
        settings: Settings {
            matrix: (!options.custom).then_some(options.matrix),
            strategies: options.strategies.clone(),
            runs: options.runs,
            run_seconds: options.run_time.as_secs_f64(),
            warmup_seconds: options.warmup.as_secs_f64(),
            file_size_bytes: options.file_size,
            doublewrite_batch: options.doublewrite_batch,
            checkpoint_pages: options.checkpoint_pages,
            read_percent: options.read_percent,
            seed: options.seed,
        },
        lowers,
        results,
        targets,
    })
}

/// The settings of the tornblk device the benchmark makes: no power cut happens, so only its
/// limits matter (those of a typical NVMe SSD with 64 KiB atomic writes).
const TORNBLK_BENCH: &[(&str, &str)] = &[
    ("size_mib", "512"),
    ("logical_block_size", "4096"),
    ("atomic_unit_min", "4096"),
    ("atomic_unit_max", "65536"),
    ("atomic_max", "65536"),
];

/// The device's path, and what keeps it in existence (for tornblk).
fn open_device(options: &Options) -> Result<(PathBuf, Option<Box<dyn std::any::Any>>)> {
    Ok(match &options.device {
        DeviceChoice::ScsiDebug => (guest::scsi_debug_disk()?, None),
        DeviceChoice::Path(path) => (path.clone(), None),
        DeviceChoice::Tornblk => {
            let env = check::Env::new(options.output.modules.clone(), false, false);
            let module = check::tornblk::load(&env)?;
            let dev = check::tornblk::TornDev::new("bench", TORNBLK_BENCH)?;
            let disk = dev.disk.clone();
            // Dropped in order: the device, then the module.
            (disk, Some(Box::new((dev, module))))
        }
    })
}

/// Where a strategy's data lives: a file, from an offset (0 but in raw mode, where the regions
/// of the device take the place of the files).
pub struct Place {
    pub path: PathBuf,
    pub offset: u64,
}

/// untorn on the device, over a fresh lower filesystem or in raw mode, and the data of each
/// [`DataFile`]: files in stacked mode; in raw mode untorn's one file for [`DataFile::Untorn`],
/// and regions of the device node beyond it for the others (and doublewrite's areas after).
struct Bench {
    lower: Lower,
    disk: PathBuf,
    disk_name: String,
    /// Each data region's size in raw mode (the file size rounded up to a MiB).
    region: u64,
    upper: Mounted,
    /// The lower filesystem and the directory untorn stacks over; `None` in raw mode.
    stacked: Option<(Mounted, PathBuf)>,
}

impl Bench {
    fn new(lower: Lower, disk: &Path, options: &Options) -> Result<Self> {
        let disk_name = disk_name(disk)?;
        let region = options.file_size.div_ceil(MIB) * MIB;
        let (upper, stacked) = match lower.fs_type() {
            Some(fs_type) => {
                match fs_type {
                    FsType::Xfs => mkfs_xfs_aligned(disk)?,
                    FsType::Ext4 => fs_type.mkfs_with_inodes(disk, None)?,
                }
                let lower_fs = Mounted::mount(fs_type.name(), guest::path_str(disk)?, "")?;
                let lower_dir = lower_fs.path().join("lower");
                fs::create_dir(&lower_dir)?;
                let upper = Mounted::mount("untorn", guest::path_str(&lower_dir)?, "")
                    .context("cannot mount untorn")?;
                (upper, Some((lower_fs, lower_dir)))
            }
            None => {
                let needed = DataFile::ALL.len() as u64 * region + DOUBLEWRITE_AREA;
                let size = device_size(disk)?;
                if size < needed {
                    bail!(
                        "raw mode needs {needed} bytes of {} (three data regions of {region} and \
                         the doublewrite areas), it has {size}: use a smaller --file-size",
                        disk.display()
                    );
                }
                let upper = Mounted::mount("untorn", guest::path_str(disk)?, "")
                    .context("cannot mount untorn on the device (raw mode)")?;
                (upper, None)
            }
        };
        let bench = Self {
            lower,
            disk: disk.to_path_buf(),
            disk_name,
            region,
            upper,
            stacked,
        };
        for data in DataFile::ALL {
            bench.make_data(data, options.file_size)?;
        }
        Ok(bench)
    }

    /// Where `data` lives: through untorn, or on the lower (a file, or the device node).
    fn place(&self, data: DataFile) -> Place {
        match (&self.stacked, data) {
            (Some(_), DataFile::Untorn) => Place {
                path: self.upper.path().join(data.name()),
                offset: 0,
            },
            (Some((_, lower_dir)), _) => Place {
                path: lower_dir.join(data.name()),
                offset: 0,
            },
            (None, DataFile::Untorn) => Place {
                path: self.upper.path().join(RAW_FILE),
                offset: 0,
            },
            (None, _) => Place {
                path: self.disk.clone(),
                offset: self.region * data.index() as u64,
            },
        }
    }

    /// Where doublewrite's areas go: files in the lower directory, or the device after the
    /// data regions.
    fn doublewrite_area(&self) -> DoublewriteArea<'_> {
        match &self.stacked {
            Some((_, lower_dir)) => DoublewriteArea::Dir(lower_dir),
            None => DoublewriteArea::Device {
                path: &self.disk,
                offset: self.region * DataFile::ALL.len() as u64,
                size: DOUBLEWRITE_AREA,
            },
        }
    }

    /// Writes all of `data`'s file or region, so that every overwrite finds allocated, written
    /// blocks; then leaves the page caches as its strategies find them in use: the lower's
    /// empty (except for the buffered data), untorn's warm.
    fn make_data(&self, data: DataFile, size: u64) -> Result<()> {
        let Place { path, offset: base } = self.place(data);
        let stacked = self.stacked.is_some();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(stacked)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let lower = match (&self.stacked, data) {
            (Some((_, lower_dir)), _) => lower_dir.join(data.name()),
            (None, DataFile::Untorn) => self.disk.clone(),
            (None, _) => path.clone(),
        };
        if self.lower == Lower::Xfs {
            guest::run(
                "xfs_io",
                &[
                    "-c",
                    &format!("extsize {XFS_EXTSIZE}"),
                    guest::path_str(&lower)?,
                ],
            )?;
        }
        let chunk = vec![0x5Au8; 1 << 20];
        let mut offset = 0;
        while offset < size {
            let len = chunk.len().min((size - offset) as usize);
            file.write_all_at(&chunk[..len], base + offset)
                .with_context(|| format!("writing {}", path.display()))?;
            offset += len as u64;
        }
        file.sync_all()?;
        if data == DataFile::Untorn {
            let mut buf = vec![0u8; 1 << 20];
            let mut offset = 0;
            while offset < size {
                let n = file.read_at(&mut buf, base + offset)?;
                if n == 0 {
                    break;
                }
                offset += n as u64;
            }
        }
        // Last: filling untorn's cache may read through the lower's.
        if data != DataFile::Buffered {
            let lower_file = File::open(&lower)?;
            sys::fadvise_dontneed(&lower_file)
                .with_context(|| format!("dropping the page cache of {}", lower.display()))?;
        }
        Ok(())
    }

    fn info(&self) -> Result<LowerInfo> {
        Ok(LowerInfo {
            fs: self.lower,
            mkfs: match self.lower {
                Lower::Xfs => {
                    format!("mkfs.xfs -d {XFS_DATA}; data files with extsize {XFS_EXTSIZE}")
                }
                Lower::Ext4 => "mkfs.ext4 -O bigalloc -b 4096 -C 65536".to_string(),
                Lower::Raw => format!(
                    "none: untorn on the device (raw mode); the other strategies on regions of \
                     {} bytes of the device node",
                    self.region
                ),
            },
            untorn_file: FileLimits::of_file(&self.place(DataFile::Untorn).path)?,
            lower_file: FileLimits::of_file(&self.place(DataFile::Direct).path)?,
            layouts: self.layouts()?,
        })
    }

    /// The extents of each data file (on the lower); none in raw mode.
    fn layouts(&self) -> Result<Vec<(String, Layout)>> {
        let Some((_, lower_dir)) = &self.stacked else {
            return Ok(Vec::new());
        };
        DataFile::ALL
            .iter()
            .map(|d| Ok((d.name().to_string(), Layout::of(&lower_dir.join(d.name()))?)))
            .collect()
    }

    fn data_path(&self, strategy: Strategy) -> PathBuf {
        self.place(strategy.data_file()).path
    }

    /// Why `strategy` cannot run `cell` here, if it cannot.
    fn skip_reason(&self, strategy: Strategy, cell: Cell) -> Result<Option<String>> {
        if !strategy.needs_atomic() {
            return Ok(None);
        }
        let limits = FileLimits::of_file(&self.data_path(strategy))?;
        let page = cell.page_size as u32;
        Ok(if !limits.reported || limits.unit_max == 0 {
            Some("the file has no atomic write support (statx)".to_string())
        } else if page < limits.unit_min || page > limits.unit_max {
            Some(format!(
                "{} is outside the file's atomic write unit {}..{}",
                size_name(cell.page_size),
                size_name(limits.unit_min as usize),
                size_name(limits.unit_max as usize),
            ))
        } else {
            None
        })
    }

    /// Runs every strategy on `cell`: a warm-up each, then the runs in turns.
    fn run_cell(
        &self,
        cell: Cell,
        options: &Options,
        progress: &mut Progress,
    ) -> Result<Vec<CellResult>> {
        let file_pages = options.file_size / cell.page_size as u64;
        if file_pages < cell.threads as u64 {
            bail!(
                "the data file ({} bytes) is too small for {} threads of {} pages",
                options.file_size,
                cell.threads,
                size_name(cell.page_size)
            );
        }
        let mut rows = Vec::new();
        for &strategy in &options.strategies {
            rows.push(Tally {
                strategy,
                skipped: self.skip_reason(strategy, cell)?,
                error: None,
                runs: Vec::new(),
                samples: Samples::default(),
            });
        }
        for round in 0..=options.runs {
            // Round 0 is the warm-up.
            for row in rows.iter_mut() {
                if row.skipped.is_some() || row.error.is_some() {
                    step(progress, self.lower, row.strategy, cell, round, None);
                    continue;
                }
                let duration = if round == 0 {
                    options.warmup
                } else {
                    options.run_time
                };
                let seed = options.seed ^ (round as u64) << 32;
                match self.run_once(row.strategy, cell, options, duration, seed) {
                    Ok((figures, mut run_samples)) => {
                        if round > 0 {
                            row.runs.push(figures);
                            row.samples.append(&mut run_samples);
                        }
                    }
                    Err(e) => row.error = Some(format!("{e:#}")),
                }
                step(
                    progress,
                    self.lower,
                    row.strategy,
                    cell,
                    round,
                    row.runs.last(),
                );
            }
        }
        let mut results = Vec::new();
        for Tally {
            strategy,
            skipped,
            error,
            runs,
            samples,
        } in rows
        {
            let measured = !runs.is_empty() && error.is_none();
            results.push(CellResult {
                lower: self.lower,
                strategy,
                workload: cell.workload,
                page_size: cell.page_size,
                threads: cell.threads,
                skipped,
                error,
                median: measured.then(|| stats::median_figures(&runs)),
                spread: measured.then(|| stats::spread(&runs)),
                runs,
                iops_vs_direct_atomic: None,
                p99_vs_direct_atomic: None,
                iops_vs_fdatasync: None,
                iops_vs_doublewrite: None,
                write_latency_cdf: samples.into_sorted().cdf(101),
            });
        }
        Ok(results)
    }

    /// One timed run of `strategy` on `cell`.
    fn run_once(
        &self,
        strategy: Strategy,
        cell: Cell,
        options: &Options,
        duration: Duration,
        seed: u64,
    ) -> Result<(Figures, Samples)> {
        let Place { path: data, offset } = self.place(strategy.data_file());
        let _mode = if strategy == Strategy::UntornMode {
            Some(ModeGuard::writethrough(&data)?)
        } else {
            None
        };
        let job = Job {
            strategy,
            workload: cell.workload,
            data: &data,
            data_offset: offset,
            doublewrite_area: self.doublewrite_area(),
            page: cell.page_size,
            file_pages: options.file_size / cell.page_size as u64,
            threads: cell.threads,
            read_percent: options.read_percent,
            doublewrite_batch: options.doublewrite_batch,
            checkpoint_pages: options.checkpoint_pages,
        };
        let barrier = Barrier::new(cell.threads + 1);
        let (before, elapsed, outcomes) = std::thread::scope(|scope| -> Result<_> {
            let handles: Vec<_> = (0..cell.threads)
                .map(|thread| {
                    let job = &job;
                    let barrier = &barrier;
                    scope.spawn(move || -> std::io::Result<ThreadResult> {
                        let worker = Worker::new(job, thread, seed);
                        // Every thread reaches the barrier, even one that could not open its
                        // files, or the others would wait forever.
                        barrier.wait();
                        worker?.run(duration)
                    })
                })
                .collect();
            let before = Counters::read(&self.disk_name)?;
            barrier.wait();
            let start = Instant::now();
            let outcomes: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
            Ok((before, start.elapsed(), outcomes))
        })?;
        let mut total = ThreadResult::default();
        for outcome in outcomes {
            let mut result = match outcome {
                Ok(result) => {
                    result.with_context(|| format!("{} {}", strategy.name(), data.display()))?
                }
                Err(_) => bail!("a benchmark thread panicked"),
            };
            total.writes += result.writes;
            total.reads += result.reads;
            total.write_latency.append(&mut result.write_latency);
            total.read_latency.append(&mut result.read_latency);
        }
        // What the run left dirty is part of its device traffic (not of its time).
        self.sync()?;
        let delta = Counters::read(&self.disk_name)?.since(&before);
        Ok(figures(cell, elapsed, total, delta))
    }

    /// Writes back everything dirty: untorn's cache to the lower (or the device), the lower's
    /// (or the device node's) to the device.
    fn sync(&self) -> Result<()> {
        let upper = self.upper.path();
        let file = File::open(upper).with_context(|| format!("cannot open {}", upper.display()))?;
        sys::syncfs(&file).with_context(|| format!("syncfs {}", upper.display()))?;
        match &self.stacked {
            Some((lower, _)) => {
                let dir = lower.path();
                let file =
                    File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
                sys::syncfs(&file).with_context(|| format!("syncfs {}", dir.display()))?;
            }
            None => {
                let device = File::open(&self.disk)?;
                device
                    .sync_all()
                    .with_context(|| format!("fsync {}", self.disk.display()))?;
            }
        }
        Ok(())
    }
}

/// A strategy's runs in a cell so far.
struct Tally {
    strategy: Strategy,
    skipped: Option<String>,
    error: Option<String>,
    runs: Vec<Figures>,
    /// Write latencies of all timed runs.
    samples: Samples,
}

/// Puts a file in writethrough mode for a run, and back to off after it.
struct ModeGuard(File);

impl ModeGuard {
    fn writethrough(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        set_mode(&file, FileMode::Writethrough)?;
        Ok(Self(file))
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        if let Err(e) = set_mode(&self.0, FileMode::Off) {
            eprintln!("bench: warning: cannot turn writethrough mode off: {e:#}");
        }
    }
}

fn set_mode(file: &File, mode: FileMode) -> Result<()> {
    let mode = untorn_logic::uapi::UntornMode {
        mode: mode.as_u32(),
        ..Default::default()
    };
    sys::set_mode(file, &mode).context("UNTORN_IOC_SET_MODE")
}

/// A run's figures from its counts, samples and counters.
fn figures(
    cell: Cell,
    elapsed: Duration,
    total: ThreadResult,
    delta: stats::Delta,
) -> (Figures, Samples) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let ops = total.writes + total.reads;
    let per_op = |seconds: f64| {
        if ops == 0 {
            0.0
        } else {
            seconds * 1e6 / ops as f64
        }
    };
    let written = total.writes * cell.page_size as u64;
    let write_samples = total.write_latency.len() as u64;
    let writes = total.write_latency.into_sorted();
    let reads = total.read_latency.into_sorted();
    let figures = Figures {
        iops: ops as f64 / seconds,
        mb_per_s: (ops * cell.page_size as u64) as f64 / seconds / 1e6,
        write_p50_us: writes.quantile_us(0.5).unwrap_or(0.0),
        write_p99_us: writes.quantile_us(0.99).unwrap_or(0.0),
        write_p999_us: writes.quantile_us(0.999).unwrap_or(0.0),
        read_p50_us: reads.quantile_us(0.5),
        read_p99_us: reads.quantile_us(0.99),
        cpu_us_per_op: per_op(delta.system_busy),
        process_cpu_us_per_op: per_op(delta.process),
        device_bytes_per_byte: if written == 0 {
            0.0
        } else {
            delta.device_written as f64 / written as f64
        },
        writes: total.writes,
        reads: total.reads,
        write_samples,
        seconds,
    };
    (figures, writes.into_samples())
}

/// The size of the block device at `disk`, in bytes.
fn device_size(disk: &Path) -> Result<u64> {
    use std::io::Seek;
    let mut file = File::open(disk).with_context(|| format!("cannot open {}", disk.display()))?;
    Ok(file.seek(std::io::SeekFrom::End(0))?)
}

/// The disk's name under `/sys/block` (`/dev/sda`: `sda`).
pub fn disk_name(disk: &Path) -> Result<String> {
    disk.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("not a device path: {}", disk.display()))
}

/// `4 KiB`, `1 MiB`.
pub fn size_name(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// Where the benchmark runs: the kernel, the guest and the device `disk` (chosen as `choice`).
pub fn environment(disk: &Path, choice: &DeviceChoice) -> Result<Environment> {
    let name = disk_name(disk)?;
    let sys_block = Path::new("/sys/block").join(&name);
    let read = |rel: &str| -> Option<String> {
        fs::read_to_string(sys_block.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let number = |rel: &str| read(rel).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let kind = match choice {
        DeviceChoice::ScsiDebug => "scsi_debug",
        DeviceChoice::Tornblk => "tornblk",
        DeviceChoice::Path(_) if name.starts_with("nvme") => "nvme",
        DeviceChoice::Path(_) => "block device",
    };
    let mut parameters = Vec::new();
    let mut modelled_latency_us = None;
    if *choice == DeviceChoice::ScsiDebug {
        let params = Path::new("/sys/module/scsi_debug/parameters");
        for p in [
            "ndelay",
            "delay",
            "atomic_wr",
            "atomic_wr_max_length",
            "atomic_wr_gran",
            "atomic_wr_align",
            "dev_size_mb",
        ] {
            if let Ok(v) = fs::read_to_string(params.join(p)) {
                parameters.push((p.to_string(), v.trim().to_string()));
            }
        }
        let param = |p: &str| {
            parameters
                .iter()
                .find(|(k, _)| k == p)
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // scsi_debug: ndelay (ns) wins over delay (jiffies) when set.
        let (ndelay, delay) = (param("ndelay"), param("delay"));
        modelled_latency_us = Some(if ndelay > 0.0 {
            ndelay / 1000.0
        } else {
            // SAFETY: sysconf has no memory-safety preconditions. (Jiffies: the kernel's HZ;
            // the clock tick seen by userspace is the best estimate available here.)
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            delay * 1e6 / hz
        });
    } else if *choice == DeviceChoice::Tornblk {
        for (k, v) in TORNBLK_BENCH {
            parameters.push((k.to_string(), v.to_string()));
        }
    }
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Ok(Environment {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        revision: std::env::var("UNTORN_REVISION")
            .ok()
            .filter(|s| !s.is_empty()),
        kernel,
        accel: std::env::var("UNTORN_ACCEL_USED")
            .ok()
            .filter(|s| !s.is_empty()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib: memory_kib / 1024,
        device: DeviceInfo {
            path: disk.to_path_buf(),
            kind: kind.to_string(),
            model: read("device/model"),
            size_bytes: number("size") * 512,
            logical_block_size: number("queue/logical_block_size"),
            write_cache: read("queue/write_cache"),
            atomic: DeviceLimits::of_disk(disk)?,
            modelled_latency_us,
            parameters,
        },
    })
}

/// A step per run (warm-up included; a skipped strategy's runs count at once).
fn step(
    progress: &mut Progress,
    fs: Lower,
    strategy: Strategy,
    cell: Cell,
    round: usize,
    last: Option<&Figures>,
) {
    progress.step(|| {
        format!(
            "{} {} {} {}t {} {}: {}",
            fs.name(),
            cell.workload.name(),
            size_name(cell.page_size),
            cell.threads,
            strategy.name(),
            if round == 0 {
                "warm-up".to_string()
            } else {
                format!("run {round}")
            },
            match last {
                Some(f) if round > 0 => format!("{:.0} IOPS", f.iops),
                _ => "-".to_string(),
            }
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_checks_offsets_and_disk_addresses() {
        let aligned = "File size of f is 8388608 (2048 blocks of 4096 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:        0..    1023:      32768..     33791:   1024:
   1:     1024..    2047:      40960..     41983:   1024:      33792: last,eof
f: 2 extents found
";
        let l = Layout::parse(aligned).unwrap();
        assert_eq!((l.extents, l.aligned_64k), (2, true));
        // A disk address 4 KiB past a 64 KiB boundary.
        let l = Layout::parse(&aligned.replace("40960..     41983", "40961..     41984")).unwrap();
        assert_eq!((l.extents, l.aligned_64k), (2, false));
        assert!(Layout::parse("no header").is_err());
    }

    #[test]
    fn custom_cells_take_the_rest_from_the_preset() {
        let custom = cells(Matrix::Default, &[Workload::Mixed], &[8192], &[]);
        let threads: Vec<usize> = custom.iter().map(|c| c.threads).collect();
        assert_eq!(threads, vec![1, 4, 16]);
        assert!(custom
            .iter()
            .all(|c| c.workload == Workload::Mixed && c.page_size == 8192));
        assert_eq!(cells(Matrix::Quick, &[], &[], &[]), Matrix::Quick.cells());
    }
}
