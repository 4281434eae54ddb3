// SPDX-License-Identifier: GPL-2.0

//! Guest-side plumbing: running commands, finding test devices, scratch filesystems.

use anyhow::{bail, Context, Result};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Runs a command; fails with its standard error if it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The disks that `scsi_debug` provides, e.g. `/dev/sda`.
pub fn scsi_debug_disks() -> Result<Vec<PathBuf>> {
    let mut disks = Vec::new();
    let hosts = Path::new("/sys/bus/pseudo/drivers/scsi_debug");
    if !hosts.exists() {
        return Ok(disks);
    }
    // adapterN/hostH/targetH:C:T/H:C:T:L/block/sdX
    for adapter in read_dir_matching(hosts, "adapter")? {
        for host in read_dir_matching(&adapter, "host")? {
            for target in read_dir_matching(&host, "target")? {
                for lun in read_dir_matching(&target, "")? {
                    let block = lun.join("block");
                    if block.is_dir() {
                        for disk in fs::read_dir(&block)? {
                            disks.push(Path::new("/dev").join(disk?.file_name()));
                        }
                    }
                }
            }
        }
    }
    disks.sort();
    Ok(disks)
}

fn read_dir_matching(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) && entry.path().is_dir() {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// The one `scsi_debug` disk the tests use (vm-run's `--device scsi_debug` makes it).
pub fn scsi_debug_disk() -> Result<PathBuf> {
    match scsi_debug_disks()?.into_iter().next() {
        Some(disk) => Ok(disk),
        None => bail!(
            "no scsi_debug disk: run in the guest with tools/testing/vm-run --device scsi_debug"
        ),
    }
}

/// A lower filesystem type the tests make on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// XFS.
    Xfs,
    /// ext4 with bigalloc (64 KiB clusters), which ext4 needs for multi-block atomic writes.
    Ext4,
}

impl FsType {
    /// The name `mount -t` takes.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Xfs => "xfs",
            FsType::Ext4 => "ext4",
        }
    }

    /// Makes a fresh filesystem of this type on `device`, destroying its content; with room
    /// for at least `inodes` files where the filesystem fixes its inode count at mkfs time
    /// (ext4 with bigalloc on a small disk has a few thousand).
    pub fn mkfs_with_inodes(self, device: &Path, inodes: Option<u32>) -> Result<()> {
        let dev = path_str(device)?;
        match self {
            FsType::Xfs => run("mkfs.xfs", &["-f", "-q", dev])?,
            FsType::Ext4 => {
                let inodes = inodes.map(|n| n.to_string());
                let mut args = vec!["-F", "-q", "-O", "bigalloc", "-b", "4096", "-C", "65536"];
                if let Some(n) = &inodes {
                    args.extend(["-N", n]);
                }
                args.push(dev);
                run("mkfs.ext4", &args)?
            }
        };
        Ok(())
    }
}

/// What untorn is mounted on: a directory of a fresh XFS or ext4 (stacked mode), or the block
/// device itself (raw mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lower {
    /// A directory of XFS.
    Xfs,
    /// A directory of ext4 with bigalloc.
    Ext4,
    /// The device itself: untorn's raw mode, one file `data`.
    Raw,
}

impl Lower {
    pub fn name(self) -> &'static str {
        match self {
            Lower::Xfs => "xfs",
            Lower::Ext4 => "ext4",
            Lower::Raw => "raw",
        }
    }

    /// The lower filesystem, `None` in raw mode.
    pub fn fs_type(self) -> Option<FsType> {
        match self {
            Lower::Xfs => Some(FsType::Xfs),
            Lower::Ext4 => Some(FsType::Ext4),
            Lower::Raw => None,
        }
    }
}

/// A filesystem mounted on a fresh directory; unmounted and removed when dropped.
pub struct Mounted {
    dir: PathBuf,
    fs_type: String,
    source: String,
    options: String,
}

impl Mounted {
    /// Makes a fresh filesystem on `device` and mounts it.
    pub fn fresh(fs_type: FsType, device: &Path) -> Result<Self> {
        Self::fresh_with_inodes(fs_type, device, None)
    }

    /// [`Mounted::fresh`] with room for at least `inodes` files.
    pub fn fresh_with_inodes(fs_type: FsType, device: &Path, inodes: Option<u32>) -> Result<Self> {
        fs_type.mkfs_with_inodes(device, inodes)?;
        Self::mount(fs_type.name(), path_str(device)?, "")
    }

    /// Mounts `source` with type `fs_type` and `options` on a new directory.
    pub fn mount(fs_type: &str, source: &str, options: &str) -> Result<Self> {
        let dir = scratch_dir(fs_type)?;
        if let Err(e) = mount_at(fs_type, source, &dir, options) {
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Self {
            dir,
            fs_type: fs_type.to_string(),
            source: source.to_string(),
            options: options.to_string(),
        })
    }

