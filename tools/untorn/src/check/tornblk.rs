// SPDX-License-Identifier: GPL-2.0

//! The tests of tornblk, the power-cut simulating RAM block device (`samples/rust/tornblk`):
//! its configfs interface and sysfs limits, atomic writes through the block layer, read-your-
//! writes, flush and FUA durability across a cut, torn plain writes but never a torn
//! `REQ_ATOMIC` write (and the `atomic_as_plain` negative control), power commands and their
//! errnos, and determinism from the seed.
//!
//! Every test makes its own devices through configfs (removed when it ends, so that the module
//! unloads) and checks the device's content from user space with `O_DIRECT` I/O.

use super::{Env, Test};
use crate::{
    guest::LoadedModule,
    sys::{self, AlignedBuf},
};
use anyhow::{bail, ensure, Context, Result};
use std::{
    cell::RefMut,
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, IoSlice},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
};
use untorn_logic::{
    rng::SplitMix64,
    unit::{self, UnitState, UnitTag},
};

/// The module's name.
pub const TORNBLK: &str = "tornblk";
/// The configfs directory of the devices.
pub(crate) const CONFIGFS: &str = "/sys/kernel/config/tornblk";
/// The group whose fixture (the module, loaded) the tests share.
const GROUP: &str = "tornblk";
/// A FUA write (and a flush) on a block device opened `O_DIRECT`.
const RWF_DSYNC: i32 = sys::RWF_DSYNC;

pub fn tests() -> Vec<Test> {
    let t = |name: &str, run: fn() -> Result<()>| {
        Test::in_group(format!("tornblk/{name}"), GROUP, move |env| {
            let _module = module(env)?;
            run()
        })
    };
    vec![
        t("sysfs-limits-and-cache", sysfs_limits_and_cache),
        t("direct-atomic-writes", direct_atomic_writes),
        t("read-your-writes", read_your_writes),
        t("flush-and-fua-survive-a-cut", flush_and_fua_survive_a_cut),
        t("torn-plain-never-torn-atomic", torn_plain_never_torn_atomic),
        t("power-commands-and-errnos", power_commands_and_errnos),
        t("cache-overflow-destages", cache_overflow_destages),
        t("same-seed-same-image", same_seed_same_image),
    ]
}

/// The module, loaded for the tests of the group.
struct Loaded {
    _module: LoadedModule,
}

fn module(env: &Env) -> Result<RefMut<'_, Loaded>> {
    env.fixture(GROUP, |env| {
        Ok(Loaded {
            _module: load(env)?,
        })
    })
}

/// Loads tornblk from the built modules.
pub(crate) fn load(env: &Env) -> Result<LoadedModule> {
    let path = env
        .modules()?
        .into_iter()
        .find(|(name, _)| name == TORNBLK)
        .map(|(_, path)| path)
        .with_context(|| format!("no {TORNBLK}.ko under {}", env.modules_dir.display()))?;
    let module = LoadedModule::load(TORNBLK, &path)?;
    ensure!(
        Path::new(CONFIGFS).is_dir(),
        "{CONFIGFS} is missing after loading {TORNBLK} (is configfs mounted?)"
    );
    Ok(module)
}

/// A tornblk device made through configfs; disabled and removed when dropped.
pub(crate) struct TornDev {
    dir: PathBuf,
    pub(crate) disk: PathBuf,
}

impl TornDev {
    /// Makes device `name` with `settings` (attribute, value), and enables it.
    pub(crate) fn new(name: &str, settings: &[(&str, &str)]) -> Result<Self> {
        let dev = Self::configure(name, settings)?;
        dev.set("enable", "1")
            .with_context(|| format!("enabling tornblk device {name}"))?;
        Ok(dev)
    }

    /// Makes device `name` with `settings`, without enabling it.
    fn configure(name: &str, settings: &[(&str, &str)]) -> Result<Self> {
        let dir = Path::new(CONFIGFS).join(name);
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dev = Self {
            dir,
            disk: Path::new("/dev").join(format!("tornblk{name}")),
        };
        for (attr, value) in settings {
            dev.set(attr, value)
                .with_context(|| format!("setting {attr} to {value}"))?;
        }
        Ok(dev)
    }

