// SPDX-License-Identifier: GPL-2.0

//! Publication slots: how readers never see half of an untorn write in the page cache.
//!
//! Folio locks do not stop readers of up-to-date folios (`filemap_read()` copies them holding
//! only a reference). A writethrough write therefore copies its data into the page cache inside
//! the write side of a sequence count, and readers read each window again if a copy ran
//! meanwhile. A file is cut into windows of [`WINDOW`] bytes; every untorn unit (a power of two
//! of at most [`WINDOW`] bytes, naturally aligned) lies inside one, and each window maps to one of
//! a super block's slots.

use core::ptr::NonNull;

use kernel::error::{code::ENOMEM, Result};

use super::bindings as ext;

/// The window size: the largest untorn write.
pub const WINDOW: u64 = 1 << 20;

/// A super block's publication slots (`struct untorn_publication` in `rust/helpers/helpers.c`).
///
/// # Invariants
///
/// `0` points to the slots allocated by `untorn_helper_publication_alloc`, freed on drop.
pub struct Publication(NonNull<ext::untorn_publication>);

// SAFETY: The slots are spinlocks and sequence counts, used from any thread.
unsafe impl Send for Publication {}
// SAFETY: As above.
unsafe impl Sync for Publication {}

/// The slot of a window of a file.
#[derive(Clone, Copy)]
pub struct Slot(u32);

impl Slot {
    /// The slot of the window holding byte `pos` of the file with inode number `ino`.
    pub fn of(ino: u64, pos: u64) -> Self {
        let window = pos / WINDOW;
        // A multiplicative hash, so that neighbouring windows and files spread.
        let h =
            ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ window.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        Self((h >> 32) as u32)
    }
}

impl Publication {
    /// Allocates the slots.
    pub fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let slots = unsafe { ext::untorn_helper_publication_alloc() };
        NonNull::new(slots).map(Self).ok_or(ENOMEM)
    }

    /// Begins a read of a window of `slot`; pass the value to [`Self::read_retry`].
    pub fn read_begin(&self, slot: Slot) -> u32 {
        // SAFETY: The slots are live (type invariant); the helper reduces the index.
        unsafe { ext::untorn_helper_publication_read_begin(self.0.as_ptr(), slot.0) }
    }

    /// Whether a publication into `slot` ran since [`Self::read_begin`] returned `seq`: the
    /// read must then be undone and done again.
    pub fn read_retry(&self, slot: Slot, seq: u32) -> bool {
        // SAFETY: As in `read_begin`.
        unsafe { ext::untorn_helper_publication_read_retry(self.0.as_ptr(), slot.0, seq) }
    }

    /// Publishes: runs `copy` inside the write side of `slot`. `copy` must not sleep (a
    /// spinlock is held) and should be short: readers of the window spin meanwhile.
    pub fn publish<R>(&self, slot: Slot, copy: impl FnOnce() -> R) -> R {
        // SAFETY: The slots are live (type invariant); ended below, on this thread.
        unsafe { ext::untorn_helper_publication_write_begin(self.0.as_ptr(), slot.0) };
        let result = copy();
        // SAFETY: Begun above.
        unsafe { ext::untorn_helper_publication_write_end(self.0.as_ptr(), slot.0) };
        result
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        // SAFETY: Allocated by `new` (type invariant), freed once.
        unsafe { ext::untorn_helper_publication_free(self.0.as_ptr()) };
    }
}
