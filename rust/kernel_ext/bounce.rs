// SPDX-License-Identifier: GPL-2.0

//! The bounce buffer of an untorn write: pinned anonymous memory in the writer's own address
//! space.
//!
//! The lower filesystem accepts an atomic write only from a single user buffer (`ITER_UBUF`,
//! `generic_atomic_write_valid()`), never from kernel memory. So the user's data is copied,
//! all or nothing, into memory that untorn maps into the writer's address space and pins; the
//! lower then writes from there, and the same bytes are copied into the page cache once the
//! device has them. The user cannot change them under the I/O (as it could its own buffer), so
//! the device and the page cache get the same data.

use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    bindings,
    error::{code::*, Error, Result},
};

use super::{bindings as ext, folio::FolioLock, ops::UserIter};

/// Pinned anonymous memory of `len` bytes at `addr` in the current task's address space.
///
/// # Invariants
///
/// `addr..addr + len` was mapped by [`UserBounce::new`] in the current task's address space,
/// and `pages` holds its pages, in order, each pinned once. Not `Send`: it must be unmapped by
/// the task (address space) that mapped it.
pub struct UserBounce {
    addr: usize,
    len: usize,
    pages: KVec<*mut bindings::page>,
}

impl UserBounce {
    /// Whether the current task has a user address space to put a bounce buffer in (kernel
    /// threads have none).
    pub fn possible() -> bool {
        // SAFETY: Reads the current task's `mm` pointer.
        unsafe { ext::untorn_helper_current_has_mm() }
    }

    /// Maps and pins `len` bytes (`len` > 0) in the current task's address space.
    pub fn new(len: usize) -> Result<Self> {
        if len == 0 {
            return Err(EINVAL);
        }
        if !Self::possible() {
            return Err(EOPNOTSUPP);
        }
        let npages = len.div_ceil(kernel::page::PAGE_SIZE);
        let mut pages = KVec::with_capacity(npages, GFP_KERNEL)?;
        // SAFETY: The current task has an address space (checked above).
        let addr = unsafe { ext::untorn_helper_bounce_map(len) };
        if (-4095..0).contains(&addr) {
            return Err(Error::from_errno(addr as i32));
        }
        let addr = addr as usize;
        // SAFETY: `pages` has room for `npages` pointers; the range is our new mapping.
        let pinned = unsafe {
            bindings::pin_user_pages_fast(
                addr,
                npages as i32,
                bindings::FOLL_WRITE,
                pages.as_mut_ptr(),
            )
        };
        if pinned < 0 || pinned as usize != npages {
            if pinned > 0 {
                // SAFETY: The first `pinned` entries were pinned just now.
                unsafe { bindings::unpin_user_pages(pages.as_mut_ptr(), pinned as usize) };
            }
            // SAFETY: Our own mapping, in the current address space.
            unsafe { bindings::vm_munmap(addr, len) };
            return Err(if pinned < 0 {
                Error::from_errno(pinned)
            } else {
                ENOMEM
            });
        }
        // SAFETY: `pin_user_pages_fast` initialised the first `npages` entries.
        unsafe { pages.inc_len(npages) };
        Ok(Self { addr, len, pages })
    }

    /// The user address of the buffer, for the lower write.
    pub fn user_addr(&self) -> *mut core::ffi::c_void {
        self.addr as *mut core::ffi::c_void
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// Copies the whole buffer's length from `iter`, all or nothing: on a fault part way the
    /// iterator is restored and the error is `EFAULT`.
    pub fn fill_from(&mut self, iter: &mut UserIter) -> Result {
        self.fill_at(0, iter, self.len)
    }

    /// Copies `len` bytes from `iter` to `offset` of the buffer, all or nothing: on a fault part
    /// way the iterator is restored and the error is `EFAULT`.
    pub fn fill_at(&mut self, offset: usize, iter: &mut UserIter, len: usize) -> Result {
        if offset.checked_add(len).is_none_or(|end| end > self.len) || iter.count() < len {
            return Err(EINVAL);
        }
        // SAFETY: The range is inside the buffer (checked above), whose pages are pinned (type
        // invariant); `iter` is the VFS's iterator.
        let copied = unsafe {
            ext::untorn_helper_bounce_fill_at(self.pages.as_mut_ptr(), offset, len, iter.as_ptr())
        };
        if copied != len {
            // SAFETY: `copied` bytes were just consumed from `iter`.
            unsafe { iter.revert(copied) };
            return Err(EFAULT);
        }
        Ok(())
    }

    /// Copies `len` bytes of the locked `folio` from `folio_offset` to `offset` of the buffer.
    pub fn copy_from_folio(
        &mut self,
        folio: &impl FolioLock,
        folio_offset: usize,
        offset: usize,
        len: usize,
    ) -> Result {
        self.copy_folio(folio, folio_offset, offset, len, false)
    }

    /// Copies `len` bytes from `offset` of the buffer into the locked `folio` at
    /// `folio_offset`.
    pub fn copy_to_folio(
        &self,
        folio: &impl FolioLock,
        folio_offset: usize,
        offset: usize,
        len: usize,
    ) -> Result {
        self.copy_folio(folio, folio_offset, offset, len, true)
    }

    fn copy_folio(
        &self,
        folio: &impl FolioLock,
        folio_offset: usize,
        offset: usize,
        len: usize,
        to_folio: bool,
    ) -> Result {
        let in_folio = folio_offset
            .checked_add(len)
            .is_some_and(|end| end <= folio.size());
        let in_buffer = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !in_folio || !in_buffer {
            return Err(EINVAL);
        }
        let (folio, pages) = (folio.as_ptr(), self.pages.as_ptr().cast_mut());
        // SAFETY: Both ranges were checked above; the folio is locked by us (`FolioLock`) and
        // the pages are pinned (type invariant). Copying into the pages through a shared
        // reference is fine: they are not Rust memory, and only the current task uses the
        // buffer (`!Send`, and `&mut` for the callers that write it).
        unsafe {
            if to_folio {
                ext::untorn_helper_bounce_to_folio(folio, folio_offset, pages, offset, len)
            } else {
                ext::untorn_helper_bounce_from_folio(folio, folio_offset, pages, offset, len)
            }
        };
        Ok(())
    }
}

impl Drop for UserBounce {
    fn drop(&mut self) {
        // SAFETY: By the type invariants: our pinned pages, and our mapping in the current
        // address space (the value cannot move to another task).
        unsafe {
            bindings::unpin_user_pages(self.pages.as_mut_ptr(), self.pages.len());
            bindings::vm_munmap(self.addr, self.len);
        }
    }
}
