// SPDX-License-Identifier: GPL-2.0

//! Address-space operations: untorn's own page cache, filled from and written back to storage
//! through the mount's backend (`backend.rs`: the lower file with direct I/O, so the data is not
//! cached twice, or the block device with untorn's own bios).

use kernel::prelude::*;

use crate::{
    backend::{backend, total_size},
    counters::Counters,
    kernel_ext::{
        folio::{Folio, FolioLock, FolioWriteback, LockedFolio, OwnedLockedFolio},
        ops::{Readahead, Writeback},
        task,
        vfs::{Inode, IO_FOLIOS_MAX},
    },
    Untorn,
};

/// Fills the contiguous locked `folios` from storage with one read: the bytes below our size,
/// zeroes beyond.
pub(crate) fn fill(inode: &Inode<Untorn>, folios: &[&dyn FolioLock]) -> Result {
    let Some(first) = folios.first() else {
        return Ok(());
    };
    let (pos, size) = (first.pos(), inode.size());
    let valid = if pos >= size {
        0
    } else {
        (size - pos).min(total_size(folios) as i64) as usize
    };
    let mut filled = 0;
    if valid > 0 {
        let data = &inode.super_block().info().data;
        filled = data.backend().read(inode, folios, valid)?;
        let counters = data.counters();
        Counters::add(&counters.reads, &counters.read_bytes, filled as u64);
    }
    // Beyond storage's end of file (or ours) the folios read as zeroes.
    let mut start = 0;
    for folio in folios {
        folio.zero(filled.min(valid).saturating_sub(start), folio.size());
        start += folio.size();
    }
    Ok(())
}

pub(crate) fn read_folio(inode: &Inode<Untorn>, folio: LockedFolio<'_>) -> Result {
    match fill(inode, &[&folio]) {
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

/// Fills a readahead request's folios in batches of up to [`IO_FOLIOS_MAX`], each with one
/// storage read, rather than a read per folio.
pub(crate) fn readahead(inode: &Inode<Untorn>, mut request: Readahead<'_>) {
    loop {
        let mut batch: [Option<OwnedLockedFolio>; IO_FOLIOS_MAX] = [const { None }; IO_FOLIOS_MAX];
        let mut count = 0;
        while count < IO_FOLIOS_MAX {
            let Some(folio) = request.next_folio() else {
                break;
            };
            batch[count] = Some(folio);
            count += 1;
        }
        let Some(head) = &batch[0] else {
            return;
        };
        // Slots past `count` are never read: they repeat the first folio to fill the array.
        let folios: [&dyn FolioLock; IO_FOLIOS_MAX] =
            core::array::from_fn(|i| batch[i].as_ref().unwrap_or(head) as &dyn FolioLock);
        let result = fill(inode, &folios[..count]);
        if result.is_err() {
            Counters::inc(&inode.super_block().info().data.counters().errors);
        }
        for folio in batch.into_iter().flatten() {
            folio.end_read(result.is_ok());
        }
        if count < IO_FOLIOS_MAX {
            return;
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
        fill(inode, &[&folio])?;
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
/// ([`task::cleaning_upper_pages`]): contiguous folios in batches of up to [`IO_FOLIOS_MAX`],
/// each with one storage write rather than a write per folio.
pub(crate) fn writepages(inode: &Inode<Untorn>, wb: &mut Writeback<'_>) -> Result {
    task::cleaning_upper_pages(|| {
        let mut batch = WritebackBatch::new(inode);
        let result = wb.for_each(|folio| batch.add(folio));
        let last = batch.write();
        result.and(last)
    })
}

/// Contiguous folios under writeback, not yet written.
struct WritebackBatch<'a> {
    inode: &'a Inode<Untorn>,
    folios: [Option<FolioWriteback>; IO_FOLIOS_MAX],
    count: usize,
    /// The bytes to write: all of each folio but the one holding the end of file.
    len: usize,
    /// The file position after the last folio, if that was written whole (not at the end of
    /// file): where a folio that continues the batch starts.
    next: Option<i64>,
}

impl<'a> WritebackBatch<'a> {
    fn new(inode: &'a Inode<Untorn>) -> Self {
        Self {
            inode,
            folios: [const { None }; IO_FOLIOS_MAX],
            count: 0,
            len: 0,
            next: None,
        }
    }

    /// Starts writeback of a dirty folio and adds it, after writing the batch if the folio
    /// does not continue it or it is full; returns the error of that write.
    fn add(&mut self, folio: LockedFolio<'_>) -> Result {
        let (pos, size) = (folio.pos(), self.inode.size());
        if pos >= size {
            // Truncated while waiting for the lock: nothing left to write.
            folio.unlock();
            return Ok(());
        }
        let len = (size - pos).min(folio.size() as i64) as usize;
        // The part beyond the end of file may hold bytes a shared mapping wrote there: zero it
        // on every writeback, so they never become file data when the file grows.
        folio.zero(len, folio.size());
        let continues = self.count == 0 || self.next == Some(pos);
        let written = if !continues || self.count == IO_FOLIOS_MAX {
            self.write()
        } else {
            Ok(())
        };
        self.next = (len == folio.size()).then_some(pos + len as i64);
        self.folios[self.count] = Some(folio.start_writeback());
        self.count += 1;
        self.len += len;
        written
    }

    /// Writes the batch with one storage write (two at the end of file, see `backend.rs`) and
    /// ends the folios' writeback with its result.
    fn write(&mut self) -> Result {
        let Some(Some(head)) = self.folios.first() else {
            return Ok(());
        };
        // Slots past `count` are never read: they repeat the first folio to fill the array.
        let folios: [&Folio; IO_FOLIOS_MAX] =
            core::array::from_fn(|i| self.folios[i].as_deref().unwrap_or(head));
        let folios = &folios[..self.count];
        let result = backend(self.inode).write_folios(self.inode, folios, self.len);
        let counters = self.inode.super_block().info().data.counters();
        match result {
            Ok(()) => Counters::add_many(
                &counters.writeback,
                &counters.writeback_bytes,
                self.count as u64,
                self.len as u64,
            ),
            Err(_) => Counters::inc(&counters.errors),
        }
        for folio in self.folios.iter_mut().take(self.count) {
            if let Some(folio) = folio.take() {
                // The result is the batch's, returned once below.
                let _ = folio.end(result);
            }
        }
        self.count = 0;
        self.len = 0;
        self.next = None;
        result
    }
}

/// Writes bytes `offset..offset + len` of a folio that is locked or under writeback to
/// storage.
pub(crate) fn write_to_storage(
    inode: &Inode<Untorn>,
    folio: &Folio,
    offset: usize,
    len: usize,
) -> Result {
    let backend = inode.super_block().info().data.backend();
    backend.write_folio(inode, folio, offset, len)
}
