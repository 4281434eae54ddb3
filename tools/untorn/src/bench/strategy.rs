// SPDX-License-Identifier: GPL-2.0

//! The strategies compared and the workloads they run: how each one writes a page durably (or
//! not), and the loop a benchmark thread runs.

use super::stats::Samples;
use crate::sys::{self, AlignedBuf};
use serde::Serialize;
use std::{
    fs::{File, OpenOptions},
    io::{self, IoSlice},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use untorn_logic::rng::SplitMix64;

/// A way to write database pages, and what it promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// untorn writethrough: `pwritev2(RWF_ATOMIC)` on a buffered untorn file.
    UntornAtomic,
    /// untorn writethrough: plain `pwrite` to a file in writethrough mode (the ioctl).
    UntornMode,
    /// `untorn-atomic` on an `O_DSYNC` descriptor: durable on return.
    UntornAtomicDsync,
    /// The lower directly: `O_DIRECT` with `RWF_ATOMIC` (the floor of writethrough's cost).
    DirectAtomic,
    /// `direct-atomic` on an `O_DSYNC` descriptor.
    DirectAtomicDsync,
    /// The lower, buffered `pwrite` then `fdatasync` (the durability of the others, today).
    Fdatasync,
    /// InnoDB-style doublewrite on the lower: a batch of pages to a doublewrite file,
    /// `fdatasync`, the pages in place, `fdatasync`.
    Doublewrite,
    /// The lower, plain buffered writes: no durability, no untorn promise (the ceiling).
    Buffered,
}

impl Strategy {
    pub const ALL: [Strategy; 8] = [
        Strategy::UntornAtomic,
        Strategy::UntornMode,
        Strategy::UntornAtomicDsync,
        Strategy::DirectAtomic,
        Strategy::DirectAtomicDsync,
        Strategy::Fdatasync,
        Strategy::Doublewrite,
        Strategy::Buffered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::UntornAtomic => "untorn-atomic",
            Strategy::UntornMode => "untorn-mode",
            Strategy::UntornAtomicDsync => "untorn-atomic-dsync",
            Strategy::DirectAtomic => "direct-atomic",
            Strategy::DirectAtomicDsync => "direct-atomic-dsync",
            Strategy::Fdatasync => "fdatasync",
            Strategy::Doublewrite => "doublewrite",
            Strategy::Buffered => "buffered",
        }
    }

    /// One line on what it does, for the report.
    pub fn description(self) -> &'static str {
        match self {
            Strategy::UntornAtomic => {
                "untorn writethrough, `pwritev2(RWF_ATOMIC)` on a buffered fd"
            }
            Strategy::UntornMode => {
                "untorn writethrough, plain `pwrite` to a file in writethrough mode"
            }
            Strategy::UntornAtomicDsync => "untorn writethrough, `RWF_ATOMIC` on an `O_DSYNC` fd",
            Strategy::DirectAtomic => "lower filesystem, `O_DIRECT` + `RWF_ATOMIC`",
            Strategy::DirectAtomicDsync => "lower filesystem, `O_DIRECT|O_DSYNC` + `RWF_ATOMIC`",
            Strategy::Fdatasync => "lower filesystem, buffered `pwrite` + `fdatasync` per write",
            Strategy::Doublewrite => {
                "lower filesystem, InnoDB-style doublewrite: batch to a doublewrite file, \
                 `fdatasync`, in place, `fdatasync`"
            }
            Strategy::Buffered => "lower filesystem, plain buffered `pwrite` (no durability)",
        }
    }

    /// Which data file it works on.
    pub fn data_file(self) -> DataFile {
        match self {
            Strategy::UntornAtomic | Strategy::UntornMode | Strategy::UntornAtomicDsync => {
                DataFile::Untorn
            }
            Strategy::DirectAtomic | Strategy::DirectAtomicDsync => DataFile::Direct,
            Strategy::Fdatasync | Strategy::Doublewrite | Strategy::Buffered => DataFile::Buffered,
        }
    }

    /// Its writes must be atomic, so the page size must be within the file's atomic limits.
    pub fn needs_atomic(self) -> bool {
        matches!(
            self,
            Strategy::UntornAtomic
                | Strategy::UntornMode
                | Strategy::UntornAtomicDsync
                | Strategy::DirectAtomic
                | Strategy::DirectAtomicDsync
        )
    }

    fn direct(self) -> bool {
        matches!(self, Strategy::DirectAtomic | Strategy::DirectAtomicDsync)
    }

    fn dsync(self) -> bool {
        matches!(
            self,
            Strategy::UntornAtomicDsync | Strategy::DirectAtomicDsync
        )
    }

    fn write_flags(self) -> i32 {
        match self {
            Strategy::UntornAtomic
            | Strategy::UntornAtomicDsync
            | Strategy::DirectAtomic
            | Strategy::DirectAtomicDsync => sys::RWF_ATOMIC,
            _ => 0,
        }
    }
}