    /// Writes an attribute; the error carries the errno of the write.
    pub(crate) fn set(&self, attr: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir.join(attr), value)
    }

    /// Reads an attribute, trimmed.
    pub(crate) fn get(&self, attr: &str) -> Result<String> {
        let path = self.dir.join(attr);
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_string())
    }

    /// Runs a power command.
    pub(crate) fn command(&self, command: &str) -> io::Result<()> {
        self.set("command", command)
    }

    /// The `report` attribute, as a map.
    pub(crate) fn report(&self) -> Result<BTreeMap<String, String>> {
        let text = self.get("report")?;
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let (key, value) = line
                .split_once(' ')
                .with_context(|| format!("bad report line {line:?}"))?;
            map.insert(key.to_string(), value.to_string());
        }
        Ok(map)
    }

    /// One number of the report.
    pub(crate) fn count(&self, key: &str) -> Result<u64> {
        let report = self.report()?;
        let value = report
            .get(key)
            .with_context(|| format!("no {key} in the report: {report:?}"))?;
        value
            .parse()
            .with_context(|| format!("{key} is not a number: {value:?}"))
    }

    /// Whether the power is off (after a cut, before `power_on`).
    pub(crate) fn powered_off(&self) -> bool {
        self.get("state").is_ok_and(|s| s == "off")
    }

    /// The writes the last cut tore and lost (`writes_torn`, `writes_lost` of the report; 0
    /// when it has none).
    pub(crate) fn cut_fates(&self) -> Result<(u64, u64)> {
        let report = self.report()?;
        let count = |k: &str| {
            report
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((count("writes_torn"), count("writes_lost")))
    }

    /// The block device, opened for direct I/O.
    fn open_direct(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.disk)
            .with_context(|| format!("cannot open {}", self.disk.display()))
    }

    /// A sysfs queue attribute of the disk.
    fn queue(&self, attr: &str) -> Result<String> {
        let name = self.disk.file_name().context("no disk name")?;
        let path = Path::new("/sys/block").join(name).join("queue").join(attr);
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_string())
    }
}

