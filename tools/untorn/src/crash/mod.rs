// SPDX-License-Identifier: GPL-2.0

//! `untorn crash`: the power-cut campaign (`Documentation/dev-tools/crash.rst`).
//!
//! A lower filesystem on a tornblk device, untorn over a directory of it; each iteration, writers
//! write versioned, checksummed units (`untorn_logic::unit`) and do `fsync`s, extensions,
//! creations and renames, recording what was acknowledged and what was made durable, until a
//! cut armed at a random write takes the power away. Then: unmount, power on, mount again (the
//! lower replays its log), and check every unit against the record ([`model`]); every few
//! iterations also `xfs_repair -n` / `e2fsck -fn`. The same filesystem goes on to the next
//! iteration; `mkfs` only every so often.
//!
//! In raw mode ([`Lower::Raw`]) there is no filesystem: untorn is mounted on the tornblk device
//! itself, and each writer owns fixed regions of its one file `data` (one unit size each), which
//! it writes with untorn writes (`RWF_ATOMIC`, or writethrough: the mode ioctl or the
//! `writethrough=all` mount option, chosen per mount), `RWF_DSYNC` writes and `fsync`s. The
//! device keeps its data from one iteration to the next; a fresh start zeroes the regions.
//!
//! Three modes: `untorn` (`RWF_ATOMIC` buffered writes and writethrough files), and two negative
//! controls that must show torn units: `buffered` (plain buffered writes and `fsync`) and
//! `no-atomic` (untorn's writes, with tornblk's `atomic_as_plain` treating `REQ_ATOMIC` as
//! plain).

pub mod model;
pub mod postgres;

use crate::{
    check::{self, tornblk::TornDev},
    guest::{self, LoadedModule, Lower},
    progress::Progress,
    sys,
};
use anyhow::{bail, ensure, Context, Result};
use model::{FileRecord, Observed, Tally, WriteWay};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, IoSlice, Seek},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};
use untorn_logic::{
    mount_options::FileMode,
    rng::SplitMix64,
    uapi::UntornMode,
    unit::{self, UnitState, UnitTag},
};

/// What writes the campaign makes, and so what it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// untorn writes: `RWF_ATOMIC` on some files, writethrough mode (ioctl) on the others.
    Untorn,
    /// Negative control: plain buffered writes and `fsync`, no writethrough.
    Buffered,
    /// Negative control: untorn writes, with tornblk treating `REQ_ATOMIC` as plain.
    NoAtomic,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Untorn => "untorn",
            Mode::Buffered => "buffered",
            Mode::NoAtomic => "no-atomic",
        }
    }

    fn is_control(self) -> bool {
        self != Mode::Untorn
    }
}

/// The campaign's settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub lowers: Vec<Lower>,
    pub modes: Vec<Mode>,
    /// Cuts in untorn mode, over all targets (split evenly; raw takes `raw_cuts` instead if set).
    pub cuts: u64,
    /// Cuts in untorn mode in raw mode, outside the split of `cuts`.
    pub raw_cuts: Option<u64>,
    /// The most cuts a control runs on each lower; it stops at the first cut that shows torn
    /// units.
    pub control_cuts: u64,
    pub seed: u64,
    /// A cut comes after 1 to this many device writes.
    pub max_writes: u32,
    /// A fresh filesystem (raw mode: fresh regions) every this many iterations.
    pub mkfs_every: u64,
    /// `xfs_repair -n` / `e2fsck -fn` every this many iterations (and after the last).
    pub fsck_every: u64,
    pub writers: usize,
    /// Files per writer, at most (raw mode: regions per writer).
    pub files: usize,
    /// tornblk's `reorder`.
    pub reorder: bool,
    pub modules: PathBuf,
    pub progress: bool,
}

/// The tornblk device's settings: 4 KiB blocks, atomic writes of 4 KiB to 64 KiB, and a policy
/// that tears most unflushed plain writes.
const DEVICE: &[(&str, &str)] = &[
    ("size_mib", "512"),
    ("logical_block_size", "4096"),
    ("atomic_unit_min", "4096"),
    ("atomic_unit_max", "65536"),
    ("atomic_max", "65536"),
    ("cache_mib", "16"),
    ("keep", "1"),
    ("lose", "1"),
    ("tear", "6"),
];
/// The configfs name of the device (`/dev/tornblkcrash`).
const DEVICE_NAME: &str = "crash";
/// Unit sizes, chosen per file.
const UNIT_SIZES: [usize; 5] = [4096, 8192, 16384, 32768, 65536];
/// The largest file, in units.
const MAX_UNITS: u64 = 48;
/// Raw mode: the units of a region, and the space of each region on the device (room for
/// [`RAW_UNITS`] of the largest size, so that every region starts aligned to every unit size).
const RAW_UNITS: u64 = 16;
const RAW_SLOT: u64 = RAW_UNITS * UNIT_SIZES[UNIT_SIZES.len() - 1] as u64;
/// The one file of a raw mount.
const DATA: &str = "data";
/// Operations a writer makes without seeing a cut before the campaign cuts by command.
const MAX_OPS: u64 = 5000;

/// The results of one target and mode.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub lower: Lower,
    pub mode: Mode,
    pub iterations: u64,
    pub cuts: u64,
    /// Cuts made by command because no armed cut came.
    pub forced_cuts: u64,
    /// Fresh filesystems made (raw mode: fresh starts, the regions zeroed).
    pub mkfs: u64,
    pub fsck: u64,
    pub fsck_failed: u64,
    #[serde(flatten)]
    pub tally: Tally,
    /// Writes acknowledged to the writers.
    pub writes_acked: u64,
    /// `fsync`s completed.
    pub fsyncs: u64,
    /// The device's own count of writes it tore at the cuts (any writes, metadata included).
    pub device_writes_torn: u64,
    pub device_writes_lost: u64,
    pub seconds: f64,
    /// Where the time went: mkfs, work (until the cut), unmount (and power on), mount, check
    /// (read back, repair, sync), fsck; seconds.
    pub phases: BTreeMap<&'static str, f64>,
    /// The first problems, for the report.
    pub notes: Vec<String>,
    /// Directory `fsync`s that returned success only after the power had gone off: not taken
    /// as making names durable ([`model::FileRecord::name_sync_unproven`]).
    pub late_dir_syncs: u64,
    /// Files whose newest name such an `fsync` covered, found after the cut without it.
    pub late_names_missing: u64,
    /// Raw mode only: how the iterations wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawStats>,
}

/// How raw mode's iterations wrote `data`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RawStats {
    /// Iterations by how the mount wrote `data` through: not at all (mode off: `RWF_ATOMIC`
    /// only), marked by the mode ioctl, or `writethrough=all`.
    pub through_off: u64,
    pub through_marked: u64,
    pub through_all: u64,
    /// Writes acknowledged that had `RWF_DSYNC` (durable when acknowledged).
    pub dsync_writes: u64,
}

impl Row {
    fn new(lower: Lower, mode: Mode) -> Self {
        Self {
            lower,
            mode,
            iterations: 0,
            cuts: 0,
            forced_cuts: 0,
            mkfs: 0,
            fsck: 0,
            fsck_failed: 0,
            tally: Tally::default(),
            writes_acked: 0,
            fsyncs: 0,
            device_writes_torn: 0,
            device_writes_lost: 0,
            late_dir_syncs: 0,
            late_names_missing: 0,
            seconds: 0.0,
            phases: BTreeMap::new(),
            notes: Vec::new(),
            raw: (lower == Lower::Raw).then(RawStats::default),
        }
    }

