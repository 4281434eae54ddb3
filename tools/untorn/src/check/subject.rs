// SPDX-License-Identifier: GPL-2.0

//! What a writethrough test runs on, so that one test function serves both modes: untorn
//! stacked over a lower directory ([`Stack`]), or untorn over a block device ([`RawMount`]),
//! whose one file `data` the tests of one mount share, each in a region of its own.

use super::{
    raw::{RawMount, REGION},
    stacking::{self, create_with, ensure_bytes, read_at, Stack, UNTORN},
    writethrough::{
        ensure_lower, lower_limits, open_ro, read_counters, set_mode, untorn_limits, Counters,
    },
};
use crate::{
    exercise::pattern,
    guest::{self, Mounted},
    limits::FileLimits,
    sys,
};
use anyhow::{ensure, Context, Result};
use std::{
    fs::{self, File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};
use untorn_logic::{atomic_write::AtomicWriteLimits, mount_options::FileMode};

/// untorn in one of its modes, as a writethrough test sees it.
pub(super) enum Subject<'a> {
    /// Over a directory of XFS or ext4 (or, in reference mode, the plain lower directory).
    Stacked(&'a mut Stack),
    /// Over a block device.
    Raw(&'a mut RawMount),
}

/// A mount a test may unmount and mount again: its own, or the shared one of raw mode.
pub(super) enum MountRef<'a> {
    Own(Mounted),
    Shared(&'a mut Mounted),
}

impl std::ops::Deref for MountRef<'_> {
    type Target = Mounted;
    fn deref(&self) -> &Mounted {
        match self {
            MountRef::Own(m) => m,
            MountRef::Shared(m) => m,
        }
    }
}

impl std::ops::DerefMut for MountRef<'_> {
    fn deref_mut(&mut self) -> &mut Mounted {
        match self {
            MountRef::Own(m) => m,
            MountRef::Shared(m) => m,
        }
    }
}

/// Where the bytes under a test file are, read without untorn's cache.
enum Storage {
    /// The lower file (stacked mode).
    LowerFile(PathBuf),
    /// The device node (raw mode).
    Device(PathBuf),
}

/// A test's file, fresh for the test: its bytes start at `base`.
pub(super) struct TestFile {
    /// The file through untorn (in reference mode, the lower file itself).
    pub(super) path: PathBuf,
    /// Where the test's bytes start: 0 in stacked mode, the test's region in raw mode.
    pub(super) base: u64,
    /// `path`, open for reading and writing.
    pub(super) file: File,
    storage: Storage,
    /// untorn's mount point, for its counters and debugfs knobs; `None` in reference mode.
    mount: Option<PathBuf>,
    /// A directory of the mount (stacked: the test's own; raw: the root).
    pub(super) dir: PathBuf,
    /// A mount of the test's own, if it has one; unmounted after `file` is closed.
    _own_mount: Option<Mounted>,
}