/// The data files, one per kind of access, so that no strategy finds another's page cache
/// (a direct write would have to invalidate cached pages that an O_DIRECT database never has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFile {
    /// Through untorn: untorn's page cache is warm, the lower's empty.
    Untorn,
    /// On the lower, written with `O_DIRECT` only: no page cache.
    Direct,
    /// On the lower, buffered: the lower's page cache is warm.
    Buffered,
}

impl DataFile {
    pub const ALL: [DataFile; 3] = [DataFile::Untorn, DataFile::Direct, DataFile::Buffered];

    /// Its place in [`DataFile::ALL`] (in raw mode, its region of the device).
    pub fn index(self) -> usize {
        match self {
            DataFile::Untorn => 0,
            DataFile::Direct => 1,
            DataFile::Buffered => 2,
        }
    }

    /// The file's name in the lower directory.
    pub fn name(self) -> &'static str {
        match self {
            DataFile::Untorn => "untorn.dat",
            DataFile::Direct => "direct.dat",
            DataFile::Buffered => "buffered.dat",
        }
    }
}

/// What the threads do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Overwrites of random pages.
    Randwrite,
    /// Overwrites in page order, each thread in its own part of the file.
    Seqwrite,
    /// Random reads and overwrites (`--read-percent` reads).
    Mixed,
    /// A database checkpoint: many random pages written, then one `fdatasync`; a latency
    /// sample is a whole checkpoint.
    Checkpoint,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Randwrite => "randwrite",
            Workload::Seqwrite => "seqwrite",
            Workload::Mixed => "mixed",
            Workload::Checkpoint => "checkpoint",
        }
    }
}

/// Where doublewrite's areas are: a file per thread, or a part of a device per thread.
#[derive(Clone, Copy)]
pub enum DoublewriteArea<'a> {
    /// Files in this directory (of the lower).
    Dir(&'a Path),
    /// The device node `path` from `offset`, `size` bytes in all.
    Device {
        path: &'a Path,
        offset: u64,
        size: u64,
    },
}

/// Everything a benchmark thread needs to know about its cell.
pub struct Job<'a> {
    pub strategy: Strategy,
    pub workload: Workload,
    /// The data file (through untorn or on the lower, as the strategy says)...
    pub data: &'a Path,
    /// ...and where its data starts in it (a region of the device node in raw mode).
    pub data_offset: u64,
    pub doublewrite_area: DoublewriteArea<'a>,
    pub page: usize,
    pub file_pages: u64,
    pub threads: usize,
    pub read_percent: u32,
    pub doublewrite_batch: usize,
    pub checkpoint_pages: usize,
}

/// What one thread did in one run.
#[derive(Default)]
pub struct ThreadResult {
    pub writes: u64,
    pub reads: u64,
    pub write_latency: Samples,
    pub read_latency: Samples,
}

/// A benchmark thread's open files and buffers.
pub struct Worker<'a> {
    job: &'a Job<'a>,
    thread: usize,
    file: File,
    doublewrite: Option<Doublewrite>,
    buf: AlignedBuf,
    rng: SplitMix64,
    /// Next page of a sequential writer, relative to its part of the file.
    next: u64,
}

