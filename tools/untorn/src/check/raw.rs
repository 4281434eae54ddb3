// SPDX-License-Identifier: GPL-2.0

//! Raw mode (`mount -t untorn /dev/sdX /mnt`): the one file `data` is the device, read and
//! written through untorn's page cache with untorn's own bios (`Documentation/filesystems/
//! untorn.rst`, "Raw mode").
//!
//! The tests of the `raw/scsi_debug` group share one raw mount of the `scsi_debug atomic_wr=1`
//! disk; each uses its own 16 MiB region of the device, and checks what reaches the device by
//! reading it with `O_DIRECT` (no fsync). Two tests use devices of their own: tornblk with other
//! atomic limits, and a loop device, which has no atomic writes.

use super::{
    stacking::{ensure_bytes, read_at, UNTORN},
    tornblk::{self, TornDev},
    writethrough::{
        atomic_write, ensure_deltas, ensure_mode, expect_err, expect_written, open_ro, open_rw,
        race_units, read_counters, set_mode, set_skip_publication, two_writers, untorn_limits,
        write_first_versions, RACE_CONTROL_TIME, RACE_TIME,
    },
    Env, Test,
};
use crate::{
    exercise::pattern,
    guest::{self, LoadedModule, Mounted},
    limits::FileLimits,
    sys::{self, AlignedBuf, Mapping, PartlyMapped, Tail},
};
use anyhow::{bail, ensure, Context, Result};
use std::{
    fs::{self, File, OpenOptions},
    io::{Seek, SeekFrom},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
};
use untorn_logic::{
    atomic_write::AtomicWriteLimits,
    mount_options::FileMode,
    unit::{inspect_unit, UnitState},
};

/// The name of the one file of a raw mount.
const DATA: &str = "data";
/// `statfs`'s `f_type` of untorn.
const UNTORN_MAGIC: i64 = 0x756e_746f;
/// `statx`'s `atomic_write_segments_max` through untorn (`UIO_MAXIOV`).
const SEGMENTS_MAX: u32 = 1024;
/// Each test's region of the device.
const REGION: u64 = 16 << 20;

/// A raw mount of a device; dropped in this order: the mount, the module, the device's owner.
struct RawMount {
    mount: Mounted,
    device: PathBuf,
    _module: LoadedModule,
    _owner: Option<Box<dyn std::any::Any>>,
}

impl RawMount {
    fn new(env: &Env, device: &Path, owner: Option<Box<dyn std::any::Any>>) -> Result<Self> {
        let module = super::load_untorn(&env.modules_dir)?;
        let mount = Mounted::mount(UNTORN, guest::path_str(device)?, "")
            .with_context(|| format!("cannot mount untorn on the device {}", device.display()))?;
        Ok(Self {
            mount,
            device: device.to_path_buf(),
            _module: module,
            _owner: owner,
        })
    }

    fn data(&self) -> PathBuf {
        self.mount.path().join(DATA)
    }

    /// `len` bytes at `offset` of the device itself, read with `O_DIRECT`.
    fn device_range(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        sys::read_direct_range(&self.device, offset, len)
            .with_context(|| format!("O_DIRECT read of {}", self.device.display()))
    }

    /// Fails unless the device holds `want` at `offset` (read with `O_DIRECT`) and so does the
    /// file through untorn.
    fn ensure_both(&self, offset: u64, want: &[u8], what: &str) -> Result<()> {
        let device = self.device_range(offset, want.len())?;
        ensure_bytes(&device, want, &format!("{what}: the device, O_DIRECT"))?;
        let upper = read_at(&open_ro(&self.data())?, offset, want.len())?;
        ensure_bytes(&upper, want, &format!("{what}: the file through untorn"))
    }