impl Drop for TornDev {
    fn drop(&mut self) {
        if let Err(e) = self.set("enable", "0") {
            eprintln!("# warning: cannot disable {}: {e}", self.dir.display());
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("# warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Expects `result` to fail with `errno`.
fn expect_errno<T>(result: io::Result<T>, errno: i32, what: &str) -> Result<()> {
    match result {
        Ok(_) => bail!("{what}: succeeded, expected errno {errno}"),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => bail!("{what}: {e}, expected errno {errno}"),
    }
}

/// Writes `data` at `offset` with `pwritev2` and `flags`; fails on a short write.
fn write_at(file: &File, data: &[u8], offset: u64, flags: i32) -> io::Result<()> {
    let n = sys::pwritev2(file, &[IoSlice::new(data)], offset, flags)?;
    if n != data.len() {
        return Err(io::Error::other(format!(
            "short write: {n} of {}",
            data.len()
        )));
    }
    Ok(())
}

/// Reads `len` bytes at `offset` with direct I/O.
fn read_direct(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = AlignedBuf::new(len, 4096);
    file.read_exact_at(buf.as_mut_slice(), offset)?;
    Ok(buf.as_slice().to_vec())
}

/// An aligned buffer holding `data`.
fn aligned(data: &[u8]) -> AlignedBuf {
    let mut buf = AlignedBuf::new(data.len(), 4096);
    buf.as_mut_slice().copy_from_slice(data);
    buf
}

/// `len` bytes of a pattern drawn from `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    data.truncate(len);
    data
}

/// A unit of `len` bytes for unit index `unit`, version `version` (see `untorn_logic::unit`).
fn unit_data(unit: u64, version: u64, len: usize) -> Result<AlignedBuf> {
    let mut buf = AlignedBuf::new(len, 4096);
    unit::fill_unit(buf.as_mut_slice(), UnitTag { unit, version })
        .map_err(|e| anyhow::anyhow!("cannot fill unit {unit}: {e:?}"))?;
    Ok(buf)
}

/// What unit `unit` of `len` bytes holds on the device.
fn inspect(file: &File, unit: u64, len: usize) -> Result<UnitState> {
    let data = read_direct(file, unit * len as u64, len)?;
    unit::inspect_unit(&data, unit).map_err(|e| anyhow::anyhow!("unit {unit}: {e:?}"))
}

fn sysfs_limits_and_cache() -> Result<()> {
    let cases: [(&str, [&str; 6], [&str; 4]); 3] = [
        // name, (size_mib, lbs, unit_min, unit_max, max, boundary), expected sysfs
        (
            "l0",
            ["16", "4096", "4096", "65536", "65536", "0"],
            ["4096", "65536", "65536", "0"],
        ),
        (
            "l1",
            ["8", "512", "512", "16384", "32768", "65536"],
            ["512", "16384", "32768", "65536"],
        ),
        ("l2", ["8", "512", "0", "0", "0", "0"], ["0", "0", "0", "0"]),
    ];
    for (name, s, want) in cases {
        let dev = TornDev::new(
            name,
            &[
                ("size_mib", s[0]),
                ("logical_block_size", s[1]),
                ("atomic_unit_min", s[2]),
                ("atomic_unit_max", s[3]),
                ("atomic_max", s[4]),
                ("atomic_boundary", s[5]),
            ],
        )?;
        ensure!(
            dev.get("disk")? == format!("tornblk{name}"),
            "disk attribute {:?}",
            dev.get("disk")?
        );
        ensure!(dev.disk.exists(), "{} does not exist", dev.disk.display());
        let got = [
            dev.queue("atomic_write_unit_min_bytes")?,
            dev.queue("atomic_write_unit_max_bytes")?,
            dev.queue("atomic_write_max_bytes")?,
            dev.queue("atomic_write_boundary_bytes")?,
        ];
        println!("#   tornblk{name}: atomic unit_min, unit_max, max, boundary = {got:?}");
        ensure!(
            got == want,
            "{name}: sysfs atomic limits {got:?}, expected {want:?}"
        );
        ensure!(
            dev.queue("logical_block_size")? == s[1],
            "logical block size"
        );
        ensure!(
            dev.queue("write_cache")? == "write back",
            "no volatile write cache"
        );
        ensure!(dev.queue("fua")? == "1", "no FUA");
        let size: u64 = fs::read_to_string(
            Path::new("/sys/block")
                .join(format!("tornblk{name}"))
                .join("size"),
        )?
        .trim()
        .parse()?;
        let mib: u64 = s[0].parse()?;
        ensure!(
            size == mib << 11,
            "size {size} sectors, expected {}",
            mib << 11
        );
        ensure!(
            dev.get("state")? == "running",
            "state {}",
            dev.get("state")?
        );
    }
    Ok(())
}

fn direct_atomic_writes() -> Result<()> {
    let dev = TornDev::new("a0", &[("size_mib", "16")])?;
    let file = dev.open_direct()?;
    let data = aligned(&pattern(1, 16384));
    write_at(&file, data.as_slice(), 65536, sys::RWF_ATOMIC).context("RWF_ATOMIC 16 KiB")?;
    ensure!(
        read_direct(&file, 65536, 16384)? == data.as_slice(),
        "the atomic write does not read back"
    );
    ensure!(
        dev.count("atomic_writes")? == 1,
        "report: {:?}",
        dev.report()?
    );
    let big = aligned(&pattern(2, 131072));
    expect_errno(
        write_at(&file, big.as_slice(), 0, sys::RWF_ATOMIC),
        libc::EINVAL,
        "RWF_ATOMIC above unit_max (128 KiB > 64 KiB)",
    )?;
    expect_errno(
        write_at(&file, data.as_slice(), 4096, sys::RWF_ATOMIC),
        libc::EINVAL,
        "RWF_ATOMIC 16 KiB at a 4 KiB offset (misaligned)",
    )?;
    let odd = aligned(&pattern(3, 12288));
    expect_errno(
        write_at(&file, odd.as_slice(), 0, sys::RWF_ATOMIC),
        libc::EINVAL,
        "RWF_ATOMIC of 12 KiB (not a power of two)",
    )?;
    ensure!(
        dev.count("atomic_writes")? == 1,
        "a refused write reached the device"
    );

    let small = TornDev::new(
        "a1",
        &[
            ("size_mib", "4"),
            ("logical_block_size", "512"),
            ("atomic_unit_min", "1024"),
            ("atomic_unit_max", "8192"),
            ("atomic_max", "8192"),
        ],
    )?;
    let file = small.open_direct()?;
    let sector = aligned(&pattern(4, 512));
    expect_errno(
        write_at(&file, sector.as_slice(), 0, sys::RWF_ATOMIC),
        libc::EINVAL,
        "RWF_ATOMIC below unit_min (512 < 1024)",
    )?;
    let ok = aligned(&pattern(5, 8192));
    write_at(&file, ok.as_slice(), 8192, sys::RWF_ATOMIC).context("RWF_ATOMIC 8 KiB")?;

    let none = TornDev::new("a2", &[("size_mib", "4"), ("atomic_unit_min", "0")])?;
    let file = none.open_direct()?;
    expect_errno(
        write_at(&file, data.as_slice(), 0, sys::RWF_ATOMIC),
        libc::EOPNOTSUPP,
        "RWF_ATOMIC on a device without atomic writes",
    )?;
    write_at(&file, data.as_slice(), 0, 0).context("a plain write")?;
    Ok(())
}

fn read_your_writes() -> Result<()> {
    const SIZE: usize = 8 << 20;
    let dev = TornDev::new(
        "r0",
        &[
            ("size_mib", "8"),
            ("logical_block_size", "512"),
            ("atomic_unit_min", "512"),
            ("cache_mib", "1"),
        ],
    )?;
    let file = dev.open_direct()?;
    let mut model = vec![0u8; SIZE];
    let mut rng = SplitMix64::new(7);
    for op in 0..300u64 {
        let sectors = 1 + rng.below(64) as usize;
        let first = rng.below((SIZE / 512 - sectors) as u32) as usize;
        let (offset, len) = (first * 512, sectors * 512);
        match rng.below(10) {
            0..=4 => {
                let data = aligned(&pattern(op, len));
                let flags = if rng.below(8) == 0 { RWF_DSYNC } else { 0 };
                write_at(&file, data.as_slice(), offset as u64, flags)
                    .with_context(|| format!("op {op}: write {len} at {offset}"))?;
                model[offset..offset + len].copy_from_slice(data.as_slice());
            }
            5 => file.sync_all().with_context(|| format!("op {op}: fsync"))?,
            _ => {
                let got = read_direct(&file, offset as u64, len)?;
                if got != model[offset..offset + len] {
                    let at = got
                        .iter()
                        .zip(&model[offset..])
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    bail!("op {op}: read of {len} at {offset} differs at byte {at}");
                }
            }
        }
    }
    let all = read_direct(&file, 0, SIZE)?;
    ensure!(
        all == model,
        "the whole device differs from what was written"
    );
    let report = dev.report()?;
    println!(
        "#   writes {}, fua_writes {}, flushes {}, implicit_flushes {}",
        report["writes"], report["fua_writes"], report["flushes"], report["implicit_flushes"]
    );
    ensure!(
        dev.count("fua_writes")? > 0,
        "no FUA write reached the device"
    );
    ensure!(dev.count("flushes")? > 0, "no flush reached the device");
    Ok(())
}

fn flush_and_fua_survive_a_cut() -> Result<()> {
    // Lose every write the cut may lose.
    let dev = TornDev::new(
        "f0",
        &[
            ("size_mib", "16"),
            ("keep", "0"),
            ("lose", "1"),
            ("tear", "0"),
        ],
    )?;
    let file = dev.open_direct()?;
    let a = aligned(&pattern(10, 65536));
    let b = aligned(&pattern(11, 16384));
    let c = aligned(&pattern(12, 4096));
    let d = aligned(&pattern(13, 8192));
    write_at(&file, a.as_slice(), 0, 0)?;
    file.sync_all().context("fsync after A")?;
    let flushes = dev.count("flushes")?;
    ensure!(flushes >= 1, "fsync sent no flush");
    write_at(&file, b.as_slice(), 1 << 20, RWF_DSYNC)?;
    ensure!(
        dev.count("fua_writes")? == 1,
        "the RWF_DSYNC write was not FUA"
    );
    // C overwrites A's first block, D lands on fresh space: both only in the cache.
    write_at(&file, c.as_slice(), 0, 0)?;
    write_at(&file, d.as_slice(), 2 << 20, 0)?;
    // Cache C in the block device's page cache: power-on must drop it.
    let buffered = File::open(&dev.disk)?;
    ensure!(
        sys::read_range(&buffered, 0, 4096)? == c.as_slice(),
        "a buffered read does not see the newest data"
    );
    ensure!(
        dev.count("pending_writes")? == 2,
        "report {:?}",
        dev.report()?
    );

    dev.command("cut").context("cut")?;
    ensure!(dev.get("state")? == "off", "state {}", dev.get("state")?);
    let report = dev.report()?;
    for (key, want) in [
        ("cuts", "1"),
        ("cut_pending_writes", "2"),
        ("writes_durable", "0"),
        ("writes_kept", "0"),
        ("writes_lost", "2"),
        ("writes_torn", "0"),
        ("sectors_torn", "0"),
    ] {
        ensure!(
            report[key] == want,
            "{key} {} (expected {want}): {report:?}",
            report[key]
        );
    }
    expect_errno(read_direct(&file, 0, 4096), libc::EIO, "a read while off")?;
    expect_errno(
        write_at(&file, c.as_slice(), 0, 0),
        libc::EIO,
        "a write while off",
    )?;
    expect_errno(file.sync_all(), libc::EIO, "fsync while off")?;

    dev.command("power_on").context("power_on")?;
    ensure!(
        dev.get("state")? == "running",
        "state {}",
        dev.get("state")?
    );
    ensure!(
        read_direct(&file, 0, 65536)? == a.as_slice(),
        "A (flushed) is not whole, or C survived"
    );
    ensure!(
        read_direct(&file, 1 << 20, 16384)? == b.as_slice(),
        "B (FUA) is lost"
    );
    ensure!(
        read_direct(&file, 2 << 20, 8192)?.iter().all(|&x| x == 0),
        "D (never flushed, lose policy) survived"
    );
    ensure!(
        sys::read_range(&buffered, 0, 4096)? == a.as_slice()[..4096],
        "a buffered read after power-on still sees the data lost in the cut"
    );
    Ok(())
}

/// Writes units `0..count` of `len` bytes at version `version`, the odd ones with `RWF_ATOMIC`
/// unless `all_atomic`; returns nothing, the device keeps them in its cache.
fn write_units(file: &File, count: u64, len: usize, version: u64, all_atomic: bool) -> Result<()> {
    for u in 0..count {
        let data = unit_data(u, version, len)?;
        let flags = if all_atomic || u % 2 == 1 {
            sys::RWF_ATOMIC
        } else {
            0
        };
        write_at(file, data.as_slice(), u * len as u64, flags)
            .with_context(|| format!("unit {u} version {version}"))?;
    }
    Ok(())
}

fn torn_plain_never_torn_atomic() -> Result<()> {
    const UNITS: u64 = 16;
    const LEN: usize = 16384;
    // Tear every write the cut may tear.
    let dev = TornDev::new(
        "t0",
        &[
            ("size_mib", "4"),
            ("keep", "0"),
            ("lose", "0"),
            ("tear", "1"),
            ("seed", "1"),
        ],
    )?;
    let file = dev.open_direct()?;
    write_units(&file, UNITS, LEN, 1, false)?;
    dev.command("cut")?;
    dev.command("power_on")?;
    let (mut plain_torn, mut atomic_whole, mut atomic_initial) = (0u64, 0u64, 0u64);
    for u in 0..UNITS {
        match (u % 2 == 1, inspect(&file, u, LEN)?) {
            (false, UnitState::Torn { .. }) => plain_torn += 1,
            (false, UnitState::Whole(1) | UnitState::Initial) => {}
            (true, UnitState::Whole(1)) => atomic_whole += 1,
            (true, UnitState::Initial) => atomic_initial += 1,
            (atomic, state) => bail!("unit {u} (atomic: {atomic}) shows {state:?}"),
        }
    }
    let report = dev.report()?;
    println!(
        "#   tear policy: {plain_torn} of 8 plain units torn; atomic units {atomic_whole} whole, \
         {atomic_initial} absent; report kept {} lost {} torn {} sectors_torn {}",
        report["writes_kept"], report["writes_lost"], report["writes_torn"], report["sectors_torn"]
    );
    // A plain write of 32 sectors stays whole with a chance of 2^-31 per write.
    ensure!(plain_torn >= 6, "only {plain_torn} of 8 plain units torn");
    ensure!(
        dev.count("writes_torn")? == plain_torn,
        "report torn != torn units"
    );
    ensure!(
        dev.count("writes_kept")? == atomic_whole,
        "report kept != whole atomic units"
    );
    ensure!(
        dev.count("writes_lost")? == atomic_initial,
        "report lost != absent atomic units"
    );
    ensure!(dev.count("sectors_torn")? >= plain_torn, "sectors_torn");

    // Negative control: atomic writes treated as plain do tear.
    dev.set("atomic_as_plain", "1")?;
    write_units(&file, UNITS, LEN, 2, false)?;
    dev.command("cut")?;
    dev.command("power_on")?;
    let mut atomic_torn = 0;
    for u in (1..UNITS).step_by(2) {
        if let UnitState::Torn { .. } = inspect(&file, u, LEN)? {
            atomic_torn += 1;
        }
    }
    println!("#   atomic_as_plain: {atomic_torn} of 8 atomic units torn");
    ensure!(
        atomic_torn >= 6,
        "with atomic_as_plain only {atomic_torn} of 8 atomic units tore: the control failed"
    );

    // With reordering and every outcome possible, overlapping atomic writes stay whole: from
    // durable version 3, two atomic rewrites (4, 5) leave each unit whole at 3, 4 or 5.
    dev.set("atomic_as_plain", "0")?;
    for (attr, value) in [
        ("keep", "1"),
        ("lose", "1"),
        ("tear", "1"),
        ("reorder", "1"),
    ] {
        dev.set(attr, value)?;
    }
    for u in 0..UNITS {
        write_at(&file, unit_data(u, 3, LEN)?.as_slice(), u * LEN as u64, 0)?;
    }
    file.sync_all()?;
    for version in [4, 5] {
        write_units(&file, UNITS, LEN, version, true)?;
    }
    dev.command("cut")?;
    dev.command("power_on")?;
    let mut seen = BTreeMap::new();
    for u in 0..UNITS {
        match inspect(&file, u, LEN)? {
            UnitState::Whole(v @ 3..=5) => *seen.entry(v).or_insert(0) += 1,
            other => bail!("unit {u} shows {other:?} after atomic rewrites 4 and 5 of 3"),
        }
    }
    println!("#   reorder, atomic rewrites: units at version (3, 4, 5): {seen:?}");
    ensure!(seen.len() >= 2, "every unit at one version: {seen:?}");
    Ok(())
}

fn power_commands_and_errnos() -> Result<()> {
    let dev = TornDev::new("p0", &[("size_mib", "4")])?;
    let file = dev.open_direct()?;
    let data = aligned(&pattern(20, 4096));

    // A cut after the next 3 writes.
    dev.command("cut_after 3")?;
    ensure!(
        dev.get("state")? == "armed 3",
        "state {}",
        dev.get("state")?
    );
    for i in 0..3u64 {
        write_at(&file, data.as_slice(), i * 4096, 0).with_context(|| format!("write {i}"))?;
    }
    ensure!(
        dev.get("state")? == "off",
        "not off after 3 writes: {}",
        dev.get("state")?
    );
    expect_errno(write_at(&file, data.as_slice(), 0, 0), libc::EIO, "write 4")?;
    ensure!(
        dev.count("cuts")? == 1 && dev.count("cut_pending_writes")? == 3,
        "report"
    );

    // Commands that make no sense while off.
    expect_errno(dev.command("cut"), libc::EBUSY, "cut while off")?;
    expect_errno(
        dev.command("cut_after 1"),
        libc::EBUSY,
        "cut_after while off",
    )?;
    expect_errno(dev.command("disarm"), libc::EBUSY, "disarm while off")?;
    dev.command("power_on")?;
    // ... and while running.
    expect_errno(
        dev.command("power_on"),
        libc::EINVAL,
        "power_on while running",
    )?;
    expect_errno(
        dev.command("disarm"),
        libc::EINVAL,
        "disarm with nothing armed",
    )?;
    expect_errno(dev.command("cut_after 0"), libc::EINVAL, "cut_after 0")?;
    expect_errno(
        dev.command("cut_after 4294967297"),
        libc::EINVAL,
        "cut_after 2^32+1",
    )?;
    expect_errno(dev.command("cut_random 0"), libc::EINVAL, "cut_random 0")?;
    expect_errno(dev.command("reboot"), libc::EINVAL, "an unknown command")?;
    dev.command("cut_after 2")?;
    expect_errno(
        dev.command("cut_after 2"),
        libc::EBUSY,
        "cut_after while armed",
    )?;
    expect_errno(
        dev.command("power_on"),
        libc::EINVAL,
        "power_on while armed",
    )?;
    dev.command("disarm")?;
    ensure!(dev.get("state")? == "running", "state after disarm");
    dev.command("cut_random 10")?;
    let state = dev.get("state")?;
    let n: u64 = state
        .strip_prefix("armed ")
        .with_context(|| format!("state {state} after cut_random"))?
        .parse()?;
    ensure!((1..=10).contains(&n), "cut_random 10 armed {n}");
    dev.command("disarm")?;
    write_at(&file, data.as_slice(), 0, 0).context("a write after disarm")?;

    // Bad settings.
    for (attr, value) in [
        ("size_mib", "0"),
        ("size_mib", "4097"),
        ("size_mib", "99999999999999999999"),
        ("size_mib", "-1"),
        ("logical_block_size", "1024"),
        ("logical_block_size", "8192"),
        ("cache_mib", "0"),
        ("cache_mib", "65"),
        ("atomic_unit_min", "1000"),
        ("atomic_max", "2097152"),
        ("keep", "1001"),
        ("reorder", "2"),
        ("atomic_as_plain", "yes"),
        ("seed", "x"),
        ("enable", "2"),
    ] {
        expect_errno(
            dev.set(attr, value),
            libc::EINVAL,
            &format!("{attr} = {value}"),
        )?;
    }
    for (attr, value) in [
        ("size_mib", "8"),
        ("logical_block_size", "512"),
        ("atomic_unit_min", "0"),
    ] {
        expect_errno(
            dev.set(attr, value),
            libc::EBUSY,
            &format!("{attr} = {value} while enabled"),
        )?;
    }
    // The weights may not all be zero.
    dev.set("keep", "0")?;
    dev.set("lose", "0")?;
    expect_errno(dev.set("tear", "0"), libc::EINVAL, "all weights zero")?;
    ensure!(
        dev.get("tear")? == "1",
        "a refused weight changed the policy"
    );

    // Limits that do not fit together are refused when the disk is made.
    let bad = TornDev::configure(
        "p1",
        &[
            ("size_mib", "4"),
            ("atomic_unit_min", "8192"),
            ("atomic_unit_max", "4096"),
        ],
    )?;
    expect_errno(
        bad.set("enable", "1"),
        libc::EINVAL,
        "enable with unit_min > unit_max",
    )?;
    ensure!(
        bad.get("enable")? == "0" && bad.get("disk")?.is_empty(),
        "a refused enable left a disk"
    );
    expect_errno(
        bad.command("cut"),
        libc::ENODEV,
        "a command to a disabled device",
    )?;
    ensure!(
        bad.get("state")? == "disabled",
        "state of a disabled device"
    );
    for name in ["a b", "x".repeat(25).as_str()] {
        expect_errno(
            fs::create_dir(Path::new(CONFIGFS).join(name)),
            libc::EINVAL,
            &format!("device name {name:?}"),
        )?;
    }
    Ok(())
}

fn cache_overflow_destages() -> Result<()> {
    const BLOCKS: u64 = 512;
    let dev = TornDev::new(
        "c0",
        &[
            ("size_mib", "4"),
            ("cache_mib", "1"),
            ("keep", "0"),
            ("lose", "1"),
            ("tear", "0"),
        ],
    )?;
    let file = dev.open_direct()?;
    for i in 0..BLOCKS {
        let data = aligned(&pattern(1000 + i, 4096));
        write_at(&file, data.as_slice(), i * 4096, 0).with_context(|| format!("block {i}"))?;
    }
    ensure!(
        dev.count("implicit_flushes")? == 1,
        "report {:?}",
        dev.report()?
    );
    ensure!(
        dev.count("pending_writes")? == 256,
        "report {:?}",
        dev.report()?
    );
    dev.command("cut")?;
    ensure!(
        dev.count("writes_lost")? == 256,
        "report {:?}",
        dev.report()?
    );
    dev.command("power_on")?;
    let all = read_direct(&file, 0, (BLOCKS * 4096) as usize)?;
    for (i, block) in all.chunks_exact(4096).enumerate() {
        let destaged = (i as u64) < BLOCKS / 2;
        let want = if destaged {
            pattern(1000 + i as u64, 4096)
        } else {
            vec![0; 4096]
        };
        ensure!(
            block == want.as_slice(),
            "block {i}: expected {}",
            if destaged {
                "its data (destaged by the full cache)"
            } else {
                "zeroes (lost)"
            }
        );
    }
    Ok(())
}

/// Runs the same history on a device: 60 writes, some atomic, one fsync, with a cut armed at a
/// random write; returns the device's image after power-on, and its report.
fn seeded_history(dev: &TornDev) -> Result<(Vec<u8>, BTreeMap<String, String>)> {
    const SIZE: usize = 1 << 20;
    let file = dev.open_direct()?;
    dev.command("cut_random 40")?;
    let armed = dev.get("state")?;
    let mut rng = SplitMix64::new(99);
    let mut failed = 0;
    for op in 0..60u64 {
        let atomic = rng.below(3) == 0;
        let (offset, len) = if atomic {
            let len = 512 << rng.below(4);
            (u64::from(rng.below((SIZE / len) as u32)) * len as u64, len)
        } else {
            let sectors = 1 + rng.below(32) as usize;
            let first = rng.below((SIZE / 512 - sectors) as u32);
            (u64::from(first) * 512, sectors * 512)
        };
        let data = aligned(&pattern(op, len));
        let flags = if atomic { sys::RWF_ATOMIC } else { 0 };
        match write_at(&file, data.as_slice(), offset, flags) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => failed += 1,
            Err(e) => return Err(e).with_context(|| format!("op {op}")),
        }
        if op == 10 {
            let _ = file.sync_all();
        }
    }
    ensure!(
        dev.get("state")? == "off",
        "{armed}: still on after 60 writes"
    );
    ensure!(failed > 0, "{armed}: no write failed after the cut");
    let report = dev.report()?;
    dev.command("power_on")?;
    Ok((read_direct(&file, 0, SIZE)?, report))
}

fn same_seed_same_image() -> Result<()> {
    let settings = |seed: &'static str| {
        [
            ("size_mib", "1"),
            ("logical_block_size", "512"),
            ("atomic_unit_min", "512"),
            ("atomic_unit_max", "4096"),
            ("atomic_max", "4096"),
            ("reorder", "1"),
            ("seed", seed),
        ]
    };
    let x = TornDev::new("s0", &settings("42"))?;
    let y = TornDev::new("s1", &settings("42"))?;
    let z = TornDev::new("s2", &settings("43"))?;
    let (image_x, report_x) = seeded_history(&x)?;
    let (image_y, report_y) = seeded_history(&y)?;
    let (image_z, report_z) = seeded_history(&z)?;
    let summary = |r: &BTreeMap<String, String>| {
        format!(
            "cut after {} writes: kept {} lost {} torn {} sectors_torn {}",
            r["writes"], r["writes_kept"], r["writes_lost"], r["writes_torn"], r["sectors_torn"]
        )
    };
    println!("#   seed 42: {}", summary(&report_x));
    println!("#   seed 43: {}", summary(&report_z));
    // Everything but the reads, which udev's probes of a new disk may add to.
    let without_reads = |r: &BTreeMap<String, String>| {
        let mut r = r.clone();
        r.remove("reads");
        r
    };
    ensure!(
        without_reads(&report_x) == without_reads(&report_y),
        "same seed, different reports:\n{report_x:?}\n{report_y:?}"
    );
    ensure!(image_x == image_y, "same seed, different images");
    ensure!(
        image_x != image_z,
        "seeds 42 and 43 gave the same image ({})",
        summary(&report_z)
    );
    ensure!(
        report_x["writes_torn"] != "0" || report_x["writes_lost"] != "0",
        "the cut neither lost nor tore anything"
    );
    Ok(())
}
