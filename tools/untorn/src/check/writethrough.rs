// SPDX-License-Identifier: GPL-2.0

//! untorn part 2, writethrough and untorn buffered writes: the exact outcomes of
//! `Documentation/filesystems/untorn.rst` ("The per-file mode", "What each write does",
//! "Writethrough and untorn writes").
//!
//! Each test runs on an XFS and an ext4 (bigalloc) lower on the `scsi_debug atomic_wr=1` disk
//! (the tests of one lower share one fresh filesystem and untorn mount, [`Stack`]); some mount
//! untorn again over a directory of their own (mount options, counters, read-only). The lower
//! write error test has a lower of its own on a `dm-flakey` device over the disk, and one test
//! uses a tmpfs lower, which cannot write atomically.
//!
//! Every expected atomic limit is derived from the lower file's own `statx`, intersected with
//! what untorn promises (`[SECTOR_SIZE, UNTORN_ATOMIC_MAX]`), with
//! `lib/untorn_logic/src/atomic_write.rs`.
//!
//! In reference mode (`untorn check --reference`) only the `RWF_ATOMIC` rule tests run, with
//! `O_DIRECT` on the plain lower: that shows the sizes, alignments and errnos expected of
//! untorn's buffered `RWF_ATOMIC` are those of the kernel's direct `RWF_ATOMIC`. The other tests
//! are of untorn alone (a plain lower has no mode ioctl and refuses buffered `RWF_ATOMIC`).

use super::{
    stacking::{self, counters_dir, create_with, ensure_bytes, read_at, Stack},
    subject::{Subject, TestFile},
    tornblk::{self, TornDev},
    Env, Test, Watchdog,
};
use crate::{
    exercise::{self, pattern},
    guest::{self, FsType, LoadedModule, Mounted},
    limits::FileLimits,
    sys::{
        self, describe, AlignedBuf, BadAddresses, ChildOp, Mapping, PartlyMapped, ScriptedChild,
        Tail,
    },
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, IoSlice},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};
use untorn_logic::{
    atomic_write::{self, AtomicWriteLimits},
    mount_options::{FileMode, WritethroughPolicy},
    rng::SplitMix64,
    uapi::{UntornMode, UNTORN_IOC_GET_MODE, UNTORN_IOC_SET_MODE},
    unit::{fill_unit, inspect_unit, UnitState, UnitTag},
};

use stacking::UNTORN;

/// The largest untorn write untorn takes (`UNTORN_ATOMIC_MAX`, one bio of pages).
const UNTORN_ATOMIC_MAX: u32 = 1 << 20;
/// The smallest (`SECTOR_SIZE`).
const UNTORN_ATOMIC_MIN: u32 = 512;
/// `UIO_MAXIOV`: the `stx_atomic_write_segments_max` untorn reports (it takes any iovec).
const UIO_MAXIOV: u32 = 1024;
/// The lower xattr holding the persistent mode.
const MODE_XATTR: &str = "trusted.untorn.mode";
/// Its value for writethrough.
const MODE_XATTR_WRITETHROUGH: &[u8] = b"writethrough";
/// The counters part 2 adds (some of them), which the tests read.
const WT_COUNTERS: [&str; 10] = [
    "writethrough_writes",
    "writethrough_bytes",
    "untorn_writes",
    "untorn_bytes",
    "writethrough_not_eligible",
    "err_fault",
    "err_inval",
    "err_lower",
    "err_short",
    "writethrough_overlapped",
];
/// How long the racing writers and readers run.
const RACE_TIME: Duration = Duration::from_secs(3);
/// How long the exerciser runs with writethrough and `RWF_ATOMIC` operations.
const EXERCISE_TIME: Duration = Duration::from_secs(30);

type WtTest = fn(&mut Stack) -> Result<()>;
type SubjectTest = fn(&mut Subject) -> Result<()>;

/// A test and the modes it runs in.
#[derive(Clone, Copy)]
enum Run {
    /// Stacked mode only; the table says why.
    Stacked(WtTest),
    /// Stacked mode and raw mode (`raw.rs`), the same function.
    BothModes(SubjectTest),
}

/// The tests on the shared lower of each type; `true`: also meaningful in reference mode.
const TESTS: &[(&str, Run, bool)] = &[
    (
        "statx-atomic-limits",
        Run::BothModes(statx_atomic_limits),
        false,
    ),
    (
        "rwf-atomic-accepted",
        Run::BothModes(rwf_atomic_accepted),
        true,
    ),
    (
        "rwf-atomic-refused",
        Run::BothModes(rwf_atomic_refused),
        true,
    ),
    // The mode tests need files of their own, a lower xattr or a mount of their own; raw mode's
    // mode lives as long as the mount (raw.rs: writethrough-mode).
    ("mode-ioctl", Run::Stacked(mode_ioctl), false),
    ("mode-xattr-hidden", Run::Stacked(mode_xattr_hidden), false),
    ("mode-mount-option", Run::Stacked(mode_mount_option), false),
    ("mode-persistence", Run::Stacked(mode_persistence), false),
    ("mode-permissions", Run::Stacked(mode_permissions), false),
    (
        "mode-read-only-erofs",
        Run::Stacked(mode_read_only_erofs),
        false,
    ),
    (
        "written-through-at-once",
        Run::BothModes(written_through_at_once),
        false,
    ),
    ("mmap-coherence", Run::BothModes(mmap_coherence), false),
    // Extends files; a raw file's end is the device's (raw.rs: end-of-device).
    ("end-of-file", Run::Stacked(end_of_file), false),
    (
        "racing-atomic-writes-and-readers",
        Run::BothModes(racing_atomic_writes),
        false,
    ),
    (
        "user-fault-leaves-old-data",
        Run::BothModes(user_fault_leaves_old_data),
        false,
    ),
    (
        "parallel-disjoint-writes",
        Run::BothModes(parallel_disjoint_writes),
        false,
    ),
    ("bounce-cache", Run::BothModes(bounce_cache), false),
    ("mmap-fork-stress", Run::BothModes(mmap_fork_stress), false),
    // The exerciser makes, extends and removes files.
    ("exercise-30s", Run::Stacked(exercise_writethrough), false),
];

/// The conformance tests that also run over tornblk, a device with other atomic limits than
/// scsi_debug's.
const TORNBLK_TESTS: &[(&str, Run)] = &[
    ("statx-atomic-limits", Run::BothModes(statx_atomic_limits)),
    ("rwf-atomic-accepted", Run::BothModes(rwf_atomic_accepted)),
    ("rwf-atomic-refused", Run::BothModes(rwf_atomic_refused)),
    (
        "written-through-at-once",
        Run::BothModes(written_through_at_once),
    ),
    ("end-of-file", Run::Stacked(end_of_file)),
    (
        "user-fault-leaves-old-data",
        Run::BothModes(user_fault_leaves_old_data),
    ),
];

impl Run {
    fn on_stack(self, stack: &mut Stack) -> Result<()> {
        match self {
            Run::Stacked(f) => f(stack),
            Run::BothModes(f) => f(&mut Subject::Stacked(stack)),
        }
    }
}

/// The tests of [`TESTS`] (`on_tornblk`: of [`TORNBLK_TESTS`]) that run in raw mode too.
pub(super) fn both_modes(on_tornblk: bool) -> Vec<(&'static str, SubjectTest)> {
    let runs: Vec<(&'static str, Run)> = if on_tornblk {
        TORNBLK_TESTS.to_vec()
    } else {
        TESTS.iter().map(|&(name, run, _)| (name, run)).collect()
    };
    runs.into_iter()
        .filter_map(|(name, run)| match run {
            Run::BothModes(f) => Some((name, f)),
            Run::Stacked(_) => None,
        })
        .collect()
}

/// tornblk's settings for these tests: 4 KiB blocks, atomic writes of 4 KiB to 32 KiB (scsi_debug
/// offers up to 1 MiB), so that untorn's limits follow a different device.
pub(super) const TORNBLK_DEVICE: &[(&str, &str)] = &[
    ("size_mib", "512"),
    ("logical_block_size", "4096"),
    ("atomic_unit_min", "4096"),
    ("atomic_unit_max", "32768"),
    ("atomic_max", "32768"),
    // A power cut loses every write not yet durable (no write is kept or torn).
    ("keep", "0"),
    ("lose", "1"),
    ("tear", "0"),
];

/// untorn over a lower on a tornblk device; dropped in this order: the stack (untorn, the
/// lower), the device, then tornblk.
struct TornStack {
    stack: Stack,
    dev: TornDev,
    _tornblk: LoadedModule,
}

impl TornStack {
    fn new(env: &Env, fs_type: FsType) -> Result<Self> {
        let tornblk = tornblk::load(env)?;
        let dev = TornDev::new("wt", TORNBLK_DEVICE)?;
        let stack = Stack::on_disk(env, fs_type, &dev.disk, None, None)?;
        Ok(Self {
            stack,
            dev,
            _tornblk: tornblk,
        })
    }
}

/// Durability (semantics 4), on tornblk, which here loses every write not yet durable at a power
/// cut: an untorn write with `RWF_DSYNC` and a writethrough write on an `O_DSYNC` descriptor
/// survive a cut that comes right after them. The control, in the same cut: an untorn write
/// without `DSYNC` is lost (it completed into the device's volatile cache), which shows that
/// the cut drops what was not made durable.
fn dsync_survives_power_cut(torn: &mut TornStack) -> Result<()> {
    const UNITS: usize = 3;
    let stack = &mut torn.stack;
    let AtomicFile {
        up,
        path,
        file: f,
        limits,
    } = atomic_file(stack, "dsync")?;
    let unit = page_unit(&limits);
    write_first_versions(&f, 0, unit, UNITS)?;
    let marked = create_with(&up.join("g"), b"")?;
    write_first_versions(&marked, 0, unit, 1)?;
    set_mode(&marked, FileMode::WRITETHROUGH, "mark g")?;
    sys::syncfs(&f).context("syncfs before the writes")?;
    let v2 = |i: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; unit];
        let tag = UnitTag {
            unit: i,
            version: 2,
        };
        fill_unit(&mut buf, tag).map_err(|e| anyhow!("fill_unit: {e:?}"))?;
        Ok(buf)
    };
    let dsync = sys::pwritev2(&f, &[IoSlice::new(&v2(0)?)], 0, RWF_ATOMIC_DSYNC);
    expect_written(dsync, unit, "RWF_ATOMIC|RWF_DSYNC write of unit 0")?;
    expect_written(
        atomic_write(&f, &v2(1)?, unit as u64),
        unit,
        "RWF_ATOMIC write of unit 1 (no DSYNC)",
    )?;
    let g = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(up.join("g"))?;
    expect_written(
        g.write_at(&v2(0)?, 0),
        unit,
        "writethrough write on an O_DSYNC descriptor",
    )?;
    torn.dev.command("cut").context("power cut")?;
    drop((f, g, marked));
    let dev = &torn.dev;
    stack.remount_all(|| dev.command("power_on").context("power on"))?;
    let states = |path: &Path, units: usize| -> Result<Vec<String>> {
        let data = read_at(&open_ro(path)?, 0, units * unit)?;
        Ok((0..units)
            .map(|i| {
                format!(
                    "{:?}",
                    inspect_unit(&data[i * unit..(i + 1) * unit], i as u64)
                )
            })
            .collect())
    };
    let (f_units, g_units) = (states(&path, UNITS)?, states(&up.join("g"), 1)?);
    println!("#   after the cut: f {f_units:?}, g {g_units:?}");
    let whole = |v: u64| format!("{:?}", Ok::<_, ()>(UnitState::Whole(v)));
    ensure!(
        f_units[0] == whole(2),
        "the RWF_DSYNC untorn write was lost or torn by the cut: {}",
        f_units[0]
    );
    ensure!(
        g_units[0] == whole(2),
        "the O_DSYNC writethrough write was lost or torn by the cut: {}",
        g_units[0]
    );
    ensure!(
        f_units[1] == whole(1),
        "the control: the untorn write without DSYNC should have been lost, unit 1 is {}",
        f_units[1]
    );
    ensure!(f_units[2] == whole(1), "unit 2, untouched: {}", f_units[2]);
    Ok(())
}

