// SPDX-License-Identifier: GPL-2.0

//! The bounce buffer of an untorn write: pinned anonymous memory in the writer's own address
//! space.
//!
//! The lower filesystem accepts an atomic write only from a single user buffer (`ITER_UBUF`,
//! `generic_atomic_write_valid()`), never from kernel memory. So the user's data is copied,
//! all or nothing, into memory that untorn maps into the writer's address space and pins; the
//! lower then writes from there, and the same bytes are copied into the page cache once the
//! device has them. The user's own buffer could change under the I/O; the bounce is changed
//! only by a thread that deliberately writes into it, so the device and the page cache get the
//! same data.
//!
//! A mount keeps idle bounces per address space ([`BounceCache`]) for the next write: mapping
//! one per write cost more than the write (`Documentation/filesystems/untorn.rst`, "The bounce
//! cache"). A bounce is unmapped only while it still maps our own pinned pages, so memory the
//! user put in its place is never touched.

use kernel::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    bindings,
    error::{code::*, Error, Result},
    init::InPlaceInit,
    new_mutex,
    sync::Mutex,
};

use core::{mem::ManuallyDrop, pin::Pin};

use super::{bindings as ext, folio::FolioLock, ops::UserIter};

/// A bounce buffer's memory: `len` bytes at `addr` in the address space `mm`, whose pages are
/// pinned by us.
///
/// # Invariants
///
/// `addr..addr + len` was mapped in `mm` by [`UserBounce::new`]; `pages` holds its pages, in
/// order, each pinned once by us; we hold a reference to `mm` (`mmgrab`). `mapped` is false
/// once the range may no longer be ours (then it must not be unmapped).
struct Mapping {
    mm: *mut bindings::mm_struct,
    addr: usize,
    len: usize,
    pages: KVec<*mut bindings::page>,
    mapped: bool,
}

// SAFETY: A `Mapping` is memory and references, usable from any task: the only operations that
// depend on the task are unmapping and validating, which `Drop` and `still_mapped` do only in
// `mm` itself (the current task's) or through a kthread that enters `mm`.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps and pins `len` bytes (`len` > 0) in the current task's address space.
    fn new(len: usize) -> Result<Self> {
        // SAFETY: Reads the current task's `mm` pointer.
        let mm = unsafe { ext::untorn_helper_current_mm() };
        if mm.is_null() {
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
        // SAFETY: `mm` is the current task's, alive while it runs.
        unsafe { ext::untorn_helper_mmgrab(mm) };
        Ok(Self {
            mm,
            addr,
            len,
            pages,
            mapped: true,
        })
    }

    fn is_current(&self) -> bool {
        // SAFETY: Reads the current task's `mm` pointer.
        self.mm == unsafe { ext::untorn_helper_current_mm() }
    }

    /// Whether the range still maps our pages, writable, in the current address space (which
    /// must be `mm`): its user can unmap, remap or protect it between two writes.
    fn still_mapped(&self) -> bool {
        self.is_current()
            // SAFETY: The current address space is `mm`; `pages` are our pinned pages.
            && unsafe {
                ext::untorn_helper_bounce_still_mapped(
                    self.addr,
                    self.pages.as_ptr().cast_mut(),
                    self.pages.len() as u32,
                )
            }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let npages = self.pages.len();
        // SAFETY: Reads the reference count of `mm`, which we hold (type invariant).
        let alive = unsafe { ext::untorn_helper_mm_alive(self.mm) };
        if self.mapped && alive && !self.is_current() {
            // Another address space (a cached bounce released at unmount): only a kthread
            // that enters it can unmap; the worker takes over the pins and the reference.
            // SAFETY: Our mapping, pins and reference, handed over.
            let queued = unsafe {
                ext::untorn_helper_bounce_release_foreign(
                    self.mm,
                    self.addr,
                    self.len,
                    self.pages.as_mut_ptr(),
                    npages as u32,
                )
            };
            if queued == 0 {
                return;
            }
            // Out of memory: leave the range mapped (ordinary memory of that process now).
        }
        // Checked while our pins still hold the pages, so that a page of the user's that took
        // the place of ours cannot look like ours.
        let unmap = self.mapped && alive && self.still_mapped();
        // SAFETY: Our pinned pages; the range is unmapped only if it is still our mapping in
        // the current address space (a dead one took it with it); our reference to `mm`.
        unsafe {
            bindings::unpin_user_pages(self.pages.as_mut_ptr(), npages);
            if unmap {
                bindings::vm_munmap(self.addr, self.len);
            }
            ext::untorn_helper_mmdrop(self.mm);
        }
    }
}

