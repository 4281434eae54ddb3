// SPDX-License-Identifier: GPL-2.0

//! The operation tables of a stacked filesystem, built in Rust from a [`StackedFs`]
//! implementation.
//!
//! Each table is a `const` struct literal whose entries are `unsafe extern "C"` trampolines: they
//! turn the VFS's raw pointers into the references of [`super::vfs`] and [`super::folio`] and
//! call the safe methods of the filesystem. The function-pointer types are checked against the
//! bindgen'd structs, so a signature change in the kernel is a compile error here.

use core::ptr::{self, NonNull};

use kernel::ffi::{c_char, c_void};

use kernel::{
    bindings,
    error::{code::*, from_result, Error, Result},
    prelude::*,
    seq_file::SeqFile,
    sync::aref::ARef,
};

use super::{
    bindings as ext,
    folio::{Folio, LockedFolio, OwnedLockedFolio},
    lower::Acl,
    vfs::{
        free_sb_info, Dentry, DirContext, Inode, InodeAlloc, LowerDentry, LowerFile, LowerInode,
        NewSuperBlock, PrivateMount, StackedInodeState, SuperBlock,
    },
};

/// A stacked filesystem: every operation of the VFS that it implements.
pub trait StackedFs: Sized + Send + Sync + 'static {
    /// Data of each super block.
    type SbData: Send + Sync;
    /// Data of each inode.
    type InodeData: Send + Sync;

    /// The data of a new inode.
    fn new_inode_data() -> Self::InodeData;

    // super_operations

    /// `statfs(2)`.
    fn statfs(dentry: &Dentry<Self>, buf: &mut Statfs) -> Result;
    /// The mount options in `/proc/mounts`.
    fn show_options(sb: &SuperBlock<Self>, seq: &SeqFile);
    /// `syncfs(2)` and `sync(2)`, after the VFS has written back our dirty folios.
    fn sync_fs(sb: &SuperBlock<Self>, wait: bool) -> Result;

    // inode_operations of directories

    /// Looks `dentry` up in `dir`: sets its lower dentry and returns the inode, or `None`.
    fn lookup(dir: &Inode<Self>, dentry: &Dentry<Self>) -> Result<Option<ARef<Inode<Self>>>>;
    /// `creat(2)`, `open(O_CREAT)`.
    fn create(dir: &Inode<Self>, dentry: &Dentry<Self>, mode: u16) -> Result;
    /// `mkdir(2)`.
    fn mkdir(dir: &Inode<Self>, dentry: &Dentry<Self>, mode: u16) -> Result;
    /// `mknod(2)`.
    fn mknod(dir: &Inode<Self>, dentry: &Dentry<Self>, mode: u16, dev: u32) -> Result;
    /// `symlink(2)`.
    fn symlink(dir: &Inode<Self>, dentry: &Dentry<Self>, target: &CStr) -> Result;
    /// `open(O_TMPFILE)`: an unnamed regular file in `dir`, opened as `file`.
    fn tmpfile(dir: &Inode<Self>, file: &UpperFile, mode: u16) -> Result;
    /// `link(2)`.
    fn link(old: &Dentry<Self>, dir: &Inode<Self>, new: &Dentry<Self>) -> Result;
    /// `unlink(2)`.
    fn unlink(dir: &Inode<Self>, dentry: &Dentry<Self>) -> Result;
    /// `rmdir(2)`.
    fn rmdir(dir: &Inode<Self>, dentry: &Dentry<Self>) -> Result;
    /// `renameat2(2)`.
    fn rename(
        old_dir: &Inode<Self>,
        old: &Dentry<Self>,
        new_dir: &Inode<Self>,
        new: &Dentry<Self>,
        flags: u32,
    ) -> Result;

    // inode_operations of every inode

    /// Permission check of `mask` (`MAY_*`) on `inode`.
    fn permission(inode: &Inode<Self>, mask: i32) -> Result;
    /// `stat(2)`/`statx(2)`.
    fn getattr(dentry: &Dentry<Self>, stat: &mut Kstat, request_mask: u32, flags: u32) -> Result;
    /// The access time is due (`->update_time` for the atime): push it to the lower; `false`
    /// if the inode has no lower file to touch, for the generic update of our inode alone.
    fn update_atime(inode: &Inode<Self>) -> bool;
    /// `chmod(2)`, `chown(2)`, `utimensat(2)`, `truncate(2)`.
    fn setattr(dentry: &Dentry<Self>, attr: &Iattr) -> Result;
    /// `listxattr(2)`: fills `buf` (or measures, if null) and returns the size.
    fn listxattr(dentry: &Dentry<Self>, buf: OutBuffer) -> Result<usize>;
    /// `getxattr(2)` of any name: fills `buf` (or measures, if null) and returns the size.
    fn getxattr(dentry: &Dentry<Self>, name: &CStr, buf: OutBuffer) -> Result<usize>;
    /// `setxattr(2)`, or `removexattr(2)` when `value` is null.
    fn setxattr(dentry: &Dentry<Self>, name: &CStr, value: InValue, flags: i32) -> Result;
    /// The ACL of `acl_type` for permission checks (the VFS caches it on our inode).
    fn get_inode_acl(inode: &Inode<Self>, acl_type: i32) -> Result<Acl>;
    /// `getxattr(2)` of `system.posix_acl_*`.
    fn get_acl(dentry: &Dentry<Self>, acl_type: i32) -> Result<Acl>;
    /// `setxattr(2)` and `removexattr(2)` of `system.posix_acl_*`.
    fn set_acl(dentry: &Dentry<Self>, acl: Acl, acl_type: i32) -> Result;
    /// `readlink(2)` and path walks: the lower's target.
    fn get_link(dentry: &Dentry<Self>, done: DelayedCall) -> Result<*const c_char>;

    // file_operations

    /// `open(2)` of a regular file.
    fn open(inode: &Inode<Self>, file: &UpperFile) -> Result;
    /// `open(2)` of a directory.
    fn open_dir(inode: &Inode<Self>, file: &UpperFile) -> Result;
    /// `read(2)` and friends.
    fn read_iter(kiocb: &mut Kiocb<'_, Self>, iter: &mut UserIter) -> Result<usize>;
    /// `write(2)` and friends.
    fn write_iter(kiocb: &mut Kiocb<'_, Self>, iter: &mut UserIter) -> Result<usize>;
    /// `fsync(2)`, `fdatasync(2)`, `msync(2)`.
    fn fsync(file: &UpperFile, inode: &Inode<Self>, start: i64, end: i64, datasync: bool)
        -> Result;
    /// `fallocate(2)`.
    fn fallocate(file: &UpperFile, inode: &Inode<Self>, mode: i32, offset: i64, len: i64)
        -> Result;
    /// `readdir`: the entries of the lower directory from the context's position.
    fn iterate_shared(file: &UpperFile, ctx: &mut DirContext) -> Result;
    /// `lseek(2)` of a directory.
    fn llseek_dir(file: &UpperFile, offset: i64, whence: i32) -> Result<i64>;
    /// `ioctl(2)` on a regular file: `cmd` with the user's argument `arg`.
    fn ioctl(file: &UpperFile, inode: &Inode<Self>, cmd: u32, arg: usize) -> Result<isize>;

    // address_space_operations

    /// Fills a locked folio from the lower file and ends the read.
    fn read_folio(inode: &Inode<Self>, folio: LockedFolio<'_>) -> Result;
    /// Fills and unlocks the folios of a readahead request, as many as it likes from the
    /// first (the VM unlocks the rest unread).
    fn readahead(inode: &Inode<Self>, request: Readahead<'_>);
    /// Writes back dirty folios.
    fn writepages(inode: &Inode<Self>, wbc: &mut Writeback<'_>) -> Result;
    /// Gets the folio for a buffered write of `len` bytes at `pos`, locked and ready for the
    /// copy.
    fn write_begin(inode: &Inode<Self>, pos: i64, len: usize) -> Result<OwnedLockedFolio>;
    /// Ends a buffered write of which `copied` of `len` bytes were copied; returns the bytes
    /// accepted.
    fn write_end(
        inode: &Inode<Self>,
        pos: i64,
        len: usize,
        copied: usize,
        folio: OwnedLockedFolio,
    ) -> usize;
}

/// A buffer of the VFS for an answer of variable size (extended attribute names or a value), or
/// none to ask for the size.
pub struct OutBuffer {
    pub(crate) ptr: *mut c_void,
    pub(crate) size: usize,
}

/// An extended attribute value from the VFS, or none for a removal.
pub struct InValue {
    pub(crate) ptr: *const c_void,
    pub(crate) size: usize,
}

impl OutBuffer {
    /// A kernel buffer of ours, for an answer read from the lower.
    pub fn from_slice(buf: &mut [u8]) -> Self {
        Self {
            ptr: buf.as_mut_ptr().cast(),
            size: buf.len(),
        }
    }

    /// No buffer: only the size of the answer is asked for.
    pub fn none() -> Self {
        Self {
            ptr: ptr::null_mut(),
            size: 0,
        }
    }

    /// Answers `data`: copies it if there is a buffer (`ERANGE` if it is too small); returns
    /// its size.
    pub fn fill(self, data: &[u8]) -> Result<usize> {
        if self.ptr.is_null() || self.size == 0 {
            return Ok(data.len());
        }
        if data.len() > self.size {
            return Err(ERANGE);
        }
        // SAFETY: The VFS's (kernel) buffer holds `size` bytes, checked above; the VFS does
        // not hand us a buffer that overlaps our own data.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.cast::<u8>(), data.len()) };
        Ok(data.len())
    }
}

impl InValue {
    /// A value of ours, to write to the lower.
    pub fn from_slice(value: &[u8]) -> Self {
        Self {
            ptr: value.as_ptr().cast(),
            size: value.len(),
        }
    }

    /// No value: a removal.
    pub fn removal() -> Self {
        Self {
            ptr: ptr::null(),
            size: 0,
        }
    }
}

/// The VFS's delayed call that frees a symlink target after use.
pub struct DelayedCall(pub(crate) *mut bindings::delayed_call);

/// A `struct kstatfs` being filled.
pub struct Statfs(*mut bindings::kstatfs);

impl Statfs {
    /// Fills it with the `statfs` of the lower path.
    pub fn fill_from(&mut self, path: &super::vfs::LowerPath) -> Result {
        // SAFETY: `self.0` is the VFS's buffer; `path` is referenced.
        kernel::error::to_result(unsafe { bindings::vfs_statfs(path.as_raw(), self.0) })
    }

    /// Sets the block size, the blocks in all and free (also as available), and the files in
    /// all and free.
    pub fn set_space(&mut self, bsize: u64, blocks: u64, bfree: u64, files: u64, ffree: u64) {
        // SAFETY: `self.0` is the VFS's buffer (`kstatfs` is opaque to Rust).
        unsafe { ext::untorn_helper_kstatfs_set_space(self.0, bsize, blocks, bfree, files, ffree) };
    }

    /// Sets `f_type`.
    pub fn set_type(&mut self, magic: u64) {
        // SAFETY: `self.0` is the VFS's buffer (`kstatfs` is opaque to Rust).
        unsafe { ext::untorn_helper_kstatfs_set_type(self.0, magic as isize) };
    }
}

/// A `struct kstat` being filled.
pub struct Kstat(pub(crate) *mut bindings::kstat);

impl Kstat {
    /// The raw `kstat`, whose fields are plain data.
    pub fn get(&mut self) -> &mut bindings::kstat {
        // SAFETY: The VFS's buffer, exclusively ours during `getattr`.
        unsafe { &mut *self.0 }
    }

    /// Reports atomic write limits (`generic_fill_statx_atomic_writes()`: the request is
    /// answered, and `STATX_ATTR_WRITE_ATOMIC` set when `unit_min` is non-zero), with
    /// `segments_max` iovec segments.
    pub fn fill_atomic_write(
        &mut self,
        unit_min: u32,
        unit_max: u32,
        unit_max_opt: u32,
        segments_max: u32,
    ) {
        // SAFETY: The VFS's buffer, exclusively ours during `getattr`.
        unsafe {
            bindings::generic_fill_statx_atomic_writes(self.0, unit_min, unit_max, unit_max_opt)
        };
        if unit_min != 0 {
            self.get().atomic_write_segments_max = segments_max;
        }
    }
}

/// A `struct iattr`.
pub struct Iattr(pub(crate) *mut bindings::iattr);

impl Iattr {
    /// The raw attributes.
    pub fn get(&self) -> &bindings::iattr {
        // SAFETY: The VFS's attributes, valid during `setattr`.
        unsafe { &*self.0 }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::iattr {
        self.0
    }
}

/// An upper open file; its private data is the per-open lower file, if any.
#[repr(transparent)]
pub struct UpperFile(kernel::types::Opaque<bindings::file>);

impl UpperFile {
    /// # Safety
    ///
    /// `ptr` is a valid file of a stacked filesystem for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::file) -> &'a Self {
        // SAFETY: `repr(transparent)`.
        unsafe { &*ptr.cast() }
    }

    fn as_ptr(&self) -> *mut bindings::file {
        self.0.get()
    }

    /// Whether the file is open for writing.
    pub fn is_writable(&self) -> bool {
        // SAFETY: `f_mode`'s access bits are set before `open` and never change.
        unsafe { (*self.as_ptr()).f_mode & ext::UNTORN_FMODE_WRITE != 0 }
    }

    /// The per-open lower file.
    pub fn lower(&self) -> Option<&LowerFile> {
        // SAFETY: Set by `set_lower` during open, released at release.
        let lower = unsafe { (*self.as_ptr()).private_data };
        // SAFETY: As above.
        (!lower.is_null()).then(|| unsafe { LowerFile::from_raw(lower.cast()) })
    }

    /// Attaches the per-open lower file; called once, in `open`.
    pub fn set_lower(&self, lower: ARef<LowerFile>) {
        // SAFETY: `open` runs before the file is visible to anyone else.
        unsafe { (*self.as_ptr()).private_data = ARef::into_raw(lower).as_ptr().cast() };
    }

    /// Sets the flags the VFS uses to decide which operations are possible.
    pub fn set_mode_flags(&self, flags: u32) {
        // SAFETY: As in `set_lower`.
        unsafe { (*self.as_ptr()).f_mode |= flags };
    }

    /// Whether the caller owns the file's inode or has `CAP_FOWNER` (`inode_owner_or_capable()`,
    /// the rule of `chattr`). untorn mounts are not idmapped.
    pub fn caller_owns_or_capable(&self) -> bool {
        // SAFETY: A live file with its inode.
        unsafe {
            bindings::inode_owner_or_capable(
                ptr::addr_of_mut!(bindings::nop_mnt_idmap),
                (*self.as_ptr()).f_inode,
            )
        }
    }

    /// Runs `f` with write access to the file's mount (`mnt_want_write_file()`): `EROFS` on a
    /// read-only mount.
    pub fn with_write_access<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        // SAFETY: A live file; dropped below on every path.
        kernel::error::to_result(unsafe { bindings::mnt_want_write_file(self.as_ptr()) })?;
        let result = f();
        // SAFETY: Taken above.
        unsafe { bindings::mnt_drop_write_file(self.as_ptr()) };
        result
    }

    /// Updates the access time as a read of the file does (`file_accessed()`: unless the file
    /// was opened `O_NOATIME`, under the mount's and the inode's atime rules).
    pub fn accessed(&self) {
        // SAFETY: A live file.
        unsafe { ext::untorn_helper_file_accessed(self.as_ptr()) };
    }

    /// The dentry the file was opened on.
    pub fn dentry<T: StackedFs>(&self) -> &Dentry<T> {
        // SAFETY: `f_path` of an open file is referenced by it; a file of ours has our dentry.
        unsafe { Dentry::from_raw(ext::untorn_helper_file_dentry(self.as_ptr())) }
    }

    /// Writes back the file's dirty folios in `start..=end` and waits, reporting writeback
    /// errors once per file (`file_write_and_wait_range()`).
    pub fn write_and_wait(&self, start: i64, end: i64) -> Result {
        // SAFETY: A live file.
        kernel::error::to_result(unsafe {
            bindings::file_write_and_wait_range(self.as_ptr(), start, end)
        })
    }

    /// Makes the new dentry of an `O_TMPFILE` open positive with `inode` (`d_tmpfile()`) and
    /// finishes the open, which calls our `open`.
    pub fn finish_tmpfile<T: StackedFs>(&self, inode: ARef<Inode<T>>) -> Result {
        // SAFETY: Called from `tmpfile`, where the file is ours and not yet open; `d_tmpfile`
        // takes over the inode reference. It drops the link count the VFS expects a new inode to
        // have; ours mirrors the lower's 0.
        unsafe {
            bindings::set_nlink(inode.as_ptr(), 1);
            bindings::d_tmpfile(self.as_ptr(), ARef::into_raw(inode).as_ptr().cast());
            let dentry = ext::untorn_helper_file_dentry(self.as_ptr());
            kernel::error::to_result(bindings::finish_open(self.as_ptr(), dentry, None))
        }
    }

    /// The file's position, for the directory `llseek`.
    pub fn set_pos(&self, pos: i64) {
        // SAFETY: Directory seeks hold `f_pos_lock`.
        unsafe { (*self.as_ptr()).f_pos = pos };
    }
}

/// A user I/O iterator.
#[repr(transparent)]
pub struct UserIter(bindings::iov_iter);

impl UserIter {
    /// The bytes left.
    pub fn count(&self) -> usize {
        // SAFETY: `iov_iter_count()` reads the count of any iterator.
        unsafe { ext::untorn_helper_iov_iter_count(ptr::from_ref(&self.0)) }
    }

    /// Gives back `n` bytes that were consumed (`iov_iter_revert()`).
    ///
    /// # Safety
    ///
    /// At least `n` bytes were consumed from this iterator.
    pub unsafe fn revert(&mut self, n: usize) {
        // SAFETY: Per the contract.
        unsafe { bindings::iov_iter_revert(&mut self.0, n) };
    }

    /// Sets the bytes left back to `count` after a truncation (`iov_iter_reexpand()`).
    ///
    /// # Safety
    ///
    /// The iterator held at least `count` bytes before it was truncated, and none were
    /// consumed since.
    pub unsafe fn reexpand(&mut self, count: usize) {
        // SAFETY: Per the contract.
        unsafe { ext::untorn_helper_iov_iter_reexpand(&mut self.0, count) };
    }

    pub(crate) fn as_ptr(&mut self) -> *mut bindings::iov_iter {
        &mut self.0
    }
}

/// A `kiocb` of a read or write on an upper file.
pub struct Kiocb<'a, T: StackedFs> {
    raw: &'a mut bindings::kiocb,
    inode: &'a Inode<T>,
    file: &'a UpperFile,
}

impl<'a, T: StackedFs> Kiocb<'a, T> {
    /// The inode.
    pub fn inode(&self) -> &'a Inode<T> {
        self.inode
    }

    /// The file.
    pub fn file(&self) -> &'a UpperFile {
        self.file
    }

    /// The position.
    pub fn pos(&self) -> i64 {
        self.raw.ki_pos
    }

    /// Whether this is `O_DIRECT` I/O.
    pub fn is_direct(&self) -> bool {
        self.raw.ki_flags & bindings::IOCB_DIRECT as i32 != 0
    }

    /// Sets the position.
    pub fn set_pos(&mut self, pos: i64) {
        self.raw.ki_pos = pos;
    }

    /// Whether the write asked to be untorn (`RWF_ATOMIC`).
    pub fn is_atomic(&self) -> bool {
        self.raw.ki_flags & ext::UNTORN_IOCB_ATOMIC != 0
    }

    /// Whether the caller must not block (`IOCB_NOWAIT`: `RWF_NOWAIT`, io_uring).
    pub fn is_nowait(&self) -> bool {
        self.raw.ki_flags & ext::UNTORN_IOCB_NOWAIT != 0
    }

    /// Whether the write appends (`O_APPEND`, `RWF_APPEND`).
    pub fn is_append(&self) -> bool {
        self.raw.ki_flags & ext::UNTORN_IOCB_APPEND != 0
    }

    /// The durability flags of the write (`IOCB_DSYNC`, `IOCB_SYNC`), to pass to the lower.
    pub fn sync_flags(&self) -> i32 {
        self.raw.ki_flags & (ext::UNTORN_IOCB_DSYNC | ext::UNTORN_IOCB_SYNC)
    }

    /// Reads at most `max` bytes from the page cache (`filemap_read()` of `iter` truncated).
    pub fn filemap_read_at_most(&mut self, iter: &mut UserIter, max: usize) -> Result<usize> {
        let count = iter.count();
        let keep = count.saturating_sub(max);
        // SAFETY: Truncating and re-expanding by the same amount restores the iterator's end;
        // the kiocb and iterator are the VFS's, valid during `read_iter`.
        let ret = unsafe {
            ext::untorn_helper_iov_iter_truncate(iter.as_ptr(), max);
            let ret = bindings::filemap_read(self.raw, iter.as_ptr(), 0);
            ext::untorn_helper_iov_iter_reexpand(iter.as_ptr(), iter.count() + keep);
            ret
        };
        isize_result(ret)
    }

    /// Undoes a read of `done` bytes: the iterator and the position go back.
    ///
    /// # Safety
    ///
    /// A read on this kiocb consumed `done` bytes of `iter`.
    pub unsafe fn unread(&mut self, iter: &mut UserIter, done: usize) {
        // SAFETY: Per the contract.
        unsafe { iter.revert(done) };
        self.raw.ki_pos -= done as i64;
    }

    /// Reads from the page cache (`filemap_read()`), filling it through `read_folio`.
    pub fn filemap_read(&mut self, iter: &mut UserIter) -> Result<usize> {
        // SAFETY: The kiocb and iterator are the VFS's, valid during `read_iter`.
        let ret = unsafe { bindings::filemap_read(self.raw, iter.as_ptr(), 0) };
        isize_result(ret)
    }

    /// `generic_write_checks()` (limits, `O_APPEND`); returns the bytes to write.
    pub fn write_checks(&mut self, iter: &mut UserIter) -> Result<usize> {
        // SAFETY: As in `filemap_read`; the caller holds `inode_lock`.
        isize_result(unsafe { bindings::generic_write_checks(self.raw, iter.as_ptr()) })
    }

    /// Removes set-user-ID bits and updates times, as every write must (`file_modified()`).
    pub fn file_modified(&mut self) -> Result {
        // SAFETY: As in `filemap_read`.
        kernel::error::to_result(unsafe { bindings::file_modified(self.file.as_ptr()) })
    }

    /// Copies into the page cache through `write_begin`/`write_end` (`generic_perform_write()`)
    /// and advances the position.
    pub fn perform_write(&mut self, iter: &mut UserIter) -> Result<usize> {
        // SAFETY: As in `filemap_read`; the caller holds `inode_lock`.
        isize_result(unsafe { bindings::generic_perform_write(self.raw, iter.as_ptr()) })
    }

    /// Syncs after a write if the file or kiocb asks for it (`O_SYNC`, `RWF_DSYNC`).
    pub fn write_sync(&mut self, written: usize) -> Result<usize> {
        // SAFETY: As in `filemap_read`.
        isize_result(unsafe { ext::untorn_helper_generic_write_sync(self.raw, written as isize) })
    }

    /// Reads or writes `iter` directly to `lower` at the current position (`O_DIRECT` pass-through)
    /// and advances the position.
    pub fn lower_direct(
        &mut self,
        lower: &LowerFile,
        iter: &mut UserIter,
        write: bool,
    ) -> Result<usize> {
        let pos = self.raw.ki_pos;
        // `RWF_ATOMIC` stays an atomic write: the lower checks and honours it.
        let atomic = self.raw.ki_flags & ext::UNTORN_IOCB_ATOMIC;
        let done = lower.rw_user(pos, iter, atomic, write)?;
        self.raw.ki_pos = pos + done as i64;
        Ok(done)
    }
}

