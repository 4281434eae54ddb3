// SPDX-License-Identifier: GPL-2.0

//! The foundation's guest tests: our modules load and unload cleanly, their in-kernel KUnit
//! suites pass, and the atomic test device and a lower filesystem on it report atomic limits.

use super::{Env, Test};
use crate::{
    guest::{self, FsType, Mounted},
    limits::{DeviceLimits, FileLimits},
    sys::{self, AlignedBuf},
};
use anyhow::{bail, ensure, Context, Result};
use std::{
    collections::BTreeSet,
    fs::{self, OpenOptions},
    io::IoSlice,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
};

/// How often each module is loaded and unloaded.
const LOAD_CYCLES: usize = 20;
/// Modules that carry KUnit suites, which must be found and pass when they load.
const MODULES_WITH_KUNIT: &[&str] = &["untorn"];
const KUNIT_DEBUGFS: &str = "/sys/kernel/debug/kunit";

pub fn tests(env: &Env) -> Result<Vec<Test>> {
    let mut tests = Vec::new();
    for (name, path) in env.modules()? {
        let (n, p) = (name.clone(), path.clone());
        tests.push(Test::new(
            format!("module/{name}/load-unload-{LOAD_CYCLES}x"),
            move |_| load_unload(&n, &p, LOAD_CYCLES),
        ));
        if MODULES_WITH_KUNIT.contains(&name.as_str()) {
            tests.push(Test::new(format!("module/{name}/kunit"), move |_| {
                kunit_suites_pass(&name, &path)
            }));
        }
    }
    tests.push(Test::new("device/scsi_debug/sysfs-atomic-limits", |_| {
        scsi_debug_reports_atomic_limits()
    }));
    for fs_type in [FsType::Xfs, FsType::Ext4] {
        tests.push(Test::new(
            format!("lower/{}/statx-and-direct-atomic-writes", fs_type.name()),
            move |_| lower_reports_and_honours_atomic_writes(fs_type),
        ));
    }
    Ok(tests)
}

fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).exists()
}

/// Loads `path`, returns its reference count, and leaves it loaded.
fn insmod(name: &str, path: &Path) -> Result<u64> {
    ensure!(!module_loaded(name), "module {name} is already loaded");
    guest::run("insmod", &[guest::path_str(path)?])?;
    let refcnt_path = Path::new("/sys/module").join(name).join("refcnt");
    let refcnt = fs::read_to_string(&refcnt_path)
        .with_context(|| format!("{name} loaded but {} is missing", refcnt_path.display()))?;
    refcnt.trim().parse().context("refcnt is not a number")
}

fn rmmod(name: &str) -> Result<()> {
    guest::run("rmmod", &[name])?;
    ensure!(
        !module_loaded(name),
        "module {name} is still present after rmmod"
    );
    Ok(())
}

fn load_unload(name: &str, path: &Path, cycles: usize) -> Result<()> {
    for cycle in 1..=cycles {
        let refcnt = insmod(name, path).with_context(|| format!("load {cycle} of {cycles}"))?;
        ensure!(
            refcnt == 0,
            "load {cycle}: reference count {refcnt} with no user"
        );
        rmmod(name).with_context(|| format!("unload {cycle} of {cycles}"))?;
    }
    Ok(())
}

fn kunit_suites() -> Result<BTreeSet<String>> {
    let mut suites = BTreeSet::new();
    for entry in fs::read_dir(KUNIT_DEBUGFS).with_context(|| {
        format!("cannot list {KUNIT_DEBUGFS}: is debugfs mounted and CONFIG_KUNIT_DEBUGFS on?")
    })? {
        suites.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(suites)
}

/// Loads the module, which runs its KUnit suites, and checks every result they report.
fn kunit_suites_pass(name: &str, path: &Path) -> Result<()> {
    let before = kunit_suites()?;
    insmod(name, path)?;
    let result = (|| -> Result<()> {
        let suites: Vec<String> = kunit_suites()?.difference(&before).cloned().collect();
        ensure!(
            !suites.is_empty(),
            "module {name} registered no KUnit suite"
        );
        for suite in &suites {
            let results = fs::read_to_string(Path::new(KUNIT_DEBUGFS).join(suite).join("results"))?;
            let (mut passed, mut failed) = (Vec::new(), Vec::new());
            for line in results.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("not ok ") {
                    failed.push(rest.to_string());
                } else if let Some(rest) = line.strip_prefix("ok ") {
                    passed.push(rest.to_string());
                }
            }
            for test in &passed {
                println!("#   kunit {suite}: ok {test}");
            }
            ensure!(
                failed.is_empty(),
                "KUnit suite {suite} failed: {}\n{results}",
                failed.join(", ")
            );
            // The suite's own line plus at least one test case.
            ensure!(
                passed.len() >= 2,
                "KUnit suite {suite} ran no test:\n{results}"
            );
        }
        Ok(())
    })();
    rmmod(name)?;
    result
}