/// The most bytes a cached bounce buffer has.
const CACHE_MAX_LEN: usize = ext::UNTORN_BOUNCE_CACHE_MAX_PAGES as usize * kernel::page::PAGE_SIZE;
/// The most idle bounce buffers kept per address space (one per concurrent writer thread).
const CACHE_PER_MM: usize = 16;
/// The most idle bounce buffers a mount keeps (at most 4 MiB pinned).
const CACHE_TOTAL: usize = 64;

/// Idle bounce buffers of a mount, each kept mapped and pinned in its address space for that
/// address space's next untorn write of the same size: mapping, faulting in and unmapping a
/// bounce for every write cost more than the write itself, and `mmap_lock` taken for writing
/// twice per write serialised a process's writer threads.
pub struct BounceCache {
    idle: Pin<KBox<Mutex<KVec<Mapping>>>>,
}

impl BounceCache {
    /// An empty cache.
    pub fn new() -> Result<Self> {
        Ok(Self {
            idle: KBox::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?,
        })
    }

    /// An idle bounce of the current address space of exactly `len` bytes.
    fn take(&self, len: usize) -> Option<Mapping> {
        if len > CACHE_MAX_LEN {
            return None;
        }
        // SAFETY: Reads the current task's `mm` pointer.
        let mm = unsafe { ext::untorn_helper_current_mm() };
        let mut idle = self.idle.lock();
        let i = idle.iter().position(|m| m.mm == mm && m.len == len)?;
        idle.remove(i).ok()
    }

    /// Keeps `mapping` for its address space's next write, or gives it back if the cache has
    /// no room for it. Forgets the bounces of dead address spaces on the way (dropping them
    /// only unpins: their mappings went with the address space).
    fn put(&self, mapping: Mapping) -> Option<Mapping> {
        let mut idle = self.idle.lock();
        // SAFETY: We hold a reference to each cached mapping's `mm` (type invariant).
        idle.retain(|m| unsafe { ext::untorn_helper_mm_alive(m.mm) });
        let same_mm = idle.iter().filter(|m| m.mm == mapping.mm).count();
        if mapping.len > CACHE_MAX_LEN
            || same_mm >= CACHE_PER_MM
            || idle.len() >= CACHE_TOTAL
            || idle.reserve(1, GFP_KERNEL).is_err()
        {
            return Some(mapping);
        }
        idle.push_within_capacity(mapping).err().map(|e| e.0)
    }
}

/// One line per idle bounce, `<address> <bytes>`, for debugfs (tests look for the bounces in
/// their processes' address spaces).
impl core::fmt::Debug for BounceCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let idle = self.idle.lock();
        for (i, m) in idle.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{:#x} {}", m.addr, m.len)?;
        }
        Ok(())
    }
}

impl Drop for BounceCache {
    fn drop(&mut self) {
        let idle = core::mem::take(&mut *self.idle.lock());
        // Each unmaps here or in a worker; wait for the workers, so that the mount leaves no
        // bounce behind.
        drop(idle);
        // SAFETY: The workqueue exists while the module is loaded.
        unsafe { ext::untorn_helper_bounce_flush_releases() };
    }
}

/// Creates the workqueue that unmaps cached bounces of other address spaces (module init).
pub fn init() -> Result {
    // SAFETY: Called once, at module init.
    kernel::error::to_result(unsafe { ext::untorn_helper_bounce_init() })
}