    /// Adds the time since `*since` to `phase`, and restarts the clock.
    fn time(&mut self, phase: &'static str, since: &mut Instant) {
        *self.phases.entry(phase).or_default() += since.elapsed().as_secs_f64();
        *since = Instant::now();
    }

    fn note(&mut self, text: String) {
        if self.notes.len() < 20 {
            self.notes.push(text);
        }
    }

    /// What the row shows that must not happen in any mode: lost data, corruption, an
    /// inconsistent lower.
    fn broken(&self) -> bool {
        self.tally.lost > 0
            || self.tally.files_lost > 0
            || self.tally.corrupt > 0
            || self.tally.names_bad > 0
            || self.fsck_failed > 0
    }

    /// Whether the row passes: untorn shows no tear; a control shows some.
    pub fn passed(&self) -> bool {
        !self.broken()
            && if self.mode.is_control() {
                self.tally.torn > 0
            } else {
                self.tally.torn == 0
            }
    }
}

/// The whole campaign's results.
#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub rows: Vec<Row>,
    pub cuts: u64,
    pub torn: u64,
    pub lost: u64,
    pub buffered_torn: Option<u64>,
    pub no_atomic_torn: Option<u64>,
    pub passed: bool,
}

impl Report {
    fn new(seed: u64, rows: Vec<Row>) -> Self {
        let untorn = rows.iter().filter(|r| r.mode == Mode::Untorn);
        let cuts = untorn.clone().map(|r| r.cuts).sum();
        let torn = untorn.clone().map(|r| r.tally.torn).sum();
        let lost = untorn
            .map(|r| r.tally.lost + r.tally.files_lost)
            .sum::<u64>();
        let control = |mode| {
            let rows: Vec<&Row> = rows.iter().filter(|r| r.mode == mode).collect();
            (!rows.is_empty()).then(|| rows.iter().map(|r| r.tally.torn).sum())
        };
        let passed = !rows.is_empty() && rows.iter().all(Row::passed);
        Self {
            seed,
            cuts,
            torn,
            lost,
            buffered_torn: control(Mode::Buffered),
            no_atomic_torn: control(Mode::NoAtomic),
            passed,
            rows,
        }
    }

    /// The table and the last line.
    pub fn text(&self) -> String {
        let mut rows = vec![[
            "lower",
            "mode",
            "cuts",
            "forced",
            "mkfs",
            "fsck",
            "units",
            "whole",
            "initial",
            "torn",
            "corrupt",
            "lost",
            "files lost",
            "acked",
            "fsyncs",
            "dev torn",
            "s/cut",
            "verdict",
        ]
        .map(String::from)
        .to_vec()];
        for r in &self.rows {
            let t = &r.tally;
            rows.push(vec![
                r.lower.name().to_string(),
                r.mode.name().to_string(),
                r.cuts.to_string(),
                r.forced_cuts.to_string(),
                r.mkfs.to_string(),
                if r.lower == Lower::Raw {
                    "-".to_string()
                } else {
                    format!("{}/{}", r.fsck - r.fsck_failed, r.fsck)
                },
                t.units.to_string(),
                t.whole.to_string(),
                t.initial.to_string(),
                t.torn.to_string(),
                t.corrupt.to_string(),
                t.lost.to_string(),
                t.files_lost.to_string(),
                r.writes_acked.to_string(),
                r.fsyncs.to_string(),
                r.device_writes_torn.to_string(),
                format!("{:.1}", r.seconds / r.cuts.max(1) as f64),
                verdict(r).to_string(),
            ]);
        }
        let mut out = crate::table::render(&rows);
        for r in &self.rows {
            let phases: Vec<String> = r
                .phases
                .iter()
                .map(|(k, v)| format!("{k} {:.1}", v / r.cuts.max(1) as f64))
                .collect();
            out += &format!(
                "{} {}: seconds per cut: {}\n",
                r.lower.name(),
                r.mode.name(),
                phases.join(", ")
            );
        }
        for r in self.rows.iter().filter(|r| r.late_dir_syncs > 0) {
            out += &format!(
                "{} {}: {} directory fsyncs succeeded only after the cut (not counted); \
                 {} newest names they covered were missing\n",
                r.lower.name(),
                r.mode.name(),
                r.late_dir_syncs,
                r.late_names_missing
            );
        }
        for r in &self.rows {
            if let Some(raw) = &r.raw {
                out += &format!(
                    "{} {}: data written through in {} iterations by the mode ioctl, {} by \
                     writethrough=all, not in {}; RWF_DSYNC writes {}\n",
                    r.lower.name(),
                    r.mode.name(),
                    raw.through_marked,
                    raw.through_all,
                    raw.through_off,
                    raw.dsync_writes
                );
            }
        }
        for r in &self.rows {
            for note in &r.notes {
                out += &format!("{} {}: {note}\n", r.lower.name(), r.mode.name());
            }
        }
        out += &format!("seed {}\n", self.seed);
        out += &self.last_line();
        out.push('\n');
        out
    }

    /// `crash: N cuts, T torn, L lost; controls: buffered T1 torn, no-atomic T2 torn`.
    pub fn last_line(&self) -> String {
        let control =
            |t: Option<u64>| t.map_or_else(|| "not run".to_string(), |t| format!("{t} torn"));
        format!(
            "crash: {} cuts, {} torn, {} lost; controls: buffered {}, no-atomic {}",
            self.cuts,
            self.torn,
            self.lost,
            control(self.buffered_torn),
            control(self.no_atomic_torn)
        )
    }
}

fn verdict(r: &Row) -> &'static str {
    match (r.passed(), r.mode.is_control()) {
        (true, false) => "ok",
        (true, true) => "ok (tears seen)",
        (false, true) if !r.broken() => "FAIL: control saw no tear",
        (false, _) => "FAIL",
    }
}

/// Runs the campaign; `Err` only when it cannot run at all (a failed set-up).
pub fn run(options: &Options) -> Result<Report> {
    ensure!(!options.lowers.is_empty(), "no target: --lower names none");
    ensure!(!options.modes.is_empty(), "no mode");
    ensure!(
        options.writers > 0 && options.files > 0,
        "no writers or files"
    );
    let modules = check::Env::new(options.modules.clone(), false, false).modules()?;
    let find = |name: &str| {
        modules
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("no {name}.ko under {}", options.modules.display()))
    };
    let _tornblk = LoadedModule::load(check::tornblk::TORNBLK, &find(check::tornblk::TORNBLK)?)?;
    let _untorn = check::load_untorn(&options.modules)?;
    ensure!(
        Path::new(check::tornblk::CONFIGFS).is_dir(),
        "{} is missing (is configfs mounted?)",
        check::tornblk::CONFIGFS
    );

    let plan = plan(options);
    let total: u64 = plan.iter().map(|p| p.2).sum();
    let mut progress = Progress::new(options.progress, total, "crash", "cuts");
    let mut rows = Vec::new();
    for (i, &(lower, mode, cuts)) in plan.iter().enumerate() {
        let seed = untorn_logic::rng::hash(options.seed, i as u64, 0, 0xc7a5);
        let mut row = Row::new(lower, mode);
        let start = Instant::now();
        if let Err(e) = campaign(options, lower, mode, cuts, seed, &mut row, &mut progress) {
            row.note(format!("stopped: {e:#}"));
            // An aborted run passes nothing.
            row.fsck_failed += 1;
        }
        row.seconds = start.elapsed().as_secs_f64();
        progress.finish_row(&row);
        rows.push(row);
    }
    progress.finish();
    Ok(Report::new(options.seed, rows))
}