    /// untorn's limits for the device: its own (`statx` of the device node) within untorn's.
    fn expected_limits(&self) -> Result<AtomicWriteLimits> {
        let dev = FileLimits::of_file(&self.device)?;
        ensure!(
            dev.unit_min > 0,
            "{} offers no atomic writes ({dev:?}): the test needs an atomic device",
            self.device.display()
        );
        let limits = AtomicWriteLimits::new(dev.unit_min, dev.unit_max)
            .with_context(|| format!("the device reports invalid limits {dev:?}"))?;
        Ok(untorn_limits(limits))
    }
}

fn device_size(device: &Path) -> Result<u64> {
    let mut f = File::open(device).with_context(|| format!("cannot open {}", device.display()))?;
    Ok(f.seek(SeekFrom::End(0))?)
}

type RawTest = fn(&mut RawMount) -> Result<()>;

/// The tests on the shared raw mount of the scsi_debug disk.
const TESTS: &[(&str, RawTest)] = &[
    ("shape", shape),
    ("statx-atomic-limits", statx_atomic_limits),
    ("rwf-atomic", rwf_atomic),
    ("end-of-device", end_of_device),
    ("writethrough-mode", writethrough_mode),
    ("writeback-and-fsync", writeback_and_fsync),
    ("reads-from-device", reads_from_device),
    ("mmap-coherence", mmap_coherence),
    ("racing-atomic-writes-and-readers", racing_atomic_writes),
    ("parallel-disjoint-writes", parallel_disjoint_writes),
    ("user-fault-leaves-old-data", user_fault_leaves_old_data),
    ("exclusive", exclusive),
    ("read-only", read_only),
];

pub fn tests() -> Vec<Test> {
    let group = "raw/scsi_debug";
    let mut tests: Vec<Test> = TESTS
        .iter()
        .map(|&(name, run)| {
            Test::in_group(format!("{group}/{name}"), group, move |env| {
                let mut raw = env.fixture(group, |env| {
                    RawMount::new(env, &guest::scsi_debug_disk()?, None)
                })?;
                run(&mut raw)
            })
        })
        .collect();
    tests.push(Test::new("raw/tornblk/limits", tornblk_limits));
    tests.push(Test::new("raw/loop/no-atomic-writes", no_atomic_writes));
    tests
}

/// The offset of region `n`.
fn region(n: u64) -> u64 {
    n * REGION
}

/// One directory holding one regular file of the device's size; no name can change, the size
/// cannot change, no blocks can be allocated or punched; `statfs` gives the device's capacity.
fn shape(raw: &mut RawMount) -> Result<()> {
    let root = raw.mount.path().to_path_buf();
    let mut names: Vec<String> = fs::read_dir(&root)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    ensure!(
        names == [DATA],
        "the mount holds {names:?}, expected only {DATA:?}"
    );
    let size = device_size(&raw.device)?;
    let meta = fs::metadata(raw.data())?;
    ensure!(meta.is_file(), "{DATA} is not a regular file: {meta:?}");
    ensure!(
        meta.len() == size,
        "{DATA} has size {}, the device {size}",
        meta.len()
    );
    let st = sys::statfs(&root)?;
    let capacity = st.f_blocks * st.f_bsize as u64;
    ensure!(
        st.f_type == UNTORN_MAGIC && capacity == size && st.f_bfree == 0,
        "statfs: f_type {:#x}, {} blocks of {}, {} free; expected untorn's magic, the device's \
         {size} bytes, none free",
        st.f_type,
        st.f_blocks,
        st.f_bsize,
        st.f_bfree
    );
    let mounts = fs::read_to_string("/proc/mounts")?;
    let root_str = guest::path_str(&root)?;
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(root_str))
        .with_context(|| format!("{root_str} is not in /proc/mounts"))?;
    let source = guest::path_str(&raw.device)?;
    ensure!(
        line.starts_with(&format!("{source} {root_str} untorn ")),
        "/proc/mounts: {line:?}, expected {source} on {root_str}, type untorn"
    );
    // The namespace is fixed.
    let other = root.join("other");
    expect_err(
        File::create(&other).map(drop),
        libc::EPERM,
        "creating a file",
    )?;
    expect_err(fs::create_dir(&other), libc::EPERM, "mkdir")?;
    expect_err(fs::remove_file(raw.data()), libc::EPERM, "unlinking data")?;
    expect_err(fs::rename(raw.data(), &other), libc::EPERM, "renaming data")?;
    expect_err(
        std::os::unix::fs::symlink(DATA, &other),
        libc::EPERM,
        "a symlink",
    )?;
    // So is the size; the same size is no change.
    let f = open_rw(&raw.data(), false)?;
    expect_err(f.set_len(size - 4096), libc::EPERM, "truncating data down")?;
    // Growing past `s_maxbytes` (the device's size) is the VFS's `EFBIG`.
    expect_err(f.set_len(size + 4096), libc::EFBIG, "truncating data up")?;
    f.set_len(size).context("truncate to the same size")?;
    expect_err(
        sys::fallocate(&f, 0, 0, 4096),
        libc::EOPNOTSUPP,
        "fallocate",
    )?;
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    expect_err(
        sys::fallocate(&f, punch, 0, 4096),
        libc::EOPNOTSUPP,
        "punching a hole",
    )?;
    ensure!(
        fs::metadata(raw.data())?.len() == size,
        "the size changed after the refused calls"
    );
    // Attributes work, for the mount's life.
    fs::set_permissions(
        raw.data(),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(raw.data())?.permissions());
    ensure!(mode & 0o777 == 0o640, "chmod 640 gave mode {mode:o}");
    Ok(())
}