impl Subject<'_> {
    /// A fresh, empty test file for test `name`. In raw mode it is a region no other test of
    /// the mount has used, whatever it holds; the mode of `data` is off, as a new file's, since
    /// `RawMount::run` turns it off after each test.
    pub(super) fn file(&mut self, name: &str) -> Result<TestFile> {
        match self {
            Subject::Stacked(stack) => {
                let up = stack.top().join(name);
                fs::create_dir(&up).with_context(|| format!("cannot create {}", up.display()))?;
                let path = up.join("f");
                let file = create_with(&path, b"")?;
                Ok(TestFile {
                    path,
                    base: 0,
                    file,
                    storage: Storage::LowerFile(stack.lower_dir().join(name).join("f")),
                    mount: (!stack.is_reference()).then(|| stack.top().to_path_buf()),
                    dir: up,
                    _own_mount: None,
                })
            }
            Subject::Raw(raw) => {
                let base = raw.take_region()?;
                let path = raw.data();
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Ok(TestFile {
                    path,
                    base,
                    file,
                    storage: Storage::Device(raw.device().to_path_buf()),
                    mount: Some(raw.mount_path().to_path_buf()),
                    dir: raw.mount_path().to_path_buf(),
                    _own_mount: None,
                })
            }
        }
    }

    /// A test file holding `len` bytes of pattern `seed` at its base, synced; and those bytes.
    pub(super) fn prefilled(
        &mut self,
        name: &str,
        len: usize,
        seed: u64,
    ) -> Result<(TestFile, Vec<u8>)> {
        let tf = self.file(name)?;
        let data = pattern(seed, len);
        tf.file
            .write_all_at(&data, tf.base)
            .with_context(|| format!("prefill of {}", tf.path.display()))?;
        tf.file
            .sync_all()
            .with_context(|| format!("fsync {}", tf.path.display()))?;
        Ok((tf, data))
    }

    /// Like [`Self::prefilled`], on a mount of the test's own where the mode can make one, so
    /// that the counters show only the test's writes. A raw device mounts once: there the
    /// shared mount's counters serve, as its tests run one at a time.
    pub(super) fn prefilled_on_own_mount(
        &mut self,
        name: &str,
        len: usize,
        seed: u64,
    ) -> Result<(TestFile, Vec<u8>)> {
        let Subject::Stacked(stack) = self else {
            return self.prefilled(name, len, seed);
        };
        let src = stack.lower_dir().join(name);
        fs::create_dir(&src).with_context(|| format!("cannot create {}", src.display()))?;
        let own = Mounted::mount(UNTORN, guest::path_str(&src)?, "")?;
        let path = own.path().join("f");
        let data = pattern(seed, len);
        let file = create_with(&path, &data)?;
        file.sync_all()
            .with_context(|| format!("fsync {}", path.display()))?;
        let tf = TestFile {
            path,
            base: 0,
            file,
            storage: Storage::LowerFile(src.join("f")),
            mount: Some(own.path().to_path_buf()),
            dir: own.path().to_path_buf(),
            _own_mount: Some(own),
        };
        Ok((tf, data))
    }

    /// A test file on a mount the test may unmount and mount again, fresh (its bounce cache
    /// and counters start empty): in stacked mode a second mount of the lower directory, of
    /// the test's own; in raw mode the shared mount, mounted again first (a device mounts once;
    /// its tests run one at a time). The test file is open on that mount: drop it before
    /// unmounting (declared after the mount, it is dropped first on an early return too).
    pub(super) fn file_on_fresh_mount(&mut self, name: &str) -> Result<(MountRef<'_>, TestFile)> {
        if let Subject::Raw(raw) = self {
            raw.mount_mut().cycle()?;
        }
        let shared = self.file(name)?;
        match self {
            Subject::Stacked(stack) => {
                let own = Mounted::mount(UNTORN, guest::path_str(stack.lower_dir())?, "")?;
                let path = own.path().join(name).join("f");
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let tf = TestFile {
                    path,
                    file,
                    mount: Some(own.path().to_path_buf()),
                    dir: own.path().join(name),
                    ..shared
                };
                Ok((MountRef::Own(own), tf))
            }
            Subject::Raw(raw) => Ok((MountRef::Shared(raw.mount_mut()), shared)),
        }
    }

    pub(super) fn is_reference(&self) -> bool {
        matches!(self, Subject::Stacked(stack) if stack.is_reference())
    }
}

impl TestFile {
    /// The mount point of untorn; fails in reference mode, where there is none.
    pub(super) fn mount(&self) -> Result<&Path> {
        self.mount
            .as_deref()
            .context("no untorn mount in reference mode")
    }

    pub(super) fn counters(&self) -> Result<Counters> {
        read_counters(self.mount()?)
    }

    /// How much the `device_*` write counters grow for `writes` writes of untorn's own:
    /// each one bio in raw mode; stacked mode has no device of its own and keeps them 0.
    pub(super) fn device_bios(&self, writes: u64) -> u64 {
        match self.storage {
            Storage::Device(_) => writes,
            Storage::LowerFile(_) => 0,
        }
    }