/// The rows to run: `(target, mode, cuts)`, in the order of `--lower` and `--mode`. untorn mode's
/// cuts are split evenly over the targets, but for raw mode when it has cuts of its own.
fn plan(options: &Options) -> Vec<(Lower, Mode, u64)> {
    let own = |t: Lower| t == Lower::Raw && options.raw_cuts.is_some();
    let shared = options.lowers.iter().filter(|&&t| !own(t)).count() as u64;
    let per_lower = options.cuts.div_ceil(shared.max(1));
    let mut left = options.cuts;
    let mut plan = Vec::new();
    for &lower in &options.lowers {
        for &mode in &options.modes {
            let cuts = if mode.is_control() {
                options.control_cuts
            } else if own(lower) {
                options.raw_cuts.unwrap_or_default()
            } else {
                let n = per_lower.min(left);
                left -= n;
                n
            };
            if cuts > 0 {
                plan.push((lower, mode, cuts));
            }
        }
    }
    plan
}

/// The campaign's progress: a step per cut, a line per finished row.
impl Progress {
    fn cut(&mut self, row: &Row) {
        self.step(|| {
            format!(
                "{} {}: {} cuts, {} torn, {} lost",
                row.lower.name(),
                row.mode.name(),
                row.cuts,
                row.tally.torn,
                row.tally.lost + row.tally.files_lost
            )
        });
    }