/// `statx` reports the device's atomic limits (its node's own `statx`) within untorn's.
fn statx_atomic_limits(raw: &mut RawMount) -> Result<()> {
    let want = raw.expected_limits()?;
    let got = FileLimits::of_file(&raw.data())?;
    println!("#   device: {:?}", FileLimits::of_file(&raw.device)?);
    println!("#   untorn: {got:?}");
    ensure!(
        got.reported && got.attr_write_atomic,
        "statx of {DATA}: no atomic writes reported ({got:?})"
    );
    ensure!(
        (got.unit_min, got.unit_max) == (want.unit_min(), want.unit_max()),
        "statx of {DATA}: unit_min/unit_max {}/{}, expected {}/{}",
        got.unit_min,
        got.unit_max,
        want.unit_min(),
        want.unit_max()
    );
    let device = FileLimits::of_file(&raw.device)?;
    ensure!(
        got.unit_max_opt == device.unit_max_opt.min(got.unit_max)
            && got.segments_max == SEGMENTS_MAX,
        "statx of {DATA}: unit_max_opt {} (expected the device's {}), segments_max {} (expected \
         {SEGMENTS_MAX})",
        got.unit_max_opt,
        device.unit_max_opt,
        got.segments_max
    );
    let dir = FileLimits::of_file(raw.mount.path())?;
    ensure!(
        !dir.attr_write_atomic && dir.unit_min == 0,
        "statx of the directory reports atomic writes: {dir:?}"
    );
    Ok(())
}