/// `RWF_ATOMIC | RWF_DSYNC`.
const RWF_ATOMIC_DSYNC: i32 = sys::RWF_ATOMIC | sys::RWF_DSYNC;

pub fn tests(env: &Env) -> Vec<Test> {
    let mut tests = Vec::new();
    for fs_type in [FsType::Xfs, FsType::Ext4] {
        let fs = fs_type.name();
        let group = format!("writethrough-{fs}");
        for &(name, f, in_reference) in TESTS {
            if env.reference && !in_reference {
                continue;
            }
            let group = group.clone();
            tests.push(Test::in_group(
                format!("writethrough/{fs}/{name}"),
                group.clone(),
                move |env| {
                    let mut stack = env.fixture(&group, |env| Stack::new(env, fs_type))?;
                    f.on_stack(&mut stack)
                },
            ));
        }
        if env.reference {
            continue;
        }
        let group = format!("writethrough-tornblk-{fs}");
        for &(name, f) in TORNBLK_TESTS {
            let group = group.clone();
            tests.push(Test::in_group(
                format!("writethrough/{fs}-on-tornblk/{name}"),
                group.clone(),
                move |env| {
                    let mut torn = env.fixture(&group, |env| TornStack::new(env, fs_type))?;
                    f.on_stack(&mut torn.stack)
                },
            ));
        }
        let group = format!("writethrough-tornblk-{fs}");
        tests.push(Test::in_group(
            format!("writethrough/{fs}-on-tornblk/dsync-survives-power-cut"),
            group.clone(),
            move |env| {
                let mut torn = env.fixture(&group, |env| TornStack::new(env, fs_type))?;
                dsync_survives_power_cut(&mut torn)
            },
        ));
        let group = format!("writethrough-flakey-{fs}");
        tests.push(Test::in_group(
            format!("writethrough/{fs}/lower-write-error-eio"),
            group.clone(),
            move |env| {
                let mut stack = env.fixture(&group, |env| FlakeyStack::new(env, fs_type))?;
                lower_write_error_eio(&mut stack)
            },
        ));
    }
    if !env.reference {
        tests.push(Test::new("writethrough/tmpfs/no-atomic-lower", |env| {
            no_atomic_lower(env)
        }));
    }
    tests
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Fails unless `result` is the error `errno`, naming both errnos.
pub(super) fn expect_err<T: std::fmt::Debug>(
    result: io::Result<T>,
    errno: i32,
    what: &str,
) -> Result<()> {
    match result {
        Ok(v) => bail!(
            "{what}: succeeded ({v:?}), expected {}",
            sys::errno_name(errno)
        ),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => bail!(
            "{what}: got {}, expected {}",
            describe(&e),
            sys::errno_name(errno)
        ),
    }
}

/// Fails unless `result` is a complete write of `len` bytes.
pub(super) fn expect_written(result: io::Result<usize>, len: usize, what: &str) -> Result<()> {
    match result {
        Ok(n) if n == len => Ok(()),
        Ok(n) => bail!("{what}: wrote {n} bytes of {len}"),
        Err(e) => bail!("{what}: got {}, expected {len} bytes written", describe(&e)),
    }
}

/// `pwritev2(RWF_ATOMIC)` of one buffer.
pub(super) fn atomic_write(file: &File, data: &[u8], offset: u64) -> io::Result<usize> {
    sys::pwritev2(file, &[IoSlice::new(data)], offset, sys::RWF_ATOMIC)
}

/// A fresh directory `name` for one test, through the top and on the lower.
fn test_dir(stack: &Stack, name: &str) -> Result<(PathBuf, PathBuf)> {
    let up = stack.top().join(name);
    fs::create_dir(&up).with_context(|| format!("cannot create {}", up.display()))?;
    Ok((up, stack.lower_dir().join(name)))
}

/// Creates `path` with `len` bytes of pattern `seed`, synced; returns the file (open for
/// reading and writing) and its content.
fn prefilled(path: &Path, len: usize, seed: u64) -> Result<(File, Vec<u8>)> {
    let data = pattern(seed, len);
    let f = create_with(path, &data)?;
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    Ok((f, data))
}

pub(super) fn open_rw(path: &Path, direct: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// `len` bytes at `offset` of the lower file, read with `O_DIRECT` (the device's content).
fn lower_range(low: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    sys::read_direct_range(low, offset, len)
        .with_context(|| format!("O_DIRECT read of the lower {}", low.display()))
}

/// Fails unless the lower file has size `want.len()` and, read with `O_DIRECT` (without any
/// fsync), exactly the bytes `want`.
pub(super) fn ensure_lower(low: &Path, want: &[u8], what: &str) -> Result<()> {
    let size = fs::metadata(low)
        .with_context(|| format!("{what}: stat the lower {}", low.display()))?
        .len();
    ensure!(
        size == want.len() as u64,
        "{what}: the lower file has size {size}, expected {} (not written through?)",
        want.len()
    );
    let got = lower_range(low, 0, want.len())?;
    ensure_bytes(&got, want, &format!("{what}: the lower file, O_DIRECT"))
}

/// Fails unless the file at `path` has exactly size and content `want`, read with a fresh
/// descriptor.
fn ensure_upper(path: &Path, want: &[u8], what: &str) -> Result<()> {
    stacking::ensure_content(path, want, what)
}

/// The atomic limits the lower file (or device node) at `low` reports through its own statx.
pub(super) fn lower_limits(low: &Path) -> Result<(FileLimits, AtomicWriteLimits)> {
    let l = FileLimits::of_file(low)?;
    let limits = AtomicWriteLimits::new(l.unit_min, l.unit_max)
        .with_context(|| format!("the lower {} reports invalid limits {l:?}", low.display()))?;
    Ok((l, limits))
}

/// What untorn promises for a file whose lower file reports `lower`.
pub(super) fn untorn_limits(lower: AtomicWriteLimits) -> AtomicWriteLimits {
    AtomicWriteLimits::new(UNTORN_ATOMIC_MIN, UNTORN_ATOMIC_MAX)
        .map_or(AtomicWriteLimits::NONE, |u| lower.intersect(&u))
}

/// A database-page-like unit size within `limits`: 16 KiB if allowed.
fn page_unit(limits: &AtomicWriteLimits) -> usize {
    16384u32.clamp(limits.unit_min(), limits.unit_max()) as usize
}

fn mode_of(mode: u32) -> UntornMode {
    UntornMode {
        mode,
        ..UntornMode::default()
    }
}

fn get_mode(file: &File, what: &str) -> Result<UntornMode> {
    sys::get_mode(file).map_err(|e| anyhow!("{what}: UNTORN_IOC_GET_MODE: {}", describe(&e)))
}

pub(super) fn set_mode(file: &File, mode: u32, what: &str) -> Result<()> {
    sys::set_mode(file, &mode_of(mode))
        .map_err(|e| anyhow!("{what}: UNTORN_IOC_SET_MODE to {mode}: {}", describe(&e)))
}

/// Fails unless GET reports exactly `mode` and `effective` (and zero flags and reserved).
pub(super) fn ensure_mode(file: &File, mode: u32, effective: u32, what: &str) -> Result<()> {
    let got = get_mode(file, what)?;
    let want = UntornMode {
        mode,
        effective,
        ..UntornMode::default()
    };
    ensure!(
        got == want,
        "{what}: GET_MODE gave {got:?}, expected {want:?}"
    );
    Ok(())
}

pub(super) fn open_ro(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

pub(crate) type Counters = BTreeMap<String, u64>;

/// The counters of the untorn mount at `mountpoint`, requiring part 2's [`WT_COUNTERS`].
/// Lines that are not `name value` (a histogram's, for one) are left out.
/// The number of writes in the mount's latency histogram (`wt_latency_us`: 24 lines of
/// `<upper bound in µs> <count>`, the last bound `+inf`).
fn latency_total(mountpoint: &Path) -> Result<u64> {
    let path = counters_dir(mountpoint)?.join("wt_latency_us");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut total = 0;
    let mut lines = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(bound), Some(count), None) = (words.next(), words.next(), words.next()) else {
            anyhow::bail!("{}: bad line {line:?}", path.display());
        };
        ensure!(
            bound == "+inf" || bound.parse::<u64>().is_ok_and(|b| b.is_power_of_two()),
            "{}: bad bound in {line:?}",
            path.display()
        );
        total += count
            .parse::<u64>()
            .with_context(|| format!("{}: bad count in {line:?}", path.display()))?;
        lines += 1;
    }
    ensure!(
        lines == 24,
        "{}: {lines} buckets, expected 24",
        path.display()
    );
    Ok(total)
}

pub(crate) fn read_counters(mountpoint: &Path) -> Result<Counters> {
    read_counters_file(&counters_file(mountpoint)?)
}

/// The counters file of the untorn mount at `mountpoint`: its name depends on the mount's
/// device number, which a `stat` of the mount point gives while the mount is sound.
pub(crate) fn counters_file(mountpoint: &Path) -> Result<PathBuf> {
    Ok(counters_dir(mountpoint)?.join("counters"))
}

/// The counters of the counters file `path` (see [`counters_file`]): it reads nothing through
/// the mount, so it works after the device under it has gone.
pub(crate) fn read_counters_file(path: &Path) -> Result<Counters> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut counters = Counters::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) {
            if let Ok(value) = value.parse() {
                counters.insert(name.to_string(), value);
            }
        }
    }
    let missing: Vec<&str> = WT_COUNTERS
        .iter()
        .copied()
        .filter(|n| !counters.contains_key(*n))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} lacks the writethrough counters {missing:?}:\n{text}",
        path.display()
    );
    Ok(counters)
}

