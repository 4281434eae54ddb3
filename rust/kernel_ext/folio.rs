// SPDX-License-Identifier: GPL-2.0

//! Folios of a page cache: references, the folio lock, and writeback.

use core::{marker::PhantomData, ptr::NonNull};

use kernel::{
    bindings,
    error::{Error, Result},
    sync::aref::{ARef, AlwaysRefCounted},
    types::Opaque,
};

use super::bindings as ext;

/// A folio.
///
/// # Invariants
///
/// A valid folio with a positive reference count while referenced.
#[repr(transparent)]
pub struct Folio(Opaque<bindings::folio>);

// SAFETY: Folios are reference counted and may be used from any thread.
unsafe impl Send for Folio {}
// SAFETY: The accessors below follow the kernel's rules for concurrent use of a folio.
unsafe impl Sync for Folio {}

// SAFETY: `folio_get`/`folio_put` keep the folio alive.
unsafe impl AlwaysRefCounted for Folio {
    fn inc_ref(&self) {
        // SAFETY: The folio is referenced.
        unsafe { ext::untorn_helper_folio_get(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { ext::untorn_helper_folio_put(obj.as_ptr().cast()) };
    }
}

impl Folio {
    /// # Safety
    ///
    /// `ptr` is a valid, referenced folio for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::folio) -> &'a Self {
        // SAFETY: `repr(transparent)`; valid per the contract.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::folio {
        self.0.get()
    }

    /// The file position of the folio's first byte.
    pub fn pos(&self) -> i64 {
        // SAFETY: The folio is live; its index does not change while it is in the mapping.
        unsafe { ext::untorn_helper_folio_pos(self.as_ptr()) }
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        // SAFETY: The folio is live.
        unsafe { ext::untorn_helper_folio_size(self.as_ptr()) }
    }

    /// Whether the content is up to date.
    pub fn is_uptodate(&self) -> bool {
        // SAFETY: The folio is live; the flag is read with the kernel's memory ordering.
        unsafe { ext::untorn_helper_folio_test_uptodate(self.as_ptr()) }
    }

    /// Ends writeback started by [`LockedFolio::start_writeback`], recording an error on the
    /// mapping if `result` is one.
    ///
    /// # Safety
    ///
    /// The caller started writeback of this folio and ends it once.
    pub(crate) unsafe fn end_writeback(&self, result: Result) {
        if let Err(err) = result {
            // SAFETY: The folio is under writeback, so it is still in its mapping.
            unsafe {
                ext::untorn_helper_mapping_set_error(
                    (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.mapping,
                    err.to_errno(),
                )
            };
        }
        // SAFETY: Per the contract.
        unsafe { bindings::folio_end_writeback(self.as_ptr()) };
    }
}

/// A locked folio: the holder may fill it, zero parts of it and change its state.
///
/// # Invariants
///
/// The current thread holds the folio lock of `folio` for `'a`.
pub struct LockedFolio<'a> {
    folio: &'a Folio,
    _not_send: PhantomData<*mut ()>,
}

impl<'a> LockedFolio<'a> {
    /// # Safety
    ///
    /// The caller holds the lock of `folio` for `'a`.
    pub(crate) unsafe fn new(folio: &'a Folio) -> Self {
        Self {
            folio,
            _not_send: PhantomData,
        }
    }

    /// Starts writeback and unlocks the folio; the returned token ends the writeback.
    pub fn start_writeback(self) -> FolioWriteback {
        let folio = self.folio;
        core::mem::forget(self);
        // SAFETY: Locked by us (until the unlock below), its dirty flag cleared for I/O by
        // `writeback_iter`.
        unsafe {
            bindings::__folio_start_writeback(folio.as_ptr(), false);
            bindings::folio_unlock(folio.as_ptr());
        }
        // A reference of its own: writeback of several folios may be batched into one write,
        // beyond the borrow of the first.
        FolioWriteback(folio.into())
    }

    /// Ends a read: marks the folio up to date if `ok`, and unlocks it.
    pub fn end_read(self, ok: bool) {
        let folio = self.folio;
        core::mem::forget(self);
        // SAFETY: Locked by us; `folio_end_read` unlocks.
        unsafe { bindings::folio_end_read(folio.as_ptr(), ok) };
    }

    /// Unlocks the folio.
    pub fn unlock(self) {
        drop(self);
    }
}

impl Drop for LockedFolio<'_> {
    fn drop(&mut self) {
        // SAFETY: Locked by us (type invariant).
        unsafe { bindings::folio_unlock(self.folio.as_ptr()) };
    }
}

/// A folio under writeback that we started, referenced; [`FolioWriteback::end`] ends it.
///
/// # Invariants
///
/// We started writeback of the folio and have not ended it.
#[must_use = "writeback must be ended"]
pub struct FolioWriteback(ARef<Folio>);

impl FolioWriteback {
    /// Ends writeback, recording `result` on the mapping if it is an error; returns it.
    pub fn end(self, result: Result) -> Result {
        // SAFETY: By the type invariant, we started the writeback and end it once.
        unsafe { self.0.end_writeback(result) };
        result
    }
}

impl core::ops::Deref for FolioWriteback {
    type Target = Folio;

    fn deref(&self) -> &Folio {
        &self.0
    }
}

impl core::ops::Deref for LockedFolio<'_> {
    type Target = Folio;

    fn deref(&self) -> &Folio {
        self.folio
    }
}

/// A locked folio we hold a reference on, as `write_begin` returns it.
///
/// # Invariants
///
/// The folio is locked by the current thread while this value exists.
pub struct OwnedLockedFolio(core::mem::ManuallyDrop<ARef<Folio>>);