/// Every unit size is taken and is on the device when the write returns, as one `REQ_ATOMIC`
/// bio each (counted); a shape the device cannot take is `EINVAL` with nothing written.
fn rwf_atomic(raw: &mut RawMount) -> Result<()> {
    let limits = raw.expected_limits()?;
    let base = region(1);
    let file = open_rw(&raw.data(), false)?;
    let before = read_counters(raw.mount.path())?;
    let mut writes = 0;
    let mut size = limits.unit_min() as usize;
    let mut seed = 10;
    while size <= limits.unit_max() as usize {
        for k in [0u64, 1, 3] {
            let offset = base + k * size as u64;
            seed += 1;
            let data = pattern(seed, size);
            let what = format!("RWF_ATOMIC write of {size} bytes at {offset}");
            expect_written(atomic_write(&file, &data, offset), size, &what)?;
            raw.ensure_both(offset, &data, &format!("{what}, at once"))?;
            writes += 1;
        }
        size *= 2;
    }
    let after = read_counters(raw.mount.path())?;
    ensure_deltas(
        &before,
        &after,
        &[
            ("untorn_writes", writes),
            ("device_atomic_writes", writes),
            ("device_writes", writes),
            ("device_flushes", 0),
        ],
        "the accepted writes",
    )?;
    let (min, max) = (u64::from(limits.unit_min()), u64::from(limits.unit_max()));
    let cases = [
        ("length not a power of two", base, 3 * min),
        ("offset not a multiple of the length", base + min, 2 * min),
        ("length above unit_max", base, 2 * max),
    ];
    let old = raw.device_range(base, 2 * max as usize)?;
    for (what, offset, len) in cases {
        let data = pattern(offset + len, len as usize);
        let what = format!("RWF_ATOMIC write of {len} bytes at {offset} ({what})");
        expect_err(atomic_write(&file, &data, offset), libc::EINVAL, &what)?;
    }
    raw.ensure_both(base, &old, "after the refused writes")?;
    ensure_deltas(
        &after,
        &read_counters(raw.mount.path())?,
        &[("device_writes", 0), ("err_inval", cases.len() as u64)],
        "the refused writes",
    )?;
    // O_DIRECT through untorn is the device's own direct atomic write.
    let direct = open_rw(&raw.data(), true)?;
    let unit = min.max(4096) as usize;
    let data = pattern(99, unit);
    let mut buf = AlignedBuf::new(unit, 4096);
    buf.as_mut_slice().copy_from_slice(&data);
    expect_written(
        atomic_write(&direct, buf.as_slice(), base),
        unit,
        "O_DIRECT RWF_ATOMIC write through untorn",
    )?;
    raw.ensure_both(base, &data, "after the O_DIRECT RWF_ATOMIC write")
}

/// Writes end at the device's end: at it `ENOSPC`; across it a plain write is short and an
/// untorn one `EINVAL`; the last unit is an ordinary untorn write.
fn end_of_device(raw: &mut RawMount) -> Result<()> {
    let limits = raw.expected_limits()?;
    let size = device_size(&raw.device)?;
    let file = open_rw(&raw.data(), false)?;
    let unit = (2 * limits.unit_min()).min(limits.unit_max()) as u64;
    expect_err(
        file.write_at(b"x", size),
        libc::ENOSPC,
        "a write at the end",
    )?;
    expect_err(
        atomic_write(&file, &pattern(1, unit as usize), size),
        libc::ENOSPC,
        "an RWF_ATOMIC write at the end",
    )?;
    let across = pattern(2, 4096);
    let written = file.write_at(&across, size - 2048)?;
    ensure!(
        written == 2048,
        "a write of 4096 bytes 2048 before the end wrote {written}, expected 2048"
    );
    expect_err(
        atomic_write(&file, &pattern(3, unit as usize), size - unit / 2),
        libc::EINVAL,
        "an RWF_ATOMIC write across the end",
    )?;
    let last = pattern(4, unit as usize);
    expect_written(
        atomic_write(&file, &last, size - unit),
        unit as usize,
        "an RWF_ATOMIC write of the last unit",
    )?;
    raw.ensure_both(size - unit, &last, "the last unit")?;
    let mut buf = [0u8; 16];
    let n = file.read_at(&mut buf, size)?;
    ensure!(n == 0, "a read at the end returned {n} bytes");
    ensure!(fs::metadata(raw.data())?.len() == size, "the size changed");
    Ok(())
}