    fn finish_row(&mut self, row: &Row) {
        self.println(format!(
            "crash: {} {} done: {} cuts, {} torn, {} lost, {:.1}s per cut: {}",
            row.lower.name(),
            row.mode.name(),
            row.cuts,
            row.tally.torn,
            row.tally.lost + row.tally.files_lost,
            row.seconds / row.cuts.max(1) as f64,
            verdict(row)
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// The rig: the device, the lower and untorn.

/// How a raw mount writes `data` through: the file's mode lasts only as long as the mount, so it
/// is chosen at each mount, for the iteration that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Through {
    /// Mode off: only `RWF_ATOMIC` writes are untorn.
    Off,
    /// `data` marked writethrough with the mode ioctl.
    Marked,
    /// Mounted with `writethrough=all`.
    All,
}

/// The device with the lower filesystem and untorn mounted over `lower/crash`, or (raw mode)
/// untorn mounted on the device; whatever is still mounted is unmounted, and the device removed,
/// when dropped.
struct Rig {
    dev: TornDev,
    target: Lower,
    mode: Mode,
    /// The lower's mount point (none in raw mode).
    lower_mnt: Option<PathBuf>,
    top: PathBuf,
    lower_mounted: bool,
    top_mounted: bool,
    /// Raw mode: how the current mount writes `data` through, and the choice of the next.
    through: Through,
    rng: SplitMix64,
}

impl Rig {
    fn new(target: Lower, mode: Mode, seed: u64, reorder: bool) -> Result<Self> {
        let mut settings = DEVICE.to_vec();
        let seed_text = seed.to_string();
        settings.push(("seed", &seed_text));
        settings.push(("reorder", if reorder { "1" } else { "0" }));
        settings.push((
            "atomic_as_plain",
            if mode == Mode::NoAtomic { "1" } else { "0" },
        ));
        let dev = TornDev::new(DEVICE_NAME, &settings)?;
        let lower_mnt = match target {
            Lower::Xfs | Lower::Ext4 => Some(guest::scratch_dir("crash-lower")?),
            Lower::Raw => None,
        };
        Ok(Self {
            dev,
            target,
            mode,
            lower_mnt,
            top: guest::scratch_dir("crash-top")?,
            lower_mounted: false,
            top_mounted: false,
            through: Through::Off,
            rng: SplitMix64::new(untorn_logic::rng::hash(seed, 0, 0, 0x7a3)),
        })
    }

    fn disk(&self) -> Result<&str> {
        guest::path_str(&self.dev.disk)
    }

    fn lower_mnt(&self) -> Result<&Path> {
        self.lower_mnt.as_deref().context("raw mode has no lower")
    }

    /// The directory untorn stacks over.
    fn lower_dir(&self) -> Result<PathBuf> {
        Ok(self.lower_mnt()?.join("crash"))
    }

    /// Raw mode: the one file.
    fn data(&self) -> PathBuf {
        self.top.join(DATA)
    }

    /// Whether the current raw mount writes `data` through (plain writes are untorn).
    fn written_through(&self) -> bool {
        self.through != Through::Off
    }

    /// A fresh start: a new filesystem with an empty directory under untorn, or (raw mode) the
    /// first `area` bytes of the device zeroed through untorn and flushed.
    fn fresh(&mut self, area: u64) -> Result<()> {
        self.unmount_all()?;
        let Some(fs) = self.target.fs_type() else {
            self.mount_top()?;
            return zero(&self.data(), area);
        };
        fs.mkfs_with_inodes(&self.dev.disk, None)?;
        self.mount_lower()?;
        fs::create_dir(self.lower_dir()?).context("cannot create the lower directory")?;
        self.mount_top()
    }

    fn mount_lower(&mut self) -> Result<()> {
        let Some(fs) = self.target.fs_type() else {
            return Ok(());
        };
        let dir = guest::path_str(self.lower_mnt()?)?.to_string();
        guest::run("mount", &["-t", fs.name(), self.disk()?, &dir])
            .context("mounting the lower")?;
        self.lower_mounted = true;
        Ok(())
    }

    fn mount_top(&mut self) -> Result<()> {
        if self.target == Lower::Raw {
            return self.mount_raw();
        }
        let lower = self.lower_dir()?;
        let (lower, top) = (guest::path_str(&lower)?, guest::path_str(&self.top)?);
        guest::run("mount", &["-t", "untorn", lower, top]).context("mounting untorn")?;
        self.top_mounted = true;
        Ok(())
    }

    /// Mounts untorn on the device, writing `data` through as chosen now (never for the
    /// `buffered` control), and checks the mode the file reports.
    fn mount_raw(&mut self) -> Result<()> {
        self.through = match (self.mode, self.rng.below(3)) {
            (Mode::Buffered, _) => Through::Off,
            (_, 0) => Through::Off,
            (_, 1) => Through::Marked,
            _ => Through::All,
        };
        let top = guest::path_str(&self.top)?.to_string();
        let disk = self.disk()?.to_string();
        let mut args = vec!["-t", "untorn"];
        if self.through == Through::All {
            args.extend(["-o", "writethrough=all"]);
        }
        args.extend([disk.as_str(), top.as_str()]);
        guest::run("mount", &args).context("mounting untorn on the device")?;
        self.top_mounted = true;
        let file = open_rw(&self.data(), false)?;
        if self.through == Through::Marked {
            set_way(&file, WriteWay::Writethrough)?;
        }
        let want = if self.written_through() {
            FileMode::WRITETHROUGH
        } else {
            FileMode::OFF
        };
        let got = sys::get_mode(&file)
            .map_err(|e| anyhow::anyhow!("reading the mode of data: {}", sys::describe(&e)))?;
        ensure!(
            got.effective == want,
            "data's effective mode is {:#x} with {:?}, expected {want:#x}",
            got.effective,
            self.through
        );
        Ok(())
    }

    fn mount_all(&mut self) -> Result<()> {
        self.mount_lower()?;
        self.mount_top()
    }

    /// Unmounts untorn, then the lower. After a cut both may fail their writeback: unmount
    /// still works; it is retried a few times while something holds the mount.
    fn unmount_all(&mut self) -> Result<()> {
        if self.top_mounted {
            unmount(&self.top)?;
            self.top_mounted = false;
        }
        if self.lower_mounted {
            unmount(self.lower_mnt()?)?;
            self.lower_mounted = false;
        }
        Ok(())
    }

    /// Runs the lower's read-only checker on the unmounted device; raw mode has none.
    fn fsck(&self) -> Result<()> {
        let disk = self.disk()?;
        match self.target {
            Lower::Xfs => guest::run("xfs_repair", &["-n", disk]),
            Lower::Ext4 => guest::run("e2fsck", &["-f", "-n", disk]),
            Lower::Raw => return Ok(()),
        }
        .map(drop)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_all() {
            eprintln!("# warning: {e:#}");
        }
        if self.dev.powered_off() {
            let _ = self.dev.command("power_on");
        }
        let _ = fs::remove_dir(&self.top);
        if let Some(dir) = &self.lower_mnt {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Zeroes the first `len` bytes of `path` and makes them durable.
fn zero(path: &Path, len: u64) -> Result<()> {
    let file = open_rw(path, false)?;
    let chunk = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(chunk.len() as u64) as usize;
        std::os::unix::fs::FileExt::write_all_at(&file, &chunk[..n], offset)
            .with_context(|| format!("zeroing {} at {offset}", path.display()))?;
        offset += n as u64;
    }
    file.sync_all()
        .with_context(|| format!("fsync of {}", path.display()))
}

fn unmount(dir: &Path) -> Result<()> {
    for _ in 0..50 {
        match sys::umount(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", dir.display())),
        }
    }
    bail!("{} stays busy", dir.display())
}

// ---------------------------------------------------------------------------------------------
// One target and mode.

fn campaign(
    options: &Options,
    target: Lower,
    mode: Mode,
    cuts: u64,
    seed: u64,
    row: &mut Row,
    progress: &mut Progress,
) -> Result<()> {
    let mut rig = Rig::new(target, mode, seed, options.reorder)?;
    // Raw mode: the regions of all writers, from the start of the device.
    let area = (options.writers * options.files) as u64 * RAW_SLOT;
    if target == Lower::Raw {
        let size = File::open(&rig.dev.disk)
            .and_then(|mut f| f.seek(io::SeekFrom::End(0)))
            .with_context(|| format!("the size of {}", rig.dev.disk.display()))?;
        ensure!(
            area <= size,
            "{} writers x {} regions of {RAW_SLOT} bytes do not fit the {size}-byte device",
            options.writers,
            options.files
        );
    }
    let mut rng = SplitMix64::new(seed);
    let mut writers: Vec<Writer> = Vec::new();
    let mut sizes = Vec::new();
    let mut next_id = 0u64;
    let mut since_fsck = 0;
    for iteration in 0..cuts {
        let mut clock = Instant::now();
        if iteration % options.mkfs_every.max(1) == 0 {
            rig.fresh(area)?;
            row.mkfs += 1;
            sizes = unit_sizes(&rig, mode)?;
            writers = (0..options.writers)
                .map(|w| {
                    let seed = rng.next_u64();
                    match target {
                        Lower::Xfs | Lower::Ext4 => Writer::new(w, &rig.top, mode, seed),
                        Lower::Raw => Ok(Writer::new_raw(
                            w,
                            &rig.top,
                            mode,
                            seed,
                            &sizes,
                            options.files,
                            &mut next_id,
                        )),
                    }
                })
                .collect::<Result<_>>()?;
            sys::sync();
            row.time("mkfs", &mut clock);
        }
        if let Some(raw) = &mut row.raw {
            *match rig.through {
                Through::Off => &mut raw.through_off,
                Through::Marked => &mut raw.through_marked,
                Through::All => &mut raw.through_all,
            } += 1;
        }
        for w in &mut writers {
            match target {
                Lower::Xfs | Lower::Ext4 => {
                    w.begin(&rig.top, &sizes, options.files, &mut next_id)?
                }
                Lower::Raw => w.begin_raw(&rig.top, rig.written_through())?,
            }
        }
        // Cut at a random write from here on.
        rig.dev
            .command(&format!("cut_random {}", options.max_writes))
            .context("cut_random")?;
        let stop = AtomicBool::new(false);
        let dev_state = &rig;
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = writers
                .iter_mut()
                .map(|w| s.spawn(|| w.work(&stop)))
                .collect();
            // Watch the device: a cut may come from writeback or the log, while the writers
            // only fill the page cache.
            while !handles.iter().all(|h| h.is_finished()) {
                if dev_state.dev.powered_off() {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a writer panicked")))
                })
                .collect()
        });
        for r in results {
            r?;
        }
        if !rig.dev.powered_off() {
            // The writers ran out of operations before the armed cut came.
            rig.dev.command("cut").context("cut")?;
            row.forced_cuts += 1;
        }
        row.cuts += 1;
        row.iterations += 1;
        let (torn, lost) = rig.dev.cut_fates()?;
        row.device_writes_torn += torn;
        row.device_writes_lost += lost;
        for w in &mut writers {
            w.close();
        }
        row.time("work", &mut clock);
        rig.unmount_all()?;
        rig.dev.command("power_on").context("power_on")?;
        row.time("unmount", &mut clock);
        rig.mount_all().context("mounting after the cut")?;
        row.time("mount", &mut clock);

        // Check, repair what a control tore, and make what is there durable for the next round.
        for w in &mut writers {
            let (tally, notes) = w.check(&rig.top)?;
            row.tally += tally;
            for n in notes {
                row.note(format!("cut {}: {n}", row.cuts));
            }
            row.writes_acked += w.acked;
            row.fsyncs += w.fsyncs;
            row.late_dir_syncs += w.late_dir_syncs;
            row.late_names_missing += w.late_names_missing;
            if let Some(raw) = &mut row.raw {
                raw.dsync_writes += w.dsyncs;
            }
        }
        sys::sync();
        row.time("check", &mut clock);
        since_fsck += 1;
        let last = iteration + 1 == cuts;
        let mkfs_next = (iteration + 1) % options.mkfs_every.max(1) == 0;
        // Raw mode has no filesystem to check.
        let fsck_due = since_fsck >= options.fsck_every.max(1) || last || mkfs_next;
        if fsck_due && target != Lower::Raw {
            since_fsck = 0;
            rig.unmount_all()?;
            row.fsck += 1;
            if let Err(e) = rig.fsck() {
                row.fsck_failed += 1;
                row.note(format!("cut {}: {e:#}", row.cuts));
            }
            if !last {
                rig.mount_all()?;
            }
            row.time("fsck", &mut clock);
        }
        progress.cut(row);
        if mode.is_control() && row.tally.torn > 0 {
            // The control has shown that the check sees tears.
            if !last && target != Lower::Raw {
                rig.unmount_all()?;
                row.fsck += 1;
                if let Err(e) = rig.fsck() {
                    row.fsck_failed += 1;
                    row.note(format!("cut {}: {e:#}", row.cuts));
                }
                row.time("fsck", &mut clock);
            }
            break;
        }
    }
    Ok(())
}

/// The unit sizes of this run: those untorn writes atomically on this lower (statx of a file;
/// raw mode: of `data`), or all for plain buffered writes.
fn unit_sizes(rig: &Rig, mode: Mode) -> Result<Vec<usize>> {
    if mode == Mode::Buffered {
        return Ok(UNIT_SIZES.to_vec());
    }
    let stx = if rig.target == Lower::Raw {
        let data = rig.data();
        sys::statx(&data, sys::STATX_WRITE_ATOMIC)
            .with_context(|| format!("statx {}", data.display()))?
    } else {
        let probe = rig.top.join("probe");
        File::create(&probe).with_context(|| format!("cannot create {}", probe.display()))?;
        let stx = sys::statx(&probe, sys::STATX_WRITE_ATOMIC)
            .with_context(|| format!("statx {}", probe.display()))?;
        fs::remove_file(&probe)?;
        stx
    };
    let (min, max) = (
        stx.stx_atomic_write_unit_min as usize,
        stx.stx_atomic_write_unit_max as usize,
    );
    let sizes: Vec<usize> = UNIT_SIZES
        .into_iter()
        .filter(|&s| s >= min && s <= max)
        .collect();
    ensure!(
        !sizes.is_empty(),
        "untorn offers no atomic writes of 4 KiB to 64 KiB here (statx: {min} to {max})"
    );
    Ok(sizes)
}

// ---------------------------------------------------------------------------------------------
// A writer: its own directory and files, so that its record needs no other thread's; in raw
// mode, its own regions of `data`.

struct Writer {
    dir_name: String,
    mode: Mode,
    rng: SplitMix64,
    files: Vec<FileRecord>,
    open: Vec<Option<File>>,
    dir: Option<File>,
    top: PathBuf,
    /// Renames done, for unique names.
    renames: u64,
    acked: u64,
    fsyncs: u64,
    /// Writes acknowledged with `RWF_DSYNC` (raw mode).
    dsyncs: u64,
    /// Directory `fsync`s that returned success only after the power had gone off.
    late_dir_syncs: u64,
    /// Files whose newest name such a directory `fsync` covered, found after the cut without
    /// it.
    late_names_missing: u64,
    /// Raw mode: where each file of [`Self::files`] lies in `data`, and how it is written.
    regions: Option<Vec<Region>>,
}

/// A writer's region of `data` in raw mode: [`RAW_UNITS`] units from `offset`.
struct Region {
    offset: u64,
    /// How the region is written when `data` is written through; when it is not, plain writes
    /// are buffered, and untorn writes must be `RWF_ATOMIC` ([`raw_way`]).
    prefer: WriteWay,
}

/// How a raw region that prefers `prefer` is written in an iteration whose mount writes `data`
/// through (`through`) or not: a plain write is untorn only in writethrough mode.
fn raw_way(prefer: WriteWay, through: bool) -> WriteWay {
    match (prefer, through) {
        (WriteWay::Writethrough, false) => WriteWay::RwfAtomic,
        (WriteWay::Buffered, true) => WriteWay::Writethrough,
        (way, _) => way,
    }
}

/// Whether an operation's failure is the cut's doing.
enum Outcome {
    Ok,
    /// Failed because the power is off: stop.
    Cut,
}

impl Writer {
    /// A writer with no files yet.
    fn empty(dir_name: String, top: &Path, mode: Mode, rng: SplitMix64) -> Self {
        Self {
            dir_name,
            mode,
            rng,
            files: Vec::new(),
            open: Vec::new(),
            dir: None,
            top: top.to_path_buf(),
            renames: 0,
            acked: 0,
            fsyncs: 0,
            dsyncs: 0,
            late_dir_syncs: 0,
            late_names_missing: 0,
            regions: None,
        }
    }

    fn new(index: usize, top: &Path, mode: Mode, seed: u64) -> Result<Self> {
        let dir_name = format!("w{index}");
        let dir = top.join(&dir_name);
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self::empty(dir_name, top, mode, SplitMix64::new(seed)))
    }

    /// Raw mode: writer `index` with `files` regions of `data` of its own, each of a unit size
    /// among `sizes` and new unit ids, all units initial (a fresh start zeroed them).
    fn new_raw(
        index: usize,
        top: &Path,
        mode: Mode,
        seed: u64,
        sizes: &[usize],
        files: usize,
        next_id: &mut u64,
    ) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut records = Vec::new();
        let mut regions = Vec::new();
        for f in 0..files {
            let slot = (index * files + f) as u64;
            let size = sizes[rng.below(sizes.len() as u32) as usize];
            let prefer = match mode {
                Mode::Buffered => WriteWay::Buffered,
                _ if rng.below(2) == 0 => WriteWay::RwfAtomic,
                _ => WriteWay::Writethrough,
            };
            let id = *next_id;
            *next_id += 1;
            let name = format!("r{slot}");
            let mut rec = FileRecord::new(id, name.clone(), size, prefer);
            model::rebase(&mut rec, name, &[0; RAW_UNITS as usize]);
            records.push(rec);
            regions.push(Region {
                offset: slot * RAW_SLOT,
                prefer,
            });
        }
        Self {
            files: records,
            regions: Some(regions),
            ..Self::empty(DATA.to_string(), top, mode, rng)
        }
    }

    /// Raw mode: opens `data` for an iteration, in which the mount writes it through or not.
    fn begin_raw(&mut self, top: &Path, through: bool) -> Result<()> {
        self.top = top.to_path_buf();
        self.acked = 0;
        self.fsyncs = 0;
        self.dsyncs = 0;
        let regions = self.regions.as_ref().context("not a raw writer")?;
        let file = open_rw(&top.join(DATA), false)?;
        self.open.clear();
        for (rec, region) in self.files.iter_mut().zip(regions) {
            rec.way = raw_way(region.prefer, through);
            self.open.push(Some(file.try_clone()?));
        }
        Ok(())
    }

    /// Where file `i`'s unit 0 lies in the file written (0 but in raw mode).
    fn base(&self, i: usize) -> u64 {
        self.regions
            .as_ref()
            .and_then(|r| r.get(i))
            .map_or(0, |r| r.offset)
    }

    fn dir(&self) -> PathBuf {
        self.top.join(&self.dir_name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Opens the files for an iteration (and sets their mode again: a mode set before the last
    /// cut may not have been durable), and makes new ones up to `files`.
    fn begin(
        &mut self,
        top: &Path,
        sizes: &[usize],
        files: usize,
        next_id: &mut u64,
    ) -> Result<()> {
        self.top = top.to_path_buf();
        self.acked = 0;
        self.fsyncs = 0;
        self.late_dir_syncs = 0;
        self.late_names_missing = 0;
        self.dir = Some(File::open(self.dir()).context("cannot open the writer's directory")?);
        self.open.clear();
        for i in 0..self.files.len() {
            let path = self.path(self.files[i].name());
            let file = open_rw(&path, false)?;
            set_way(&file, self.files[i].way)?;
            self.open.push(Some(file));
        }
        while self.files.len() < files {
            let size = sizes[self.rng.below(sizes.len() as u32) as usize];
            let way = match self.mode {
                Mode::Buffered => WriteWay::Buffered,
                _ if self.rng.below(2) == 0 => WriteWay::RwfAtomic,
                _ => WriteWay::Writethrough,
            };
            let id = *next_id;
            *next_id += 1;
            let units = 4 + u64::from(self.rng.below(12));
            if let Outcome::Cut = self.create(id, size, way, units)? {
                bail!("the power went off before the cut was armed");
            }
        }
        Ok(())
    }

    /// Creates file `id` with `units` units, synced with its name.
    fn create(&mut self, id: u64, unit_size: usize, way: WriteWay, units: u64) -> Result<Outcome> {
        let name = format!("f{id}");
        self.files
            .push(FileRecord::new(id, name.clone(), unit_size, way));
        self.open.push(None);
        let i = self.files.len() - 1;
        let path = self.path(&name);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => return self.failed(e, &format!("create {}", path.display())),
        };
        if let Err(e) = set_way(&file, way) {
            if self.off() {
                return Ok(Outcome::Cut);
            }
            return Err(e);
        }
        self.open[i] = Some(file);
        for u in 0..units {
            if let Outcome::Cut = self.write_unit(i, u, false)? {
                return Ok(Outcome::Cut);
            }
        }
        if let Outcome::Cut = self.fsync(i)? {
            return Ok(Outcome::Cut);
        }
        self.fsync_dir()
    }

    fn off(&self) -> bool {
        fs::read_to_string(
            Path::new(check::tornblk::CONFIGFS)
                .join(DEVICE_NAME)
                .join("state"),
        )
        .is_ok_and(|s| s.trim() == "off")
    }

    /// An operation failed: the cut's doing if the power is off, else a real failure.
    fn failed(&mut self, e: io::Error, what: &str) -> Result<Outcome> {
        if self.off() {
            return Ok(Outcome::Cut);
        }
        bail!("{what}: {} (the power is on)", sys::describe(&e))
    }

    fn file(&self, i: usize) -> Result<&File> {
        self.open[i].as_ref().context("file not open")
    }

    /// Writes unit `index` of file `i` at a new version, with `RWF_DSYNC` if `dsync`.
    fn write_unit(&mut self, i: usize, index: u64, dsync: bool) -> Result<Outcome> {
        let base = self.base(i);
        let rec = &mut self.files[i];
        let len = rec.unit_size;
        let version = rec.unit(index).issue();
        let tag = rec.tag(index);
        let way = rec.way;
        let mut buf = sys::AlignedBuf::new(len, 4096);
        unit::fill_unit(buf.as_mut_slice(), UnitTag { unit: tag, version })
            .map_err(|e| anyhow::anyhow!("cannot fill a unit: {e:?}"))?;
        let mut flags = if way == WriteWay::RwfAtomic {
            sys::RWF_ATOMIC
        } else {
            0
        };
        if dsync {
            flags |= sys::RWF_DSYNC;
        }
        let offset = base + index * len as u64;
        let result = sys::pwritev2(
            self.file(i)?,
            &[IoSlice::new(buf.as_slice())],
            offset,
            flags,
        );
        match result {
            Ok(n) if n == len => {
                if dsync {
                    self.files[i].written_durable(index, version);
                    self.dsyncs += 1;
                } else {
                    self.files[i].written(index, version, true);
                }
                self.acked += 1;
                Ok(Outcome::Ok)
            }
            Ok(n) => {
                self.files[i].written(index, version, false);
                bail!("short write of {n} of {len} bytes at {offset}")
            }
            Err(e) => {
                self.files[i].written(index, version, false);
                self.failed(e, &format!("write of unit {index} ({len} bytes)"))
            }
        }
    }

    fn fsync(&mut self, i: usize) -> Result<Outcome> {
        let datasync = self.rng.below(2) == 0;
        let file = self.file(i)?;
        let result = if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        };
        match result {
            Ok(()) => {
                if self.regions.is_some() {
                    // All regions are one file: what the writer had acknowledged in any of them
                    // is durable.
                    for f in &mut self.files {
                        f.synced();
                    }
                } else {
                    self.files[i].synced();
                }
                self.fsyncs += 1;
                Ok(Outcome::Ok)
            }
            Err(e) => self.failed(e, "fsync"),
        }
    }

    fn fsync_dir(&mut self) -> Result<Outcome> {
        let dir = self.dir.as_ref().context("directory not open")?;
        match dir.sync_all() {
            Ok(()) if self.off() => {
                // The power went off before the call returned: XFS acknowledges a directory
                // fsync on a shut-down log without writing anything (FileRecord::
                // name_sync_unproven), so this success proves nothing.
                self.late_dir_syncs += 1;
                for f in &mut self.files {
                    f.name_sync_unproven();
                }
                Ok(Outcome::Cut)
            }
            Ok(()) => {
                for f in &mut self.files {
                    f.name_synced();
                }
                Ok(Outcome::Ok)
            }
            Err(e) => self.failed(e, "fsync of the directory"),
        }
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` of the first `len` bytes of file `i` (of its
    /// region in raw mode): writeback starts, nothing is flushed.
    fn start_writeback(&mut self, i: usize, len: u64) -> Result<Outcome> {
        let base = self.base(i);
        // SAFETY: A file descriptor we own; no memory is passed.
        let r = unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(self.file(i)?),
                base as i64,
                len as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            Ok(Outcome::Ok)
        } else {
            self.failed(io::Error::last_os_error(), "sync_file_range")
        }
    }

    /// One random operation in raw mode, on the writer's regions of `data`: write a unit (75%),
    /// write a unit with `RWF_DSYNC` (8%), `fsync` or `fdatasync` (10%), start writeback of a
    /// region (the rest).
    fn step_raw(&mut self) -> Result<Outcome> {
        let i = self.rng.below(self.files.len() as u32) as usize;
        let units = self.files[i].size;
        let index = u64::from(self.rng.below(units.max(1) as u32));
        match self.rng.below(100) {
            0..=74 => self.write_unit(i, index, false),
            75..=82 => self.write_unit(i, index, true),
            83..=92 => self.fsync(i),
            _ => {
                let len = self.files[i].unit_size as u64 * units;
                self.start_writeback(i, len)
            }
        }
    }

    /// One random operation.
    fn step(&mut self, files: usize) -> Result<Outcome> {
        if self.regions.is_some() {
            return self.step_raw();
        }
        let i = self.rng.below(self.files.len() as u32) as usize;
        let size = self.files[i].size;
        match self.rng.below(100) {
            0..=69 => {
                let index = u64::from(self.rng.below(size.max(1) as u32));
                self.write_unit(i, index, false)
            }
            70..=74 if size < MAX_UNITS => self.write_unit(i, size, false),
            75..=77 if size < MAX_UNITS => {
                let new = (size + 1 + u64::from(self.rng.below(4))).min(MAX_UNITS);
                let len = new * self.files[i].unit_size as u64;
                let result = self.file(i)?.set_len(len);
                self.files[i].truncated_up(new, result.is_ok());
                match result {
                    Ok(()) => Ok(Outcome::Ok),
                    Err(e) => self.failed(e, "ftruncate"),
                }
            }
            78..=87 => self.fsync(i),
            88..=90 => {
                let len = self.files[i].unit_size as u64 * size;
                self.start_writeback(i, len)
            }
            91..=94 => {
                self.renames += 1;
                let id = self.files[i].id;
                let name = format!("f{id}.{}", self.renames);
                let (from, to) = (self.path(self.files[i].name()), self.path(&name));
                let result = fs::rename(&from, &to);
                self.files[i].renamed(name);
                match result {
                    Ok(()) => {
                        if self.rng.below(2) == 0 {
                            self.fsync_dir()
                        } else {
                            Ok(Outcome::Ok)
                        }
                    }
                    Err(e) => self.failed(e, "rename"),
                }
            }
            95..=96 if self.files.len() < files + 2 => {
                // A file of its own for this iteration: ids from the top of the range.
                let id = (1 << 31) + self.rng.below(1 << 30) as u64;
                if self.files.iter().any(|f| f.id == id) {
                    return Ok(Outcome::Ok);
                }
                let size = self.files[i].unit_size;
                let way = self.files[i].way;
                let units = 1 + u64::from(self.rng.below(4));
                self.create(id, size, way, units)
            }
            _ => self.fsync_dir(),
        }
    }

    /// Works until the power goes off (or `stop`, or too many operations).
    fn work(&mut self, stop: &AtomicBool) -> Result<()> {
        let files = self.files.len();
        for _ in 0..MAX_OPS {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Outcome::Cut = self.step(files)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn close(&mut self) {
        self.open.clear();
        self.dir = None;
    }

    /// Reads every file back after the cut and judges it; then repairs torn or corrupt units
    /// (controls) and makes the found state the base of the next iteration. Returns the tally
    /// and notes on what was wrong.
    fn check(&mut self, top: &Path) -> Result<(Tally, Vec<String>)> {
        if self.regions.is_some() {
            return self.check_raw(top);
        }
        self.top = top.to_path_buf();
        let mut tally = Tally::default();
        let mut notes = Vec::new();
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (i, f) in self.files.iter().enumerate() {
            for n in &f.names {
                by_name.insert(n.clone(), i);
            }
        }
        let mut found: Vec<Option<Observed>> = vec![None; self.files.len()];
        let dir = self.dir();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(&i) = by_name.get(&name) else {
                tally.names_bad += 1;
                notes.push(format!("{}/{name}: a name no file had", self.dir_name));
                continue;
            };
            if found[i].is_some() {
                tally.names_bad += 1;
                notes.push(format!("{}/{name}: a file under two names", self.dir_name));
                continue;
            }
            let rec = &self.files[i];
            let path = dir.join(&name);
            let data =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let len = rec.unit_size;
            let units = data
                .chunks(len)
                .enumerate()
                .map(|(u, chunk)| {
                    let mut buf = chunk.to_vec();
                    buf.resize(len, 0);
                    unit::inspect_unit(&buf, rec.tag(u as u64))
                        .map_err(|e| anyhow::anyhow!("inspect: {e:?}"))
                })
                .collect::<Result<Vec<_>>>()?;
            found[i] = Some(Observed {
                name,
                units,
                size_ok: data.len() % len == 0,
            });
        }
        for (rec, seen) in self.files.iter().zip(&found) {
            if rec.unproven_name_lost(seen.as_ref().map(|s| s.name.as_str())) {
                self.late_names_missing += 1;
                notes.push(format!(
                    "{}/{}: not there, after a directory fsync that succeeded only once the \
                     power was off",
                    self.dir_name,
                    rec.name()
                ));
            }
        }
        let mut keep = Vec::new();
        for (i, seen) in found.into_iter().enumerate() {
            let rec = &self.files[i];
            let t = judge_noting(rec, seen.as_ref(), &self.dir_name, &mut notes);
            tally += t;
            let Some(seen) = seen else {
                continue;
            };
            keep.push((i, seen));
        }
        // The files found become the next iteration's; torn or corrupt units are rewritten.
        let mut files = Vec::new();
        for (i, seen) in keep {
            let mut rec = self.files[i].clone();
            let path = dir.join(&seen.name);
            let (versions, repair) = model::repair_plan(&mut rec, &seen.units);
            if !repair.is_empty() || !seen.size_ok {
                let file = open_rw(&path, false)?;
                file.set_len(versions.len() as u64 * rec.unit_size as u64)?;
                rewrite_units(&file, &rec, 0, &repair)?;
                file.sync_all()?;
            }
            model::rebase(&mut rec, seen.name, &versions);
            files.push(rec);
        }
        self.files = files;
        File::open(&dir)?.sync_all()?;
        Ok((tally, notes))
    }

    /// Raw mode: reads every region back after the cut through untorn and judges it; then
    /// rewrites torn or corrupt units (controls) and makes the found state the base of the next
    /// iteration.
    fn check_raw(&mut self, top: &Path) -> Result<(Tally, Vec<String>)> {
        self.top = top.to_path_buf();
        let regions = self.regions.as_ref().context("not a raw writer")?;
        let path = top.join(DATA);
        let file = open_rw(&path, false)?;
        let mut tally = Tally::default();
        let mut notes = Vec::new();
        let mut repaired = false;
        for (rec, region) in self.files.iter_mut().zip(regions) {
            let len = rec.unit_size;
            let mut data = vec![0u8; len * rec.size as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, region.offset)
                .with_context(|| format!("cannot read {} at {}", path.display(), region.offset))?;
            let units = data
                .chunks(len)
                .enumerate()
                .map(|(u, chunk)| {
                    unit::inspect_unit(chunk, rec.tag(u as u64))
                        .map_err(|e| anyhow::anyhow!("inspect: {e:?}"))
                })
                .collect::<Result<Vec<_>>>()?;
            let seen = Observed {
                name: rec.name().to_string(),
                units,
                size_ok: true,
            };
            tally += judge_noting(rec, Some(&seen), DATA, &mut notes);
            let (versions, repair) = model::repair_plan(rec, &seen.units);
            rewrite_units(&file, rec, region.offset, &repair)?;
            repaired |= !repair.is_empty();
            model::rebase(rec, seen.name, &versions);
        }
        if repaired {
            file.sync_all()
                .with_context(|| format!("fsync of {}", path.display()))?;
        }
        Ok((tally, notes))
    }
}

/// Writes each unit `(index, version)` of `repair` of `rec`, whose unit 0 is at `base` of
/// `file`.
fn rewrite_units(file: &File, rec: &FileRecord, base: u64, repair: &[(u64, u64)]) -> Result<()> {
    for &(u, v) in repair {
        let mut buf = vec![0u8; rec.unit_size];
        unit::fill_unit(
            &mut buf,
            UnitTag {
                unit: rec.tag(u),
                version: v,
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot fill a unit: {e:?}"))?;
        std::os::unix::fs::FileExt::write_all_at(file, &buf, base + u * rec.unit_size as u64)?;
    }
    Ok(())
}

/// [`model::judge`], noting what was wrong.
fn judge_noting(
    rec: &FileRecord,
    seen: Option<&Observed>,
    dir: &str,
    notes: &mut Vec<String>,
) -> Tally {
    let t = model::judge(rec, seen);
    let name = seen.map_or(rec.name(), |s| s.name.as_str());
    if t.files_lost > 0 {
        notes.push(format!("{dir}/{name}: missing, its name was durable"));
    }
    if let Some(seen) = seen {
        if !seen.size_ok && notes.len() < 8 {
            notes.push(format!(
                "{dir}/{name}: its size ends inside a {}-byte unit ({:?})",
                rec.unit_size, rec.way
            ));
        }
        for (u, state) in seen.units.iter().enumerate() {
            let r = rec.units.get(u);
            let bad = match state {
                UnitState::Torn { .. } | UnitState::Corrupt { .. } => true,
                UnitState::Initial => r.is_some_and(|r| r.durable > 0),
                UnitState::Whole(v) => r.is_none_or(|r| !r.allowed(*v) || *v < r.durable),
            };
            if bad && notes.len() < 8 {
                notes.push(format!(
                    "{dir}/{name} unit {u} ({} bytes, {:?}): {state:?}, record {:?}",
                    rec.unit_size, rec.way, r
                ));
            }
        }
    }
    t
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Sets a file's untorn mode for its way of writing.
fn set_way(file: &File, way: WriteWay) -> Result<()> {
    let mode = match way {
        WriteWay::Writethrough => FileMode::WRITETHROUGH,
        _ => FileMode::OFF,
    };
    sys::set_mode(
        file,
        &UntornMode {
            mode,
            ..UntornMode::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("setting the writethrough mode: {}", sys::describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const XFS: Lower = Lower::Xfs;
    const EXT4: Lower = Lower::Ext4;
    const RAW: Lower = Lower::Raw;

    fn row(lower: Lower, mode: Mode, cuts: u64, torn: u64, lost: u64) -> Row {
        let mut r = Row::new(lower, mode);
        r.cuts = cuts;
        r.tally.torn = torn;
        r.tally.lost = lost;
        r
    }

    #[test]
    fn the_last_line_sums_untorn_and_names_the_controls() {
        let report = Report::new(
            7,
            vec![
                row(XFS, Mode::Untorn, 50, 0, 0),
                row(XFS, Mode::Buffered, 1, 4, 0),
                row(XFS, Mode::NoAtomic, 2, 3, 0),
                row(EXT4, Mode::Untorn, 50, 0, 0),
                row(EXT4, Mode::Buffered, 3, 1, 0),
                row(EXT4, Mode::NoAtomic, 1, 2, 0),
            ],
        );
        assert!(report.passed);
        assert_eq!(
            report.last_line(),
            "crash: 100 cuts, 0 torn, 0 lost; controls: buffered 5 torn, no-atomic 5 torn"
        );
        assert!(report
            .text()
            .ends_with(&format!("{}\n", report.last_line())));
    }

    #[test]
    fn a_tear_a_loss_or_a_blind_control_fails() {
        let ok = || {
            vec![
                row(XFS, Mode::Untorn, 5, 0, 0),
                row(XFS, Mode::Buffered, 1, 1, 0),
                row(XFS, Mode::NoAtomic, 1, 1, 0),
            ]
        };
        assert!(Report::new(1, ok()).passed);
        for (i, torn, lost) in [(0, 1, 0), (0, 0, 1), (1, 0, 0), (2, 0, 0), (1, 1, 1)] {
            let mut rows = ok();
            rows[i].tally.torn = torn;
            rows[i].tally.lost = lost;
            assert!(
                !Report::new(1, rows).passed,
                "row {i} torn {torn} lost {lost}"
            );
        }
        let mut rows = ok();
        rows[0].fsck_failed = 1;
        assert!(!Report::new(1, rows).passed, "an fsck problem");
        // Directory fsyncs acknowledged after the cut are reported, and fail nothing.
        let mut rows = ok();
        rows[0].late_dir_syncs = 3;
        rows[0].late_names_missing = 1;
        let report = Report::new(1, rows);
        assert!(report.passed);
        assert!(report.text().contains(
            "3 directory fsyncs succeeded only after the cut (not counted); 1 newest names"
        ));
        assert!(!Report::new(1, vec![]).passed, "nothing ran");
        let report = Report::new(1, vec![row(XFS, Mode::Untorn, 5, 0, 0)]);
        assert!(report
            .last_line()
            .ends_with("buffered not run, no-atomic not run"));
    }

    #[test]
    fn raw_rows_count_like_a_lower_and_have_no_fsck() {
        let mut rows = vec![
            row(XFS, Mode::Untorn, 100, 0, 0),
            row(RAW, Mode::Untorn, 50, 0, 0),
            row(RAW, Mode::Buffered, 1, 2, 0),
            row(RAW, Mode::NoAtomic, 1, 3, 0),
        ];
        let report = Report::new(3, rows.clone());
        assert!(report.passed);
        assert_eq!(
            report.last_line(),
            "crash: 150 cuts, 0 torn, 0 lost; controls: buffered 2 torn, no-atomic 3 torn"
        );
        let text = report.text();
        let raw_line = text
            .lines()
            .find(|l| l.starts_with("raw ") && l.contains(" untorn "))
            .expect("a raw row");
        assert!(
            raw_line.split_whitespace().nth(5) == Some("-"),
            "{raw_line}"
        );
        assert!(text.contains("raw untorn: data written through in 0 iterations"));
        assert!(!text.contains("xfs untorn: data written"));
        // A tear in raw mode fails the campaign like any other.
        rows[1].tally.torn = 1;
        assert!(!Report::new(3, rows).passed);
        // The JSON names the target as --lower does, and only raw rows have raw stats.
        let json = serde_json::to_value(Report::new(3, vec![row(XFS, Mode::Untorn, 1, 0, 0)]))
            .expect("serializable");
        assert_eq!(json["rows"][0]["lower"], "xfs");
        assert!(json["rows"][0].get("raw").is_none());
        let json = serde_json::to_value(Report::new(3, vec![row(RAW, Mode::Untorn, 1, 0, 0)]))
            .expect("serializable");
        assert_eq!(json["rows"][0]["lower"], "raw");
        assert_eq!(json["rows"][0]["raw"]["through_all"], 0);
    }

    #[test]
    fn targets_parse_as_lowers_do() {
        use clap::ValueEnum;
        for (text, target) in [("xfs", XFS), ("ext4", EXT4), ("raw", RAW)] {
            assert_eq!(Lower::from_str(text, false), Ok(target));
            assert_eq!(target.name(), text);
        }
        assert!(Lower::from_str("btrfs", false).is_err());
    }

    fn options(lowers: Vec<Lower>, cuts: u64, raw_cuts: Option<u64>) -> Options {
        Options {
            lowers,
            modes: vec![Mode::Untorn, Mode::Buffered, Mode::NoAtomic],
            cuts,
            raw_cuts,
            control_cuts: 5,
            seed: 1,
            max_writes: 64,
            mkfs_every: 50,
            fsck_every: 10,
            writers: 2,
            files: 3,
            reorder: false,
            modules: PathBuf::new(),
            progress: false,
        }
    }

    #[test]
    fn raw_takes_a_share_of_the_cuts_or_its_own() {
        let untorn = |plan: Vec<(Lower, Mode, u64)>| -> Vec<(Lower, u64)> {
            plan.into_iter()
                .filter(|p| p.1 == Mode::Untorn)
                .map(|p| (p.0, p.2))
                .collect()
        };
        // Unchanged for the lowers alone.
        let plan = super::plan(&options(vec![XFS, EXT4], 200, None));
        assert_eq!(untorn(plan.clone()), vec![(XFS, 100), (EXT4, 100)]);
        assert_eq!(plan.len(), 6);
        assert!(plan.iter().all(|p| p.1 == Mode::Untorn || p.2 == 5));
        // Raw shares --cuts like a lower...
        let plan = super::plan(&options(vec![XFS, EXT4, RAW], 90, None));
        assert_eq!(untorn(plan), vec![(XFS, 30), (EXT4, 30), (RAW, 30)]);
        // ... or has cuts of its own, and the controls of any target.
        let plan = super::plan(&options(vec![XFS, EXT4, RAW], 200, Some(50)));
        assert_eq!(plan.len(), 9);
        assert_eq!(untorn(plan), vec![(XFS, 100), (EXT4, 100), (RAW, 50)]);
        let plan = super::plan(&options(vec![RAW], 200, Some(7)));
        assert_eq!(untorn(plan), vec![(RAW, 7)]);
        let plan = super::plan(&options(vec![RAW], 20, None));
        assert_eq!(untorn(plan), vec![(RAW, 20)]);
    }

    #[test]
    fn raw_regions_write_untorn_only_as_the_mount_allows() {
        use WriteWay::*;
        // Without writethrough a plain write is buffered: an untorn one must be RWF_ATOMIC.
        assert_eq!(raw_way(Writethrough, false), RwfAtomic);
        assert_eq!(raw_way(Writethrough, true), Writethrough);
        assert_eq!(raw_way(RwfAtomic, false), RwfAtomic);
        assert_eq!(raw_way(RwfAtomic, true), RwfAtomic);
        assert_eq!(raw_way(Buffered, false), Buffered);
        assert_eq!(raw_way(Buffered, true), Writethrough);
    }

    #[test]
    fn raw_slots_hold_a_region_of_the_largest_unit() {
        for size in UNIT_SIZES {
            assert_eq!(RAW_SLOT % size as u64, 0, "{size}-byte units stay aligned");
            assert!(RAW_UNITS * size as u64 <= RAW_SLOT);
        }
    }
}