fn isize_result(ret: isize) -> Result<usize> {
    if ret < 0 {
        Err(Error::from_errno(ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// A writeback request of the VM.
pub struct Writeback<'a> {
    mapping: *mut bindings::address_space,
    wbc: &'a mut bindings::writeback_control,
}

impl Writeback<'_> {
    /// Calls `f` on each dirty folio to write back (`writeback_iter()`), locked, with its dirty
    /// flag cleared for I/O; `f` starts writeback or unlocks it. Returns the first error.
    pub fn for_each(&mut self, mut f: impl FnMut(LockedFolio<'_>) -> Result) -> Result {
        let mut error = 0;
        let mut folio = ptr::null_mut();
        loop {
            // SAFETY: `mapping` and `wbc` are the VM's for this call; `folio` is the one this loop
            // got last (or null at the start), as `writeback_iter` requires.
            folio = unsafe { bindings::writeback_iter(self.mapping, self.wbc, folio, &mut error) };
            if folio.is_null() {
                return kernel::error::to_result(error);
            }
            // SAFETY: `writeback_iter` returns a referenced folio, locked for us.
            let locked = unsafe { LockedFolio::new(Folio::from_raw(folio)) };
            if let Err(e) = f(locked) {
                error = e.to_errno();
            }
        }
    }
}

/// A readahead request of the VM (`struct readahead_control`): new folios of the mapping,
/// locked and contiguous, for the filesystem to fill and unlock.
///
/// # Invariants
///
/// `rac` is the VM's request for the duration of one `->readahead` call, borrowed for `'a`.
pub struct Readahead<'a> {
    rac: NonNull<bindings::readahead_control>,
    _call: core::marker::PhantomData<&'a mut bindings::readahead_control>,
}

impl Readahead<'_> {
    /// The next folio of the request, locked, with a reference of its own; `None` at the end.
    /// Folios not taken are unlocked, not read, by the VM after `->readahead` returns.
    pub fn next_folio(&mut self) -> Option<OwnedLockedFolio> {
        // SAFETY: The VM's request (type invariant); `__readahead_folio` hands over the next
        // folio with a reference, or returns null.
        let folio = unsafe { ext::untorn_helper_readahead_folio(self.rac.as_ptr()) };
        if folio.is_null() {
            return None;
        }
        // SAFETY: The folio is locked for us, and its reference is now ours.
        Some(unsafe { OwnedLockedFolio::from_raw(folio) })
    }
}

/// A null-terminated list of extended attribute handlers (`s_xattr`).
#[repr(transparent)]
pub struct XattrHandlers([*const bindings::xattr_handler; 2]);

// SAFETY: The handlers are immutable statics.
unsafe impl Sync for XattrHandlers {}

impl XattrHandlers {
    pub(crate) fn as_ptr(&'static self) -> *const *const bindings::xattr_handler {
        self.0.as_ptr()
    }
}

/// The tables of a stacked filesystem `T`.
pub struct Tables<T: StackedFs>(core::marker::PhantomData<T>);

impl<T: StackedFs> Tables<T> {
    /// The super block operations.
    pub const SUPER: bindings::super_operations = bindings::super_operations {
        alloc_inode: Some(Self::alloc_inode),
        free_inode: Some(Self::free_inode),
        evict_inode: Some(Self::evict_inode),
        statfs: Some(Self::statfs),
        show_options: Some(Self::show_options),
        sync_fs: Some(Self::sync_fs),
        ..pin_init::zeroed()
    };

    /// The dentry operations.
    pub const DENTRY: bindings::dentry_operations = bindings::dentry_operations {
        d_release: Some(Self::d_release),
        ..pin_init::zeroed()
    };

    /// The directory inode operations.
    pub const DIR_INODE: bindings::inode_operations = bindings::inode_operations {
        get_inode_acl: Some(Self::get_inode_acl),
        get_acl: Some(Self::get_acl),
        set_acl: Some(Self::set_acl),
        lookup: Some(Self::lookup),
        create: Some(Self::create),
        mkdir: Some(Self::mkdir),
        mknod: Some(Self::mknod),
        symlink: Some(Self::symlink),
        link: Some(Self::link),
        unlink: Some(Self::unlink),
        rmdir: Some(Self::rmdir),
        rename: Some(Self::rename),
        tmpfile: Some(Self::tmpfile),
        permission: Some(Self::permission),
        getattr: Some(Self::getattr),
        setattr: Some(Self::setattr),
        listxattr: Some(Self::listxattr),
        ..pin_init::zeroed()
    };

    /// The regular-file and special-file inode operations.
    pub const FILE_INODE: bindings::inode_operations = bindings::inode_operations {
        get_inode_acl: Some(Self::get_inode_acl),
        get_acl: Some(Self::get_acl),
        set_acl: Some(Self::set_acl),
        permission: Some(Self::permission),
        getattr: Some(Self::getattr),
        setattr: Some(Self::setattr),
        listxattr: Some(Self::listxattr),
        update_time: Some(Self::update_time),
        ..pin_init::zeroed()
    };

    /// The symlink inode operations.
    pub const SYMLINK_INODE: bindings::inode_operations = bindings::inode_operations {
        get_link: Some(Self::get_link),
        getattr: Some(Self::getattr),
        setattr: Some(Self::setattr),
        listxattr: Some(Self::listxattr),
        ..pin_init::zeroed()
    };

    /// Regular file operations.
    pub const FILE: bindings::file_operations = bindings::file_operations {
        open: Some(Self::open),
        release: Some(Self::release),
        read_iter: Some(Self::read_iter),
        write_iter: Some(Self::write_iter),
        llseek: Some(bindings::generic_file_llseek),
        mmap: Some(Self::mmap),
        fsync: Some(Self::fsync),
        fallocate: Some(Self::fallocate),
        // Not `filemap_splice_read()`: it hands page-cache folios to the pipe, bypassing the
        // publication protocol of `read_iter`.
        splice_read: Some(bindings::copy_splice_read),
        splice_write: Some(bindings::iter_file_splice_write),
        unlocked_ioctl: Some(Self::unlocked_ioctl),
        ..pin_init::zeroed()
    };

    /// Operations of mappings of regular files: the generic ones, but for a `fault` that never
    /// reads the lower under the fault lock (`untorn_helper_fault`) and a `page_mkwrite` that
    /// never sleeps on a folio lock (`untorn_helper_page_mkwrite`).
    pub const VM_OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        fault: Some(ext::untorn_helper_fault),
        map_pages: Some(bindings::filemap_map_pages),
        page_mkwrite: Some(ext::untorn_helper_page_mkwrite),
        ..pin_init::zeroed()
    };

    /// Directory file operations.
    pub const DIR: bindings::file_operations = bindings::file_operations {
        open: Some(Self::open_dir),
        release: Some(Self::release),
        iterate_shared: Some(Self::iterate_shared),
        llseek: Some(Self::llseek_dir),
        read: Some(bindings::generic_read_dir),
        fsync: Some(Self::fsync_dir),
        ..pin_init::zeroed()
    };

    /// Address space operations of regular files.
    pub const AOPS: bindings::address_space_operations = bindings::address_space_operations {
        read_folio: Some(Self::read_folio),
        readahead: Some(Self::readahead),
        writepages: Some(Self::writepages),
        dirty_folio: Some(bindings::filemap_dirty_folio),
        write_begin: Some(Self::write_begin),
        write_end: Some(Self::write_end),
        error_remove_folio: Some(bindings::generic_error_remove_folio),
        #[cfg(CONFIG_MIGRATION)]
        migrate_folio: Some(bindings::filemap_migrate_folio),
        ..pin_init::zeroed()
    };

    /// One handler for every extended attribute name (an empty prefix matches all, as in
    /// ecryptfs): the lower filesystem decides what it supports.
    pub const XATTR: bindings::xattr_handler = bindings::xattr_handler {
        // The empty name: a `&CStr`'s `as_ptr` is not `const` here.
        #[allow(clippy::manual_c_str_literals)]
        prefix: b"\0".as_ptr(),
        get: Some(Self::xattr_get),
        set: Some(Self::xattr_set),
        ..pin_init::zeroed()
    };

    /// The null-terminated handler list for `s_xattr`.
    pub const XATTR_HANDLERS: XattrHandlers = XattrHandlers([&Self::XATTR, ptr::null()]);

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn xattr_get(
        _handler: *const bindings::xattr_handler,
        dentry: *mut bindings::dentry,
        _inode: *mut bindings::inode,
        name: *const c_char,
        buffer: *mut c_void,
        size: usize,
    ) -> i32 {
        // SAFETY: Our dentry and the VFS's NUL-terminated name.
        let (dentry, name) = unsafe { (Dentry::<T>::from_raw(dentry), CStr::from_char_ptr(name)) };
        from_result(|| T::getxattr(dentry, name, OutBuffer { ptr: buffer, size }).map(|n| n as i32))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    #[allow(clippy::too_many_arguments)]
    unsafe extern "C" fn xattr_set(
        _handler: *const bindings::xattr_handler,
        _idmap: *mut bindings::mnt_idmap,
        dentry: *mut bindings::dentry,
        _inode: *mut bindings::inode,
        name: *const c_char,
        value: *const c_void,
        size: usize,
        flags: i32,
    ) -> i32 {
        // SAFETY: As in `xattr_get`.
        let (dentry, name) = unsafe { (Dentry::<T>::from_raw(dentry), CStr::from_char_ptr(name)) };
        from_result(|| T::setxattr(dentry, name, InValue { ptr: value, size }, flags).map(|()| 0))
    }

    // Super block.

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn alloc_inode(_sb: *mut bindings::super_block) -> *mut bindings::inode {
        let alloc = KBox::new(
            InodeAlloc::<T> {
                // SAFETY: The VFS initialises the inode (`inode_init_always`); the
                // once-only parts are initialised below with `inode_init_once`.
                vfs: kernel::types::Opaque::uninit(),
                state: StackedInodeState {
                    lower: ptr::null_mut::<bindings::inode>().into(),
                    data_rw: ptr::null_mut::<bindings::file>().into(),
                    data_ro: ptr::null_mut::<bindings::file>().into(),
                },
                data: T::new_inode_data(),
            },
            GFP_KERNEL,
        );
        let Ok(alloc) = alloc else {
            return ptr::null_mut();
        };
        let alloc = KBox::into_raw(alloc);
        // SAFETY: `alloc` is a new allocation; the inode is its first field.
        let inode = unsafe { (*alloc).vfs.get() };
        // SAFETY: A new inode must be initialised once before the VFS uses it.
        unsafe { bindings::inode_init_once(inode) };
        inode
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn free_inode(inode: *mut bindings::inode) {
        // SAFETY: Every inode of this super block came from `alloc_inode`, as a `KBox`; the VFS
        // frees it once, after an RCU grace period.
        drop(unsafe { KBox::from_raw(inode.cast::<InodeAlloc<T>>()) });
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn evict_inode(inode: *mut bindings::inode) {
        // SAFETY: The VFS calls this once per inode, which no one else uses any more.
        unsafe {
            bindings::truncate_inode_pages_final(&mut (*inode).i_data);
            bindings::clear_inode(inode);
        }
        // SAFETY: An inode of ours; after `clear_inode` nothing uses the lower objects.
        unsafe { Inode::<T>::from_raw(inode) }.release_lower();
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn statfs(dentry: *mut bindings::dentry, buf: *mut bindings::kstatfs) -> i32 {
        // SAFETY: The VFS passes a dentry of ours and a buffer.
        let dentry = unsafe { Dentry::<T>::from_raw(dentry) };
        from_result(|| T::statfs(dentry, &mut Statfs(buf)).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn show_options(
        seq: *mut bindings::seq_file,
        root: *mut bindings::dentry,
    ) -> i32 {
        // SAFETY: The VFS passes a live seq_file and our root.
        let (seq, root) = unsafe { (SeqFile::from_raw(seq), Dentry::<T>::from_raw(root)) };
        T::show_options(root.super_block(), seq);
        0
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn sync_fs(sb: *mut bindings::super_block, wait: i32) -> i32 {
        // SAFETY: A super block of ours, filled (the VFS syncs only active super blocks).
        let sb = unsafe { SuperBlock::<T>::from_raw(sb) };
        from_result(|| T::sync_fs(sb, wait != 0).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn d_release(dentry: *mut bindings::dentry) {
        // SAFETY: The dentry is being freed; `d_fsdata` is null or owns a lower dentry.
        let lower = unsafe { (*dentry).d_fsdata };
        if !lower.is_null() {
            // SAFETY: As above.
            unsafe { bindings::dput(lower.cast()) };
        }
    }

    // Directory inode operations.

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn lookup(
        dir: *mut bindings::inode,
        dentry: *mut bindings::dentry,
        _flags: u32,
    ) -> *mut bindings::dentry {
        // SAFETY: The VFS passes our directory and a new dentry of ours.
        let dir_ref = unsafe { Inode::<T>::from_raw(dir) };
        // SAFETY: As above.
        let dentry_ref = unsafe { Dentry::<T>::from_raw(dentry) };
        let inode = match T::lookup(dir_ref, dentry_ref) {
            Ok(Some(inode)) => ARef::into_raw(inode).as_ptr().cast(),
            Ok(None) => ptr::null_mut(),
            Err(e) => return e.to_ptr(),
        };
        // SAFETY: `d_splice_alias` takes over our inode reference (or null for negative).
        unsafe { bindings::d_splice_alias(inode, dentry) }
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn create(
        _idmap: *mut bindings::mnt_idmap,
        dir: *mut bindings::inode,
        dentry: *mut bindings::dentry,
        mode: u16,
    ) -> i32 {
        // SAFETY: Our directory, locked by the VFS, and a negative dentry of ours.
        let (dir, dentry) = unsafe { (Inode::<T>::from_raw(dir), Dentry::<T>::from_raw(dentry)) };
        from_result(|| T::create(dir, dentry, mode).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn mkdir(
        _idmap: *mut bindings::mnt_idmap,
        dir: *mut bindings::inode,
        dentry: *mut bindings::dentry,
        mode: u16,
    ) -> *mut bindings::dentry {
        // SAFETY: As in `create`.
        let (dir, dentry) = unsafe { (Inode::<T>::from_raw(dir), Dentry::<T>::from_raw(dentry)) };
        match T::mkdir(dir, dentry, mode) {
            Ok(()) => ptr::null_mut(),
            Err(e) => e.to_ptr(),
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn mknod(
        _idmap: *mut bindings::mnt_idmap,
        dir: *mut bindings::inode,
        dentry: *mut bindings::dentry,
        mode: u16,
        dev: u32,
    ) -> i32 {
        // SAFETY: As in `create`.
        let (dir, dentry) = unsafe { (Inode::<T>::from_raw(dir), Dentry::<T>::from_raw(dentry)) };
        from_result(|| T::mknod(dir, dentry, mode, dev).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn symlink(
        _idmap: *mut bindings::mnt_idmap,
        dir: *mut bindings::inode,
        dentry: *mut bindings::dentry,
        target: *const c_char,
    ) -> i32 {
        // SAFETY: As in `create`; `target` is a NUL-terminated kernel copy of the user's string.
        let (dir, dentry, target) = unsafe {
            (
                Inode::<T>::from_raw(dir),
                Dentry::<T>::from_raw(dentry),
                CStr::from_char_ptr(target),
            )
        };
        from_result(|| T::symlink(dir, dentry, target).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn tmpfile(
        _idmap: *mut bindings::mnt_idmap,
        dir: *mut bindings::inode,
        file: *mut bindings::file,
        mode: u16,
    ) -> i32 {
        // SAFETY: Our directory and a new file whose dentry is ours.
        let (dir, file) = unsafe { (Inode::<T>::from_raw(dir), UpperFile::from_raw(file)) };
        from_result(|| T::tmpfile(dir, file, mode).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn link(
        old: *mut bindings::dentry,
        dir: *mut bindings::inode,
        new: *mut bindings::dentry,
    ) -> i32 {
        // SAFETY: Our dentries and directory, locked by the VFS.
        let (old, dir, new) = unsafe {
            (
                Dentry::<T>::from_raw(old),
                Inode::<T>::from_raw(dir),
                Dentry::<T>::from_raw(new),
            )
        };
        from_result(|| T::link(old, dir, new).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn unlink(dir: *mut bindings::inode, dentry: *mut bindings::dentry) -> i32 {
        // SAFETY: As in `create`, with a positive dentry.
        let (dir, dentry) = unsafe { (Inode::<T>::from_raw(dir), Dentry::<T>::from_raw(dentry)) };
        from_result(|| T::unlink(dir, dentry).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn rmdir(dir: *mut bindings::inode, dentry: *mut bindings::dentry) -> i32 {
        // SAFETY: As in `unlink`.
        let (dir, dentry) = unsafe { (Inode::<T>::from_raw(dir), Dentry::<T>::from_raw(dentry)) };
        from_result(|| T::rmdir(dir, dentry).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn rename(
        _idmap: *mut bindings::mnt_idmap,
        old_dir: *mut bindings::inode,
        old: *mut bindings::dentry,
        new_dir: *mut bindings::inode,
        new: *mut bindings::dentry,
        flags: u32,
    ) -> i32 {
        // SAFETY: Our directories and dentries, locked by the VFS for a rename.
        let (old_dir, old, new_dir, new) = unsafe {
            (
                Inode::<T>::from_raw(old_dir),
                Dentry::<T>::from_raw(old),
                Inode::<T>::from_raw(new_dir),
                Dentry::<T>::from_raw(new),
            )
        };
        from_result(|| T::rename(old_dir, old, new_dir, new, flags).map(|()| 0))
    }

    // Every inode.

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn permission(
        _idmap: *mut bindings::mnt_idmap,
        inode: *mut bindings::inode,
        mask: i32,
    ) -> i32 {
        if mask & bindings::MAY_NOT_BLOCK as i32 != 0 {
            // Lower calls may sleep: ask for a walk outside RCU.
            return ECHILD.to_errno();
        }
        // SAFETY: Our inode, referenced by the path walk.
        let inode = unsafe { Inode::<T>::from_raw(inode) };
        from_result(|| T::permission(inode, mask).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn getattr(
        _idmap: *mut bindings::mnt_idmap,
        path: *const bindings::path,
        stat: *mut bindings::kstat,
        request_mask: u32,
        flags: u32,
    ) -> i32 {
        // SAFETY: A path on our mount.
        let dentry = unsafe { Dentry::<T>::from_raw((*path).dentry) };
        from_result(|| T::getattr(dentry, &mut Kstat(stat), request_mask, flags).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn update_time(
        inode: *mut bindings::inode,
        kind: bindings::fs_update_time,
        flags: u32,
    ) -> i32 {
        if kind == bindings::fs_update_time_FS_UPD_ATIME {
            if flags & ext::UNTORN_IOCB_NOWAIT as u32 != 0 {
                // The lower's update may block.
                return EAGAIN.to_errno();
            }
            // SAFETY: Our inode, referenced by the caller (`touch_atime()` on our path).
            if T::update_atime(unsafe { Inode::<T>::from_raw(inode) }) {
                return 0;
            }
        }
        // SAFETY: The VFS's arguments, passed on.
        unsafe { bindings::generic_update_time(inode, kind, flags) }
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn setattr(
        _idmap: *mut bindings::mnt_idmap,
        dentry: *mut bindings::dentry,
        attr: *mut bindings::iattr,
    ) -> i32 {
        // SAFETY: Our dentry, inode locked by the VFS.
        let dentry = unsafe { Dentry::<T>::from_raw(dentry) };
        from_result(|| T::setattr(dentry, &Iattr(attr)).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn listxattr(
        dentry: *mut bindings::dentry,
        buf: *mut c_char,
        size: usize,
    ) -> isize {
        // SAFETY: Our dentry.
        let dentry = unsafe { Dentry::<T>::from_raw(dentry) };
        from_result(|| {
            T::listxattr(
                dentry,
                OutBuffer {
                    ptr: buf.cast(),
                    size,
                },
            )
            .map(|n| n as isize)
        })
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn get_inode_acl(
        inode: *mut bindings::inode,
        acl_type: i32,
        rcu: bool,
    ) -> *mut bindings::posix_acl {
        if rcu {
            // The lower's ACL lookup may sleep.
            return ECHILD.to_ptr();
        }
        // SAFETY: Our inode, referenced by the caller.
        let inode = unsafe { Inode::<T>::from_raw(inode) };
        T::get_inode_acl(inode, acl_type).map_or_else(|e| e.to_ptr(), |acl| acl.0)
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn get_acl(
        _idmap: *mut bindings::mnt_idmap,
        dentry: *mut bindings::dentry,
        acl_type: i32,
    ) -> *mut bindings::posix_acl {
        // SAFETY: Our dentry.
        let dentry = unsafe { Dentry::<T>::from_raw(dentry) };
        T::get_acl(dentry, acl_type).map_or_else(|e| e.to_ptr(), |acl| acl.0)
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn set_acl(
        _idmap: *mut bindings::mnt_idmap,
        dentry: *mut bindings::dentry,
        acl: *mut bindings::posix_acl,
        acl_type: i32,
    ) -> i32 {
        // SAFETY: Our dentry, its inode locked by the VFS.
        let dentry = unsafe { Dentry::<T>::from_raw(dentry) };
        from_result(|| T::set_acl(dentry, Acl(acl), acl_type).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn get_link(
        dentry: *mut bindings::dentry,
        _inode: *mut bindings::inode,
        done: *mut bindings::delayed_call,
    ) -> *const c_char {
        if dentry.is_null() {
            // RCU walk: the lower's `get_link` may sleep.
            return ECHILD.to_ptr();
        }
        // SAFETY: Our dentry.
        let dentry = unsafe { Dentry::<T>::from_raw(dentry) };
        T::get_link(dentry, DelayedCall(done)).unwrap_or_else(|e| e.to_ptr())
    }

    // Files.

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn open(inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
        // SAFETY: Our inode and a new file on it.
        let (inode, file) = unsafe { (Inode::<T>::from_raw(inode), UpperFile::from_raw(file)) };
        from_result(|| T::open(inode, file).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn open_dir(inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
        // SAFETY: As in `open`.
        let (inode, file) = unsafe { (Inode::<T>::from_raw(inode), UpperFile::from_raw(file)) };
        from_result(|| T::open_dir(inode, file).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
        // SAFETY: The last reference to the file is gone; `private_data` owns the lower file.
        let lower = unsafe { (*file).private_data };
        if !lower.is_null() {
            // SAFETY: As above.
            unsafe { bindings::fput(lower.cast()) };
        }
        0
    }

    /// # Safety
    ///
    /// `raw` is the VFS's kiocb on one of our files, valid for `'a`.
    unsafe fn kiocb<'a>(raw: *mut bindings::kiocb) -> Kiocb<'a, T> {
        // SAFETY: The caller passes the VFS's kiocb on one of our files.
        unsafe {
            let file = (*raw).ki_filp;
            Kiocb {
                raw: &mut *raw,
                inode: Inode::from_raw((*file).f_inode),
                file: UpperFile::from_raw(file),
            }
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn read_iter(
        kiocb: *mut bindings::kiocb,
        iter: *mut bindings::iov_iter,
    ) -> isize {
        // SAFETY: The VFS's kiocb and iterator for this call.
        let (mut kiocb, iter) = unsafe { (Self::kiocb(kiocb), &mut *iter.cast::<UserIter>()) };
        from_result(|| T::read_iter(&mut kiocb, iter).map(|n| n as isize))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn write_iter(
        kiocb: *mut bindings::kiocb,
        iter: *mut bindings::iov_iter,
    ) -> isize {
        // SAFETY: As in `read_iter`.
        let (mut kiocb, iter) = unsafe { (Self::kiocb(kiocb), &mut *iter.cast::<UserIter>()) };
        from_result(|| T::write_iter(&mut kiocb, iter).map(|n| n as isize))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn fsync(
        file: *mut bindings::file,
        start: i64,
        end: i64,
        datasync: i32,
    ) -> i32 {
        // SAFETY: One of our files.
        let (file, inode) = unsafe {
            (
                UpperFile::from_raw(file),
                Inode::<T>::from_raw((*file).f_inode),
            )
        };
        from_result(|| T::fsync(file, inode, start, end, datasync != 0).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn fsync_dir(
        file: *mut bindings::file,
        start: i64,
        end: i64,
        datasync: i32,
    ) -> i32 {
        // SAFETY: One of our directory files; its lower file was opened in `open_dir`.
        let file = unsafe { UpperFile::from_raw(file) };
        from_result(|| {
            file.lower()
                .ok_or(EBADF)?
                .fsync_range(start, end, datasync != 0)?;
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn fallocate(
        file: *mut bindings::file,
        mode: i32,
        offset: i64,
        len: i64,
    ) -> isize {
        // SAFETY: One of our files.
        let (file, inode) = unsafe {
            (
                UpperFile::from_raw(file),
                Inode::<T>::from_raw((*file).f_inode),
            )
        };
        from_result(|| T::fallocate(file, inode, mode, offset, len).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> i32 {
        // SAFETY: One of our regular files (whose mapping can read folios) and the VMA being
        // set up, as `generic_file_mmap()` uses them.
        unsafe {
            ext::untorn_helper_file_accessed(file);
            (*vma).vm_ops = &Self::VM_OPS;
        }
        0
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn unlocked_ioctl(
        file: *mut bindings::file,
        cmd: u32,
        arg: usize,
    ) -> kernel::ffi::c_long {
        // SAFETY: One of our regular files.
        let (file, inode) = unsafe {
            (
                UpperFile::from_raw(file),
                Inode::<T>::from_raw((*file).f_inode),
            )
        };
        from_result(|| T::ioctl(file, inode, cmd, arg))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn iterate_shared(
        file: *mut bindings::file,
        ctx: *mut bindings::dir_context,
    ) -> i32 {
        // SAFETY: One of our directory files and the VFS's context.
        let file = unsafe { UpperFile::from_raw(file) };
        from_result(|| T::iterate_shared(file, &mut DirContext(ctx)).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn llseek_dir(file: *mut bindings::file, offset: i64, whence: i32) -> i64 {
        // SAFETY: One of our directory files.
        let file = unsafe { UpperFile::from_raw(file) };
        from_result(|| T::llseek_dir(file, offset, whence))
    }

    // Address space.

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn read_folio(
        _file: *mut bindings::file,
        folio: *mut bindings::folio,
    ) -> i32 {
        // SAFETY: The VM passes a locked folio of one of our regular files' mappings.
        let (folio, inode) = unsafe {
            let folio = Folio::from_raw(folio);
            (
                LockedFolio::new(folio),
                Inode::<T>::from_raw(ext::untorn_helper_folio_host(folio.as_ptr())),
            )
        };
        from_result(|| T::read_folio(inode, folio).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn readahead(rac: *mut bindings::readahead_control) {
        // SAFETY: The VM's request for one of our regular files' mappings, live for this call.
        let (request, inode) = unsafe {
            (
                Readahead {
                    rac: NonNull::new_unchecked(rac),
                    _call: core::marker::PhantomData,
                },
                Inode::<T>::from_raw(ext::untorn_helper_readahead_host(rac)),
            )
        };
        T::readahead(inode, request);
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn writepages(
        mapping: *mut bindings::address_space,
        wbc: *mut bindings::writeback_control,
    ) -> i32 {
        // SAFETY: The mapping of one of our regular files and the VM's control.
        let (inode, mut wb) = unsafe {
            (
                Inode::<T>::from_raw((*mapping).host),
                Writeback {
                    mapping,
                    wbc: &mut *wbc,
                },
            )
        };
        from_result(|| T::writepages(inode, &mut wb).map(|()| 0))
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn write_begin(
        _kiocb: *const bindings::kiocb,
        mapping: *mut bindings::address_space,
        pos: i64,
        len: u32,
        foliop: *mut *mut bindings::folio,
        _fsdata: *mut *mut core::ffi::c_void,
    ) -> i32 {
        // SAFETY: The mapping of one of our regular files, written under its `inode_lock`.
        let inode = unsafe { Inode::<T>::from_raw((*mapping).host) };
        from_result(|| {
            let folio = T::write_begin(inode, pos, len as usize)?;
            // SAFETY: The VFS's out parameter; `write_end` gets the folio back.
            unsafe { *foliop = folio.into_raw() };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn write_end(
        _kiocb: *const bindings::kiocb,
        mapping: *mut bindings::address_space,
        pos: i64,
        len: u32,
        copied: u32,
        folio: *mut bindings::folio,
        _fsdata: *mut core::ffi::c_void,
    ) -> i32 {
        // SAFETY: As in `write_begin`; `folio` is what it returned, still locked.
        let (inode, folio) = unsafe {
            (
                Inode::<T>::from_raw((*mapping).host),
                OwnedLockedFolio::from_raw(folio),
            )
        };
        T::write_end(inode, pos, len as usize, copied as usize, folio) as i32
    }
}

/// Gets the upper inode for `lower` (`iget5_locked()`), creating it with `setup` if new.
pub fn get_inode<T: StackedFs>(
    sb: &SuperBlock<T>,
    lower: &LowerInode,
    setup: impl FnOnce(&Inode<T>) -> Result,
) -> Result<ARef<Inode<T>>> {
    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn test(inode: *mut bindings::inode, lower: *mut core::ffi::c_void) -> i32 {
        // SAFETY: `iget5_locked` passes inodes of our super block; `state` is the second
        // field of the allocation (see `InodeAlloc`); `lower` is only compared.
        let state = unsafe { &*ptr::addr_of!((*inode.cast::<InodeAllocHeader>()).state) };
        (state.lower.load(core::sync::atomic::Ordering::Acquire) == lower.cast()).into()
    }
    /// # Safety
    ///
    /// Called by the VFS with the arguments its contract for this operation guarantees.
    unsafe extern "C" fn set(inode: *mut bindings::inode, lower: *mut core::ffi::c_void) -> i32 {
        // SAFETY: As in `test`; `lower` is the referenced lower inode of the caller, and we take
        // a reference of our own for the new inode.
        unsafe {
            bindings::ihold(lower.cast());
            let state = &*ptr::addr_of!((*inode.cast::<InodeAllocHeader>()).state);
            state
                .lower
                .store(lower.cast(), core::sync::atomic::Ordering::Release);
            (*inode).i_ino = (*lower.cast::<bindings::inode>()).i_ino;
        }
        0
    }
    let lower_ptr = lower.as_ptr();
    // SAFETY: `sb` is live; the callbacks follow `iget5_locked`'s contract. The hash is the
    // lower inode's address, unique while we hold it.
    let inode = unsafe {
        bindings::iget5_locked(
            sb.as_ptr(),
            lower_ptr as u64,
            Some(test),
            Some(set),
            lower_ptr.cast(),
        )
    };
    if inode.is_null() {
        return Err(ENOMEM);
    }
    // SAFETY: `iget5_locked` returned a referenced inode of ours.
    let is_new = unsafe { ext::untorn_helper_inode_is_new(inode) };
    if is_new {
        // SAFETY: A new inode, locked (`I_NEW`) and set up by us alone; `lower` is set.
        let new = unsafe { Inode::<T>::from_raw(inode) };
        if let Err(e) = setup(new) {
            // SAFETY: The new inode is ours to fail; `iget_failed` drops our reference, and the
            // eviction releases the lower inode.
            unsafe { bindings::iget_failed(inode) };
            return Err(e);
        }
        // SAFETY: Set up; publish it.
        unsafe { bindings::unlock_new_inode(inode) };
    }
    // SAFETY: We own the reference `iget5_locked` returned.
    Ok(unsafe { ARef::from_raw(ptr::NonNull::new_unchecked(inode.cast())) })
}

/// The start of `InodeAlloc<T>`, independent of `T`, for the `iget5_locked` callbacks.
#[repr(C)]
struct InodeAllocHeader {
    vfs: bindings::inode,
    state: StackedInodeState,
}

/// Sets the operations and attributes of a new inode from its lower inode.
pub fn init_inode<T: StackedFs>(inode: &Inode<T>) {
    let lower = inode.lower();
    let mode = u32::from(lower.mode());
    let raw = inode.as_ptr();
    // SAFETY: The inode is new (`I_NEW`), set up by us alone.
    unsafe {
        (*raw).i_mode = lower.mode();
        match mode & bindings::S_IFMT {
            bindings::S_IFDIR => {
                (*raw).i_op = &Tables::<T>::DIR_INODE;
                (*raw).__bindgen_anon_3.i_fop = &Tables::<T>::DIR;
            }
            bindings::S_IFREG => {
                (*raw).i_op = &Tables::<T>::FILE_INODE;
                (*raw).__bindgen_anon_3.i_fop = &Tables::<T>::FILE;
                (*(*raw).i_mapping).a_ops = &Tables::<T>::AOPS;
                ext::untorn_helper_mapping_set_large_folios((*raw).i_mapping);
            }
            bindings::S_IFLNK => {
                (*raw).i_op = &Tables::<T>::SYMLINK_INODE;
            }
            _ => {
                (*raw).i_op = &Tables::<T>::FILE_INODE;
                bindings::init_special_inode(raw, lower.mode(), (*lower.as_ptr()).i_rdev);
            }
        }
    }
    copy_attributes(inode);
    inode.set_size(lower.size());
}

/// Copies owner, mode, link count, times and flags from the lower inode (not the size: the
/// upper size leads while dirty data is cached).
pub fn copy_attributes<T: StackedFs>(inode: &Inode<T>) {
    // SAFETY: Both inodes are live; the fields are copied as `fsstack_copy_attr_all()` does.
    unsafe { ext::untorn_helper_copy_attr(inode.as_ptr(), inode.lower().as_ptr()) };
}

/// Makes the root dentry of a new super block over `lower_root`.
pub fn make_root<T: StackedFs>(sb: &SuperBlock<T>, lower_root: ARef<LowerDentry>) -> Result {
    let lower_inode = lower_root.inode().ok_or(ENOENT)?;
    let inode = get_inode(sb, lower_inode, |i| {
        init_inode(i);
        Ok(())
    })?;
    // SAFETY: `d_make_root` takes over the inode reference (dropping it on failure).
    let root = unsafe { bindings::d_make_root(ARef::into_raw(inode).as_ptr().cast()) };
    if root.is_null() {
        return Err(ENOMEM);
    }
    // SAFETY: `root` is the new root dentry of `sb`, not yet visible.
    unsafe {
        Dentry::<T>::from_raw(root).set_lower(lower_root)?;
        (*sb.as_ptr()).s_root = root;
    }
    Ok(())
}

/// The `fill_super` of a stacked filesystem, called from the C mount code.
///
/// # Safety
///
/// `sb` is a new super block of type `T` being filled; `lower` a referenced path.
pub unsafe fn fill_super<T: StackedFs>(
    sb: *mut bindings::super_block,
    lower: *const bindings::path,
    magic: u64,
    data: T::SbData,
) -> Result<&'static SuperBlock<T>> {
    let params = super::vfs::SuperParams {
        magic,
        max_bytes: None,
        own_mount: None,
    };
    // SAFETY: Per the contract.
    unsafe { fill_super_with(sb, &*lower, params, data) }
}

/// The `fill_super` of a stacked filesystem over the root of `mnt`, a mount of its own (such as
/// [`PrivateMount::tmpfs_with_one_file`]), which the super block takes over; files end at
/// `max_bytes` (`s_maxbytes`).
///
/// # Safety
///
/// `sb` is a new super block of type `T` being filled.
pub(crate) unsafe fn fill_super_over<T: StackedFs>(
    sb: *mut bindings::super_block,
    mnt: PrivateMount,
    magic: u64,
    max_bytes: i64,
    data: T::SbData,
) -> Result<&'static SuperBlock<T>> {
    let root = mnt.root();
    let params = super::vfs::SuperParams {
        magic,
        max_bytes: Some(max_bytes),
        own_mount: Some(mnt),
    };
    // SAFETY: Per the contract; `root` stays valid after `mnt` moves into the super block,
    // which keeps the mount.
    unsafe { fill_super_with(sb, &root, params, data) }
}

/// # Safety
///
/// `sb` is a new super block of type `T` being filled; `lower` is a path that stays valid for
/// the call.
unsafe fn fill_super_with<T: StackedFs>(
    sb: *mut bindings::super_block,
    lower: &bindings::path,
    params: super::vfs::SuperParams,
    data: T::SbData,
) -> Result<&'static SuperBlock<T>> {
    // SAFETY: Per the contract.
    let new = unsafe { NewSuperBlock::<T>::from_raw(sb) };
    let sb = new.fill(
        lower,
        params,
        data,
        &Tables::<T>::SUPER,
        &Tables::<T>::DENTRY,
        &Tables::<T>::XATTR_HANDLERS,
    )?;
    // SAFETY: The lower root dentry is valid (per the contract); we take our own reference.
    let lower_root = unsafe {
        ext::untorn_helper_dget(lower.dentry);
        LowerDentry::from_owned(lower.dentry)
    };
    make_root(sb, lower_root)?;
    Ok(sb)
}

/// The `kill_sb` of a stacked filesystem.
///
/// # Safety
///
/// `sb` is a super block of type `T` being destroyed.
pub unsafe fn kill_sb<T: StackedFs>(sb: *mut bindings::super_block) {
    // SAFETY: Per the contract. `kill_anon_super()` in three steps: shut down (write back and
    // evict every inode, releasing lower objects), free our state (whose debugfs directory is
    // named after the device number), then free the device number for reuse.
    unsafe {
        let dev = (*sb).s_dev;
        bindings::generic_shutdown_super(sb);
        free_sb_info::<T>(sb);
        bindings::free_anon_bdev(dev);
    }
}

/// The registration of the filesystem type defined by the module's C mount code
/// (`untorn_mount.c`); unregistered on drop.
pub struct Registration(());

impl Registration {
    /// Registers the filesystem type.
    pub fn new() -> Result<Self> {
        // SAFETY: The C mount code's `file_system_type` is a static of this module.
        kernel::error::to_result(unsafe { ext::untorn_helper_register_filesystem() })?;
        Ok(Self(()))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: Registered in `new`. No super block exists (each holds a module reference, so
        // the module cannot be unloading otherwise); wait for inodes still being freed after an
        // RCU grace period, whose `free_inode` is code of this module.
        unsafe {
            ext::untorn_helper_unregister_filesystem();
            bindings::rcu_barrier();
        }
    }
}