/// The mode ioctl works on the one file: a plain, unaligned write in writethrough mode is on
/// the device at once. The mode lives as long as the mount (there is no lower file to keep it);
/// `writethrough=all` covers every mount.
fn writethrough_mode(raw: &mut RawMount) -> Result<()> {
    let base = region(2);
    let file = open_rw(&raw.data(), false)?;
    set_mode(&file, FileMode::WRITETHROUGH, "mark data")?;
    ensure_mode(
        &file,
        FileMode::WRITETHROUGH,
        FileMode::WRITETHROUGH,
        "marked",
    )?;
    let mut want = read_at(&file, base, 8192)?;
    let data = pattern(20, 100);
    expect_written(
        file.write_at(&data, base + 1000),
        100,
        "a writethrough write of 100 bytes",
    )?;
    want[1000..1100].copy_from_slice(&data);
    raw.ensure_both(base, &want, "the writethrough write, at once")?;
    drop(file);
    raw.mount.cycle()?;
    let file = open_rw(&raw.data(), false)?;
    ensure_mode(&file, FileMode::OFF, FileMode::OFF, "after a remount")?;
    drop(file);
    // writethrough=all.
    raw.mount.unmount()?;
    let result = (|| -> Result<()> {
        let all = Mounted::mount(UNTORN, guest::path_str(&raw.device)?, "writethrough=all")?;
        let file = open_rw(&all.path().join(DATA), false)?;
        ensure_mode(
            &file,
            FileMode::OFF,
            FileMode::WRITETHROUGH,
            "with writethrough=all",
        )?;
        let data = pattern(21, 10);
        expect_written(
            file.write_at(&data, base + 5),
            10,
            "a write with writethrough=all",
        )?;
        want[5..15].copy_from_slice(&data);
        let device = raw.device_range(base, want.len())?;
        ensure_bytes(&device, &want, "the write with writethrough=all, at once")
    })();
    raw.mount.mount_again()?;
    result
}

/// Plain buffered writes are written back with bios; `fsync` flushes the device's cache.
fn writeback_and_fsync(raw: &mut RawMount) -> Result<()> {
    let base = region(3);
    let file = open_rw(&raw.data(), false)?;
    let data = pattern(30, 3 * 4096 + 100);
    let before = read_counters(raw.mount.path())?;
    file.write_all_at(&data, base + 300)?;
    file.sync_all().context("fsync")?;
    let after = read_counters(raw.mount.path())?;
    let device = raw.device_range(base + 300, data.len())?;
    ensure_bytes(&device, &data, "after fsync, the device")?;
    let grew = |name: &str| {
        let get = |c: &super::writethrough::Counters| c.get(name).copied().unwrap_or(0);
        get(&after).saturating_sub(get(&before))
    };
    ensure!(
        grew("device_writes") >= 1 && grew("writeback") >= 1 && grew("device_flushes") >= 1,
        "after a buffered write and fsync: device_writes +{}, writeback +{}, device_flushes +{} \
         (each expected at least 1)",
        grew("device_writes"),
        grew("writeback"),
        grew("device_flushes")
    );
    ensure!(
        grew("untorn_writes") == 0 && grew("device_atomic_writes") == 0,
        "plain writes were counted as untorn"
    );
    Ok(())
}

/// Reads fill the page cache from the device with bios: data written to the device while
/// unmounted reads back through untorn, after a drop of the caches too.
fn reads_from_device(raw: &mut RawMount) -> Result<()> {
    let base = region(4);
    let data = pattern(40, 256 << 10);
    raw.mount.unmount()?;
    let written = (|| -> Result<()> {
        let dev = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&raw.device)?;
        let mut buf = AlignedBuf::new(data.len(), 4096);
        buf.as_mut_slice().copy_from_slice(&data);
        dev.write_all_at(buf.as_slice(), base)?;
        dev.sync_all()?;
        Ok(())
    })();
    raw.mount.mount_again()?;
    written.context("writing the device while unmounted")?;
    let before = read_counters(raw.mount.path())?;
    let got = read_at(&open_ro(&raw.data())?, base, data.len())?;
    ensure_bytes(&got, &data, "read through untorn")?;
    let after = read_counters(raw.mount.path())?;
    let count = |c: &super::writethrough::Counters| c.get("device_read_bytes").copied();
    let reads = count(&after)
        .zip(count(&before))
        .map(|(a, b)| a.saturating_sub(b))
        .context("no device_read_bytes counter")?;
    ensure!(
        reads >= data.len() as u64,
        "{reads} bytes read from the device for a read of {}",
        data.len()
    );
    guest::drop_caches()?;
    let again = read_at(&open_ro(&raw.data())?, base + 4096 + 17, 10000)?;
    ensure_bytes(
        &again,
        &data[4096 + 17..4096 + 17 + 10000],
        "read after drop_caches",
    )
}