fn scsi_debug_reports_atomic_limits() -> Result<()> {
    let disk = guest::scsi_debug_disk()?;
    let l = DeviceLimits::of_disk(&disk)?;
    println!("#   {}: {l:?}", disk.display());
    ensure!(l.unit_min_bytes > 0, "atomic_write_unit_min_bytes is 0");
    ensure!(
        l.unit_min_bytes.is_power_of_two() && l.unit_max_bytes.is_power_of_two(),
        "atomic units are not powers of two: {l:?}"
    );
    ensure!(
        l.unit_max_bytes >= l.unit_min_bytes,
        "unit_max below unit_min: {l:?}"
    );
    ensure!(l.max_bytes >= l.unit_max_bytes, "max below unit_max: {l:?}");
    ensure!(
        l.boundary_bytes == 0 || l.boundary_bytes >= l.unit_max_bytes,
        "boundary below unit_max: {l:?}"
    );
    Ok(())
}

/// On a fresh lower filesystem over the atomic device: statx reports atomic limits, direct
/// `RWF_ATOMIC` writes within them land whole, ill-shaped ones get `EINVAL`, and a buffered
/// `RWF_ATOMIC` write gets `EOPNOTSUPP` (the gap that untorn fills).
fn lower_reports_and_honours_atomic_writes(fs_type: FsType) -> Result<()> {
    let disk = guest::scsi_debug_disk()?;
    let mounted = Mounted::fresh(fs_type, &disk)?;
    let path = mounted.path().join("atomic");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    // Allocate (written extents), as a database preallocates its files.
    let zeros = AlignedBuf::new(1 << 20, 4096);
    file.write_all_at(zeros.as_slice(), 0)?;
    file.sync_all()?;

    let l = FileLimits::of_file(&path)?;
    println!("#   {}: {l:?}", fs_type.name());
    ensure!(l.reported, "statx did not fill in STATX_WRITE_ATOMIC");
    ensure!(l.attr_write_atomic, "STATX_ATTR_WRITE_ATOMIC is not set");
    ensure!(
        l.unit_min > 0 && l.unit_max >= l.unit_min,
        "bad limits {l:?}"
    );
    ensure!(l.segments_max >= 1, "segments_max is 0");

    let page = 16384u32.clamp(l.unit_min, l.unit_max) as usize;
    let mut data = AlignedBuf::new(page, 4096);
    for (i, b) in data.as_mut_slice().iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    let offset = (4 * page) as u64;
    let written = sys::pwritev2(
        &file,
        &[IoSlice::new(data.as_slice())],
        offset,
        sys::RWF_ATOMIC,
    )
    .with_context(|| format!("direct RWF_ATOMIC write of {page} bytes"))?;
    ensure!(written == page, "short atomic write: {written} of {page}");
    let mut back = AlignedBuf::new(page, 4096);
    file.read_exact_at(back.as_mut_slice(), offset)?;
    ensure!(
        back.as_slice() == data.as_slice(),
        "read back differs from the atomic write"
    );

    expect_errno(
        sys::pwritev2(
            &file,
            &[IoSlice::new(data.as_slice())],
            offset + 4096,
            sys::RWF_ATOMIC,
        ),
        libc::EINVAL,
        "misaligned direct RWF_ATOMIC write",
    )?;
    if (l.unit_max as usize) < (1 << 20) {
        let big = AlignedBuf::new(2 * l.unit_max as usize, 4096);
        expect_errno(
            sys::pwritev2(&file, &[IoSlice::new(big.as_slice())], 0, sys::RWF_ATOMIC),
            libc::EINVAL,
            "direct RWF_ATOMIC write above unit_max",
        )?;
    }
    let buffered = OpenOptions::new().write(true).open(&path)?;
    expect_errno(
        sys::pwritev2(
            &buffered,
            &[IoSlice::new(data.as_slice())],
            offset,
            sys::RWF_ATOMIC,
        ),
        libc::EOPNOTSUPP,
        "buffered RWF_ATOMIC write on the lower filesystem",
    )?;
    drop(file);
    drop(buffered);
    drop(mounted);
    Ok(())
}

fn expect_errno(result: std::io::Result<usize>, errno: i32, what: &str) -> Result<()> {
    match result {
        Ok(n) => bail!("{what}: succeeded ({n} bytes), expected errno {errno}"),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => bail!("{what}: {e}, expected errno {errno}"),
    }
}
