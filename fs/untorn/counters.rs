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
}

impl Counters {
    /// Adds one event of `bytes` bytes to a pair of counters.
    pub(crate) fn add(count: &AtomicU64, bytes_counter: &AtomicU64, bytes: u64) {
        count.fetch_add(1, Ordering::Relaxed);
        bytes_counter.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn inc(count: &AtomicU64) {
        count.fetch_add(1, Ordering::Relaxed);
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
        ];
        for (i, (name, value)) in all.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            write!(f, "{sep}{name} {}", value.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}