/// A shared mapping's stores reach the device at `msync`; an untorn write shows in the
/// mapping at once.
fn mmap_coherence(raw: &mut RawMount) -> Result<()> {
    let limits = raw.expected_limits()?;
    let base = region(5);
    let unit = 16384u32.clamp(limits.unit_min(), limits.unit_max()) as usize;
    let file = open_rw(&raw.data(), false)?;
    let mut map = Mapping::new(&file, base, 2 * unit, true)?;
    let data = pattern(50, unit);
    map.as_mut_slice()[..unit].copy_from_slice(&data);
    map.sync().context("msync")?;
    let device = raw.device_range(base, unit)?;
    ensure_bytes(&device, &data, "the device after msync")?;
    let second = pattern(51, unit);
    expect_written(
        atomic_write(&file, &second, base + unit as u64),
        unit,
        "an RWF_ATOMIC write under the mapping",
    )?;
    ensure_bytes(
        &map.as_mut_slice()[unit..],
        &second,
        "the mapping after the untorn write",
    )?;
    raw.ensure_both(base + unit as u64, &second, "the untorn write")
}

/// Racing overlapping untorn writes and checking readers, as in stacked mode, with the negative
/// control (publication skipped) that must show a torn read.
fn racing_atomic_writes(raw: &mut RawMount) -> Result<()> {
    const UNITS: usize = 16;
    let limits = raw.expected_limits()?;
    let unit = 65536u32.clamp(limits.unit_min(), limits.unit_max()) as usize;
    let path = raw.data();
    write_first_versions(&open_rw(&path, false)?, unit, UNITS)?;
    let race = race_units(&path, unit, UNITS, RACE_TIME);
    println!(
        "#   {} overlapping untorn writes of {unit} bytes, {} checked reads",
        race.writes, race.reads
    );
    if let Some(message) = race.failure {
        bail!("{message}");
    }
    ensure!(race.writes > 0 && race.reads > 0, "no writes or no reads");
    let device = raw.device_range(0, UNITS * unit)?;
    let upper = read_at(&open_ro(&path)?, 0, UNITS * unit)?;
    ensure_bytes(&device, &upper, "after the race, the device against untorn")?;
    for i in 0..UNITS {
        let state = inspect_unit(&device[i * unit..(i + 1) * unit], i as u64);
        ensure!(
            matches!(state, Ok(UnitState::Whole(_))),
            "unit {i} on the device after the race: {state:?}"
        );
    }
    set_skip_publication(raw.mount.path(), true)?;
    let control = race_units(&path, unit, 2, RACE_CONTROL_TIME);
    set_skip_publication(raw.mount.path(), false)?;
    match control.failure {
        Some(message) if message.contains("torn or corrupt") => {
            println!("#   negative control (publication skipped): {message}");
            Ok(())
        }
        Some(message) => bail!("negative control: {message}"),
        None => bail!(
            "negative control: with publication skipped, {} reads saw no torn unit in {} writes",
            control.reads,
            control.writes
        ),
    }
}