/// Fails unless each named counter grew by exactly the given amount.
pub(super) fn ensure_deltas(
    before: &Counters,
    after: &Counters,
    want: &[(&str, u64)],
    what: &str,
) -> Result<()> {
    let mut wrong = Vec::new();
    for &(name, delta) in want {
        let got = after
            .get(name)
            .copied()
            .unwrap_or(0)
            .wrapping_sub(before.get(name).copied().unwrap_or(0));
        if got != delta {
            wrong.push(format!("{name} grew by {got}, expected {delta}"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{what}: {}\ncounters now: {after:?}",
        wrong.join("; ")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// statx and the RWF_ATOMIC rules

/// `statx` reports storage's atomic limits (the lower file's or the device node's) within
/// untorn's.
fn statx_atomic_limits(subject: &mut Subject) -> Result<()> {
    let (tf, _) = subject.prefilled("statx-atomic-limits", 65536, 1)?;
    let lower = tf.storage_limits()?;
    let upper = FileLimits::of_file(&tf.path)?;
    println!("#   storage: {lower:?}");
    println!("#   untorn: {upper:?}");
    ensure!(
        lower.reported && lower.unit_min > 0,
        "storage reports no atomic writes ({lower:?}): the test needs an atomic device"
    );
    let want = untorn_limits(
        AtomicWriteLimits::new(lower.unit_min, lower.unit_max)
            .with_context(|| format!("invalid storage limits {lower:?}"))?,
    );
    ensure!(
        upper.reported,
        "statx through untorn: STATX_WRITE_ATOMIC is not in stx_mask (part 1 clears it)"
    );
    ensure!(
        upper.attr_write_atomic,
        "statx through untorn: STATX_ATTR_WRITE_ATOMIC is not set"
    );
    ensure!(
        (upper.unit_min, upper.unit_max) == (want.unit_min(), want.unit_max()),
        "statx through untorn: unit_min/unit_max {}/{}, expected {}/{} (storage's {}/{} within \
         [{UNTORN_ATOMIC_MIN}, {UNTORN_ATOMIC_MAX}])",
        upper.unit_min,
        upper.unit_max,
        want.unit_min(),
        want.unit_max(),
        lower.unit_min,
        lower.unit_max
    );
    let want_opt = lower.unit_max_opt.min(want.unit_max());
    ensure!(
        upper.unit_max_opt == want_opt,
        "statx through untorn: unit_max_opt {}, expected {want_opt} (storage's {})",
        upper.unit_max_opt,
        lower.unit_max_opt
    );
    ensure!(
        upper.segments_max == UIO_MAXIOV,
        "statx through untorn: segments_max {}, expected UIO_MAXIOV ({UIO_MAXIOV})",
        upper.segments_max
    );
    // A directory has no atomic writes.
    let dir = FileLimits::of_file(&tf.dir)?;
    ensure!(
        !dir.attr_write_atomic && dir.unit_min == 0 && dir.unit_max == 0,
        "statx of a directory through untorn reports atomic writes: {dir:?}"
    );
    Ok(())
}

/// The buffer of a write: in reference mode aligned for `O_DIRECT`.
fn write_buf(data: &[u8], aligned: bool) -> AlignedBuf {
    let mut buf = AlignedBuf::new(data.len(), if aligned { 4096 } else { 1 });
    buf.as_mut_slice().copy_from_slice(data);
    buf
}

/// Every unit size is taken and is on storage when the write returns, each one untorn write
/// (in raw mode one `REQ_ATOMIC` bio); so are iovecs of many segments and `O_DIRECT`.
fn rwf_atomic_accepted(subject: &mut Subject) -> Result<()> {
    let reference = subject.is_reference();
    const SIZE: usize = 4 << 20;
    let (tf, mut want) = subject.prefilled("rwf-atomic-accepted", SIZE, 2)?;
    let base = tf.base;
    let limits = tf.limits()?;
    // Through untorn: a buffered descriptor; in reference mode O_DIRECT on the lower.
    let file = open_rw(&tf.path, reference)?;
    let before = (!reference).then(|| tf.counters()).transpose()?;
    let mut writes = 0;
    let mut seed = 100;
    let mut size = limits.unit_min() as usize;
    while size <= limits.unit_max() as usize {
        for k in [0u64, 1, 3] {
            let offset = k * size as u64;
            if offset as usize + size > SIZE {
                continue;
            }
            seed += 1;
            let data = pattern(seed, size);
            let what = format!("RWF_ATOMIC write of {size} bytes at {offset}");
            expect_written(
                atomic_write(&file, write_buf(&data, reference).as_slice(), base + offset),
                size,
                &what,
            )?;
            writes += 1;
            want[offset as usize..offset as usize + size].copy_from_slice(&data);
            let back = read_at(&open_ro(&tf.path)?, base + offset, size)?;
            ensure_bytes(&back, &data, &format!("{what}: read back"))?;
            if !reference {
                // Written through: on the device at once, without fsync.
                let below = tf.below(offset, size)?;
                ensure_bytes(&below, &data, &format!("{what}: storage at once"))?;
            }
        }
        size *= 2;
    }
    if let Some(before) = before {
        ensure_deltas(
            &before,
            &tf.counters()?,
            &[
                ("untorn_writes", writes),
                ("device_atomic_writes", tf.device_bios(writes)),
                ("device_writes", tf.device_bios(writes)),
                ("device_flushes", 0),
            ],
            "the accepted writes",
        )?;
    }
    if reference {
        println!(
            "#   reference: multi-segment and unaligned buffers left out (O_DIRECT needs one \
             aligned segment)"
        );
    } else {
        let unit = page_unit(&limits);
        // Three segments, the middle one at an odd address.
        let data = pattern(200, unit);
        let (a, rest) = data.split_at(1);
        let (b, c) = rest.split_at(unit / 2 - 1);
        let mut odd = vec![0u8; b.len() + 1];
        odd[1..].copy_from_slice(b);
        let offset = 5 * unit as u64;
        let iov = [IoSlice::new(a), IoSlice::new(&odd[1..]), IoSlice::new(c)];
        expect_written(
            sys::pwritev2(&file, &iov, base + offset, sys::RWF_ATOMIC),
            unit,
            &format!("RWF_ATOMIC write of {unit} bytes in 3 segments, one at an odd address"),
        )?;
        want[offset as usize..offset as usize + unit].copy_from_slice(&data);
        // UIO_MAXIOV segments.
        let data = pattern(201, unit);
        let iov: Vec<IoSlice> = data
            .chunks(unit.div_ceil(UIO_MAXIOV as usize))
            .map(IoSlice::new)
            .collect();
        let offset = 6 * unit as u64;
        expect_written(
            sys::pwritev2(&file, &iov, base + offset, sys::RWF_ATOMIC),
            unit,
            &format!("RWF_ATOMIC write of {unit} bytes in {} segments", iov.len()),
        )?;
        want[offset as usize..offset as usize + unit].copy_from_slice(&data);
        // O_DIRECT through untorn keeps RWF_ATOMIC for the lower (in raw mode, the device's
        // own direct atomic write).
        let direct = open_rw(&tf.path, true)?;
        let data = pattern(202, unit);
        let offset = 7 * unit as u64;
        expect_written(
            atomic_write(&direct, write_buf(&data, true).as_slice(), base + offset),
            unit,
            &format!("O_DIRECT RWF_ATOMIC write of {unit} bytes through untorn"),
        )?;
        want[offset as usize..offset as usize + unit].copy_from_slice(&data);
        tf.ensure_below(&want, "after the RWF_ATOMIC writes")?;
    }
    tf.ensure_upper(&want, "after the RWF_ATOMIC writes")
}

/// Shapes the limits refuse are `EINVAL`, write nothing (no device bio in raw mode) and are
/// counted as `err_inval`.
fn rwf_atomic_refused(subject: &mut Subject) -> Result<()> {
    let reference = subject.is_reference();
    const SIZE: usize = (1 << 20) + 1000;
    let (tf, want) = subject.prefilled("rwf-atomic-refused", SIZE, 3)?;
    let base = tf.base;
    let limits = tf.limits()?;
    let file = open_rw(&tf.path, reference)?;
    let (min, max) = (u64::from(limits.unit_min()), u64::from(limits.unit_max()));
    let end = (SIZE as u64).div_ceil(2 * min) * 2 * min;
    let mut cases = vec![
        ("length not a power of two", 0, 3 * min),
        ("offset not a multiple of the length", min, 2 * min),
        (
            "offset not a multiple of the length, past the prefilled bytes",
            end + min,
            2 * min,
        ),
        ("length above unit_max", 0, 2 * max),
    ];
    if min > 512 {
        cases.push(("length below unit_min", 0, min / 2));
    }
    if !reference && 2 * max < 2 * u64::from(UNTORN_ATOMIC_MAX) {
        cases.push((
            "length above UNTORN_ATOMIC_MAX",
            0,
            2 * u64::from(UNTORN_ATOMIC_MAX),
        ));
    }
    let before = (!reference).then(|| tf.counters()).transpose()?;
    for &(what, offset, len) in &cases {
        let len = len as usize;
        let data = pattern(300 + offset + len as u64, len);
        let what = format!("RWF_ATOMIC write of {len} bytes at {offset} ({what})");
        // The rule, as lib/untorn_logic states it, agrees (a region's base is aligned to any
        // unit, so the offset from it is what counts).
        ensure!(
            atomic_write::check(offset, len as u64, &limits).map_err(|e| e.errno())
                == Err(libc::EINVAL),
            "{what}: lib/untorn_logic does not refuse it with EINVAL"
        );
        expect_err(
            atomic_write(&file, write_buf(&data, true).as_slice(), base + offset),
            libc::EINVAL,
            &what,
        )?;
        tf.ensure_upper(&want, &format!("after the refused {what}"))?;
    }
    // A zero-length write never reaches the filesystem: 0, whatever the flags.
    let zero = sys::pwritev2(&file, &[], base, sys::RWF_ATOMIC);
    ensure!(
        matches!(zero, Ok(0)),
        "RWF_ATOMIC write of 0 bytes: {zero:?}, expected 0"
    );
    if let Some(before) = before {
        ensure_deltas(
            &before,
            &tf.counters()?,
            &[
                ("untorn_writes", 0),
                ("device_writes", 0),
                ("err_inval", cases.len() as u64),
            ],
            "the refused writes",
        )?;
        tf.ensure_below(&want, "after the refused writes")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The mode ioctl

fn mode_ioctl(stack: &mut Stack) -> Result<()> {
    let (up, low) = test_dir(stack, "mode-ioctl")?;
    prefilled(&up.join("f"), 10000, 4)?;
    let f = open_ro(&up.join("f"))?;
    ensure_mode(&f, FileMode::OFF, FileMode::OFF, "a new file")?;
    expect_err(
        sys::getxattr(&low.join("f"), MODE_XATTR),
        libc::ENODATA,
        "the lower xattr of a new file",
    )?;
    set_mode(&f, FileMode::WRITETHROUGH, "set writethrough")?;
    ensure_mode(
        &f,
        FileMode::WRITETHROUGH,
        FileMode::WRITETHROUGH,
        "after SET writethrough (writethrough=marked)",
    )?;
    let stored = sys::getxattr(&low.join("f"), MODE_XATTR)
        .map_err(|e| anyhow!("the lower {MODE_XATTR} after SET: {}", describe(&e)))?;
    ensure!(
        stored == MODE_XATTR_WRITETHROUGH,
        "the lower {MODE_XATTR} is {:?}, expected {:?}",
        String::from_utf8_lossy(&stored),
        String::from_utf8_lossy(MODE_XATTR_WRITETHROUGH)
    );
    // SET ignores `effective`; SET of the same mode again succeeds.
    sys::set_mode(
        &f,
        &UntornMode {
            mode: FileMode::WRITETHROUGH,
            effective: 7,
            ..UntornMode::default()
        },
    )
    .map_err(|e| anyhow!("SET with effective=7 (ignored): {}", describe(&e)))?;
    set_mode(&f, FileMode::OFF, "set off")?;
    ensure_mode(&f, FileMode::OFF, FileMode::OFF, "after SET off")?;
    expect_err(
        sys::getxattr(&low.join("f"), MODE_XATTR),
        libc::ENODATA,
        "the lower xattr after SET off",
    )?;
    // Bad requests change nothing.
    for (bad, what) in [
        (mode_of(2), "mode 2"),
        (mode_of(u32::MAX), "mode 0xffffffff"),
        (
            UntornMode {
                mode: FileMode::WRITETHROUGH,
                flags: 1,
                ..UntornMode::default()
            },
            "flags 1",
        ),
        (
            UntornMode {
                mode: FileMode::WRITETHROUGH,
                reserved: 1,
                ..UntornMode::default()
            },
            "reserved 1",
        ),
    ] {
        expect_err(
            sys::set_mode(&f, &bad),
            libc::EINVAL,
            &format!("SET with {what}"),
        )?;
        ensure_mode(
            &f,
            FileMode::OFF,
            FileMode::OFF,
            &format!("after SET with {what}"),
        )?;
    }
    let bad = BadAddresses::new()?;
    for (addr, what) in bad.addresses() {
        for (request, name) in [
            (UNTORN_IOC_GET_MODE, "GET_MODE"),
            (UNTORN_IOC_SET_MODE, "SET_MODE"),
        ] {
            expect_err(
                bad.ioctl(&f, request, addr),
                libc::EFAULT,
                &format!("{name} with {what} as the argument"),
            )?;
        }
    }
    // A writable descriptor works the same.
    let w = open_rw(&up.join("f"), false)?;
    set_mode(
        &w,
        FileMode::WRITETHROUGH,
        "SET through an O_RDWR descriptor",
    )?;
    ensure_mode(
        &f,
        FileMode::WRITETHROUGH,
        FileMode::WRITETHROUGH,
        "seen by another descriptor",
    )?;
    // Regular files only: the directory ioctl knows neither.
    let dir = open_ro(&up)?;
    expect_err(sys::get_mode(&dir), libc::ENOTTY, "GET_MODE on a directory")?;
    expect_err(
        sys::set_mode(&dir, &mode_of(FileMode::WRITETHROUGH)),
        libc::ENOTTY,
        "SET_MODE on a directory",
    )?;
    Ok(())
}

fn mode_xattr_hidden(stack: &mut Stack) -> Result<()> {
    let (up, low) = test_dir(stack, "mode-xattr-hidden")?;
    prefilled(&up.join("f"), 4096, 5)?;
    let f = up.join("f");
    // Not through xattr calls: an unmarked file cannot be marked that way.
    expect_err(
        sys::setxattr(&f, MODE_XATTR, MODE_XATTR_WRITETHROUGH, 0),
        libc::EPERM,
        &format!("setxattr {MODE_XATTR} through untorn"),
    )?;
    expect_err(
        sys::setxattr(&f, "trusted.untorn.other", b"x", 0),
        libc::EPERM,
        "setxattr trusted.untorn.other through untorn",
    )?;
    expect_err(
        sys::getxattr(&low.join("f"), MODE_XATTR),
        libc::ENODATA,
        "the lower xattr after the refused setxattr",
    )?;
    let file = open_ro(&f)?;
    set_mode(&file, FileMode::WRITETHROUGH, "set writethrough")?;
    expect_err(
        sys::getxattr(&f, MODE_XATTR),
        libc::ENODATA,
        &format!("getxattr {MODE_XATTR} through untorn of a marked file"),
    )?;
    expect_err(
        sys::removexattr(&f, MODE_XATTR),
        libc::EPERM,
        &format!("removexattr {MODE_XATTR} through untorn"),
    )?;
    expect_err(
        sys::setxattr(&f, MODE_XATTR, b"off", libc::XATTR_REPLACE),
        libc::EPERM,
        &format!("setxattr {MODE_XATTR} (replace) through untorn"),
    )?;
    let names = sys::listxattr(&f)?;
    ensure!(
        !names.iter().any(|n| n.starts_with("trusted.untorn.")),
        "listxattr through untorn shows {names:?}"
    );
    let lower_names = sys::listxattr(&low.join("f"))?;
    ensure!(
        lower_names.iter().any(|n| n == MODE_XATTR),
        "listxattr of the lower file lacks {MODE_XATTR}: {lower_names:?}"
    );
    ensure!(
        sys::getxattr(&low.join("f"), MODE_XATTR)? == MODE_XATTR_WRITETHROUGH,
        "the lower {MODE_XATTR} changed"
    );
    ensure_mode(
        &file,
        FileMode::WRITETHROUGH,
        FileMode::WRITETHROUGH,
        "after the refused xattr calls",
    )?;
    // Other trusted. names still pass (as root).
    sys::setxattr(&f, "trusted.other", b"v", 0)
        .map_err(|e| anyhow!("setxattr trusted.other through untorn: {}", describe(&e)))?;
    ensure!(
        sys::getxattr(&low.join("f"), "trusted.other")? == b"v",
        "trusted.other is not on the lower"
    );
    Ok(())
}

/// The effective mode the policy gives a file of `mode`.
fn effective(policy: WritethroughPolicy, mode: FileMode) -> u32 {
    if policy.writes_through(mode) {
        FileMode::WRITETHROUGH
    } else {
        FileMode::OFF
    }
}

/// Checks GET of the marked and plain files under `policy`, and that a write to each is
/// written through exactly when effective (the counters of the mount).
fn check_policy(mount: &Path, policy: WritethroughPolicy, what: &str) -> Result<()> {
    for (name, mode) in [("marked", FileMode::Writethrough), ("plain", FileMode::Off)] {
        let path = mount.join(name);
        let f = open_rw(&path, false)?;
        let eff = effective(policy, mode);
        ensure_mode(&f, mode.as_u32(), eff, &format!("{what}: {name}"))?;
        let before = read_counters(mount)?;
        f.write_all_at(&pattern(7, 100), 1000)?;
        let after = read_counters(mount)?;
        ensure_deltas(
            &before,
            &after,
            &[("writethrough_writes", u64::from(eff))],
            &format!("{what}: a write to {name}"),
        )?;
    }
    Ok(())
}

fn mode_mount_option(stack: &mut Stack) -> Result<()> {
    let src = stack.lower_dir().join("mode-mount-option");
    fs::create_dir(&src)?;
    let src_str = guest::path_str(&src)?;
    {
        let m = Mounted::mount(UNTORN, src_str, "")?;
        prefilled(&m.path().join("plain"), 8192, 6)?;
        let (marked, _) = prefilled(&m.path().join("marked"), 8192, 7)?;
        set_mode(&marked, FileMode::WRITETHROUGH, "mark")?;
    }
    for (options, policy) in [
        ("", WritethroughPolicy::Marked),
        ("writethrough=marked", WritethroughPolicy::Marked),
        ("writethrough=all", WritethroughPolicy::All),
        ("writethrough=none", WritethroughPolicy::None),
    ] {
        let m = Mounted::mount(UNTORN, src_str, options)?;
        check_policy(m.path(), policy, &format!("mount -o '{options}'"))?;
    }
    let m = Mounted::mount(UNTORN, src_str, "")?;
    for policy in [
        WritethroughPolicy::All,
        WritethroughPolicy::None,
        WritethroughPolicy::Marked,
    ] {
        let options = format!("writethrough={}", policy.as_str());
        sys::mount(
            Path::new("none"),
            m.path(),
            UNTORN,
            libc::MS_REMOUNT,
            &options,
        )
        .with_context(|| format!("mount -o remount,{options}"))?;
        check_policy(m.path(), policy, &format!("remount,{options}"))?;
    }
    Ok(())
}

fn mode_persistence(stack: &mut Stack) -> Result<()> {
    let (up, _) = test_dir(stack, "mode-persistence")?;
    let (marked, _) = prefilled(&up.join("marked"), 8192, 8)?;
    set_mode(&marked, FileMode::WRITETHROUGH, "mark")?;
    drop(marked);
    prefilled(&up.join("plain"), 8192, 9)?;
    let check = |up: &Path, what: &str| -> Result<()> {
        ensure_mode(
            &open_ro(&up.join("marked"))?,
            FileMode::WRITETHROUGH,
            FileMode::WRITETHROUGH,
            &format!("marked, {what}"),
        )?;
        ensure_mode(
            &open_ro(&up.join("plain"))?,
            FileMode::OFF,
            FileMode::OFF,
            &format!("plain, {what}"),
        )
    };
    // Inode eviction: nothing holds the inodes, drop_caches frees them.
    guest::drop_caches()?;
    check(&up, "after drop_caches")?;
    stack.cycle()?;
    let up = stack.top().join("mode-persistence");
    check(&up, "after umount and mount")?;
    // And back off, persistently.
    set_mode(&open_ro(&up.join("marked"))?, FileMode::OFF, "unmark")?;
    stack.cycle()?;
    let up = stack.top().join("mode-persistence");
    ensure_mode(
        &open_ro(&up.join("marked"))?,
        FileMode::OFF,
        FileMode::OFF,
        "unmarked, after umount and mount",
    )
}

fn mode_permissions(stack: &mut Stack) -> Result<()> {
    const OWNER: u32 = 1000;
    const OTHER: u32 = 2000;
    let (up, _) = test_dir(stack, "mode-permissions")?;
    prefilled(&up.join("f"), 4096, 10)?;
    std::os::unix::fs::chown(up.join("f"), Some(OWNER), Some(OWNER))?;
    let f = open_ro(&up.join("f"))?;
    // In a child with other credentials, on this descriptor (opened as root).
    let ioctl_as = |uid: u32, caps: &[u32], set: Option<u32>| -> Result<i32> {
        let f = &f;
        sys::in_child_as(uid, uid, caps, move || {
            let result = match set {
                Some(mode) => sys::set_mode(f, &mode_of(mode)),
                None => sys::get_mode(f).map(drop),
            };
            match result {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            }
        })
        .context("cannot run a child with other credentials")
    };
    let expect = |got: i32, want: i32, what: &str| -> Result<()> {
        ensure!(
            got == want,
            "{what}: got {}, expected {}",
            if got == 0 {
                "success".into()
            } else {
                sys::errno_name(got)
            },
            if want == 0 {
                "success".into()
            } else {
                sys::errno_name(want)
            }
        );
        Ok(())
    };
    expect(
        ioctl_as(OTHER, &[], None)?,
        0,
        "GET_MODE by another uid (any opener may)",
    )?;
    expect(
        ioctl_as(OTHER, &[], Some(FileMode::WRITETHROUGH))?,
        libc::EPERM,
        "SET_MODE by another uid without capabilities",
    )?;
    expect(
        ioctl_as(
            OTHER,
            &[sys::CAP_SYS_ADMIN, sys::CAP_DAC_OVERRIDE],
            Some(FileMode::WRITETHROUGH),
        )?,
        libc::EPERM,
        "SET_MODE by another uid with CAP_SYS_ADMIN and CAP_DAC_OVERRIDE but not CAP_FOWNER",
    )?;
    ensure_mode(&f, FileMode::OFF, FileMode::OFF, "after the refused SETs")?;
    expect(
        ioctl_as(OWNER, &[], Some(FileMode::WRITETHROUGH))?,
        0,
        "SET_MODE by the owner without capabilities",
    )?;
    ensure_mode(
        &f,
        FileMode::WRITETHROUGH,
        FileMode::WRITETHROUGH,
        "after SET by the owner",
    )?;
    expect(
        ioctl_as(OTHER, &[sys::CAP_FOWNER], Some(FileMode::OFF))?,
        0,
        "SET_MODE by another uid with CAP_FOWNER only",
    )?;
    ensure_mode(
        &f,
        FileMode::OFF,
        FileMode::OFF,
        "after SET with CAP_FOWNER",
    )
}

fn mode_read_only_erofs(stack: &mut Stack) -> Result<()> {
    let src = stack.lower_dir().join("mode-read-only");
    fs::create_dir(&src)?;
    let m = Mounted::mount(UNTORN, guest::path_str(&src)?, "")?;
    prefilled(&m.path().join("f"), 4096, 11)?;
    sys::mount(
        Path::new("none"),
        m.path(),
        UNTORN,
        libc::MS_REMOUNT | libc::MS_RDONLY,
        "",
    )
    .context("mount -o remount,ro")?;
    let f = open_ro(&m.path().join("f"))?;
    expect_err(
        sys::set_mode(&f, &mode_of(FileMode::WRITETHROUGH)),
        libc::EROFS,
        "SET_MODE on a read-only mount",
    )?;
    ensure_mode(
        &f,
        FileMode::OFF,
        FileMode::OFF,
        "GET_MODE on a read-only mount",
    )?;
    expect_err(
        sys::getxattr(&src.join("f"), MODE_XATTR),
        libc::ENODATA,
        "the lower xattr after the refused SET",
    )?;
    drop(f);
    sys::mount(Path::new("none"), m.path(), UNTORN, libc::MS_REMOUNT, "")
        .context("mount -o remount,rw")?;
    let f = open_ro(&m.path().join("f"))?;
    set_mode(&f, FileMode::WRITETHROUGH, "SET after remount,rw")
}

// ---------------------------------------------------------------------------------------------
// Writethrough semantics

/// In writethrough mode a plain write is on storage when it returns, an eligible one as one
/// untorn write, with exact counters; `RWF_ATOMIC` writes through a file in mode off too, and a
/// plain write to it is not written through.
fn written_through_at_once(subject: &mut Subject) -> Result<()> {
    // A mount of its own, so that only this test's writes show in the counters.
    let (tf, mut want) = subject.prefilled_on_own_mount("written-through", 65536, 12)?;
    let (f, base, mount) = (&tf.file, tf.base, tf.mount()?);
    let unit = page_unit(&tf.limits()?);
    set_mode(f, FileMode::WRITETHROUGH, "mark f")?;
    let c0 = read_counters(mount)?;
    let l0 = latency_total(mount)?;

    // Not eligible (unaligned): written through without the promise.
    let small = pattern(13, 100);
    expect_written(
        f.write_at(&small, base + 5000),
        100,
        "writethrough write of 100 bytes at 5000",
    )?;
    want[5000..5100].copy_from_slice(&small);
    tf.ensure_below(&want, "after a 100-byte writethrough write")?;
    tf.ensure_upper(&want, "after a 100-byte writethrough write")?;
    // Eligible: one untorn write.
    let page = pattern(14, unit);
    expect_written(
        f.write_at(&page, base + unit as u64),
        unit,
        &format!("writethrough write of {unit} bytes at {unit}"),
    )?;
    want[unit..2 * unit].copy_from_slice(&page);
    tf.ensure_below(&want, "after an eligible writethrough write")?;
    let c1 = read_counters(mount)?;
    ensure_deltas(
        &c0,
        &c1,
        &[
            ("writethrough_writes", 2),
            ("writethrough_bytes", 100 + unit as u64),
            ("untorn_writes", 1),
            ("untorn_bytes", unit as u64),
            ("writethrough_not_eligible", 1),
            ("err_fault", 0),
            ("err_inval", 0),
            ("err_lower", 0),
            ("device_atomic_writes", tf.device_bios(1)),
        ],
        "after two writethrough writes",
    )?;
    let l1 = latency_total(mount)?;
    ensure!(
        l1 == l0 + 2,
        "wt_latency_us counts {} writes more after two writethrough writes",
        l1 as i64 - l0 as i64
    );
    // The folios are clean: fsync writes nothing back.
    f.sync_all()?;
    let c2 = read_counters(mount)?;
    ensure_deltas(
        &c1,
        &c2,
        &[("writeback", 0)],
        "fsync after writethrough writes",
    )?;

    // RWF_ATOMIC on a file that is not in writethrough mode.
    let (tg, mut want_g) = tf.second("g", 65536, 15)?;
    let (g, base_g) = (&tg.file, tg.base);
    ensure_mode(g, FileMode::OFF, FileMode::OFF, "g")?;
    let c3 = read_counters(mount)?;
    let page = pattern(16, unit);
    expect_written(
        atomic_write(g, &page, base_g + 2 * unit as u64),
        unit,
        &format!("RWF_ATOMIC write of {unit} bytes to a file in mode off"),
    )?;
    want_g[2 * unit..3 * unit].copy_from_slice(&page);
    tg.ensure_below(&want_g, "after an RWF_ATOMIC write")?;
    // A refused one counts as an EINVAL failure.
    expect_err(
        atomic_write(g, &page, base_g + 1),
        libc::EINVAL,
        "misaligned RWF_ATOMIC write",
    )?;
    let c4 = read_counters(mount)?;
    ensure_deltas(
        &c3,
        &c4,
        &[
            ("writethrough_writes", 1),
            ("untorn_writes", 1),
            ("untorn_bytes", unit as u64),
            ("writethrough_not_eligible", 0),
            ("err_inval", 1),
            ("device_atomic_writes", tg.device_bios(1)),
        ],
        "after an RWF_ATOMIC write and a refused one",
    )?;
    // Plain buffered writes to g are not written through.
    g.write_all_at(&pattern(17, 100), base_g)?;
    let c5 = read_counters(mount)?;
    ensure_deltas(
        &c4,
        &c5,
        &[("writethrough_writes", 0), ("device_writes", 0)],
        "a buffered write",
    )?;
    Ok(())
}

/// A shared mapping and writes through untorn see each other at once, whichever comes first,
/// and storage gets both.
fn mmap_coherence(subject: &mut Subject) -> Result<()> {
    const SIZE: usize = 65536;
    let (tf, mut want) = subject.prefilled("mmap-coherence", SIZE, 20)?;
    let (f, base) = (&tf.file, tf.base);
    let limits = tf.limits()?;
    let unit = page_unit(&limits).min(SIZE / 4);
    let mut map = Mapping::new(f, base, SIZE, true)?;
    // Mapped and read before; sees an untorn write after.
    ensure_bytes(
        &map.as_mut_slice()[unit..2 * unit],
        &want[unit..2 * unit],
        "the mapping before",
    )?;
    let new = pattern(21, unit);
    expect_written(
        atomic_write(f, &new, base + unit as u64),
        unit,
        &format!("RWF_ATOMIC write of {unit} bytes at {unit}"),
    )?;
    want[unit..2 * unit].copy_from_slice(&new);
    ensure_bytes(
        &map.as_mut_slice()[unit..2 * unit],
        &new,
        "the mapping after an RWF_ATOMIC write",
    )?;

    // An mmap write, then a writethrough write to other bytes of the same page: both reach the
    // lower, the mmap bytes first.
    set_mode(f, FileMode::WRITETHROUGH, "mark f")?;
    map.as_mut_slice()[..100].copy_from_slice(&pattern(22, 100));
    want[..100].copy_from_slice(&pattern(22, 100));
    let wt = pattern(23, 100);
    expect_written(
        f.write_at(&wt, base + 200),
        100,
        "writethrough write of 100 bytes at 200",
    )?;
    want[200..300].copy_from_slice(&wt);
    tf.ensure_upper(&want, "after an mmap write and a writethrough write")?;
    ensure_bytes(
        &tf.below(0, 4096)?,
        &want[..4096],
        "the storage page holding an mmap write and a writethrough write",
    )?;

    // An mmap write inside a unit, then an untorn write of the whole unit: the later write wins
    // everywhere; a new mmap write after it takes effect (the page is writable again).
    let at = 2 * unit;
    map.as_mut_slice()[at..at + 10].copy_from_slice(b"0123456789");
    let new = pattern(24, unit);
    expect_written(
        atomic_write(f, &new, base + at as u64),
        unit,
        &format!("RWF_ATOMIC write of {unit} bytes over an mmap-dirtied unit"),
    )?;
    want[at..at + unit].copy_from_slice(&new);
    ensure_bytes(
        &map.as_mut_slice()[at..at + unit],
        &new,
        "the mapping after the unit write",
    )?;
    ensure_bytes(
        &tf.below(at as u64, unit)?,
        &new,
        "the storage unit after the unit write",
    )?;
    map.as_mut_slice()[at..at + 5].copy_from_slice(b"after");
    want[at..at + 5].copy_from_slice(b"after");
    tf.ensure_upper(&want, "after an mmap write following the unit write")?;

    // Writes whose source is the mapping of the very bytes they overwrite: the copy from the
    // user must happen before the folios are locked, or it would wait on itself. A
    // writethrough write that is not eligible (unaligned), then an untorn one.
    let src = want[3 * unit + 50..3 * unit + 150].to_vec();
    let from_map = map.as_mut_slice()[3 * unit + 50..3 * unit + 150].to_vec();
    ensure_bytes(&from_map, &src, "the mapping before writing from it")?;
    let mapped = &map.as_mut_slice()[3 * unit + 50..3 * unit + 150];
    expect_written(
        f.write_at(mapped, base + 3 * unit as u64 + 60),
        100,
        "writethrough write from a mapping of the bytes it overwrites",
    )?;
    want[3 * unit + 60..3 * unit + 160].copy_from_slice(&src);
    let mapped = &map.as_mut_slice()[3 * unit..4 * unit];
    let unit_src = want[3 * unit..4 * unit].to_vec();
    expect_written(
        atomic_write(f, mapped, base + 3 * unit as u64),
        unit,
        "RWF_ATOMIC write from a mapping of the unit it overwrites",
    )?;
    want[3 * unit..4 * unit].copy_from_slice(&unit_src);
    tf.ensure_upper(&want, "after writes from the file's own mapping")?;

    map.sync()?;
    tf.ensure_below(&want, "after msync")?;
    Ok(())
}

fn end_of_file(stack: &mut Stack) -> Result<()> {
    let (up, low) = test_dir(stack, "end-of-file")?;
    let f = create_with(&up.join("f"), b"")?;
    let limits = untorn_limits(lower_limits(&low.join("f"))?.1);
    ensure!(limits.is_supported(), "the lower offers no atomic writes");
    let unit = page_unit(&limits);
    set_mode(&f, FileMode::WRITETHROUGH, "mark f")?;
    let mut want = Vec::new();
    let mut write = |offset: usize, data: &[u8], atomic: bool, what: &str| -> Result<()> {
        let result = if atomic {
            atomic_write(&f, data, offset as u64)
        } else {
            f.write_at(data, offset as u64)
        };
        expect_written(result, data.len(), what)?;
        if want.len() < offset + data.len() {
            want.resize(offset + data.len(), 0);
        }
        want[offset..offset + data.len()].copy_from_slice(data);
        let size = f.metadata()?.len();
        ensure!(
            size == want.len() as u64,
            "{what}: size {size} through untorn, expected {}",
            want.len()
        );
        ensure_lower(&low.join("f"), &want, what)?;
        ensure_upper(&up.join("f"), &want, what)
    };
    write(
        0,
        &pattern(30, 5000),
        false,
        "5000 bytes into an empty file",
    )?;
    write(
        5000,
        &pattern(31, 100),
        false,
        "100 bytes at EOF 5000 (partial last block)",
    )?;
    write(
        9000,
        &pattern(32, 10),
        false,
        "10 bytes past EOF, leaving a hole",
    )?;
    let past = 9010usize.div_ceil(unit) * unit + unit;
    write(
        past,
        &pattern(33, unit),
        true,
        "an RWF_ATOMIC unit past EOF",
    )?;
    write(
        past,
        &pattern(34, unit),
        true,
        "an RWF_ATOMIC unit ending at EOF",
    )?;
    write(
        0,
        &pattern(35, unit),
        true,
        "an RWF_ATOMIC unit inside the file",
    )?;
    // A unit holding EOF.
    let g = create_with(&up.join("g"), &pattern(36, 1000))?;
    set_mode(&g, FileMode::WRITETHROUGH, "mark g")?;
    let data = pattern(37, unit);
    expect_written(
        atomic_write(&g, &data, 0),
        unit,
        "an RWF_ATOMIC unit holding EOF 1000",
    )?;
    ensure_lower(&low.join("g"), &data, "a unit holding EOF")?;
    ensure_upper(&up.join("g"), &data, "a unit holding EOF")?;
    // O_APPEND lands at the exact end, on the lower too.
    let h = OpenOptions::new().append(true).open(up.join("g"))?;
    let mut want = data;
    for i in 0..5 {
        let piece = pattern(38 + i, 333 + 1000 * i as usize);
        expect_written(
            std::io::Write::write(&mut &h, &piece),
            piece.len(),
            "an O_APPEND writethrough write",
        )?;
        want.extend_from_slice(&piece);
        ensure_lower(
            &low.join("g"),
            &want,
            "after an O_APPEND writethrough write",
        )?;
    }
    ensure_upper(&up.join("g"), &want, "after the O_APPEND writes")
}

/// Writes version 1 of units `0..units` of `unit` bytes from `base`, each with one
/// `RWF_ATOMIC` write.
fn write_first_versions(f: &File, base: u64, unit: usize, units: usize) -> Result<()> {
    let mut buf = vec![0u8; unit];
    for i in 0..units {
        let tag = UnitTag {
            unit: i as u64,
            version: 1,
        };
        fill_unit(&mut buf, tag).map_err(|e| anyhow!("fill_unit: {e:?}"))?;
        expect_written(
            atomic_write(f, &buf, base + (i * unit) as u64),
            unit,
            &format!("the first RWF_ATOMIC write of unit {i} ({unit} bytes)"),
        )?;
    }
    Ok(())
}

/// Fails unless the first `size` bytes of the test file through untorn equal storage's (read
/// `O_DIRECT`), and units `0..units` of `unit` bytes are each whole.
fn ensure_whole_and_below(
    tf: &TestFile,
    size: usize,
    unit: usize,
    units: usize,
    what: &str,
) -> Result<()> {
    let upper = read_at(&open_ro(&tf.path)?, tf.base, size)?;
    let below = tf.below(0, size)?;
    ensure_bytes(&below, &upper, &format!("storage against untorn {what}"))?;
    for i in 0..units {
        let state = inspect_unit(&upper[i * unit..(i + 1) * unit], i as u64);
        ensure!(
            matches!(state, Ok(UnitState::Whole(_))),
            "unit {i} {what}: {state:?}"
        );
    }
    Ok(())
}

/// A new, empty file `f` in a fresh test directory, on a lower that offers atomic writes.
struct AtomicFile {
    up: PathBuf,
    path: PathBuf,
    file: File,
    /// untorn's limits for the file.
    limits: AtomicWriteLimits,
}

/// Makes the [`AtomicFile`] of test `name`; fails if the lower offers no atomic writes.
fn atomic_file(stack: &Stack, name: &str) -> Result<AtomicFile> {
    let (up, low) = test_dir(stack, name)?;
    let path = up.join("f");
    let file = create_with(&path, b"")?;
    let limits = untorn_limits(lower_limits(&low.join("f"))?.1);
    ensure!(limits.is_supported(), "the lower offers no atomic writes");
    Ok(AtomicFile {
        up,
        path,
        file,
        limits,
    })
}

/// How long the negative control of the racing test may run before it must have seen a tear.
const RACE_CONTROL_TIME: Duration = Duration::from_secs(30);

/// What a race of untorn writers against checking readers saw.
struct RaceOutcome {
    writes: u64,
    reads: u64,
    /// The first torn or corrupt read, or another failure of a thread.
    failure: Option<String>,
}

/// Two writers make overlapping `RWF_ATOMIC` writes of whole units (tagged with the unit and a
/// new version) to the first `units` units from `base` of `path`, while two readers read one
/// unit or two neighbours and check that each is whole; for `time`, or until the first failure.
fn race_units(path: &Path, base: u64, unit: usize, units: usize, time: Duration) -> RaceOutcome {
    const WRITERS: u64 = 2;
    const READERS: u64 = 2;
    let versions: Vec<AtomicU64> = (0..units).map(|_| AtomicU64::new(2)).collect();
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let fail = |message: String| {
        if let Ok(mut f) = failure.lock() {
            f.get_or_insert(message);
        }
        stop.store(true, Ordering::Relaxed);
    };
    let (writes, reads) = (AtomicU64::new(0), AtomicU64::new(0));
    let watchdog = Watchdog::start("racing untorn writes", time + Duration::from_secs(120));
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (versions, stop, fail, writes) = (&versions, &stop, &fail, &writes);
            s.spawn(move || {
                let file = match open_rw(path, false) {
                    Ok(file) => file,
                    Err(e) => return fail(format!("writer {w}: {e:#}")),
                };
                let mut rng = SplitMix64::new(1000 + w);
                let mut buf = vec![0u8; unit];
                while !stop.load(Ordering::Relaxed) {
                    // Few units, two writers: writes to one unit overlap.
                    let i = (rng.next_u64() % units as u64) as usize;
                    let version = versions[i].fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = fill_unit(
                        &mut buf,
                        UnitTag {
                            unit: i as u64,
                            version,
                        },
                    ) {
                        return fail(format!("fill_unit: {e:?}"));
                    }
                    match atomic_write(&file, &buf, base + (i * unit) as u64) {
                        Ok(n) if n == unit => {}
                        Ok(n) => return fail(format!("writer {w}: short write {n} of unit {i}")),
                        Err(e) => {
                            return fail(format!(
                                "writer {w}: RWF_ATOMIC write of unit {i} version {version}: {}",
                                describe(&e)
                            ))
                        }
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for r in 0..READERS {
            let (stop, fail, reads) = (&stop, &fail, &reads);
            s.spawn(move || {
                let file = match open_ro(path) {
                    Ok(file) => file,
                    Err(e) => return fail(format!("reader {r}: {e:#}")),
                };
                let mut rng = SplitMix64::new(2000 + r);
                let mut buf = vec![0u8; 2 * unit];
                while !stop.load(Ordering::Relaxed) {
                    let i = (rng.next_u64() % (units as u64 - 1)) as usize;
                    // One unit, or two neighbours in one read.
                    let n = if rng.next_u64() % 2 == 0 { 1 } else { 2 };
                    let len = n * unit;
                    if let Err(e) = file.read_exact_at(&mut buf[..len], base + (i * unit) as u64) {
                        return fail(format!("reader {r}: read of unit {i}: {e}"));
                    }
                    for k in 0..n {
                        let state = inspect_unit(&buf[k * unit..(k + 1) * unit], (i + k) as u64);
                        if !matches!(state, Ok(UnitState::Whole(v)) if v >= 1) {
                            return fail(format!(
                                "reader {r}: unit {} read as {state:?} (a torn or corrupt read) \
                                 after {} reads",
                                i + k,
                                reads.load(Ordering::Relaxed)
                            ));
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let start = Instant::now();
        while start.elapsed() < time && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            watchdog.tick();
        }
        stop.store(true, Ordering::Relaxed);
    });
    drop(watchdog);
    RaceOutcome {
        writes: writes.into_inner(),
        reads: reads.into_inner(),
        failure: failure.into_inner().ok().flatten(),
    }
}

/// Sets untorn's testing knob `debug_skip_publication` of the mount at `mountpoint`.
fn set_skip_publication(mountpoint: &Path, on: bool) -> Result<()> {
    let path = counters_dir(mountpoint)?.join("debug_skip_publication");
    fs::write(&path, if on { "true" } else { "false" })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Racing overlapping untorn writes with readers that check every unit they read; then the
/// negative control: the same race with untorn's publication switched off must show a torn
/// read, or the race could not have caught one.
fn racing_atomic_writes(subject: &mut Subject) -> Result<()> {
    const UNITS: usize = 16;
    let tf = subject.file("racing")?;
    let limits = tf.limits()?;
    let mount = tf.mount()?;
    // The largest unit both lowers take: the longer a copy into the page cache, the likelier
    // a reader meets one half done.
    let unit = 65536u32.clamp(limits.unit_min(), limits.unit_max()) as usize;
    write_first_versions(&tf.file, tf.base, unit, UNITS)?;
    let before = read_counters(mount)?;
    let race = race_units(&tf.path, tf.base, unit, UNITS, RACE_TIME);
    let retries = read_counters(mount)?
        .get("reader_retries")
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get("reader_retries").copied().unwrap_or(0));
    println!(
        "#   {} overlapping untorn writes of {unit} bytes, {} checked reads, {retries} reads \
         done again after a publication",
        race.writes, race.reads
    );
    if let Some(message) = race.failure {
        bail!("{message}");
    }
    ensure!(
        race.writes > 0 && race.reads > 0,
        "no writes ({}) or no reads ({})",
        race.writes,
        race.reads
    );
    // The end state: every unit whole, and the same on storage.
    ensure_whole_and_below(&tf, UNITS * unit, unit, UNITS, "after the race")?;
    // The negative control, on the same file: fewer units, so readers meet writes more often.
    set_skip_publication(mount, true)?;
    let control = race_units(&tf.path, tf.base, unit, 2, RACE_CONTROL_TIME);
    set_skip_publication(mount, false)?;
    match control.failure {
        Some(message) if message.contains("torn or corrupt") => {
            println!(
                "#   negative control (publication skipped): {message}, after {} writes",
                control.writes
            );
            Ok(())
        }
        Some(message) => bail!("negative control: {message}"),
        None => bail!(
            "negative control: with publication skipped, {} reads saw no torn unit in {} writes \
             within {RACE_CONTROL_TIME:?}: the race cannot show a torn read",
            control.reads,
            control.writes
        ),
    }
}

/// How long the deadlock stress test runs.
const STRESS_TIME: Duration = Duration::from_secs(10);
/// The hung-task timeout during the stress test, in seconds: far shorter than the default, so
/// that a stuck task shows in dmesg (which fails the guest run) before the test ends.
const STRESS_HUNG_TASK_SECS: &str = "20";

/// The stress test of "Deadlock freedom" in `Documentation/filesystems/untorn.rst`: in one
/// process, untorn writes (one writer copying its data from a shared mapping of the same file),
/// stores through that mapping, reads into it, writeback, and a `fork` loop that takes the
/// process's `mmap_lock` for writing, all at once under a short hung-task timeout. Each thread
/// must make progress and stop; then the tagged units are whole and the lower equals untorn.
fn mmap_fork_stress(subject: &mut Subject) -> Result<()> {
    const UNITS: usize = 8;
    let tf = subject.file("stress")?;
    let (path, f) = (&tf.path, &tf.file);
    let unit = page_unit(&tf.limits()?);
    // Three regions of `UNITS` units: tagged untorn writes, the shared mapping, and untorn
    // writes whose data comes from the mapping.
    let region = UNITS * unit;
    let tagged = tf.base;
    let (mapped, from_map) = (tagged + region as u64, tagged + 2 * region as u64);
    write_first_versions(f, tagged, unit, 3 * UNITS)?;
    let map = Mapping::new(f, mapped, region, true).context("mmap of the middle region")?;
    let hung_task = guest::Sysctls::set(&[(
        "/proc/sys/kernel/hung_task_timeout_secs",
        STRESS_HUNG_TASK_SECS,
    )])?;
    let counts: [AtomicU64; 7] = Default::default();
    const NAMES: [&str; 7] = [
        "tagged untorn writes",
        "untorn writes from the mapping",
        "stores through the mapping",
        "reads into the mapping",
        "checked reads",
        "forks",
        "fsyncs and msyncs",
    ];
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let fail = |message: String| {
        if let Ok(mut f) = failure.lock() {
            f.get_or_insert(message);
        }
        stop.store(true, Ordering::Relaxed);
    };
    // Runs `op` until told to stop or it fails; counts its successes in `counts[k]`.
    let worker = |k: usize, op: &(dyn Fn(u64) -> Result<()> + Sync)| {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = op(n) {
                return fail(format!("{}: {e:#}", NAMES[k]));
            }
            n += 1;
            counts[k].fetch_add(1, Ordering::Relaxed);
        }
    };
    let watchdog = Watchdog::start("the mmap and fork stress", Duration::from_secs(120));
    std::thread::scope(|s| {
        let (map, worker) = (&map, &worker);
        s.spawn(move || {
            let file = match open_rw(path, false) {
                Ok(file) => file,
                Err(e) => return fail(format!("{e:#}")),
            };
            let mut buf = vec![0u8; unit];
            let buf = Mutex::new(&mut buf);
            worker(0, &|n| {
                let i = (n % UNITS as u64) as usize;
                let mut buf = buf.lock().map_err(|_| anyhow!("poisoned"))?;
                let tag = UnitTag {
                    unit: i as u64,
                    version: n + 2,
                };
                fill_unit(&mut buf, tag).map_err(|e| anyhow!("fill_unit: {e:?}"))?;
                expect_written(
                    atomic_write(&file, &buf, tagged + (i * unit) as u64),
                    unit,
                    "RWF_ATOMIC write",
                )
            });
        });
        s.spawn(move || {
            let file = match open_rw(path, false) {
                Ok(file) => file,
                Err(e) => return fail(format!("{e:#}")),
            };
            worker(1, &|n| {
                let i = (n % UNITS as u64) as usize;
                let at = from_map + (i * unit) as u64;
                expect_written(
                    map.write_from(&file, i * unit, unit, at, sys::RWF_ATOMIC),
                    unit,
                    "RWF_ATOMIC write from the mapping",
                )
            });
        });
        s.spawn(move || {
            let page = sys::page_size();
            worker(2, &|n| {
                let offset = (n as usize * page) % region + (n as usize % page);
                Ok(map.store(offset, n as u8)?)
            });
        });
        s.spawn(move || {
            let file = match open_ro(path) {
                Ok(file) => file,
                Err(e) => return fail(format!("{e:#}")),
            };
            worker(3, &|n| {
                let i = (n % UNITS as u64) as usize;
                expect_written(
                    map.read_into(&file, i * unit, unit, tagged + (i * unit) as u64),
                    unit,
                    "read into the mapping",
                )
            });
        });
        s.spawn(move || {
            let file = match open_ro(path) {
                Ok(file) => file,
                Err(e) => return fail(format!("{e:#}")),
            };
            let buf = Mutex::new(vec![0u8; unit]);
            worker(4, &|n| {
                let i = (n % UNITS as u64) as usize;
                let mut buf = buf.lock().map_err(|_| anyhow!("poisoned"))?;
                file.read_exact_at(&mut buf, tagged + (i * unit) as u64)?;
                match inspect_unit(&buf, i as u64) {
                    Ok(UnitState::Whole(_)) => Ok(()),
                    state => bail!("unit {i} read as {state:?}"),
                }
            });
        });
        s.spawn(move || worker(5, &|_| Ok(sys::fork_and_reap()?)));
        s.spawn(move || {
            let file = match open_rw(path, false) {
                Ok(file) => file,
                Err(e) => return fail(format!("{e:#}")),
            };
            worker(6, &|n| {
                if n % 2 == 0 {
                    Ok(map.sync()?)
                } else {
                    Ok(file.sync_all()?)
                }
            });
        });
        let start = Instant::now();
        let mut last = 0;
        while start.elapsed() < STRESS_TIME && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            // Progress is any operation done by any thread.
            let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            if total != last {
                watchdog.tick();
                last = total;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    drop(watchdog);
    drop(hung_task);
    let counts: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let summary: Vec<String> = NAMES
        .iter()
        .zip(&counts)
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    println!("#   in {STRESS_TIME:?}: {}", summary.join(", "));
    if let Some(message) = failure.into_inner().ok().flatten() {
        bail!("{message}");
    }
    if let Some(k) = counts.iter().position(|&n| n == 0) {
        bail!(
            "no {} in {STRESS_TIME:?}: a thread made no progress",
            NAMES[k]
        );
    }
    drop(map);
    f.sync_all().context("fsync after the stress")?;
    ensure_whole_and_below(&tf, 3 * region, unit, UNITS, "after the stress")?;
    Ok(())
}

/// How long each half of the parallel-writes test runs.
const PARALLEL_TIME: Duration = Duration::from_secs(2);

/// Runs `write(thread, n)` in two threads for [`PARALLEL_TIME`]; returns how many writes each
/// thread made.
fn two_writers(write: &(dyn Fn(u64, u64) -> Result<()> + Sync)) -> Result<[u64; 2]> {
    let stop = AtomicBool::new(false);
    let counts = [AtomicU64::new(0), AtomicU64::new(0)];
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let (stop, counts) = (&stop, &counts);
                s.spawn(move || -> Result<()> {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = write(t, n) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        n += 1;
                        counts[t as usize].store(n, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(PARALLEL_TIME);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a writer panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok([
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    ])
}

/// The cached bounce buffers of untorn writes (`rust/kernel_ext/bounce.rs`), seen from a child
/// process whose address space the test reads from outside, on a fresh mount
/// ([`Subject::file_on_fresh_mount`]):
/// - the first write maps one bounce of the unit's size, and the next 19 reuse it
///   (`bounce_reused`, `bounce_mapped`);
/// - after the child unmaps that bounce itself, its next write still succeeds (a new bounce);
/// - after the child maps its own memory over the cached bounce (`MAP_FIXED`, filled with
///   0xEE), its next write still writes its data, not 0xEE, and leaves that memory alone;
/// - a bounce too large to cache (128 KiB, on a lower that allows it) is unmapped at once;
/// - at unmount, the bounce still cached in the (living) child is unmapped from its address
///   space, by a worker, while the child's own mapping stays.
///
/// Without the check of a cached bounce before reuse, the write after the unmap would fail
/// with `EFAULT` and the one after `MAP_FIXED` would write 0xEE; without the release at unmount,
/// the bounce would stay in the child.
fn bounce_cache(subject: &mut Subject) -> Result<()> {
    let (mut own, tf) = subject.file_on_fresh_mount("bounce")?;
    let limits = tf.limits()?;
    let unit = page_unit(&limits);
    let (path, base) = (tf.path.clone(), tf.base);
    // The child inherits every descriptor: the test file is the only one on the mount, and
    // the child's copy is the one it writes through and closes.
    let mut child = ScriptedChild::spawn(&tf.file, unit)?;
    let pid = child.pid();
    // The mount's idle bounces (debugfs): only the child writes through this mount.
    let cached = |own: &Mounted| -> Result<Vec<usize>> {
        let path = counters_dir(own.path())?.join("bounce_cache");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let addr = l.split_whitespace().next().unwrap_or_default();
                usize::from_str_radix(addr.trim_start_matches("0x"), 16)
                    .with_context(|| format!("bad bounce_cache line {l:?}"))
            })
            .collect()
    };
    let mapped_in_child = |addr: usize| -> Result<bool> {
        Ok(sys::mappings(pid)?
            .iter()
            .any(|&(start, end)| start <= addr && addr < end))
    };
    let counter = |name: &str| -> Result<u64> {
        Ok(read_counters(own.path())?.get(name).copied().unwrap_or(0))
    };
    let (mapped0, reused0) = (counter("bounce_mapped")?, counter("bounce_reused")?);
    let write = |child: &mut ScriptedChild, unit_index: u64, byte: u8, what: &str| {
        child
            .call(ChildOp::AtomicWrite {
                offset: base + unit_index * unit as u64,
                byte,
            })
            .map_err(|e| anyhow!("{what}: the child's RWF_ATOMIC write: {}", describe(&e)))
    };

    write(&mut child, 0, 1, "first write")?;
    let first = cached(&own)?;
    ensure!(
        first.len() == 1 && mapped_in_child(first[0])?,
        "after the first write the mount caches {first:x?}, not one bounce mapped in the child"
    );
    for _ in 0..19 {
        write(&mut child, 0, 1, "rewrite")?;
    }
    ensure!(cached(&own)? == first, "the bounce moved while cached");
    let (mapped, reused) = (
        counter("bounce_mapped")? - mapped0,
        counter("bounce_reused")? - reused0,
    );
    ensure!(
        (mapped, reused) == (1, 19),
        "20 writes of one size mapped {mapped} bounces and reused {reused} (want 1 and 19)"
    );

    child.call(ChildOp::Unmap {
        addr: first[0],
        len: unit,
    })?;
    write(
        &mut child,
        1,
        2,
        "after the child unmapped the cached bounce",
    )?;
    let second = cached(&own)?;
    ensure!(
        second.len() == 1 && mapped_in_child(second[0])?,
        "after the unmap the mount caches {second:x?}, not one new bounce"
    );
    child.call(ChildOp::MapFixed {
        addr: second[0],
        len: unit,
        byte: 0xEE,
    })?;
    write(
        &mut child,
        2,
        3,
        "after the child mapped its own memory over the bounce",
    )?;
    child
        .call(ChildOp::Holds {
            addr: second[0],
            len: unit,
            byte: 0xEE,
        })
        .map_err(|e| anyhow!("the child's own memory changed: {}", describe(&e)))?;
    let third = cached(&own)?;
    ensure!(
        third.len() == 1 && third[0] != second[0] && mapped_in_child(third[0])?,
        "after MAP_FIXED the mount caches {third:x?}, not one new bounce"
    );
    let mapped = counter("bounce_mapped")? - mapped0;
    ensure!(
        mapped == 3,
        "{mapped} bounces mapped, want 3 (first, after unmap, after MAP_FIXED)"
    );

    for (i, byte) in [1u8, 2, 3].into_iter().enumerate() {
        let offset = (i * unit) as u64;
        let through = read_at(&open_rw(&path, false)?, base + offset, unit)?;
        let below = tf.below(offset, unit)?;
        for (what, got) in [("through untorn", &through), ("on storage", &below)] {
            ensure!(
                got.iter().all(|&b| b == byte),
                "unit {i} {what} is not all {byte:#x} (first byte {:#x})",
                got.first().copied().unwrap_or(0)
            );
        }
    }

    // A bounce too large for the cache (128 KiB, where the lower allows it) is unmapped at
    // once: the child's mappings are as before the write.
    if limits.unit_max() >= 128 * 1024 {
        let file = open_rw(&path, false)?;
        let mut large = ScriptedChild::spawn(&file, 128 * 1024)?;
        drop(file);
        let before = sys::mappings(large.pid())?;
        large
            .call(ChildOp::AtomicWrite {
                offset: base,
                byte: 4,
            })
            .map_err(|e| anyhow!("the 128 KiB RWF_ATOMIC write: {}", describe(&e)))?;
        let after = sys::mappings(large.pid())?;
        ensure!(
            after == before,
            "a 128 KiB untorn write left the child's mappings changed: {} before, {} after",
            before.len(),
            after.len()
        );
    }

    // The child lives on, its file closed; the mount goes (with nothing of the test open).
    child.call(ChildOp::Close)?;
    drop(tf);
    own.unmount()?;
    let result = (|| {
        ensure!(
            !mapped_in_child(third[0])?,
            "the cached bounce at {:#x} is still mapped in the living child after unmount",
            third[0]
        );
        ensure!(
            mapped_in_child(second[0])?,
            "the child's own mapping at {:#x} was unmapped",
            second[0]
        );
        Ok(())
    })();
    own.mount_again()?;
    result
}

/// Writethrough writes to disjoint ranges of one file run in parallel (semantics 7): two
/// threads' untorn writes inside the file overlap in time (`writethrough_overlapped` grows).
/// The controls show that the counter tells parallel writes from serialised ones: with the
/// set-user-ID bit on the file (which the root writer keeps), every write checks privileges
/// under the inode lock held exclusively, and the same writes never overlap; and, where the
/// mount can make a second file, two threads appending to it (extending writes take the inode
/// lock exclusively) never overlap.
fn parallel_disjoint_writes(subject: &mut Subject) -> Result<()> {
    const UNITS: u64 = 16;
    let tf = subject.file("parallel")?;
    let (path, base) = (&tf.path, tf.base);
    let unit = page_unit(&tf.limits()?);
    let size = UNITS as usize * unit;
    tf.file.write_all_at(&pattern(70, size), base)?;
    tf.file.sync_all()?;
    let overlapped = || -> Result<u64> {
        Ok(tf
            .counters()?
            .get("writethrough_overlapped")
            .copied()
            .unwrap_or(0))
    };
    let files = [open_rw(path, false)?, open_rw(path, false)?];
    // Thread 0 writes the first half, thread 1 the second; returns the writes of each and how
    // many overlapped another.
    let race = || -> Result<([u64; 2], u64)> {
        let before = overlapped()?;
        let done = two_writers(&|t, n| {
            let i = t * UNITS / 2 + n % (UNITS / 2);
            let data = pattern(100 + t * 1000 + n, unit);
            expect_written(
                atomic_write(&files[t as usize], &data, base + i * unit as u64),
                unit,
                "RWF_ATOMIC write inside the file",
            )
        })?;
        ensure!(
            done.iter().all(|&n| n > 0),
            "a writer made no write: {done:?}"
        );
        Ok((done, overlapped()?.saturating_sub(before)))
    };
    let (done, inside) = race()?;
    println!(
        "#   inside the file: {} and {} untorn writes, {inside} began while the other's was in \
         flight",
        done[0], done[1]
    );
    ensure!(
        inside > 0,
        "writes to disjoint ranges never overlapped in {PARALLEL_TIME:?} ({done:?} writes): \
         they are serialised"
    );
    // The control: the same writes with the set-user-ID bit on.
    let chmod = |bits: u32| {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(bits))
            .with_context(|| format!("chmod {bits:o} {}", path.display()))
    };
    let mode = fs::metadata(path)?.permissions();
    chmod(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777 | 0o4000)?;
    let control = race();
    fs::set_permissions(path, mode).with_context(|| format!("chmod {}", path.display()))?;
    let (done, serialised) = control?;
    println!(
        "#   control (set-user-ID): {} and {} writes, {serialised} overlapped",
        done[0], done[1]
    );
    ensure!(
        serialised == 0,
        "the control: {serialised} writes overlapped although each held the inode lock \
         exclusively, so the counter cannot tell parallel writes from serialised ones"
    );
    // The control of extending writes: appending writethrough writes to a second file.
    let Some(g_path) = tf.sibling("g") else {
        return Ok(());
    };
    let g = create_with(&g_path, b"")?;
    set_mode(&g, FileMode::WRITETHROUGH, "mark g")?;
    let appenders = [
        OpenOptions::new().append(true).open(&g_path)?,
        OpenOptions::new().append(true).open(&g_path)?,
    ];
    let before = overlapped()?;
    let done = two_writers(&|t, n| {
        let data = pattern(200 + t * 1000 + n, unit);
        expect_written(
            std::io::Write::write(&mut &appenders[t as usize], &data),
            unit,
            "appending writethrough write",
        )
    })?;
    let appending = overlapped()? - before;
    println!(
        "#   appending: {} and {} writethrough writes, {appending} overlapped",
        done[0], done[1]
    );
    ensure!(
        done.iter().all(|&n| n > 0),
        "an appender made no write: {done:?}"
    );
    ensure!(
        appending == 0,
        "{appending} extending writes overlapped another: they must hold the inode lock \
         exclusively"
    );
    let len = fs::metadata(&g_path)?.len();
    ensure!(
        len == (done[0] + done[1]) * unit as u64,
        "g holds {len} bytes after {done:?} appends of {unit}"
    );
    Ok(())
}

/// A user buffer whose tail faults: the untorn write fails with `EFAULT` and changes nothing.
fn user_fault_leaves_old_data(subject: &mut Subject) -> Result<()> {
    const SIZE: usize = 65536;
    let (tf, want) = subject.prefilled("user-fault", SIZE, 40)?;
    let (f, base) = (&tf.file, tf.base);
    let limits = tf.limits()?;
    let page = sys::page_size();
    let len = (2 * page as u32).clamp(limits.unit_min(), limits.unit_max()) as usize;
    ensure!(
        len >= 2 * page,
        "the largest atomic unit {} is below two pages",
        limits.unit_max()
    );
    // What must not change: the prefilled bytes and, where the file does not end there (raw
    // mode), the unit after them, which the write at the end aims at.
    let mut want = want;
    let end = if tf.fixed_size() {
        want.extend(read_at(f, base + SIZE as u64, len)?);
        "after the prefilled bytes"
    } else {
        "at EOF (extending)"
    };
    let check = |what: &str| tf.ensure_both(&want, what);
    for tail in [Tail::Unmapped, Tail::ProtNone] {
        for (offset, place) in [(len, "inside the file"), (SIZE, end)] {
            let mut buf = PartlyMapped::new(page, len, tail)?;
            buf.head_mut().fill(0xab);
            let what = format!(
                "RWF_ATOMIC write of {len} bytes {place} from a buffer whose pages after the \
                 first are {tail:?}"
            );
            expect_err(
                buf.pwritev2(f, base + offset as u64, sys::RWF_ATOMIC),
                libc::EFAULT,
                &what,
            )?;
            check(&format!("after the {what}"))?;
        }
    }
    // In writethrough mode an eligible plain write is untorn too: all or nothing.
    set_mode(f, FileMode::WRITETHROUGH, "mark f")?;
    let mut buf = PartlyMapped::new(page, len, Tail::ProtNone)?;
    buf.head_mut().fill(0xcd);
    expect_err(
        buf.pwritev2(f, base + len as u64, 0),
        libc::EFAULT,
        &format!("writethrough write of {len} bytes from a buffer faulting after one page"),
    )?;
    check("after the faulting writethrough write")
}

fn exercise_writethrough(stack: &mut Stack) -> Result<()> {
    let lower = stack
        .lower_dir()
        .join(format!("exercise-wt-{}", std::process::id()));
    fs::create_dir(&lower)?;
    let mountpoint = guest::scratch_dir("exercise")?;
    let options = exercise::Options {
        seed: match stack.lower_fs() {
            FsType::Xfs => 3,
            FsType::Ext4 => 4,
        },
        duration: EXERCISE_TIME,
        files: 6,
        max_size: 1 << 20,
        mount: true,
        drop_caches: true,
        atomic_ops: true,
        ..exercise::Options::default()
    };
    let watchdog = Watchdog::start(
        "the exerciser with writethrough",
        EXERCISE_TIME + Duration::from_secs(300),
    );
    let result = exercise::run(&lower, &mountpoint, &options, false);
    drop(watchdog);
    let _ = fs::remove_dir(&mountpoint);
    let summary = result?;
    println!("#   {}", summary.line());
    ensure!(summary.passed(), "{}", summary.failure_report());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A lower without atomic writes

fn no_atomic_lower(env: &Env) -> Result<()> {
    let module = super::load_untorn(&env.modules_dir)?;
    let tmp = Mounted::mount("tmpfs", "tmpfs", "size=64m")?;
    let lower = tmp.path().join("lower");
    fs::create_dir(&lower)?;
    let upper = Mounted::mount(UNTORN, guest::path_str(&lower)?, "")?;
    let result = (|| -> Result<()> {
        let path = upper.path().join("f");
        let (f, mut want) = prefilled(&path, 65536, 50)?;
        let l = FileLimits::of_file(&path)?;
        println!("#   untorn over tmpfs: {l:?}");
        ensure!(
            !l.attr_write_atomic && l.unit_min == 0 && l.unit_max == 0,
            "statx through untorn over tmpfs reports atomic writes: {l:?}"
        );
        for (offset, len, what) in [
            (0u64, 4096usize, "an aligned 4096-byte"),
            (4096, 8192, "a misaligned"),
            (0, 3000, "a 3000-byte"),
        ] {
            expect_err(
                atomic_write(&f, &pattern(51, len), offset),
                libc::EOPNOTSUPP,
                &format!("{what} RWF_ATOMIC write over a lower without atomic writes"),
            )?;
        }
        ensure_upper(&path, &want, "after the refused RWF_ATOMIC writes")?;
        // Writethrough still works, without the untorn promise.
        set_mode(&f, FileMode::WRITETHROUGH, "mark f")?;
        let before = read_counters(upper.path())?;
        let data = pattern(52, 4096);
        expect_written(
            f.write_at(&data, 4096),
            4096,
            "writethrough write over tmpfs",
        )?;
        want[4096..8192].copy_from_slice(&data);
        let below = fs::read(lower.join("f"))?;
        ensure_bytes(&below, &want, "the tmpfs lower file at once")?;
        let after = read_counters(upper.path())?;
        ensure_deltas(
            &before,
            &after,
            &[
                ("writethrough_writes", 1),
                ("untorn_writes", 0),
                ("writethrough_not_eligible", 1),
            ],
            "a writethrough write over tmpfs",
        )
    })();
    drop(upper);
    drop(tmp);
    drop(module);
    result
}

// ---------------------------------------------------------------------------------------------
// Lower write errors: dm-flakey

/// A `dm-flakey` device over a disk, passing I/O through until told to fail writes.
struct Flakey {
    name: String,
    disk: PathBuf,
    sectors: u64,
    dev: PathBuf,
    failing: bool,
}

fn dmsetup(args: &[&str]) -> Result<String> {
    guest::run("dmsetup", args).context(
        "dmsetup failed (the guest uses the host's dmsetup; tools/testing/install-deps does \
         not install it)",
    )
}

impl Flakey {
    fn create(disk: &Path) -> Result<Self> {
        let name = disk
            .file_name()
            .context("not a device path")?
            .to_string_lossy()
            .into_owned();
        let size_path = Path::new("/sys/block").join(&name).join("size");
        let sectors = fs::read_to_string(&size_path)
            .with_context(|| format!("cannot read {}", size_path.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} is not a number", size_path.display()))?;
        let mut flakey = Self {
            name: format!("untorn-flakey-{}", std::process::id()),
            disk: disk.to_path_buf(),
            sectors,
            dev: PathBuf::new(),
            failing: false,
        };
        dmsetup(&[
            "create",
            &flakey.name,
            "--noudevsync",
            "--table",
            &flakey.table(false),
        ])?;
        // devtmpfs makes /dev/dm-N; /dev/mapper needs udev.
        for entry in fs::read_dir("/sys/block")? {
            let entry = entry?;
            let dm_name = entry.path().join("dm/name");
            if fs::read_to_string(&dm_name).is_ok_and(|n| n.trim() == flakey.name) {
                flakey.dev = Path::new("/dev").join(entry.file_name());
            }
        }
        ensure!(
            flakey.dev.exists(),
            "no /dev/dm-N for the new device {}",
            flakey.name
        );
        Ok(flakey)
    }

    fn table(&self, failing: bool) -> String {
        let disk = self.disk.display();
        if failing {
            // Down at once and for an hour: writes fail with EIO, reads pass.
            format!("0 {} flakey {disk} 0 0 3600 1 error_writes", self.sectors)
        } else {
            format!("0 {} flakey {disk} 0 3600 0", self.sectors)
        }
    }

    /// Swaps the table, without freezing the filesystem on it (a freeze would write to it).
    fn set_failing(&mut self, failing: bool) -> Result<()> {
        dmsetup(&["suspend", "--nolockfs", "--noudevsync", &self.name])?;
        let loaded = dmsetup(&["load", &self.name, "--table", &self.table(failing)]);
        let resumed = dmsetup(&["resume", "--noudevsync", &self.name]);
        loaded?;
        resumed?;
        self.failing = failing;
        Ok(())
    }
}

impl Drop for Flakey {
    fn drop(&mut self) {
        if self.failing {
            if let Err(e) = self.set_failing(false) {
                eprintln!("# warning: {e:#}");
            }
        }
        // Just after the lower's unmount, udev's probe of the device (on its last close) can
        // hold it open for a moment: retry, or the next group finds the disk in use.
        let mut attempts = 0;
        while let Err(e) = dmsetup(&["remove", "--noudevsync", &self.name]) {
            attempts += 1;
            if attempts == 40 {
                eprintln!("# warning: {e:#}");
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

/// untorn over a lower filesystem on a `dm-flakey` device over the scsi_debug disk.
pub struct FlakeyStack {
    // Dropped in this order: untorn, the module, the lower, the device.
    upper: Mounted,
    _module: LoadedModule,
    lower_dir: PathBuf,
    _lower: Mounted,
    flakey: Flakey,
}

impl FlakeyStack {
    fn new(env: &Env, fs_type: FsType) -> Result<Self> {
        let flakey = Flakey::create(&guest::scsi_debug_disk()?)?;
        let lower = Mounted::fresh(fs_type, &flakey.dev)?;
        let lower_dir = lower.path().join("lower");
        fs::create_dir(&lower_dir)?;
        let module = super::load_untorn(&env.modules_dir)?;
        let upper = Mounted::mount(UNTORN, guest::path_str(&lower_dir)?, "")
            .context("cannot mount untorn")?;
        Ok(Self {
            upper,
            _module: module,
            lower_dir,
            _lower: lower,
            flakey,
        })
    }
}

fn lower_write_error_eio(stack: &mut FlakeyStack) -> Result<()> {
    let up = stack.upper.path().join("f");
    let low = stack.lower_dir.join("f");
    const SIZE: usize = 65536;
    let (f, want) = prefilled(&up, SIZE, 60)?;
    let (l, lower) = lower_limits(&low)?;
    let limits = untorn_limits(lower);
    println!("#   lower on dm-flakey: {l:?}");
    set_mode(&f, FileMode::WRITETHROUGH, "mark f")?;
    sys::syncfs(&f)?;
    let unit = if limits.is_supported() {
        page_unit(&limits)
    } else {
        8192
    };
    stack.flakey.set_failing(true)?;
    let during = (|| -> Result<()> {
        expect_err(
            f.write_at(&pattern(61, 100), 1000),
            libc::EIO,
            "a 100-byte writethrough write while the lower fails writes",
        )?;
        expect_err(
            f.write_at(&pattern(62, unit), unit as u64),
            libc::EIO,
            &format!("a {unit}-byte aligned writethrough write while the lower fails writes"),
        )?;
        if limits.is_supported() {
            expect_err(
                atomic_write(&f, &pattern(63, unit), 2 * unit as u64),
                libc::EIO,
                "an RWF_ATOMIC write while the lower fails writes",
            )?;
        } else {
            // dm-flakey does not pass atomic limits on; ext4 then has none.
            expect_err(
                atomic_write(&f, &pattern(63, unit), 2 * unit as u64),
                libc::EOPNOTSUPP,
                "an RWF_ATOMIC write over a lower without atomic writes",
            )?;
        }
        ensure_bytes(
            &read_at(&f, 0, SIZE + 100)?,
            &want,
            "read through untorn (same descriptor) after the failed writes",
        )?;
        ensure_upper(&up, &want, "after the failed writes")
    })();
    let restored = stack.flakey.set_failing(false);
    during?;
    restored?;
    ensure_lower(&low, &want, "the lower after the failed writes")?;
    // The file works again.
    let data = pattern(64, 100);
    expect_written(
        f.write_at(&data, 1000),
        100,
        "a writethrough write after the errors",
    )?;
    let mut want = want;
    want[1000..1100].copy_from_slice(&data);
    ensure_lower(&low, &want, "after a good writethrough write")?;
    Ok(())
}