    /// A second test file `name` in mode off, holding `len` bytes of pattern `seed` (synced),
    /// next to this one; and those bytes. A raw mount has one file: there the second is a
    /// later part of this test's region of `data`, and since the mode belongs to the file,
    /// making it turns the mode off for this one too.
    pub(super) fn second(&self, name: &str, len: usize, seed: u64) -> Result<(TestFile, Vec<u8>)> {
        let data = pattern(seed, len);
        let second = match &self.storage {
            Storage::LowerFile(low) => {
                let path = self.dir.join(name);
                let file = create_with(&path, &data)?;
                let low = low.with_file_name(name);
                TestFile {
                    path,
                    base: 0,
                    file,
                    storage: Storage::LowerFile(low),
                    mount: self.mount.clone(),
                    dir: self.dir.clone(),
                    _own_mount: None,
                }
            }
            Storage::Device(device) => {
                set_mode(&self.file, FileMode::OFF, "data, for the second test file")?;
                let base = self.base + REGION / 2;
                let file = self.file.try_clone()?;
                file.write_all_at(&data, base)?;
                TestFile {
                    path: self.path.clone(),
                    base,
                    file,
                    storage: Storage::Device(device.clone()),
                    mount: self.mount.clone(),
                    dir: self.dir.clone(),
                    _own_mount: None,
                }
            }
        };
        second
            .file
            .sync_all()
            .with_context(|| format!("fsync {}", second.path.display()))?;
        Ok((second, data))
    }

    /// Whether the file's size is storage's (raw mode): a write at the test's end then lands
    /// inside the file instead of extending it.
    pub(super) fn fixed_size(&self) -> bool {
        matches!(self.storage, Storage::Device(_))
    }

    /// A path for another file next to this one, where the mount can make files: a raw mount
    /// has only `data`.
    pub(super) fn sibling(&self, name: &str) -> Option<PathBuf> {
        match self.storage {
            Storage::LowerFile(_) => Some(self.dir.join(name)),
            Storage::Device(_) => None,
        }
    }

    /// What storage reports through its own `statx`: the lower file's, or the device node's.
    pub(super) fn storage_limits(&self) -> Result<FileLimits> {
        FileLimits::of_file(self.storage_path())
    }

    fn storage_path(&self) -> &Path {
        match &self.storage {
            Storage::LowerFile(p) | Storage::Device(p) => p,
        }
    }

    /// The limits the `RWF_ATOMIC` tests expect: untorn's for this storage, or in reference
    /// mode the lower's own (for `O_DIRECT`). Fails if there are none: these tests need an
    /// atomic device.
    pub(super) fn limits(&self) -> Result<AtomicWriteLimits> {
        let (l, storage) = lower_limits(self.storage_path())?;
        let limits = if self.mount.is_none() {
            storage
        } else {
            untorn_limits(storage)
        };
        ensure!(
            limits.is_supported(),
            "{} offers no atomic writes ({l:?}): the test needs an atomic device",
            self.storage_path().display()
        );
        println!(
            "#   storage statx {l:?}; expected limits {}..{}",
            limits.unit_min(),
            limits.unit_max()
        );
        Ok(limits)
    }

    /// `len` bytes at `offset` (from the base) of storage, read with `O_DIRECT`: what reached
    /// the lower file or the device, without any fsync.
    pub(super) fn below(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.storage_path();
        sys::read_direct_range(path, self.base + offset, len)
            .with_context(|| format!("O_DIRECT read of {}", path.display()))
    }

    /// Fails unless storage holds exactly `want` from the base: in stacked mode the lower file
    /// also has size `want.len()`; a device's size never changes.
    pub(super) fn ensure_below(&self, want: &[u8], what: &str) -> Result<()> {
        match &self.storage {
            Storage::LowerFile(low) => ensure_lower(low, want, what),
            Storage::Device(_) => {
                let got = self.below(0, want.len())?;
                ensure_bytes(&got, want, &format!("{what}: the device, O_DIRECT"))
            }
        }
    }

    /// Fails unless the file through untorn, read with a fresh descriptor, holds exactly `want`
    /// from the base (in stacked mode, with size `want.len()`).
    pub(super) fn ensure_upper(&self, want: &[u8], what: &str) -> Result<()> {
        match self.storage {
            Storage::LowerFile(_) => stacking::ensure_content(&self.path, want, what),
            Storage::Device(_) => {
                let got = read_at(&open_ro(&self.path)?, self.base, want.len())?;
                ensure_bytes(&got, want, &format!("{what}: {}", self.path.display()))
            }
        }
    }

    /// [`Self::ensure_upper`] and [`Self::ensure_below`].
    pub(super) fn ensure_both(&self, want: &[u8], what: &str) -> Result<()> {
        self.ensure_upper(want, what)?;
        self.ensure_below(want, what)
    }
}