/// Untorn writes to disjoint ranges of the one file run in parallel (the inode lock shared):
/// `writethrough_overlapped` grows. The control: with the set-user-ID bit on `data` (which the
/// root writer keeps), every write must check privileges under the inode lock held exclusively,
/// and the same writes never overlap.
fn parallel_disjoint_writes(raw: &mut RawMount) -> Result<()> {
    const UNITS: u64 = 16;
    let limits = raw.expected_limits()?;
    let unit = 16384u32.clamp(limits.unit_min(), limits.unit_max()) as u64;
    let base = region(8);
    let overlapped = |raw: &RawMount| -> Result<u64> {
        Ok(read_counters(raw.mount.path())?
            .get("writethrough_overlapped")
            .copied()
            .unwrap_or(0))
    };
    let path = raw.data();
    let files = [open_rw(&path, false)?, open_rw(&path, false)?];
    let race = |raw: &RawMount| -> Result<([u64; 2], u64)> {
        let before = overlapped(raw)?;
        let done = two_writers(&|t, n| {
            // Thread 0 writes the first half of the units, thread 1 the second.
            let i = t * UNITS / 2 + n % (UNITS / 2);
            let data = pattern(100 + t * 1000 + n, unit as usize);
            expect_written(
                atomic_write(&files[t as usize], &data, base + i * unit),
                unit as usize,
                "an RWF_ATOMIC write to its own half",
            )
        })?;
        ensure!(
            done.iter().all(|&n| n > 0),
            "a writer made no write: {done:?}"
        );
        Ok((done, overlapped(raw)?.saturating_sub(before)))
    };
    let (done, inside) = race(raw)?;
    println!(
        "#   {} and {} untorn writes, {inside} overlapped",
        done[0], done[1]
    );
    ensure!(
        inside > 0,
        "untorn writes to disjoint ranges never overlapped ({done:?} writes): serialised"
    );
    let mode = |bits: u32| {
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(bits))
            .with_context(|| format!("chmod {bits:o} {}", path.display()))
    };
    mode(0o4600)?;
    let control = race(raw);
    mode(0o600)?;
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
    Ok(())
}

/// An untorn write from a buffer that faults part way is `EFAULT` and changes nothing, on the
/// device or in the page cache.
fn user_fault_leaves_old_data(raw: &mut RawMount) -> Result<()> {
    let limits = raw.expected_limits()?;
    let base = region(6);
    let page = sys::page_size();
    let len = (2 * page as u32).clamp(limits.unit_min(), limits.unit_max()) as usize;
    ensure!(
        len >= 2 * page,
        "the largest atomic unit is below two pages"
    );
    let file = open_rw(&raw.data(), false)?;
    let want = pattern(60, len);
    expect_written(atomic_write(&file, &want, base), len, "the first version")?;
    for tail in [Tail::Unmapped, Tail::ProtNone] {
        let mut buf = PartlyMapped::new(page, len, tail)?;
        buf.head_mut().fill(0xab);
        let what =
            format!("RWF_ATOMIC write from a buffer whose pages after the first are {tail:?}");
        expect_err(
            buf.pwritev2(&file, base, sys::RWF_ATOMIC),
            libc::EFAULT,
            &what,
        )?;
        raw.ensure_both(base, &want, &format!("after the {what}"))?;
    }
    Ok(())
}

/// The device is held exclusively while mounted, and free at once after the unmount.
fn exclusive(raw: &mut RawMount) -> Result<()> {
    match Mounted::mount_syscall(UNTORN, &raw.device, "")? {
        Ok(_) => bail!("a second raw mount of the device succeeded"),
        Err(e) => ensure!(
            e.raw_os_error() == Some(libc::EBUSY),
            "a second raw mount: {}, expected EBUSY",
            sys::describe(&e)
        ),
    }
    let open_excl = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(&raw.device)
    };
    expect_err(
        open_excl().map(drop),
        libc::EBUSY,
        "an O_EXCL open of the mounted device",
    )?;
    raw.mount.unmount()?;
    let free = open_excl().map(drop);
    raw.mount.mount_again()?;
    free.context("an O_EXCL open right after the unmount")
}

