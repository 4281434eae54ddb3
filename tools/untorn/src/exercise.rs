// SPDX-License-Identifier: GPL-2.0

//! `untorn exercise`: a seeded, reproducible random-operation data-integrity exerciser.
//!
//! It mounts untorn over a lower directory, then runs random writes (unaligned, past EOF),
//! reads, truncations, fallocate, hole punches, shared-mmap writes, fsyncs, remounts and cache
//! drops over a few files, checking every read against an in-memory model of each file's
//! content. At the end it checks every file through untorn and then, after unmounting, directly
//! on the lower directory. The operation sequence is a pure function of the seed (and of
//! `--files` and `--max-size`), so a failure replays with the same seed and `--ops`.
//!
//! With `--no-mount` it runs on a plain directory, which validates the exerciser itself
//! against XFS or ext4.
//!
//! With `--atomic-ops` it also sets files' writethrough mode (`UNTORN_IOC_SET_MODE`) and makes
//! buffered `RWF_ATOMIC` writes of power-of-two sizes, mostly naturally aligned, sometimes not;
//! the expected outcome of each (written, `EINVAL` or `EOPNOTSUPP`) follows from the limits
//! `statx` reports for the file and `lib/untorn_logic`'s atomic-write rules, and a refused
//! write must change nothing. (Off by default, so that earlier seeds replay the same.)

use crate::sys::{self, Mapping};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use untorn_logic::{
    atomic_write::{self, AtomicWriteLimits},
    mount_options::FileMode,
    rng::{hash, SplitMix64},
    uapi::UntornMode,
};

/// How many of the last operations a failure report shows.
const LOG_LEN: usize = 40;
const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Stop after this long...
    pub duration: Duration,
    /// ... or after this many operations, whichever comes first.
    pub max_ops: Option<u64>,
    pub files: usize,
    /// No file grows beyond this many bytes.
    pub max_size: u64,
    /// Mount untorn over the lower directory (else work in the lower directory itself).
    pub mount: bool,
    /// untorn mount options, e.g. `writethrough=all`.
    pub mount_options: String,
    /// Include cache drops (system-wide, so host tests leave them out).
    pub drop_caches: bool,
    /// Include mode changes and `RWF_ATOMIC` writes.
    pub atomic_ops: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 0,
            duration: Duration::from_secs(60),
            max_ops: None,
            files: 8,
            max_size: 4 << 20,
            mount: true,
            mount_options: String::new(),
            drop_caches: true,
            atomic_ops: false,
        }
    }
}

/// `len` pseudo-random bytes, a pure function of `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// One operation on the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write {
        file: usize,
        offset: u64,
        len: u64,
    },
    Read {
        file: usize,
        offset: u64,
        len: u64,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    /// `fallocate` mode 0, or `FALLOC_FL_KEEP_SIZE`.
    Fallocate {
        file: usize,
        offset: u64,
        len: u64,
        keep_size: bool,
    },
    PunchHole {
        file: usize,
        offset: u64,
        len: u64,
    },
    /// Write through a `MAP_SHARED` mapping (within the file), then `msync` or not, `munmap`.
    MmapWrite {
        file: usize,
        offset: u64,
        len: u64,
        msync: bool,
    },
    Fsync {
        file: usize,
        data_only: bool,
    },
    /// Read a whole file with a fresh descriptor and check its size.
    Verify {
        file: usize,
    },
    /// Unmount and mount again (with `--no-mount`: close and reopen the files).
    Remount,
    DropCaches,
    /// `UNTORN_IOC_SET_MODE` to writethrough or off (nothing with `--no-mount`).
    SetMode {
        file: usize,
        writethrough: bool,
    },
    /// `pwritev2(RWF_ATOMIC)` on the buffered descriptor; refused unless the shape and the
    /// file's limits allow it.
    AtomicWrite {
        file: usize,
        offset: u64,
        len: u64,
    },
}

impl Op {
    /// The short name used in counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Write { .. } => "write",
            Op::Read { .. } => "read",
            Op::Truncate { .. } => "truncate",
            Op::Fallocate {
                keep_size: false, ..
            } => "fallocate",
            Op::Fallocate {
                keep_size: true, ..
            } => "fallocate_keep_size",
            Op::PunchHole { .. } => "punch_hole",
            Op::MmapWrite { .. } => "mmap_write",
            Op::Fsync { .. } => "fsync",
            Op::Verify { .. } => "verify",
            Op::Remount => "remount",
            Op::DropCaches => "drop_caches",
            Op::SetMode {
                writethrough: true, ..
            } => "set_mode_writethrough",
            Op::SetMode {
                writethrough: false,
                ..
            } => "set_mode_off",
            Op::AtomicWrite { .. } => "atomic_write",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Write { file, offset, len } => write!(f, "write file {file} [{offset}, +{len})"),
            Op::Read { file, offset, len } => write!(f, "read file {file} [{offset}, +{len})"),
            Op::Truncate { file, size } => write!(f, "truncate file {file} to {size}"),
            Op::Fallocate {
                file,
                offset,
                len,
                keep_size,
            } => write!(
                f,
                "fallocate{} file {file} [{offset}, +{len})",
                if keep_size { " KEEP_SIZE" } else { "" }
            ),
            Op::PunchHole { file, offset, len } => {
                write!(f, "punch hole file {file} [{offset}, +{len})")
            }
            Op::MmapWrite {
                file,
                offset,
                len,
                msync,
            } => write!(
                f,
                "mmap write file {file} [{offset}, +{len}){}",
                if msync { " msync" } else { "" }
            ),
            Op::Fsync { file, data_only } => write!(
                f,
                "{} file {file}",
                if data_only { "fdatasync" } else { "fsync" }
            ),
            Op::Verify { file } => write!(f, "verify file {file}"),
            Op::Remount => write!(f, "remount"),
            Op::DropCaches => write!(f, "drop caches"),
            Op::SetMode { file, writethrough } => write!(
                f,
                "set mode {} file {file}",
                if writethrough { "writethrough" } else { "off" }
            ),
            Op::AtomicWrite { file, offset, len } => {
                write!(f, "RWF_ATOMIC write file {file} [{offset}, +{len})")
            }
        }
    }
}