    /// Mounts `source` with mount(2) itself on a new directory: `Ok(Err(errno))` if the kernel
    /// refuses, so that callers can check the exact error.
    pub fn mount_syscall(
        fs_type: &str,
        source: &Path,
        options: &str,
    ) -> Result<std::io::Result<Self>> {
        let dir = scratch_dir(fs_type)?;
        match crate::sys::mount(source, &dir, fs_type, 0, options) {
            Ok(()) => Ok(Ok(Self {
                dir,
                fs_type: fs_type.to_string(),
                source: path_str(source)?.to_string(),
                options: options.to_string(),
            })),
            Err(e) => {
                fs::remove_dir(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
                Ok(Err(e))
            }
        }
    }

    /// Unmounts and mounts again on the same directory, so that nothing cached in memory by
    /// the filesystem survives (the page cache of its inodes goes with the super block).
    pub fn cycle(&mut self) -> Result<()> {
        self.unmount()?;
        self.mount_again()
    }

    /// Unmounts, keeping the mount point for [`Mounted::mount_again`] (which must follow
    /// before this is dropped).
    pub fn unmount(&mut self) -> Result<()> {
        run("umount", &[path_str(&self.dir)?]).map(drop)
    }

    /// Mounts again what [`Mounted::unmount`] unmounted.
    pub fn mount_again(&mut self) -> Result<()> {
        mount_at(&self.fs_type, &self.source, &self.dir, &self.options)
            .with_context(|| format!("mounting {} again", self.dir.display()))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Ok(dir) = path_str(&self.dir) {
            if let Err(e) = run("umount", &[dir]) {
                eprintln!("# warning: {e}");
                return;
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

fn mount_at(fs_type: &str, source: &str, dir: &Path, options: &str) -> Result<()> {
    let mut args = vec!["-t", fs_type, source, path_str(dir)?];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    run("mount", &args).map(drop)
}

/// A [`scratch_dir`] removed with its contents when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Result<Self> {
        scratch_dir(tag).map(Self)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A new empty directory under the temporary directory, named after `tag`.
pub fn scratch_dir(tag: &str) -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000 {
        let dir = base.join(format!("untorn-{tag}-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("no free scratch directory under {}", base.display())
}

/// A path as UTF-8, for command lines.
pub fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path is not UTF-8: {}", path.display()))
}

/// Writes back dirty data and drops clean page cache, dentries and inodes everywhere
/// (`/proc/sys/vm/drop_caches`).
pub fn drop_caches() -> Result<()> {
    crate::sys::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("cannot write /proc/sys/vm/drop_caches")
}

/// Whether the running kernel has a filesystem type (`/proc/filesystems`).
pub fn filesystem_registered(name: &str) -> bool {
    fs::read_to_string("/proc/filesystems").is_ok_and(|list| {
        list.lines()
            .any(|line| line.split_whitespace().last() == Some(name))
    })
}

/// A module this process loaded; unloaded when dropped unless [`LoadedModule::forget`] was
/// called (e.g. after a test unloaded it itself).
pub struct LoadedModule {
    name: String,
    loaded_here: bool,
}

impl LoadedModule {
    /// Loads `path` unless the module `name` is loaded already (then leaves it loaded at drop).
    pub fn load(name: &str, path: &Path) -> Result<Self> {
        let loaded_here = !Path::new("/sys/module").join(name).exists();
        if loaded_here {
            run("insmod", &[path_str(path)?])?;
        }
        Ok(Self {
            name: name.to_string(),
            loaded_here,
        })
    }

    /// The module is no longer ours to unload.
    pub fn forget(&mut self) {
        self.loaded_here = false;
    }
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        if self.loaded_here {
            if let Err(e) = run("rmmod", &[&self.name]) {
                eprintln!("# warning: {e}");
            }
        }
    }
}

/// Kernel settings changed for the run, put back when dropped.
pub struct Sysctls(Vec<(&'static str, String)>);

impl Sysctls {
    /// Writes each `(path, value)`; the old values come back when the guard is dropped.
    pub fn set(settings: &[(&'static str, &str)]) -> Result<Self> {
        let mut saved = Sysctls(Vec::new());
        for &(path, value) in settings {
            let old = fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            fs::write(path, value).with_context(|| format!("cannot write {path}"))?;
            saved.0.push((path, old.trim().to_string()));
        }
        Ok(saved)
    }
}

impl Drop for Sysctls {
    fn drop(&mut self) {
        for (path, old) in &self.0 {
            let _ = fs::write(path, old);
        }
    }
}