/// A read-only mount reads, refuses writes with `EROFS`, and cannot become read-write (the
/// device was opened read-only).
fn read_only(raw: &mut RawMount) -> Result<()> {
    let base = region(7);
    let file = open_rw(&raw.data(), false)?;
    let data = pattern(70, 8192);
    file.write_all_at(&data, base)?;
    file.sync_all()?;
    drop(file);
    raw.mount.unmount()?;
    let result = (|| -> Result<()> {
        let ro = Mounted::mount(UNTORN, guest::path_str(&raw.device)?, "ro")?;
        let path = ro.path().join(DATA);
        let got = read_at(&open_ro(&path)?, base, data.len())?;
        ensure_bytes(&got, &data, "read-only mount")?;
        expect_err(
            OpenOptions::new().write(true).open(&path).map(drop),
            libc::EROFS,
            "opening data for writing",
        )?;
        let remount = sys::mount(Path::new("none"), ro.path(), UNTORN, libc::MS_REMOUNT, "");
        expect_err(remount, libc::EROFS, "a remount read-write")?;
        Ok(())
    })();
    raw.mount.mount_again()?;
    result
}

/// tornblk with 4 KiB blocks and atomic writes of 4 to 32 KiB: untorn's limits follow the
/// device, and a plain write of part of a block reaches it whole.
fn tornblk_limits(env: &Env) -> Result<()> {
    let tornblk = tornblk::load(env)?;
    let dev = TornDev::new(
        "raw",
        &[
            ("size_mib", "64"),
            ("logical_block_size", "4096"),
            ("atomic_unit_min", "4096"),
            ("atomic_unit_max", "32768"),
            ("atomic_max", "32768"),
        ],
    )?;
    let raw = RawMount::new(env, &dev.disk.clone(), Some(Box::new((dev, tornblk))))?;
    let got = FileLimits::of_file(&raw.data())?;
    ensure!(
        (got.unit_min, got.unit_max) == (4096, 32768),
        "statx on tornblk: {got:?}, expected 4096..32768"
    );
    let file = open_rw(&raw.data(), false)?;
    let data = pattern(80, 32768);
    expect_written(
        atomic_write(&file, &data, 65536),
        32768,
        "a 32 KiB untorn write",
    )?;
    raw.ensure_both(65536, &data, "the 32 KiB untorn write")?;
    for (len, what) in [
        (65536usize, "64 KiB, above unit_max"),
        (2048, "2 KiB, below unit_min"),
    ] {
        expect_err(
            atomic_write(&file, &pattern(81, len), 0),
            libc::EINVAL,
            &format!("an untorn write of {what}"),
        )?;
    }
    let mut want = read_at(&file, 0, 4096)?;
    let small = pattern(82, 100);
    file.write_all_at(&small, 512)?;
    file.sync_all()?;
    want[512..612].copy_from_slice(&small);
    raw.ensure_both(0, &want, "a 100-byte write in a 4 KiB block, after fsync")
}

/// A loop device (no atomic writes): it mounts, reports no atomic limits, refuses `RWF_ATOMIC`
/// with `EOPNOTSUPP`, and plain writes work.
fn no_atomic_writes(env: &Env) -> Result<()> {
    let image = guest::scratch_dir("raw-loop")?.join("image");
    File::create(&image)?.set_len(32 << 20)?;
    let loop_dev = guest::run("losetup", &["-f", "--show", guest::path_str(&image)?])?
        .trim()
        .to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = guest::run("losetup", &["-d", &self.0]);
        }
    }
    let detach = Detach(loop_dev.clone());
    let raw = RawMount::new(env, Path::new(&loop_dev), Some(Box::new(detach)))?;
    let got = FileLimits::of_file(&raw.data())?;
    ensure!(
        !got.attr_write_atomic && got.unit_min == 0 && got.unit_max == 0,
        "statx on a loop device: {got:?}, expected no atomic writes"
    );
    let file = open_rw(&raw.data(), false)?;
    expect_err(
        atomic_write(&file, &pattern(90, 4096), 0),
        libc::EOPNOTSUPP,
        "RWF_ATOMIC on a device without atomic writes",
    )?;
    let data = pattern(91, 5000);
    file.write_all_at(&data, 4096)?;
    file.sync_all()?;
    raw.ensure_both(4096, &data, "a plain write after fsync")
}