/// The expected content of every file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub files: Vec<Vec<u8>>,
}

impl Model {
    pub fn new(files: usize) -> Self {
        Self {
            files: vec![Vec::new(); files],
        }
    }

    /// Applies `op` (with `data` the bytes of a write or mmap write) to the model.
    pub fn apply(&mut self, op: &Op, data: &[u8]) {
        match *op {
            Op::Write { file, offset, .. } | Op::AtomicWrite { file, offset, .. } => {
                let content = &mut self.files[file];
                let (start, end) = (offset as usize, offset as usize + data.len());
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[start..end].copy_from_slice(data);
            }
            Op::MmapWrite { file, offset, .. } => {
                // Only within the file: the generator never maps past EOF.
                let start = offset as usize;
                self.files[file][start..start + data.len()].copy_from_slice(data);
            }
            Op::Truncate { file, size } => self.files[file].resize(size as usize, 0),
            Op::Fallocate {
                file,
                offset,
                len,
                keep_size,
            } => {
                let end = (offset + len) as usize;
                let content = &mut self.files[file];
                if !keep_size && content.len() < end {
                    content.resize(end, 0);
                }
            }
            Op::PunchHole { file, offset, len } => {
                let content = &mut self.files[file];
                let start = (offset as usize).min(content.len());
                let end = ((offset + len) as usize).min(content.len());
                content[start..end].fill(0);
            }
            Op::Read { .. }
            | Op::Fsync { .. }
            | Op::Verify { .. }
            | Op::Remount
            | Op::DropCaches
            | Op::SetMode { .. } => {}
        }
    }

    /// What a read of `[offset, offset + len)` of `file` returns.
    pub fn read(&self, file: usize, offset: u64, len: u64) -> &[u8] {
        let content = &self.files[file];
        let start = (offset as usize).min(content.len());
        let end = ((offset + len) as usize).min(content.len());
        &content[start..end]
    }
}

/// Draws operations; a pure function of the seed and the sizes of the files so far.
pub struct Generator {
    rng: SplitMix64,
    max_size: u64,
    atomic_ops: bool,
}

