// SPDX-License-Identifier: GPL-2.0

//! A block device as its user sees it (untorn's raw mode): opened exclusively, its size and the
//! atomic write limits of its queue, and bios that we build from folios or a bounce buffer,
//! submit and wait for.
//!
//! Every bio is synchronous (`submit_bio_wait()`): the memory it points to is borrowed for the
//! lifetime `'a` of the [`Bio`], which ends only after the I/O completed.

use core::{
    marker::PhantomData,
    ptr::{self, NonNull},
};

use kernel::{
    bindings,
    error::{code::*, from_err_ptr, to_result, Result},
    ffi::c_void,
    str::{CStr, CStrExt},
};

use super::{
    atomic_limits::AtomicLimits,
    bindings as ext,
    bounce::UserBounce,
    folio::{Folio, FolioLock},
    vfs::LowerFile, //
};

/// The size of a sector, the unit of `bi_sector`.
const SECTOR_SIZE: u64 = 512;

/// The most segments of one bio.
const MAX_SEGMENTS: usize = bindings::BIO_MAX_VECS as usize;

/// A block device opened exclusively for its whole life: no other exclusive opener (a mount,
/// `mkfs`, an `O_EXCL` open) gets it, nor, when opened for writing, any other writer.
///
/// # Invariants
///
/// `file` is a block device file returned by `bdev_file_open_by_path()` with a holder; this
/// value owns that reference and gives it back with `bdev_fput()`.
pub struct BlockDevice {
    file: NonNull<bindings::file>,
}

// SAFETY: A block device file may be used and released from any thread.
unsafe impl Send for BlockDevice {}
// SAFETY: Only `&self` methods that submit I/O or read queue limits exist.
unsafe impl Sync for BlockDevice {}

impl BlockDevice {
    /// Opens the block device at `path` (looked up as the current task), for reading and, if
    /// `write`, writing. `holder` names the owner of the exclusive claim (a super block); its
    /// address is compared, never dereferenced. `EBUSY` if someone else holds the device.
    pub fn open_exclusive<H>(path: &CStr, write: bool, holder: &H) -> Result<Self> {
        let holder = ptr::from_ref(holder).cast_mut().cast::<c_void>();
        let mut mode = ext::UNTORN_BLK_OPEN_READ;
        if write {
            mode |= ext::UNTORN_BLK_OPEN_WRITE | ext::UNTORN_BLK_OPEN_RESTRICT_WRITES;
        }
        // SAFETY: `path` is a NUL-terminated string; a non-null holder makes the open exclusive;
        // no holder operations.
        let file = from_err_ptr(unsafe {
            bindings::bdev_file_open_by_path(path.as_char_ptr(), mode, holder, ptr::null())
        })?;
        // INVARIANT: A new reference to a block device file with a holder.
        NonNull::new(file).map(|file| Self { file }).ok_or(EINVAL)
    }

    fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: By the type invariants `file` is a live block device file.
        unsafe { bindings::file_bdev(self.file.as_ptr()) }
    }

    /// The device's file, for `O_DIRECT` I/O that the block device's own file operations serve.
    pub fn file(&self) -> &LowerFile {
        // SAFETY: The file lives as long as `self`.
        unsafe { LowerFile::from_raw(self.file.as_ptr()) }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        // SAFETY: The device is open.
        let size = unsafe { ext::untorn_helper_bdev_nr_bytes(self.bdev()) };
        size.max(0) as u64
    }

    /// The logical block size: the alignment of every bio's position and length.
    pub fn logical_block_size(&self) -> u32 {
        // SAFETY: The device is open.
        unsafe { ext::untorn_helper_bdev_logical_block_size(self.bdev()) }
    }

    /// The atomic write limits the block layer enforces for this device's bios, or `None` if
    /// it takes no atomic writes (`bdev_can_atomic_write()`).
    pub fn atomic_limits(&self) -> Option<AtomicLimits> {
        let (mut unit_min, mut unit_max, mut max, mut boundary) = (0, 0, 0, 0);
        // SAFETY: The device is open; the helper writes the four values.
        unsafe {
            ext::untorn_helper_bdev_atomic_limits(
                self.bdev(),
                &mut unit_min,
                &mut unit_max,
                &mut max,
                &mut boundary,
            )
        };
        if unit_min == 0 {
            return None;
        }
        AtomicLimits::new(self.logical_block_size(), unit_min, unit_max, max, boundary).ok()
    }

    /// Flushes the device's volatile write cache: an empty `REQ_PREFLUSH` bio.
    pub fn flush(&self) -> Result {
        Bio::new(self, BioOp::Flush, 0, 0)?.submit_and_wait()
    }

    /// Reads `len` bytes at `pos` into the contiguous locked `folios`, from the start of the
    /// first, in as few bios as their number allows; `pos` and `len` are multiples of the
    /// logical block size.
    pub fn read_folios(&self, folios: &[&dyn FolioLock], len: usize, pos: u64) -> Result {
        if folios.iter().map(|f| f.size()).sum::<usize>() < len {
            return Err(EINVAL);
        }
        let mut left = len;
        let mut at = pos;
        for batch in folios.chunks(MAX_SEGMENTS) {
            if left == 0 {
                break;
            }
            let mut bio = Bio::new(self, BioOp::Read, at, batch.len())?;
            for folio in batch {
                let piece = left.min(folio.size());
                if piece == 0 {
                    break;
                }
                bio.add_folio(folio, 0, piece)?;
                left -= piece;
                at += piece as u64;
            }
            bio.submit_and_wait()?;
        }
        Ok(())
    }

    /// Writes `len` bytes of `folio` from `offset` at `pos` (as for [`Self::read_folios`]); the
    /// folio is locked or under writeback, so its content is stable.
    pub fn write_folio(
        &self,
        folio: &Folio,
        offset: usize,
        len: usize,
        pos: u64,
        fua: bool,
    ) -> Result {
        let mut bio = Bio::new(self, BioOp::Write { atomic: false, fua }, pos, 1)?;
        bio.add_folio(folio, offset, len)?;
        bio.submit_and_wait()
    }

    /// Writes `len` bytes of `bounce` from `offset` at `pos`. An atomic write is exactly one
    /// `REQ_ATOMIC` bio, refused with `EINVAL` before submission unless the queue's limits
    /// accept it (`EOPNOTSUPP` without atomic writes); a plain one takes as many bios as its
    /// pages need, one after the other, each split by the block layer as the queue needs.
    pub fn write_bounce(
        &self,
        bounce: &UserBounce<'_>,
        offset: usize,
        len: usize,
        pos: u64,
        kind: WriteKind,
    ) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > bounce.size() || len == 0 {
            return Err(EINVAL);
        }
        if kind.atomic {
            let limits = self.atomic_limits().ok_or(EOPNOTSUPP)?;
            if !limits.accepts(pos, len as u64) {
                return Err(EINVAL);
            }
        }
        let op = BioOp::Write {
            atomic: kind.atomic,
            fua: kind.fua,
        };
        let page = kernel::page::PAGE_SIZE;
        let mut done = 0;
        while done < len {
            let from = offset + done;
            let pages = (end.div_ceil(page) - from / page).min(MAX_SEGMENTS);
            let chunk = (pages * page - from % page).min(len - done);
            if kind.atomic && chunk != len {
                // More pages than one bio holds: the queue's limits never allow that much.
                return Err(EINVAL);
            }
            let mut bio = Bio::new(self, op, pos + done as u64, pages)?;
            bio.add_bounce(bounce, from, chunk)?;
            bio.submit_and_wait()?;
            done += chunk;
        }
        Ok(())
    }
}

impl Drop for BlockDevice {
    fn drop(&mut self) {
        // SAFETY: By the type invariants we own this reference; `bdev_fput()` gives up the
        // exclusive claim at once (not at the deferred final `fput`), so that the device can
        // be opened again as soon as we are gone.
        unsafe { bindings::bdev_fput(self.file.as_ptr()) };
    }
}

/// How a write reaches the device.
#[derive(Clone, Copy, Debug)]
pub struct WriteKind {
    /// One `REQ_ATOMIC` bio: the device writes all of it or none of it.
    pub atomic: bool,
    /// `REQ_FUA`: durable when it completes (the block layer adds a flush where the device has
    /// a volatile cache but no FUA, and drops the flag where it has no volatile cache).
    pub fua: bool,
}