/// A thread's doublewrite area and the pages waiting for it.
struct Doublewrite {
    file: File,
    /// The area's offset in `file`.
    offset: u64,
    /// The file to remove at the end, if it is one of ours.
    path: Option<PathBuf>,
    /// The buffer the batch is written from (the pages in order).
    batch: AlignedBuf,
    pending: Vec<(u64, Instant)>,
}

impl<'a> Worker<'a> {
    /// Opens the files of thread `thread` (and, for doublewrite, makes its doublewrite file).
    pub fn new(job: &'a Job<'a>, thread: usize, seed: u64) -> io::Result<Self> {
        let mut flags = 0;
        if job.strategy.direct() {
            flags |= libc::O_DIRECT;
        }
        if job.strategy.dsync() {
            flags |= libc::O_DSYNC;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(job.data)?;
        let doublewrite = if job.strategy == Strategy::Doublewrite {
            Some(Doublewrite::new(job, thread)?)
        } else {
            None
        };
        let mut buf = AlignedBuf::new(job.page, 4096);
        buf.as_mut_slice().fill(0xA0 | thread as u8);
        Ok(Self {
            job,
            thread,
            file,
            doublewrite,
            buf,
            rng: SplitMix64::new(seed ^ (thread as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            next: 0,
        })
    }

    /// Runs the workload for `duration`.
    pub fn run(&mut self, duration: Duration) -> io::Result<ThreadResult> {
        let mut result = ThreadResult::default();
        let start = Instant::now();
        while start.elapsed() < duration {
            match self.job.workload {
                Workload::Randwrite | Workload::Seqwrite => self.write(&mut result)?,
                Workload::Mixed => {
                    if self.rng.below(100) < self.job.read_percent {
                        self.read(&mut result)?;
                    } else {
                        self.write(&mut result)?;
                    }
                }
                Workload::Checkpoint => self.checkpoint(&mut result)?,
            }
        }
        Ok(result)
    }

    /// The offset in the data file that the next write goes to.
    fn next_offset(&mut self) -> u64 {
        let page = self.job.page as u64;
        let relative = match self.job.workload {
            Workload::Seqwrite => {
                let part = (self.job.file_pages / self.job.threads as u64).max(1);
                let offset = (self.thread as u64 * part + self.next % part) * page;
                self.next += 1;
                offset
            }
            _ => self.random_page() * page,
        };
        self.job.data_offset + relative
    }

    fn random_page(&mut self) -> u64 {
        self.rng.next_u64() % self.job.file_pages
    }

    fn read(&mut self, result: &mut ThreadResult) -> io::Result<()> {
        let offset = self.job.data_offset + self.random_page() * self.job.page as u64;
        let start = Instant::now();
        let n = self.file.read_at(self.buf.as_mut_slice(), offset)?;
        if n != self.job.page {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read: {n} of {} bytes at {offset}", self.job.page),
            ));
        }
        result.read_latency.push(start.elapsed());
        result.reads += 1;
        Ok(())
    }

    /// One page write, durable as the strategy makes it.
    fn write(&mut self, result: &mut ThreadResult) -> io::Result<()> {
        let offset = self.next_offset();
        if self.doublewrite.is_some() {
            return self.doublewrite_page(offset, result);
        }
        let start = Instant::now();
        self.write_page(offset)?;
        if self.job.strategy == Strategy::Fdatasync {
            self.file.sync_data()?;
        }
        result.write_latency.push(start.elapsed());
        result.writes += 1;
        Ok(())
    }

    /// Writes the page at `offset` the strategy's way, without any sync of its own.
    fn write_page(&mut self, offset: u64) -> io::Result<()> {
        // A different page content each time, so nothing can skip a write as unchanged.
        let slice = self.buf.as_mut_slice();
        slice[0] = slice[0].wrapping_add(1);
        let want = slice.len();
        let n = sys::pwritev2(
            &self.file,
            &[IoSlice::new(self.buf.as_slice())],
            offset,
            self.job.strategy.write_flags(),
        )?;
        if n != want {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {want} bytes at {offset}"),
            ));
        }
        Ok(())
    }

    /// Queues a page for the doublewrite batch; a full batch is written out. Each page's
    /// latency runs from its queueing to the end of its batch.
    fn doublewrite_page(&mut self, offset: u64, result: &mut ThreadResult) -> io::Result<()> {
        let full = match &mut self.doublewrite {
            Some(dw) => {
                dw.pending.push((offset, Instant::now()));
                dw.pending.len() >= self.job.doublewrite_batch
            }
            None => false,
        };
        if full {
            self.flush_doublewrite(result)?;
        }
        Ok(())
    }

    /// Writes the queued pages: all of them to the doublewrite file in one write,
    /// `fdatasync`, each in place, `fdatasync` (before the area can be reused).
    fn flush_doublewrite(&mut self, result: &mut ThreadResult) -> io::Result<()> {
        let Some(dw) = &mut self.doublewrite else {
            return Ok(());
        };
        if dw.pending.is_empty() {
            return Ok(());
        }
        let page = self.job.page;
        let len = dw.pending.len() * page;
        for (i, chunk) in dw.batch.as_mut_slice()[..len].chunks_mut(page).enumerate() {
            chunk.copy_from_slice(self.buf.as_slice());
            chunk[1] = i as u8;
        }
        dw.file
            .write_all_at(&dw.batch.as_slice()[..len], dw.offset)?;
        dw.file.sync_data()?;
        let pending = std::mem::take(&mut dw.pending);
        for &(offset, _) in &pending {
            self.write_page(offset)?;
        }
        self.file.sync_data()?;
        let end = Instant::now();
        for (_, queued) in &pending {
            result.write_latency.push(end - *queued);
        }
        result.writes += pending.len() as u64;
        if let Some(dw) = &mut self.doublewrite {
            dw.pending = pending;
            dw.pending.clear();
        }
        Ok(())
    }

    /// A checkpoint: `checkpoint_pages` random pages, then one `fdatasync` (none for the
    /// no-durability ceiling); one latency sample for the whole.
    fn checkpoint(&mut self, result: &mut ThreadResult) -> io::Result<()> {
        let start = Instant::now();
        let mut batch = ThreadResult::default();
        for _ in 0..self.job.checkpoint_pages {
            let offset = self.next_offset();
            if self.doublewrite.is_some() {
                self.doublewrite_page(offset, &mut batch)?;
            } else {
                self.write_page(offset)?;
                batch.writes += 1;
            }
        }
        // Doublewrite's last batch ends with the data file's fdatasync.
        self.flush_doublewrite(&mut batch)?;
        if !matches!(
            self.job.strategy,
            Strategy::Buffered | Strategy::Doublewrite
        ) {
            self.file.sync_data()?;
        }
        result.write_latency.push(start.elapsed());
        result.writes += batch.writes;
        Ok(())
    }
}

impl Doublewrite {
    /// Thread `thread`'s area, written and durable once, so that the batches overwrite
    /// allocated blocks.
    fn new(job: &Job<'_>, thread: usize) -> io::Result<Self> {
        let len = job.page * job.doublewrite_batch;
        let (file, offset, path) = match job.doublewrite_area {
            DoublewriteArea::Dir(dir) => {
                let path = dir.join(format!("doublewrite-{thread}"));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                (file, 0, Some(path))
            }
            DoublewriteArea::Device { path, offset, size } => {
                if ((thread + 1) * len) as u64 > size {
                    return Err(io::Error::other(format!(
                        "no room for thread {thread}'s doublewrite area of {len} bytes in \
                         {size} bytes"
                    )));
                }
                let file = OpenOptions::new().read(true).write(true).open(path)?;
                (file, offset + (thread * len) as u64, None)
            }
        };
        let batch = AlignedBuf::new(len, 4096);
        file.write_all_at(batch.as_slice(), offset)?;
        file.sync_all()?;
        Ok(Self {
            file,
            offset,
            path,
            batch,
            pending: Vec::with_capacity(job.doublewrite_batch),
        })
    }
}

impl Drop for Doublewrite {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}