/// Drains and destroys that workqueue (module exit, after the last mount is gone).
pub fn exit() {
    // SAFETY: Called once, at module exit, after `init` succeeded.
    unsafe { ext::untorn_helper_bounce_exit() };
}

/// The bounce buffer of one untorn write: pinned anonymous memory in the writer's own address
/// space, taken from the mount's cache when its address space has one of the size.
///
/// # Invariants
///
/// `mapping` is a mapping of the current task's address space. Not `Send`: it must be used
/// and returned by the task (address space) that took it.
pub struct UserBounce<'a> {
    mapping: ManuallyDrop<Mapping>,
    cache: &'a BounceCache,
    reused: bool,
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl<'a> UserBounce<'a> {
    /// Whether the current task has a user address space to put a bounce buffer in (kernel
    /// threads have none).
    pub fn possible() -> bool {
        // SAFETY: Reads the current task's `mm` pointer.
        unsafe { ext::untorn_helper_current_has_mm() }
    }

    /// A pinned bounce of `len` bytes (`len` > 0) in the current task's address space: an
    /// idle one of `cache` if it is still mapped as we left it, else a new one.
    pub fn new(len: usize, cache: &'a BounceCache) -> Result<Self> {
        if len == 0 {
            return Err(EINVAL);
        }
        if !Self::possible() {
            return Err(EOPNOTSUPP);
        }
        if let Some(mut cached) = cache.take(len) {
            if cached.still_mapped() {
                return Ok(Self {
                    mapping: ManuallyDrop::new(cached),
                    cache,
                    reused: true,
                    _not_send: core::marker::PhantomData,
                });
            }
            // Unmapped, remapped or protected by its user: no longer ours to unmap.
            cached.mapped = false;
        }
        Ok(Self {
            mapping: ManuallyDrop::new(Mapping::new(len)?),
            cache,
            reused: false,
            _not_send: core::marker::PhantomData,
        })
    }

    /// Whether the bounce came from the cache.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The user address of the buffer, for the lower write.
    pub fn user_addr(&self) -> *mut core::ffi::c_void {
        self.mapping.addr as *mut core::ffi::c_void
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.mapping.len
    }

    /// The pinned pages, in order, for bios (`super::bio`); pinned while `self` lives.
    pub(super) fn pages(&self) -> &[*mut bindings::page] {
        &self.mapping.pages
    }

    /// Copies the whole buffer's length from `iter`, all or nothing: on a fault part way the
    /// iterator is restored and the error is `EFAULT`.
    pub fn fill_from(&mut self, iter: &mut UserIter) -> Result {
        self.fill_at(0, iter, self.mapping.len)
    }

    /// Copies `len` bytes from `iter` to `offset` of the buffer, all or nothing: on a fault part
    /// way the iterator is restored and the error is `EFAULT`.
    pub fn fill_at(&mut self, offset: usize, iter: &mut UserIter, len: usize) -> Result {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.mapping.len)
            || iter.count() < len
        {
            return Err(EINVAL);
        }
        // SAFETY: The range is inside the buffer (checked above), whose pages are pinned (type
        // invariant); `iter` is the VFS's iterator.
        let copied = unsafe {
            ext::untorn_helper_bounce_fill_at(
                self.mapping.pages.as_mut_ptr(),
                offset,
                len,
                iter.as_ptr(),
            )
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
        let in_buffer = offset
            .checked_add(len)
            .is_some_and(|end| end <= self.mapping.len);
        if !in_folio || !in_buffer {
            return Err(EINVAL);
        }
        let (folio, pages) = (folio.as_ptr(), self.mapping.pages.as_ptr().cast_mut());
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

impl Drop for UserBounce<'_> {
    fn drop(&mut self) {
        // SAFETY: Taken once, here; `self.mapping` is not used after.
        let mapping = unsafe { ManuallyDrop::take(&mut self.mapping) };
        // Unmapped here, in the current task and with no lock held (type invariant: a refused
        // mapping is of the current address space).
        drop(self.cache.put(mapping));
    }
}
