// SPDX-License-Identifier: GPL-2.0

//! Per-mount counters, in debugfs at `untorn/<major>:<minor>/counters`.

use core::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

/// Counters of one mount; see `Documentation/filesystems/untorn.rst`.
#[derive(Default)]
pub(crate) struct Counters {
    /// Folios filled from the lower file.
    pub(crate) reads: AtomicU64,
    /// Bytes filled from the lower file.
    pub(crate) read_bytes: AtomicU64,
    /// Buffered `write` calls.
    pub(crate) writes: AtomicU64,
    /// Bytes accepted by buffered `write` calls.
    pub(crate) write_bytes: AtomicU64,
    /// Folios written back to the lower file.
    pub(crate) writeback: AtomicU64,
    /// Bytes written back to the lower file.
    pub(crate) writeback_bytes: AtomicU64,
    /// `O_DIRECT` reads passed to the lower file.
    pub(crate) direct_reads: AtomicU64,
    /// `O_DIRECT` writes passed to the lower file.
    pub(crate) direct_writes: AtomicU64,
    /// Failed lower reads and writebacks.
    pub(crate) errors: AtomicU64,
    /// Writethrough writes (untorn or not) and their bytes.
    pub(crate) writethrough_writes: AtomicU64,
    pub(crate) writethrough_bytes: AtomicU64,
    /// Writes sent to the lower as one atomic write, and their bytes.
    pub(crate) untorn_writes: AtomicU64,
    pub(crate) untorn_bytes: AtomicU64,
    /// Writethrough writes that could not be untorn (shape or limits).
    pub(crate) writethrough_not_eligible: AtomicU64,
    /// Failed writethrough writes, by errno.
    pub(crate) err_fault: AtomicU64,
    pub(crate) err_inval: AtomicU64,
    pub(crate) err_notsupp: AtomicU64,
    pub(crate) err_nomem: AtomicU64,
    pub(crate) err_again: AtomicU64,
    /// Any other error, mostly the lower's.
    pub(crate) err_lower: AtomicU64,
    /// Lower atomic writes that were short, which `iomap` never does (also in `err_lower`,
    /// as `EIO`).
    pub(crate) err_short: AtomicU64,
    /// Reads of a window done again because a writethrough write published into it.
    pub(crate) reader_retries: AtomicU64,
    /// Writethrough writes that began, under the inode lock, while another writethrough write
    /// to the same file was in flight: writes that ran in parallel.
    pub(crate) writethrough_overlapped: AtomicU64,
    /// Bounce buffers of untorn writes taken from the mount's cache, and newly mapped.
    pub(crate) bounce_reused: AtomicU64,
    pub(crate) bounce_mapped: AtomicU64,
    /// Raw mode: device reads and writes untorn submitted (a plain write may take several
    /// bios), their bytes, and those that failed.
    pub(crate) device_reads: AtomicU64,
    pub(crate) device_read_bytes: AtomicU64,
    pub(crate) device_writes: AtomicU64,
    pub(crate) device_write_bytes: AtomicU64,
    pub(crate) device_errors: AtomicU64,
    /// Raw mode: device writes that were one `REQ_ATOMIC` bio (also in `device_writes`).
    pub(crate) device_atomic_writes: AtomicU64,
    /// Raw mode: cache flushes (`REQ_PREFLUSH`) sent to the device.
    pub(crate) device_flushes: AtomicU64,
}

impl Counters {
    /// Adds one event of `bytes` bytes to a pair of counters.
    pub(crate) fn add(count: &AtomicU64, bytes_counter: &AtomicU64, bytes: u64) {
        Self::add_many(count, bytes_counter, 1, bytes);
    }

    /// Counts `n` events of `bytes` bytes in all.
    pub(crate) fn add_many(count: &AtomicU64, bytes_counter: &AtomicU64, n: u64, bytes: u64) {
        count.fetch_add(n, Ordering::Relaxed);
        bytes_counter.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn inc(count: &AtomicU64) {
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of a failed writethrough write.
    pub(crate) fn error_counter(&self, error: kernel::error::Error) -> &AtomicU64 {
        use kernel::error::code::*;
        match error {
            e if e == EFAULT => &self.err_fault,
            e if e == EINVAL => &self.err_inval,
            e if e == EOPNOTSUPP => &self.err_notsupp,
            e if e == ENOMEM => &self.err_nomem,
            e if e == EAGAIN => &self.err_again,
            _ => &self.err_lower,
        }
    }
}

/// The debugfs file's text: one `name value` line per counter.
impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = [
            ("reads", &self.reads),
            ("read_bytes", &self.read_bytes),
            ("writes", &self.writes),
            ("write_bytes", &self.write_bytes),
            ("writeback", &self.writeback),
            ("writeback_bytes", &self.writeback_bytes),
            ("direct_reads", &self.direct_reads),
            ("direct_writes", &self.direct_writes),
            ("errors", &self.errors),
            ("writethrough_writes", &self.writethrough_writes),
            ("writethrough_bytes", &self.writethrough_bytes),
            ("untorn_writes", &self.untorn_writes),
            ("untorn_bytes", &self.untorn_bytes),
            ("writethrough_not_eligible", &self.writethrough_not_eligible),
            ("err_fault", &self.err_fault),
            ("err_inval", &self.err_inval),
            ("err_notsupp", &self.err_notsupp),
            ("err_nomem", &self.err_nomem),
            ("err_again", &self.err_again),
            ("err_lower", &self.err_lower),
            ("err_short", &self.err_short),
            ("reader_retries", &self.reader_retries),
            ("writethrough_overlapped", &self.writethrough_overlapped),
            ("bounce_reused", &self.bounce_reused),
            ("bounce_mapped", &self.bounce_mapped),
            ("device_reads", &self.device_reads),
            ("device_read_bytes", &self.device_read_bytes),
            ("device_writes", &self.device_writes),
            ("device_write_bytes", &self.device_write_bytes),
            ("device_errors", &self.device_errors),
            ("device_atomic_writes", &self.device_atomic_writes),
            ("device_flushes", &self.device_flushes),
        ];
        for (i, (name, value)) in all.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            write!(f, "{sep}{name} {}", value.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

/// The latency of writethrough writes, from taking the inode lock to return: 24 power-of-two
/// buckets of microseconds, in debugfs at `untorn/<major>:<minor>/wt_latency_us`.
pub(crate) struct Latency {
    buckets: [AtomicU64; Latency::BUCKETS],
}

impl Latency {
    const BUCKETS: usize = 24;

    pub(crate) fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; Self::BUCKETS],
        }
    }

    /// Counts one write that took `micros` microseconds: bucket `i` holds those up to `2^i`
    /// (the last one everything longer).
    pub(crate) fn record(&self, micros: u64) {
        let bucket = (u64::BITS - micros.saturating_sub(1).leading_zeros()) as usize;
        self.buckets[bucket.min(Self::BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }
}

/// One `<upper bound in µs> <count>` line per bucket; the last bound is `+inf`.
impl fmt::Debug for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, count) in self.buckets.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            let count = count.load(Ordering::Relaxed);
            if i == Self::BUCKETS - 1 {
                write!(f, "{sep}+inf {count}")?;
            } else {
                write!(f, "{sep}{} {count}", 1u64 << i)?;
            }
        }
        Ok(())
    }
}