impl Generator {
    pub fn new(seed: u64, max_size: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            max_size: max_size.max(1),
            atomic_ops: false,
        }
    }

    /// Also draws [`Op::SetMode`] and [`Op::AtomicWrite`] (with the same seed, the other
    /// operations then differ).
    pub fn with_atomic_ops(mut self, on: bool) -> Self {
        self.atomic_ops = on;
        self
    }

    /// An `RWF_ATOMIC` write: a power of two from 512 bytes to 1 MiB, mostly naturally
    /// aligned near or past EOF, sometimes misaligned or of a length that is not a power of
    /// two; within `max_size`.
    fn atomic_write(&mut self, file: usize, size: u64) -> Op {
        let cap = 1u64 << (63 - self.max_size.leading_zeros()).min(20);
        let mut len = (512u64 << self.below(12)).min(cap);
        let slots = (self.max_size / len).max(1);
        let mut offset = match self.below(8) {
            0 => {
                len += 512 * (1 + self.below(3));
                0
            }
            1 => 512.min(len / 2).max(1) + self.below(slots) * len,
            _ => self.below((size / len + 2).min(slots)) * len,
        };
        len = len.min(self.max_size);
        offset = offset.min(self.max_size - len);
        Op::AtomicWrite { file, offset, len }
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.rng.next_u64() % bound
    }

    /// A length: often tiny or sector/page-sized, sometimes large, often unaligned.
    fn length(&mut self) -> u64 {
        let len = match self.below(8) {
            0 => 1 + self.below(16),
            1 | 2 => 1 + self.below(4096),
            3 => 512 * (1 + self.below(16)),
            4 => 4096 * (1 + self.below(16)),
            5 => 4096 * (1 + self.below(4)) + self.below(3) * 511,
            _ => 1 + self.below(256 << 10),
        };
        len.min(self.max_size)
    }

    /// An offset for a range of `len` bytes in a file of `size`: inside, at EOF, past EOF,
    /// aligned or not; the range stays within `max_size`.
    fn offset(&mut self, size: u64, len: u64) -> u64 {
        let offset = match self.below(6) {
            0 => size,
            1 => size + self.below(64 << 10),
            2 => self.below(size + 1) / 4096 * 4096,
            3 => self.below(size + 1) / 512 * 512,
            _ => self.below(size + 1),
        };
        offset.min(self.max_size - len.min(self.max_size))
    }

    /// The next operation, given the current sizes of the files.
    pub fn next(&mut self, sizes: &[u64]) -> Op {
        let file = self.below(sizes.len() as u64) as usize;
        let size = sizes[file];
        let roll = self.below(if self.atomic_ops { 112 } else { 100 });
        match roll {
            0..=29 => {
                let len = self.length();
                let offset = self.offset(size, len);
                Op::Write { file, offset, len }
            }
            30..=49 => {
                let len = self.length();
                let offset = if self.below(4) == 0 {
                    self.below(size + 8192)
                } else {
                    self.offset(size, len)
                };
                Op::Read { file, offset, len }
            }
            50..=55 => {
                let size = match self.below(4) {
                    0 => 0,
                    1 => size.saturating_sub(self.below(8192)),
                    2 => (size + self.below(8192)).min(self.max_size),
                    _ => self.below(self.max_size + 1),
                };
                Op::Truncate { file, size }
            }
            56..=60 => {
                let len = self.length();
                let offset = self.offset(size, len);
                Op::Fallocate {
                    file,
                    offset,
                    len,
                    keep_size: self.below(2) == 0,
                }
            }
            61..=66 => {
                let len = self.length();
                let offset = self.offset(size, len).min(size);
                Op::PunchHole { file, offset, len }
            }
            67..=74 if size > 0 => {
                let offset = self.below(size);
                let len = 1 + self.below((size - offset).min(64 << 10));
                Op::MmapWrite {
                    file,
                    offset,
                    len,
                    msync: self.below(2) == 0,
                }
            }
            67..=74 => Op::Write {
                file,
                offset: 0,
                len: self.length(),
            },
            75..=84 => Op::Fsync {
                file,
                data_only: self.below(2) == 0,
            },
            85..=93 => Op::Verify { file },
            94..=96 => Op::Remount,
            97..=99 => Op::DropCaches,
            100..=102 => Op::SetMode {
                file,
                writethrough: self.below(3) != 0,
            },
            _ => self.atomic_write(file, size),
        }
    }
}

/// The bytes a write or mmap write of operation number `n` puts down.
fn op_data(seed: u64, n: u64, op: &Op) -> Vec<u8> {
    match *op {
        Op::Write { len, .. } | Op::MmapWrite { len, .. } | Op::AtomicWrite { len, .. } => {
            pattern(hash(seed, n, 0x7772_6974, 0), len as usize)
        }
        _ => Vec::new(),
    }
}

/// A data mismatch or a failed operation.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The number of the operation (from 1), 0 for the final checks after the last one.
    pub op_number: u64,
    pub op: String,
    pub file: Option<String>,
    /// The first offset where the content differs from the model, if it is a mismatch.
    pub first_difference: Option<u64>,
    pub message: String,
    /// The last operations before the failure, oldest first.
    pub log: Vec<String>,
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub ops: u64,
    pub seconds: f64,
    pub files: usize,
    pub max_size: u64,
    pub mounted: bool,
    /// Whether mode changes and `RWF_ATOMIC` writes were drawn.
    pub atomic_ops: bool,
    /// `RWF_ATOMIC` writes refused as expected (`EINVAL`, `EOPNOTSUPP`).
    pub atomic_refused: u64,
    pub lower: String,
    pub counts: BTreeMap<&'static str, u64>,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    /// Whether `/proc/sys/vm/drop_caches` could be written.
    pub drop_caches: bool,
    pub failure: Option<Failure>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// One line for logs.
    pub fn line(&self) -> String {
        let mut counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if self.atomic_ops {
            counts.push(format!("atomic_write refused {}", self.atomic_refused));
        }
        format!(
            "exercise: seed {}, {} ops in {:.1} s on {} ({}), {:.1} MiB written, {:.1} MiB \
             verified{}: {}",
            self.seed,
            self.ops,
            self.seconds,
            self.lower,
            counts.join(", "),
            self.bytes_written as f64 / (1 << 20) as f64,
            self.bytes_verified as f64 / (1 << 20) as f64,
            if self.drop_caches {
                ""
            } else {
                " (no drop_caches)"
            },
            if self.passed() { "ok" } else { "FAILED" }
        )
    }

    /// The report of a failure, with what to run to replay it.
    pub fn failure_report(&self) -> String {
        let Some(f) = &self.failure else {
            return String::new();
        };
        let mut out = format!(
            "data integrity failure: seed {}, operation {} ({})",
            self.seed, f.op_number, f.op
        );
        if let Some(file) = &f.file {
            out += &format!(", file {file}");
        }
        if let Some(at) = f.first_difference {
            out += &format!(", first differing offset {at}");
        }
        out += &format!("\n{}\nlast operations:\n", f.message);
        for line in &f.log {
            out += &format!("  {line}\n");
        }
        out += &format!(
            "replay: untorn exercise --seed {} --files {} --max-size {}{} --ops {} ...",
            self.seed,
            self.files,
            self.max_size,
            if self.atomic_ops { " --atomic-ops" } else { "" },
            // Operation 0 is the final check, after all of them.
            if f.op_number == 0 {
                self.ops
            } else {
                f.op_number
            }
        );
        out
    }
}

