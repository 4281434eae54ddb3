// SPDX-License-Identifier: GPL-2.0

//! Address-space operations: untorn's own page cache, filled from and written back to the lower
//! file with direct I/O, so the data is not cached twice.
//!
//! Direct I/O needs offsets and lengths aligned to the lower's block size `L`. Folios are aligned
//! (a folio is at least a page, and `L` is at most a page), except the one holding the end of the
//! file: of it, the aligned part goes direct and the last partial block is written buffered
//! (the lower's page cache then holds that one block until its own writeback). A lower without
//! direct I/O gets buffered I/O throughout. The lower file's size is therefore exact.

use kernel::prelude::*;

use crate::{
    counters::Counters,
    kernel_ext::{
        folio::{FolioLock, LockedFolio, OwnedLockedFolio},
        ops::Writeback,
        task,
        vfs::{Inode, LowerFile},
    },
    untorn_logic::range::{round_down, round_up},
    Untorn,
};

/// The lower's direct I/O alignment for this file, or `None` if direct I/O is not possible.
fn direct_alignment(inode: &Inode<Untorn>, lower: &LowerFile) -> Option<u32> {
    let align = inode.lower().block_size();
    (lower.can_direct_io() && align > 0 && align as usize <= kernel::page::PAGE_SIZE)
        .then_some(align)
}

/// The block that lower writes of this file are aligned to: the direct I/O alignment, or 1
/// without direct I/O.
pub(crate) fn io_block(inode: &Inode<Untorn>, lower: &LowerFile) -> u32 {
    direct_alignment(inode, lower).unwrap_or(1)
}

/// Of a write of `len` bytes from an aligned position, how many go direct: all whole lower
/// blocks; the rest (a tail block at end of file, or everything without direct I/O) is
/// written buffered.
pub(crate) fn direct_part(inode: &Inode<Untorn>, lower: &LowerFile, len: usize) -> Result<usize> {
    Ok(match direct_alignment(inode, lower) {
        Some(align) => round_down(len as u64, align).map_err(|_| EINVAL)? as usize,
        None => 0,
    })
}

/// Fills `folio` from the lower file: the bytes below our size, zeroes beyond.
pub(crate) fn fill(inode: &Inode<Untorn>, folio: &impl FolioLock) -> Result {
    let lower = inode.data_file().ok_or(EIO)?;
    let (pos, size) = (folio.pos(), inode.size());
    let valid = if pos >= size {
        0
    } else {
        (size - pos).min(folio.size() as i64) as usize
    };
    let mut filled = 0;
    if valid > 0 {
        let sb = inode.super_block();
        filled = match direct_alignment(inode, lower) {
            Some(align) => {
                let len = round_up(valid as u64, align)
                    .map_err(|_| EINVAL)?
                    .min(folio.size() as u64) as usize;
                sb.as_mounter(|| lower.read_folio(folio, 0, len, pos, true))?
            }
            None => sb.as_mounter(|| lower.read_folio(folio, 0, valid, pos, false))?,
        };
        let counters = sb.info().data.counters();
        Counters::add(&counters.reads, &counters.read_bytes, filled as u64);
    }
    // Beyond the lower's end of file (or ours) the folio reads as zeroes.
    folio.zero(filled.min(valid), folio.size());
    Ok(())
}

pub(crate) fn read_folio(inode: &Inode<Untorn>, folio: LockedFolio<'_>) -> Result {
    match fill(inode, &folio) {
        Ok(()) => {
            folio.end_read(true);
            Ok(())
        }
        Err(e) => {
            Counters::inc(&inode.super_block().info().data.counters().errors);
            folio.end_read(false);
            Err(e)
        }
    }
}

pub(crate) fn write_begin(inode: &Inode<Untorn>, pos: i64, len: usize) -> Result<OwnedLockedFolio> {
    let folio = inode.folio_for_write(pos, len)?;
    if folio.is_uptodate() {
        return Ok(folio);
    }
    let offset = (pos - folio.pos()) as usize;
    let len = len.min(folio.size() - offset);
    if offset == 0 && len == folio.size() {
        // The copy overwrites the whole folio; `write_end` marks it up to date.
        return Ok(folio);
    }
    if folio.pos() >= inode.size() {
        // Wholly beyond the end of file: nothing to read.
        folio.zero(0, folio.size());
    } else {
        fill(inode, &folio)?;
    }
    folio.mark_uptodate();
    Ok(folio)
}

pub(crate) fn write_end(
    inode: &Inode<Untorn>,
    pos: i64,
    len: usize,
    copied: usize,
    folio: OwnedLockedFolio,
) -> usize {
    if !folio.is_uptodate() {
        if copied < len {
            // A short copy into a folio we did not read: redo it (generic_perform_write
            // faults the user page in and retries).
            return 0;
        }
        folio.mark_uptodate();
    }
    let end = pos + copied as i64;
    if end > inode.size() {
        inode.set_size(end);
    }
    if copied > 0 {
        folio.mark_dirty();
    }
    copied
}

/// Writes back each dirty folio, as a task that cleans our pages
/// ([`task::cleaning_upper_pages`]).
pub(crate) fn writepages(inode: &Inode<Untorn>, wb: &mut Writeback<'_>) -> Result {
    task::cleaning_upper_pages(|| wb.for_each(|folio| write_back(inode, folio)))
}

/// Writes back one dirty folio with one lower write (two at end of file, see above).
fn write_back(inode: &Inode<Untorn>, folio: LockedFolio<'_>) -> Result {
    let sb = inode.super_block();
    let counters = sb.info().data.counters();
    let (pos, size) = (folio.pos(), inode.size());
    if pos >= size {
        // Truncated while waiting for the lock: nothing left to write.
        folio.unlock();
        return Ok(());
    }
    let len = (size - pos).min(folio.size() as i64) as usize;
    // The part beyond the end of file may hold bytes a shared mapping wrote there: zero it
    // on every writeback, so they never become file data when the file grows.
    folio.zero(len, folio.size());
    let folio = folio.start_writeback();
    let result = write_to_lower(inode, &folio, 0, len);
    match result {
        Ok(()) => Counters::add(&counters.writeback, &counters.writeback_bytes, len as u64),
        Err(_) => Counters::inc(&counters.errors),
    }
    folio.end(result)
}

/// Writes bytes `offset..offset + len` of a folio that is locked or under writeback to the
/// lower file: the block-aligned part with direct I/O, a partial last block (at end of file)
/// buffered.
pub(crate) fn write_to_lower(
    inode: &Inode<Untorn>,
    folio: &crate::kernel_ext::folio::Folio,
    offset: usize,
    len: usize,
) -> Result {
    let lower = inode.data_file_rw().ok_or(EBADF)?;
    let pos = folio.pos() + offset as i64;
    let direct = direct_part(inode, lower, len)?;
    inode.super_block().as_mounter(|| -> Result {
        if direct > 0 {
            write_all(lower, folio, offset, direct, pos, true)?;
        }
        if direct < len {
            write_all(
                lower,
                folio,
                offset + direct,
                len - direct,
                pos + direct as i64,
                false,
            )?;
        }
        Ok(())
    })
}

/// Writes `len` bytes of the folio, failing on a short write (a full lower device).
fn write_all(
    lower: &LowerFile,
    folio: &crate::kernel_ext::folio::Folio,
    offset: usize,
    len: usize,
    pos: i64,
    direct: bool,
) -> Result {
    let written = lower.write_folio(folio, offset, len, pos, direct)?;
    if written != len {
        return Err(ENOSPC);
    }
    Ok(())
}