impl OwnedLockedFolio {
    /// Finds or creates the folio for a write of `len` bytes at `pos` of `mapping`, locked.
    ///
    /// # Safety
    ///
    /// `mapping` is a live mapping.
    pub(crate) unsafe fn get_for_write(
        mapping: *mut bindings::address_space,
        pos: i64,
        len: usize,
    ) -> Result<Self> {
        // SAFETY: Per the contract.
        let folio = unsafe { ext::untorn_helper_write_begin_get_folio(mapping, pos, len) };
        let folio = kernel::error::from_err_ptr(folio)?;
        let folio = NonNull::new(folio).ok_or(Error::from_errno(-(bindings::ENOMEM as i32)))?;
        // SAFETY: `__filemap_get_folio` returned a referenced folio, locked by us.
        Ok(Self(core::mem::ManuallyDrop::new(unsafe {
            ARef::from_raw(folio.cast())
        })))
    }

    /// Ends a read: marks the folio up to date if `ok`, unlocks it and drops our reference.
    pub fn end_read(self, ok: bool) {
        let mut me = core::mem::ManuallyDrop::new(self);
        // SAFETY: Locked by us (type invariant); `folio_end_read` unlocks it, and our
        // reference is dropped once, after, as `Drop` is not run.
        unsafe {
            bindings::folio_end_read(me.0.as_ptr(), ok);
            core::mem::ManuallyDrop::drop(&mut me.0);
        }
    }

    /// Gives the locked, referenced folio to the VFS (`write_begin`'s `*foliop`).
    pub(crate) fn into_raw(self) -> *mut bindings::folio {
        let me = core::mem::ManuallyDrop::new(self);
        me.0.as_ptr()
    }

    /// Takes a locked folio and a reference to it: one that `write_begin` returned, or the
    /// next folio of a readahead request.
    ///
    /// # Safety
    ///
    /// `folio` is locked by the current thread, and the caller hands over a reference to it (as
    /// [`Self::into_raw`] does).
    pub(crate) unsafe fn from_raw(folio: *mut bindings::folio) -> Self {
        // SAFETY: Per the contract.
        Self(core::mem::ManuallyDrop::new(unsafe {
            ARef::from_raw(NonNull::new_unchecked(folio.cast()))
        }))
    }

    /// Unlocks the folio and drops the reference.
    pub fn unlock(self) {
        drop(self);
    }
}

impl Drop for OwnedLockedFolio {
    fn drop(&mut self) {
        // SAFETY: Locked by us (type invariant); then our reference is dropped, once.
        unsafe {
            bindings::folio_unlock(self.0.as_ptr());
            core::mem::ManuallyDrop::drop(&mut self.0);
        }
    }
}

impl core::ops::Deref for OwnedLockedFolio {
    type Target = Folio;

    fn deref(&self) -> &Folio {
        &self.0
    }
}

/// A folio the current thread holds locked: only the holder may fill it, zero parts of it and
/// change its state.
///
/// # Safety
///
/// Implementors guarantee the folio is locked by the current thread while they exist.
pub unsafe trait FolioLock: core::ops::Deref<Target = Folio> {
    /// Zeroes bytes `start..end` (clamped to the folio).
    fn zero(&self, start: usize, end: usize) {
        let end = end.min(self.size());
        if start < end {
            // SAFETY: Locked by us (trait contract); the range is inside the folio.
            unsafe { ext::untorn_helper_folio_zero_segment(self.as_ptr(), start, end) };
        }
    }

    /// Marks the folio up to date; its whole content must be valid.
    fn mark_uptodate(&self) {
        // SAFETY: Locked by us (trait contract).
        unsafe { ext::untorn_helper_folio_mark_uptodate(self.as_ptr()) };
    }

    /// Marks the folio dirty in its mapping.
    fn mark_dirty(&self) {
        // SAFETY: Locked by us (trait contract), and in a mapping.
        unsafe { bindings::folio_mark_dirty(self.as_ptr()) };
    }

    /// Waits until the folio is not under writeback. Once it is locked and clean, no new
    /// writeback can start on it.
    fn wait_writeback(&self) {
        // SAFETY: A referenced folio; sleeping is allowed where a folio lock is held.
        unsafe { ext::untorn_helper_folio_wait_writeback(self.as_ptr()) };
    }

    /// Whether the folio is dirty.
    fn is_dirty(&self) -> bool {
        // SAFETY: A referenced folio; reads a flag.
        unsafe { ext::untorn_helper_folio_test_dirty(self.as_ptr()) }
    }

    /// Clears the dirty flag for I/O that the caller does itself (`folio_clear_dirty_for_io()`,
    /// which also write-protects the folio's mappings); returns whether it was dirty.
    fn clear_dirty_for_io(&self) -> bool {
        // SAFETY: Locked by us (trait contract), as the function requires.
        unsafe { bindings::folio_clear_dirty_for_io(self.as_ptr()) }
    }

    /// Makes what the kernel wrote into the folio visible to user mappings on architectures
    /// with aliasing caches (`flush_dcache_folio()`).
    fn flush_dcache(&self) {
        // SAFETY: A referenced folio.
        unsafe { ext::untorn_helper_flush_dcache_folio(self.as_ptr()) };
    }
}

// SAFETY: By the type invariants of `LockedFolio`.
unsafe impl FolioLock for LockedFolio<'_> {}
// SAFETY: By the type invariants of `OwnedLockedFolio`.
unsafe impl FolioLock for OwnedLockedFolio {}
