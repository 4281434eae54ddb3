// SPDX-License-Identifier: GPL-2.0

//! Raw mode (`mount -t untorn /dev/sdX /mnt`): the one file `data` is the device, read and
//! written through untorn's page cache with untorn's own bios (`Documentation/filesystems/
//! untorn.rst`, "Raw mode").
//!
//! The tests of the `raw/scsi_debug` group share one raw mount of the `scsi_debug atomic_wr=1`
//! disk; each uses its own 16 MiB region of the device, and checks what reaches the device by
//! reading it with `O_DIRECT` (no fsync). Besides the tests of raw mode's own, the group runs the
//! writethrough tests that serve both modes (`writethrough.rs`, through [`Subject`]); the
//! `raw/tornblk` group runs those of them that also run over tornblk, on a raw mount of tornblk.
//! Two tests use devices of their own: tornblk with other atomic limits, and a loop device,
//! which has no atomic writes.

use super::{
    stacking::{ensure_bytes, read_at, UNTORN},
    subject::Subject,
    tornblk::{self, TornDev},
    writethrough::{
        self, atomic_write, ensure_mode, expect_err, expect_written, open_ro, open_rw,
        read_counters, set_mode, untorn_limits, TORNBLK_DEVICE,
    },
    Env, Test,
};
use crate::{
    exercise::pattern,
    guest::{self, LoadedModule, Mounted},
    limits::FileLimits,
    sys::{self, AlignedBuf},
};
use anyhow::{bail, ensure, Context, Result};
use std::{
    fs::{self, File, OpenOptions},
    io::{Seek, SeekFrom},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
};
use untorn_logic::{atomic_write::AtomicWriteLimits, mount_options::FileMode};

/// The name of the one file of a raw mount.
const DATA: &str = "data";
/// `statfs`'s `f_type` of untorn.
const UNTORN_MAGIC: i64 = 0x756e_746f;
/// Each test's region of the device.
pub(super) const REGION: u64 = 16 << 20;

/// A raw mount of a device; dropped in this order: the mount, the module, the device's owner.
pub(super) struct RawMount {
    mount: Mounted,
    device: PathBuf,
    /// The device's size.
    size: u64,
    /// The next region a test may take.
    next_region: u64,
    _module: LoadedModule,
    _owner: Option<Box<dyn std::any::Any>>,
}

impl RawMount {
    fn new(env: &Env, device: &Path, owner: Option<Box<dyn std::any::Any>>) -> Result<Self> {
        let size = device_size(device)?;
        let module = super::load_untorn(&env.modules_dir)?;
        let mount = Mounted::mount(UNTORN, guest::path_str(device)?, "")
            .with_context(|| format!("cannot mount untorn on the device {}", device.display()))?;
        Ok(Self {
            mount,
            device: device.to_path_buf(),
            size,
            next_region: 0,
            _module: module,
            _owner: owner,
        })
    }

    pub(super) fn data(&self) -> PathBuf {
        self.mount.path().join(DATA)
    }

    pub(super) fn device(&self) -> &Path {
        &self.device
    }

    pub(super) fn mount_path(&self) -> &Path {
        self.mount.path()
    }

    pub(super) fn mount_mut(&mut self) -> &mut Mounted {
        &mut self.mount
    }