/// The files being exercised, open, over untorn or the plain directory.
struct Workload<'a> {
    lower: &'a Path,
    mountpoint: &'a Path,
    options: &'a Options,
    mounted: bool,
    files: Vec<File>,
    drop_caches: Option<bool>,
}

/// An operation's failure before it becomes a [`Failure`].
struct Problem {
    file: Option<usize>,
    first_difference: Option<u64>,
    message: String,
}

impl From<io::Error> for Problem {
    fn from(e: io::Error) -> Self {
        Problem {
            file: None,
            first_difference: None,
            message: e.to_string(),
        }
    }
}

fn file_name(i: usize) -> String {
    format!("exercise-{i}")
}

impl Workload<'_> {
    fn dir(&self) -> &Path {
        if self.options.mount {
            self.mountpoint
        } else {
            self.lower
        }
    }

    fn path(&self, i: usize) -> PathBuf {
        self.dir().join(file_name(i))
    }

    fn mount(&mut self) -> io::Result<()> {
        if self.options.mount {
            sys::mount(
                self.lower,
                self.mountpoint,
                "untorn",
                0,
                &self.options.mount_options,
            )?;
            self.mounted = true;
        }
        Ok(())
    }

    fn umount(&mut self) -> io::Result<()> {
        self.files.clear();
        if self.mounted {
            sys::umount(self.mountpoint)?;
            self.mounted = false;
        }
        Ok(())
    }

    fn open_all(&mut self, create: bool) -> io::Result<()> {
        self.files.clear();
        for i in 0..self.options.files {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(create)
                .open(self.path(i))?;
            self.files.push(file);
        }
        Ok(())
    }

    fn drop_caches(&mut self) -> io::Result<bool> {
        if !self.options.drop_caches || self.drop_caches == Some(false) {
            return Ok(false);
        }
        sys::sync();
        match fs::write(DROP_CACHES, "3") {
            Ok(()) => {
                self.drop_caches = Some(true);
                Ok(true)
            }
            Err(e) if self.drop_caches.is_none() => {
                eprintln!("untorn exercise: cannot drop caches ({DROP_CACHES}: {e}); skipping");
                self.drop_caches = Some(false);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The atomic write limits of file `file` for a buffered `RWF_ATOMIC` write: what `statx`
    /// reports through untorn; none on a plain directory, whose filesystem refuses buffered
    /// `RWF_ATOMIC`.
    fn atomic_limits(&self, file: usize) -> Result<AtomicWriteLimits, Problem> {
        if !self.options.mount {
            return Ok(AtomicWriteLimits::NONE);
        }
        let stx = sys::statx(&self.path(file), sys::STATX_WRITE_ATOMIC)?;
        if stx.stx_mask & sys::STATX_WRITE_ATOMIC == 0 {
            return Ok(AtomicWriteLimits::NONE);
        }
        AtomicWriteLimits::new(stx.stx_atomic_write_unit_min, stx.stx_atomic_write_unit_max)
            .ok_or_else(|| Problem {
                file: Some(file),
                first_difference: None,
                message: format!(
                    "statx reports invalid atomic limits {}..{}",
                    stx.stx_atomic_write_unit_min, stx.stx_atomic_write_unit_max
                ),
            })
    }

    /// Runs one operation, checking what it reads against `model` (the state before the
    /// operation; the caller applies the operation to the model if it changed the files).
    /// Returns the number of bytes it checked and whether it changed the files (false for
    /// an `RWF_ATOMIC` write refused as expected).
    fn run(&mut self, op: &Op, data: &[u8], model: &Model) -> Result<(u64, bool), Problem> {
        let in_file = |file: usize| {
            move |e: io::Error| Problem {
                file: Some(file),
                first_difference: None,
                message: e.to_string(),
            }
        };
        match *op {
            Op::Write { file, offset, .. } => self.files[file]
                .write_all_at(data, offset)
                .map_err(in_file(file))?,
            Op::Read { file, offset, len } => {
                let got = crate::sys::read_range(&self.files[file], offset, len as usize)
                    .map_err(in_file(file))?;
                compare(file, offset, &got, model.read(file, offset, len))?;
                return Ok((got.len() as u64, true));
            }
            Op::Truncate { file, size } => self.files[file].set_len(size).map_err(in_file(file))?,
            Op::Fallocate {
                file,
                offset,
                len,
                keep_size,
            } => {
                let mode = if keep_size {
                    libc::FALLOC_FL_KEEP_SIZE
                } else {
                    0
                };
                sys::fallocate(&self.files[file], mode, offset, len).map_err(in_file(file))?
            }
            Op::PunchHole { file, offset, len } => sys::fallocate(
                &self.files[file],
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
            .map_err(in_file(file))?,
            Op::MmapWrite {
                file,
                offset,
                len,
                msync,
            } => {
                let page = sys::page_size() as u64;
                let start = offset / page * page;
                let mut map = Mapping::new(
                    &self.files[file],
                    start,
                    (offset + len - start) as usize,
                    true,
                )
                .map_err(in_file(file))?;
                map.as_mut_slice()[(offset - start) as usize..].copy_from_slice(data);
                if msync {
                    map.sync().map_err(in_file(file))?;
                }
            }
            Op::Fsync { file, data_only } => {
                let f = &self.files[file];
                if data_only {
                    f.sync_data()
                } else {
                    f.sync_all()
                }
                .map_err(in_file(file))?
            }
            Op::Verify { file } => {
                return self
                    .verify(file, model, &self.path(file))
                    .map(|n| (n, true))
            }
            Op::Remount => {
                self.umount()?;
                self.mount()?;
                self.open_all(false)?;
            }
            Op::DropCaches => {
                self.drop_caches()?;
            }
            Op::SetMode { file, writethrough } => {
                if self.options.mount {
                    let mode = UntornMode {
                        mode: if writethrough {
                            FileMode::WRITETHROUGH
                        } else {
                            FileMode::OFF
                        },
                        ..UntornMode::default()
                    };
                    sys::set_mode(&self.files[file], &mode).map_err(|e| Problem {
                        file: Some(file),
                        first_difference: None,
                        message: format!("UNTORN_IOC_SET_MODE: {}", sys::describe(&e)),
                    })?;
                }
            }
            Op::AtomicWrite { file, offset, len } => {
                let limits = self.atomic_limits(file)?;
                let expected = atomic_write::check(offset, len, &limits);
                let result = sys::pwritev2(
                    &self.files[file],
                    &[io::IoSlice::new(data)],
                    offset,
                    sys::RWF_ATOMIC,
                );
                return match (expected, result) {
                    (Ok(()), Ok(n)) if n as u64 == len => Ok((0, true)),
                    (Err(e), Err(got)) if got.raw_os_error() == Some(e.errno()) => Ok((0, false)),
                    // A plain filesystem that learnt buffered atomic writes.
                    (Err(_), Ok(n)) if !self.options.mount && n as u64 == len => Ok((0, true)),
                    (expected, got) => Err(Problem {
                        file: Some(file),
                        first_difference: None,
                        message: format!(
                            "RWF_ATOMIC write: {}, expected {} (statx limits {}..{})",
                            match got {
                                Ok(n) => format!("{n} bytes written"),
                                Err(e) => sys::describe(&e),
                            },
                            match expected {
                                Ok(()) => format!("{len} bytes written"),
                                Err(e) => format!("{e:?}: {}", sys::errno_name(e.errno())),
                            },
                            limits.unit_min(),
                            limits.unit_max()
                        ),
                    }),
                };
            }
        }
        Ok((0, true))
    }

    /// Checks the size and whole content of `path` (file number `file`) with a fresh
    /// descriptor; returns the bytes checked.
    fn verify(&self, file: usize, model: &Model, path: &Path) -> Result<u64, Problem> {
        let want = &model.files[file];
        let f = File::open(path).map_err(|e| Problem {
            file: Some(file),
            first_difference: None,
            message: format!("cannot open {}: {e}", path.display()),
        })?;
        let size = f.metadata()?.len();
        if size != want.len() as u64 {
            return Err(Problem {
                file: Some(file),
                first_difference: Some(size.min(want.len() as u64)),
                message: format!("{}: size {size}, expected {}", path.display(), want.len()),
            });
        }
        let got = crate::sys::read_range(&f, 0, (size + 4096) as usize)?;
        compare(file, 0, &got, want).map_err(|mut p| {
            p.message = format!("{}: {}", path.display(), p.message);
            p
        })?;
        Ok(got.len() as u64)
    }
}

fn compare(file: usize, offset: u64, got: &[u8], want: &[u8]) -> Result<(), Problem> {
    let Some(at) = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or((got.len() != want.len()).then(|| got.len().min(want.len())))
    else {
        return Ok(());
    };
    let show = |b: &[u8]| format!("{:02x?}", &b[at.min(b.len())..(at + 16).min(b.len())]);
    Err(Problem {
        file: Some(file),
        first_difference: Some(offset + at as u64),
        message: format!(
            "read {} bytes at {offset}, expected {}; at file offset {}: got {}, expected {}",
            got.len(),
            want.len(),
            offset + at as u64,
            show(got),
            show(want)
        ),
    })
}

/// The lower filesystem's type, for the summary.
fn fs_type_name(path: &Path) -> String {
    match sys::statfs(path).map(|s| s.f_type) {
        Ok(0x5846_5342) => "xfs".into(),
        Ok(0xef53) => "ext4".into(),
        Ok(0x0102_1994) => "tmpfs".into(),
        Ok(0x756e_746f) => "untorn".into(),
        Ok(t) => format!("f_type {t:#x}"),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Runs the exerciser on `lower` (mounting untorn on `mountpoint` unless `options.mount` is
/// false). `Err` means it could not start or clean up; a data failure is in the summary.
pub fn run(lower: &Path, mountpoint: &Path, options: &Options, progress: bool) -> Result<Summary> {
    if options.files == 0 {
        bail!("--files must be at least 1");
    }
    let mut work = Workload {
        lower,
        mountpoint,
        options,
        mounted: false,
        files: Vec::new(),
        drop_caches: None,
    };
    work.mount().with_context(|| {
        format!(
            "cannot mount untorn from {} on {} (is untorn.ko loaded?)",
            lower.display(),
            mountpoint.display()
        )
    })?;
    let result = exercise(&mut work, options, progress);
    let unmounted = work.umount();
    let mut summary = result?;
    unmounted.context("cannot unmount untorn at the end")?;
    summary.lower = fs_type_name(lower);
    Ok(summary)
}

fn exercise(work: &mut Workload, options: &Options, progress: bool) -> Result<Summary> {
    work.open_all(true).context("cannot create the files")?;
    let mut model = Model::new(options.files);
    let mut generator =
        Generator::new(options.seed, options.max_size).with_atomic_ops(options.atomic_ops);
    let mut log: VecDeque<String> = VecDeque::with_capacity(LOG_LEN);
    let mut summary = Summary {
        seed: options.seed,
        ops: 0,
        seconds: 0.0,
        files: options.files,
        max_size: options.max_size,
        mounted: options.mount,
        atomic_ops: options.atomic_ops,
        atomic_refused: 0,
        lower: String::new(),
        counts: BTreeMap::new(),
        bytes_written: 0,
        bytes_verified: 0,
        drop_caches: false,
        failure: None,
    };
    let bar = progress.then(|| progress_bar(options));
    let start = Instant::now();
    let failure = |summary: &Summary, n: u64, op: String, p: Problem, log: &VecDeque<_>| {
        Some(Failure {
            op_number: n,
            op,
            file: p.file.map(file_name),
            first_difference: p.first_difference,
            message: format!(
                "{} (after {} operations, seed {})",
                p.message, summary.ops, summary.seed
            ),
            log: log.iter().cloned().collect(),
        })
    };
    loop {
        let n = summary.ops + 1;
        if options.max_ops.is_some_and(|max| n > max)
            || (options.max_ops.is_none() && start.elapsed() >= options.duration)
        {
            break;
        }
        let sizes: Vec<u64> = model.files.iter().map(|f| f.len() as u64).collect();
        let op = generator.next(&sizes);
        let data = op_data(options.seed, n, &op);
        if log.len() == LOG_LEN {
            log.pop_front();
        }
        log.push_back(format!("{n}: {op}"));
        match work.run(&op, &data, &model) {
            Ok((verified, applied)) => {
                summary.bytes_verified += verified;
                if applied {
                    model.apply(&op, &data);
                    summary.bytes_written += data.len() as u64;
                } else {
                    summary.atomic_refused += 1;
                }
            }
            Err(p) => {
                summary.failure = failure(&summary, n, op.to_string(), p, &log);
                break;
            }
        }
        summary.ops = n;
        *summary.counts.entry(op.kind()).or_default() += 1;
        if let Some(bar) = &bar {
            if n % 64 == 0 {
                bar.set_position(match options.max_ops {
                    Some(_) => n,
                    None => start.elapsed().as_secs(),
                });
                bar.set_message(format!("{n} ops"));
            }
        }
    }
    if summary.failure.is_none() {
        summary.failure = final_checks(work, &model)
            .err()
            .and_then(|p| failure(&summary, 0, "final check".into(), p, &log));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    summary.seconds = start.elapsed().as_secs_f64();
    summary.drop_caches = work.drop_caches == Some(true);
    Ok(summary)
}

/// Every file through untorn, then (after unmounting) on the lower directory.
fn final_checks(work: &mut Workload, model: &Model) -> Result<(), Problem> {
    for i in 0..model.files.len() {
        work.verify(i, model, &work.path(i))?;
    }
    work.umount()?;
    if work.drop_caches == Some(true) {
        work.drop_caches()?;
    }
    for i in 0..model.files.len() {
        work.verify(i, model, &work.lower.join(file_name(i)))?;
    }
    Ok(())
}

fn progress_bar(options: &Options) -> indicatif::ProgressBar {
    let (len, unit) = match options.max_ops {
        Some(ops) => (ops, "ops"),
        None => (options.duration.as_secs(), "s"),
    };
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{msg}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Splits `text` into its leading number and the unit after it.
fn number_and_unit<'a>(text: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number
        .parse()
        .map_err(|_| format!("not a {what}: {text:?}"))?;
    Ok((number, unit))
}

/// Parses a duration such as `90`, `500ms`, `60s`, `30m` or `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "duration (e.g. 500ms, 60s, 30m, 2h)")?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (ms, s, m or h)")),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("too long: {text:?}"))
}

/// Parses a size such as `4096`, `64k`, `4MiB` or `1G` (binary multiples).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "size (e.g. 4MiB)")?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (k, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("size out of range: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_eof_leave_zeros() {
        let mut m = Model::new(1);
        let op = Op::Write {
            file: 0,
            offset: 10,
            len: 3,
        };
        m.apply(&op, b"abc");
        assert_eq!(m.files[0], b"\0\0\0\0\0\0\0\0\0\0abc");
        m.apply(
            &Op::Write {
                file: 0,
                offset: 11,
                len: 4,
            },
            b"WXYZ",
        );
        assert_eq!(&m.files[0][10..], b"aWXYZ");
    }

    #[test]
    fn truncate_cuts_and_grows_with_zeros() {
        let mut m = Model::new(1);
        m.apply(
            &Op::Write {
                file: 0,
                offset: 0,
                len: 4,
            },
            b"abcd",
        );
        m.apply(&Op::Truncate { file: 0, size: 2 }, &[]);
        m.apply(&Op::Truncate { file: 0, size: 5 }, &[]);
        assert_eq!(m.files[0], b"ab\0\0\0");
    }

    #[test]
    fn fallocate_grows_only_without_keep_size() {
        let mut m = Model::new(1);
        m.apply(
            &Op::Write {
                file: 0,
                offset: 0,
                len: 2,
            },
            b"ab",
        );
        let keep = Op::Fallocate {
            file: 0,
            offset: 0,
            len: 100,
            keep_size: true,
        };
        m.apply(&keep, &[]);
        assert_eq!(m.files[0], b"ab");
        let grow = Op::Fallocate {
            file: 0,
            offset: 1,
            len: 4,
            keep_size: false,
        };
        m.apply(&grow, &[]);
        assert_eq!(m.files[0], b"ab\0\0\0");
        // Within the file it changes nothing.
        m.apply(
            &Op::Fallocate {
                file: 0,
                offset: 0,
                len: 1,
                keep_size: false,
            },
            &[],
        );
        assert_eq!(m.files[0], b"ab\0\0\0");
    }

    #[test]
    fn punch_hole_zeros_within_the_file_and_keeps_the_size() {
        let mut m = Model::new(1);
        m.apply(
            &Op::Write {
                file: 0,
                offset: 0,
                len: 6,
            },
            b"abcdef",
        );
        m.apply(
            &Op::PunchHole {
                file: 0,
                offset: 1,
                len: 2,
            },
            &[],
        );
        assert_eq!(m.files[0], b"a\0\0def");
        m.apply(
            &Op::PunchHole {
                file: 0,
                offset: 4,
                len: 100,
            },
            &[],
        );
        assert_eq!(m.files[0], b"a\0\0d\0\0");
        m.apply(
            &Op::PunchHole {
                file: 0,
                offset: 50,
                len: 10,
            },
            &[],
        );
        assert_eq!(m.files[0].len(), 6);
    }

    #[test]
    fn mmap_writes_replace_in_place() {
        let mut m = Model::new(1);
        m.apply(
            &Op::Write {
                file: 0,
                offset: 0,
                len: 4,
            },
            b"abcd",
        );
        m.apply(
            &Op::MmapWrite {
                file: 0,
                offset: 1,
                len: 2,
                msync: false,
            },
            b"XY",
        );
        assert_eq!(m.files[0], b"aXYd");
    }

    #[test]
    fn reads_stop_at_eof() {
        let mut m = Model::new(2);
        m.apply(
            &Op::Write {
                file: 1,
                offset: 0,
                len: 4,
            },
            b"abcd",
        );
        assert_eq!(m.read(1, 2, 10), b"cd");
        assert_eq!(m.read(1, 4, 10), b"");
        assert_eq!(m.read(1, 100, 10), b"");
        assert_eq!(m.read(0, 0, 10), b"");
    }

    /// Runs the generator against the model alone, as the exerciser does.
    fn simulate(seed: u64, ops: usize, max_size: u64) -> (Vec<Op>, Model) {
        let mut generator = Generator::new(seed, max_size);
        let mut model = Model::new(4);
        let mut all = Vec::new();
        for n in 1..=ops as u64 {
            let sizes: Vec<u64> = model.files.iter().map(|f| f.len() as u64).collect();
            let op = generator.next(&sizes);
            let data = op_data(seed, n, &op);
            model.apply(&op, &data);
            all.push(op);
        }
        (all, model)
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        assert_eq!(simulate(7, 2000, 1 << 20), simulate(7, 2000, 1 << 20));
        assert_ne!(simulate(7, 200, 1 << 20).0, simulate(8, 200, 1 << 20).0);
    }

    #[test]
    fn generated_operations_stay_within_bounds_and_cover_every_kind() {
        let max = 300_000;
        let mut generator = Generator::new(1, max);
        let mut model = Model::new(4);
        let mut kinds = std::collections::BTreeSet::new();
        for n in 1..=20_000 {
            let sizes: Vec<u64> = model.files.iter().map(|f| f.len() as u64).collect();
            let op = generator.next(&sizes);
            match op {
                Op::Write { offset, len, .. } | Op::Fallocate { offset, len, .. } => {
                    assert!(len > 0 && offset + len <= max, "{op}")
                }
                Op::MmapWrite {
                    file, offset, len, ..
                } => {
                    assert!(len > 0 && offset + len <= sizes[file], "{op} of {sizes:?}")
                }
                Op::PunchHole { file, offset, len } => {
                    assert!(len > 0 && offset <= sizes[file], "{op}")
                }
                Op::Truncate { size, .. } => assert!(size <= max, "{op}"),
                _ => {}
            }
            kinds.insert(op.kind());
            let data = op_data(1, n, &op);
            model.apply(&op, &data);
            assert!(model.files.iter().all(|f| f.len() as u64 <= max));
        }
        assert_eq!(kinds.len(), 11, "{kinds:?}");
    }

    #[test]
    fn unaligned_and_past_eof_writes_are_drawn() {
        let (ops, _) = simulate(3, 5000, 1 << 20);
        let writes: Vec<_> = ops
            .iter()
            .filter_map(|op| match *op {
                Op::Write { offset, len, .. } => Some((offset, len)),
                _ => None,
            })
            .collect();
        assert!(writes.iter().any(|&(o, l)| o % 512 != 0 && l % 512 != 0));
        assert!(writes.iter().any(|&(o, l)| o % 4096 == 0 && l % 4096 == 0));
    }

    #[test]
    fn compare_reports_the_first_differing_offset() {
        assert!(compare(0, 100, b"abc", b"abc").is_ok());
        let p = compare(0, 100, b"abX", b"abc")
            .err()
            .map(|p| p.first_difference);
        assert_eq!(p, Some(Some(102)));
        let p = compare(0, 100, b"ab", b"abc")
            .err()
            .map(|p| p.first_difference);
        assert_eq!(p, Some(Some(102)));
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4X").is_err());
    }

    /// A scratch directory for host tests, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("untorn-test-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).expect("cannot create a scratch directory");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_run_on_a_plain_directory_passes() {
        let dir = TempDir::new("run");
        let options = Options {
            seed: 11,
            max_ops: Some(1500),
            files: 3,
            max_size: 256 << 10,
            mount: false,
            drop_caches: false,
            ..Options::default()
        };
        let summary = run(&dir.0, Path::new("/nonexistent"), &options, false).expect("run");
        assert!(summary.passed(), "{}", summary.failure_report());
        assert_eq!(summary.ops, 1500);
    }

    #[test]
    fn a_run_with_atomic_ops_on_a_plain_directory_passes() {
        // The plain filesystem refuses buffered RWF_ATOMIC (or, on a future kernel, takes
        // it); mode changes are left out without untorn.
        let dir = TempDir::new("atomic-run");
        let options = Options {
            seed: 12,
            max_ops: Some(800),
            files: 3,
            max_size: 256 << 10,
            mount: false,
            drop_caches: false,
            atomic_ops: true,
            ..Options::default()
        };
        let summary = run(&dir.0, Path::new("/nonexistent"), &options, false).expect("run");
        assert!(summary.passed(), "{}", summary.failure_report());
        assert!(summary.counts.get("atomic_write").copied().unwrap_or(0) > 0);
    }

    #[test]
    fn atomic_ops_are_drawn_only_when_asked_and_stay_within_bounds() {
        let max = 300_000;
        let mut plain = Generator::new(5, max);
        let mut atomic = Generator::new(5, max).with_atomic_ops(true);
        let sizes = [0u64, 5000, 100_000, 299_000];
        let (mut shapes, mut set_modes) = (std::collections::BTreeSet::new(), 0);
        for _ in 0..20_000 {
            let op = plain.next(&sizes);
            assert!(
                !matches!(op, Op::AtomicWrite { .. } | Op::SetMode { .. }),
                "{op}"
            );
            match atomic.next(&sizes) {
                Op::AtomicWrite { offset, len, .. } => {
                    assert!(len > 0 && offset + len <= max, "[{offset}, +{len})");
                    let limits = AtomicWriteLimits::new(512, 1 << 20).expect("valid limits");
                    shapes.insert(format!("{:?}", atomic_write::check(offset, len, &limits)));
                }
                Op::SetMode { .. } => set_modes += 1,
                _ => {}
            }
        }
        // Accepted writes, and each kind of refusal the shape can earn.
        for want in ["Ok(())", "Err(NotPowerOfTwo)", "Err(Misaligned)"] {
            assert!(shapes.contains(want), "no {want} in {shapes:?}");
        }
        assert!(set_modes > 0);
    }

    #[test]
    fn a_corrupted_file_is_reported_at_its_first_differing_offset() {
        let dir = TempDir::new("corrupt");
        let options = Options {
            files: 1,
            mount: false,
            drop_caches: false,
            ..Options::default()
        };
        let work = Workload {
            lower: &dir.0,
            mountpoint: Path::new("/nonexistent"),
            options: &options,
            mounted: false,
            files: Vec::new(),
            drop_caches: None,
        };
        let mut model = Model::new(1);
        model.apply(
            &Op::Write {
                file: 0,
                offset: 0,
                len: 10000,
            },
            &pattern(1, 10000),
        );
        let mut on_disk = model.files[0].clone();
        on_disk[7777] ^= 1;
        fs::write(work.path(0), &on_disk).expect("write");
        let problem = work
            .verify(0, &model, &work.path(0))
            .expect_err("a mismatch");
        assert_eq!(problem.first_difference, Some(7777));
        on_disk.truncate(5000);
        fs::write(work.path(0), &on_disk).expect("write");
        let problem = work
            .verify(0, &model, &work.path(0))
            .expect_err("a size mismatch");
        assert_eq!(problem.first_difference, Some(5000));
    }

    #[test]
    fn pattern_is_a_function_of_its_seed() {
        assert_eq!(pattern(5, 100), pattern(5, 100));
        assert_eq!(&pattern(5, 100)[..13], &pattern(5, 13)[..]);
        assert_ne!(pattern(5, 100), pattern(6, 100));
    }
}