/// What a bio does.
#[derive(Clone, Copy, Debug)]
pub enum BioOp {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`, with `REQ_ATOMIC` and `REQ_FUA` as asked.
    Write {
        /// `REQ_ATOMIC`.
        atomic: bool,
        /// `REQ_FUA`.
        fua: bool,
    },
    /// An empty `REQ_OP_WRITE | REQ_PREFLUSH`.
    Flush,
}

impl BioOp {
    fn opf(self) -> bindings::blk_opf_t {
        let write = bindings::req_op_REQ_OP_WRITE as bindings::blk_opf_t;
        match self {
            BioOp::Read => bindings::req_op_REQ_OP_READ as bindings::blk_opf_t,
            BioOp::Write { atomic, fua } => {
                let mut opf = write | ext::UNTORN_REQ_SYNC;
                if atomic {
                    opf |= ext::UNTORN_REQ_ATOMIC;
                }
                if fua {
                    opf |= ext::UNTORN_REQ_FUA;
                }
                opf
            }
            BioOp::Flush => write | ext::UNTORN_REQ_PREFLUSH,
        }
    }
}

/// A bio being built: memory borrowed for `'a` is added, then it is submitted and waited for.
///
/// # Invariants
///
/// `bio` is a bio from `bio_alloc()` that this value owns (and puts on drop), for `dev`, with
/// room for `segments` segments. Every page added to it belongs to an object borrowed for
/// `'a`, so it stays allocated until the bio is gone.
pub struct Bio<'a> {
    bio: NonNull<bindings::bio>,
    segments: usize,
    used: usize,
    logical_block: u64,
    _borrows: PhantomData<&'a ()>,
}

impl<'a> Bio<'a> {
    /// A bio of `op` at byte `pos` of `dev` (a multiple of the logical block size) with room
    /// for `segments` segments (at most `BIO_MAX_VECS`).
    pub fn new(dev: &'a BlockDevice, op: BioOp, pos: u64, segments: usize) -> Result<Self> {
        let logical_block = u64::from(dev.logical_block_size());
        if segments > MAX_SEGMENTS || pos.checked_rem(logical_block) != Some(0) {
            return Err(EINVAL);
        }
        // SAFETY: The device is open; `GFP_NOIO` allocations from the bio set do not fail.
        let bio = unsafe { ext::untorn_helper_bio_alloc(dev.bdev(), segments as u16, op.opf()) };
        let bio = NonNull::new(bio).ok_or(ENOMEM)?;
        // SAFETY: A new bio, not yet submitted: its fields are ours to set.
        unsafe { (*bio.as_ptr()).bi_iter.bi_sector = pos / SECTOR_SIZE };
        // INVARIANT: A new bio we own, with `segments` segments.
        Ok(Self {
            bio,
            segments,
            used: 0,
            logical_block,
            _borrows: PhantomData,
        })
    }

    /// Adds bytes `offset..offset + len` of `folio` as one segment.
    pub fn add_folio(&mut self, folio: &'a Folio, offset: usize, len: usize) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > folio.size() || self.used == self.segments || !self.aligned(len) {
            return Err(EINVAL);
        }
        let (bio, folio_ptr) = (self.bio.as_ptr(), folio.as_ptr());
        // SAFETY: The bio is ours and unsubmitted; the range lies inside the folio, which is
        // borrowed for `'a` (type invariants).
        let added = unsafe { bindings::bio_add_folio(bio, folio_ptr, len, offset) };
        if !added {
            return Err(EINVAL);
        }
        self.used += 1;
        Ok(())
    }

    /// Adds bytes `offset..offset + len` of the bounce buffer's pinned pages, a segment per
    /// page.
    pub fn add_bounce(&mut self, bounce: &'a UserBounce<'_>, offset: usize, len: usize) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > bounce.size() || !self.aligned(len) {
            return Err(EINVAL);
        }
        let pages = bounce.pages();
        let page_size = kernel::page::PAGE_SIZE;
        let mut at = offset;
        while at < end {
            let (index, in_page) = (at / page_size, at % page_size);
            let piece = (page_size - in_page).min(end - at);
            if self.used == self.segments {
                return Err(EINVAL);
            }
            let page = *pages.get(index).ok_or(EINVAL)?;
            // SAFETY: The bio is ours and unsubmitted; `page` is a pinned page of the bounce,
            // borrowed for `'a`, and the piece lies inside it.
            let added = unsafe {
                bindings::bio_add_page(self.bio.as_ptr(), page, piece as u32, in_page as u32)
            };
            if added as usize != piece {
                return Err(EINVAL);
            }
            self.used += 1;
            at += piece;
        }
        Ok(())
    }

    fn aligned(&self, len: usize) -> bool {
        (len as u64).checked_rem(self.logical_block) == Some(0)
    }

    /// Submits the bio and waits for it; the device's status as an errno.
    pub fn submit_and_wait(self) -> Result {
        // SAFETY: The bio is complete and ours; `submit_bio_wait()` returns after its
        // completion, so the borrowed memory outlives the I/O. It does not put the bio:
        // `drop` does.
        to_result(unsafe { bindings::submit_bio_wait(self.bio.as_ptr()) })
    }
}

impl Drop for Bio<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants we own the bio, which is not in flight (submission
        // waits for completion).
        unsafe { bindings::bio_put(self.bio.as_ptr()) };
    }
}