    /// The offset of a region of the device no other test of this mount has taken, so that the
    /// tests of one mount do not see each other's bytes.
    pub(super) fn take_region(&mut self) -> Result<u64> {
        let offset = self.next_region * REGION;
        ensure!(
            offset + REGION <= self.size,
            "{} ({} bytes) has no region left for another test",
            self.device.display(),
            self.size
        );
        self.next_region += 1;
        Ok(offset)
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

    /// Runs a writethrough test of both modes on this mount; then turns the mode of `data`
    /// off (it lasts as long as the mount, and the next test expects a new file's) and writes
    /// back what the test left dirty (so that the next test's counters see only its writes).
    fn run(&mut self, test: fn(&mut Subject) -> Result<()>) -> Result<()> {
        let result = test(&mut Subject::Raw(self));
        let reset = open_rw(&self.data(), false).and_then(|f| {
            set_mode(&f, FileMode::OFF, "turn the mode of data off")?;
            f.sync_all().context("fsync data after the test")
        });
        result.and(reset)
    }
}

fn device_size(device: &Path) -> Result<u64> {
    let mut f = File::open(device).with_context(|| format!("cannot open {}", device.display()))?;
    Ok(f.seek(SeekFrom::End(0))?)
}

type RawTest = fn(&mut RawMount) -> Result<()>;

/// The tests of raw mode's own on the shared raw mount of the scsi_debug disk.
const TESTS: &[(&str, RawTest)] = &[
    ("shape", shape),
    ("end-of-device", end_of_device),
    ("writethrough-mode", writethrough_mode),
    ("writeback-and-fsync", writeback_and_fsync),
    ("reads-from-device", reads_from_device),
    ("exclusive", exclusive),
    ("read-only", read_only),
];

/// untorn mounted raw on tornblk with the settings of the stacked tornblk tests; dropped in
/// this order: the mount, the device, tornblk.
fn raw_on_tornblk(env: &Env) -> Result<RawMount> {
    let tornblk = tornblk::load(env)?;
    let dev = TornDev::new("rawwt", TORNBLK_DEVICE)?;
    RawMount::new(env, &dev.disk.clone(), Some(Box::new((dev, tornblk))))
}

pub fn tests() -> Vec<Test> {
    let group = "raw/scsi_debug";
    let on_scsi_debug = |env: &Env| RawMount::new(env, &guest::scsi_debug_disk()?, None);
    let mut tests: Vec<Test> = TESTS
        .iter()
        .map(|&(name, run)| {
            Test::in_group(format!("{group}/{name}"), group, move |env| {
                run(&mut *env.fixture(group, on_scsi_debug)?)
            })
        })
        .collect();
    for (name, run) in writethrough::both_modes(false) {
        tests.push(Test::in_group(
            format!("{group}/{name}"),
            group,
            move |env| env.fixture(group, on_scsi_debug)?.run(run),
        ));
    }
    let group = "raw/tornblk";
    for (name, run) in writethrough::both_modes(true) {
        tests.push(Test::in_group(
            format!("{group}/{name}"),
            group,
            move |env| env.fixture(group, raw_on_tornblk)?.run(run),
        ));
    }
    tests.push(Test::new("raw/tornblk/limits", tornblk_limits));
    tests.push(Test::new("raw/loop/no-atomic-writes", no_atomic_writes));
    tests
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
    let base = raw.take_region()?;
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
    let base = raw.take_region()?;
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
    let base = raw.take_region()?;
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
    // Sequentially, in 64 KiB pieces: readahead fills its windows with a bio each.
    let file = open_ro(&raw.data())?;
    let mut got = Vec::with_capacity(data.len());
    for at in (0..data.len()).step_by(64 << 10) {
        got.extend(read_at(&file, base + at as u64, 64 << 10)?);
    }
    ensure_bytes(&got, &data, "read through untorn")?;
    let after = read_counters(raw.mount.path())?;
    let grew = |name: &str| -> Result<u64> {
        let count = |c: &super::writethrough::Counters| c.get(name).copied();
        count(&after)
            .zip(count(&before))
            .map(|(a, b)| a.saturating_sub(b))
            .with_context(|| format!("no {name} counter"))
    };
    let (bytes, bios) = (grew("device_read_bytes")?, grew("device_reads")?);
    println!(
        "#   a cold read of {} bytes: {bios} read bios of {bytes} bytes",
        data.len()
    );
    ensure!(
        bytes >= data.len() as u64,
        "{bytes} bytes read from the device for a read of {}",
        data.len()
    );
    // A bio per 128 KiB readahead window and a few, not one per page.
    let windows = (data.len() >> 17) as u64;
    ensure!(
        bios <= windows + 4,
        "{bios} read bios for {} bytes, more than one per readahead window ({windows}) and a \
         few: readahead is not batched",
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
    let base = raw.take_region()?;
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
