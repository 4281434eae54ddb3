// SPDX-License-Identifier: GPL-2.0

//! VFS objects of a stacked filesystem: its super block, inodes and dentries, each tied to its
//! counterpart in the lower filesystem, and the lower objects themselves.
//!
//! A stacked filesystem (`fs/untorn`) implements [`super::ops::StackedFs`]; the operation tables
//! in [`super::ops`] turn the VFS's raw pointers into the references defined here.

use core::{
    marker::PhantomData,
    ptr::{self, NonNull},
    sync::atomic::{AtomicPtr, Ordering},
};

use kernel::{
    bindings,
    error::{code::*, from_err_ptr, to_result, Error, Result},
    sync::aref::{ARef, AlwaysRefCounted},
    types::Opaque,
};

use super::{
    bindings as ext,
    cred::MounterCred,
    folio::{Folio, FolioLock, OwnedLockedFolio},
    ops::StackedFs,
};

/// The most folios [`LowerFile::read_folios`] reads and [`LowerFile::write_folios`] writes at
/// once (a readahead batch, a writeback batch).
pub const IO_FOLIOS_MAX: usize = 32;

/// What the super block of a stacked filesystem owns (`s_fs_info`).
pub struct SbInfo<T: StackedFs> {
    /// A private clone of the lower mount: later changes to the user's mount do not affect us.
    pub(crate) lower_mnt: PrivateMount,
    /// The mounter's credentials, for every call into the lower.
    pub creds: MounterCred,
    /// The filesystem's own data.
    pub data: T::SbData,
}

/// A private clone of a mount, from `clone_private_mount()`, unmounted on drop.
///
/// # Invariants
///
/// `0` is a valid `vfsmount` that we hold until drop.
pub(crate) struct PrivateMount(NonNull<bindings::vfsmount>);

// SAFETY: A `vfsmount` reference may be used and dropped from any thread.
unsafe impl Send for PrivateMount {}
// SAFETY: Only `&self` accessors that read immutable fields exist.
unsafe impl Sync for PrivateMount {}

impl PrivateMount {
    fn clone_from(path: &bindings::path) -> Result<Self> {
        // SAFETY: `path` is a valid path held by the caller.
        let mnt = from_err_ptr(unsafe { bindings::clone_private_mount(path) })?;
        // INVARIANT: `clone_private_mount` returned a new reference.
        NonNull::new(mnt).map(Self).ok_or(EINVAL)
    }

    /// A new tmpfs instance of our own, in no namespace, holding one empty regular file `name`
    /// of `size` bytes (sparse), mode 0600, owned by the current task's fsuid, in a root
    /// directory (mode 0755) that is immutable: no name can be added, removed or renamed.
    /// The namespace of a filesystem that shows one file (untorn's raw mode).
    pub(crate) fn tmpfs_with_one_file(name: &CStr, size: i64) -> Result<Self> {
        // SAFETY: A NUL-terminated name; the type is returned with a module reference.
        let fs_type = unsafe { bindings::get_fs_type(c"tmpfs".as_char_ptr()) };
        if fs_type.is_null() {
            return Err(ENODEV);
        }
        // The parser cuts the option string in place: it must be writable.
        let mut options = *b"mode=0755\0";
        // SAFETY: `fs_type` is a registered type; the name and the option string are
        // NUL-terminated and outlive the call (tmpfs copies what it keeps).
        let mnt = unsafe {
            bindings::vfs_kern_mount(
                fs_type,
                ext::UNTORN_SB_KERNMOUNT as i32,
                c"untorn".as_char_ptr(),
                options.as_mut_ptr().cast(),
            )
        };
        // SAFETY: Gives back the reference of `get_fs_type()`, as `put_filesystem()` does (not
        // exported); the mount holds its own.
        unsafe { bindings::module_put((*fs_type).owner) };
        let mnt = from_err_ptr(mnt)?;
        // INVARIANT: A new mount that we own; `kern_unmount()` is how an internal mount is
        // given back.
        let this = Self(NonNull::new(mnt).ok_or(EINVAL)?);
        let root = this.root();
        let flags = bindings::O_CREAT | bindings::O_EXCL | bindings::O_RDWR | bindings::O_LARGEFILE;
        // SAFETY: `root` is a path of our live mount; the name is NUL-terminated.
        let file = from_err_ptr(unsafe {
            bindings::file_open_root(&root, name.as_char_ptr(), flags as i32, 0o600)
        })?;
        // SAFETY: `file` is the new file; `vfs_truncate()` takes its path by reference.
        let ret = unsafe { bindings::vfs_truncate(&(*file).__bindgen_anon_1.f_path, size) };
        let truncated = to_result(ret);
        // SAFETY: Our reference from `file_open_root()`.
        unsafe { bindings::fput(file) };
        truncated?;
        // SAFETY: The root dentry of a live mount has an inode.
        unsafe { ext::untorn_helper_inode_set_immutable((*root.dentry).d_inode) };
        Ok(this)
    }

    /// The path of the mount's root, borrowed from it (no references taken).
    pub(crate) fn root(&self) -> bindings::path {
        bindings::path {
            mnt: self.0.as_ptr(),
            // SAFETY: A live mount's root never changes.
            dentry: unsafe { (*self.0.as_ptr()).mnt_root },
        }
    }
}

impl Drop for PrivateMount {
    fn drop(&mut self) {
        // SAFETY: By the type invariants we own this mount.
        unsafe { bindings::kern_unmount(self.0.as_ptr()) };
    }
}

/// The super block of a stacked filesystem.
///
/// # Invariants
///
/// `s_fs_info` points to a `SbInfo<T>` from the time `fill_super` succeeds until `kill_sb`.
#[repr(transparent)]
pub struct SuperBlock<T: StackedFs>(Opaque<bindings::super_block>, PhantomData<T>);

impl<T: StackedFs> SuperBlock<T> {
    /// # Safety
    ///
    /// `ptr` is a super block of filesystem type `T` whose `s_fs_info` is set, valid for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::super_block) -> &'a Self {
        // SAFETY: `Self` is `repr(transparent)` over the super block, valid per the contract.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::super_block {
        self.0.get()
    }

    /// The filesystem's information.
    pub fn info(&self) -> &SbInfo<T> {
        // SAFETY: By the type invariants `s_fs_info` is a live `SbInfo<T>`.
        unsafe { &*(*self.as_ptr()).s_fs_info.cast::<SbInfo<T>>() }
    }

    /// The device number userspace sees in `st_dev`.
    pub fn dev(&self) -> u32 {
        // SAFETY: `s_dev` is set when the super block is created and never changes.
        unsafe { (*self.as_ptr()).s_dev }
    }

    /// The lower mount, for building lower paths.
    pub(crate) fn lower_mnt(&self) -> *mut bindings::vfsmount {
        self.info().lower_mnt.0.as_ptr()
    }

    /// Runs `f`, which changes the lower filesystem, with write access to the lower mount (which
    /// also waits while the lower is frozen, and fails with `EROFS` on a read-only lower) and the
    /// mounter's credentials.
    pub fn as_mounter_writing<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let mnt = self.lower_mnt();
        // SAFETY: Our private mount is live; dropped below on every path.
        to_result(unsafe { bindings::mnt_want_write(mnt) })?;
        let result = self.as_mounter(f);
        // SAFETY: Taken above.
        unsafe { bindings::mnt_drop_write(mnt) };
        result
    }

    /// Whether the lower is read-only (its mount or its super block).
    pub fn lower_is_readonly(&self) -> bool {
        let mnt = self.lower_mnt();
        // SAFETY: Our private mount and its super block are live; flags are read as the VFS does.
        unsafe {
            (*mnt).mnt_flags & ext::UNTORN_MNT_READONLY != 0
                || (*(*mnt).mnt_sb).s_flags & ext::UNTORN_SB_RDONLY != 0
        }
    }

    /// Runs `f` with the mounter's credentials installed.
    pub fn as_mounter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.info().creds.override_current();
        f()
    }
}

/// A super block being filled: its fields are still ours to set.
pub struct NewSuperBlock<T: StackedFs>(*mut bindings::super_block, PhantomData<T>);

/// What a new super block takes from its lower root.
pub(crate) struct SuperParams {
    /// `s_magic`.
    pub(crate) magic: u64,
    /// `s_maxbytes`, if not the lower's.
    pub(crate) max_bytes: Option<i64>,
    /// The mount of the lower root to keep, if the super block has one of its own; else a
    /// private clone of the lower root's mount is made.
    pub(crate) own_mount: Option<PrivateMount>,
}

impl<T: StackedFs> NewSuperBlock<T> {
    /// # Safety
    ///
    /// `sb` is a new super block of type `T` being filled by this thread, without `s_fs_info`.
    pub(crate) unsafe fn from_raw(sb: *mut bindings::super_block) -> Self {
        Self(sb, PhantomData)
    }

    /// Sets the super block up over `lower_root`, through a private clone of its mount or, if
    /// given, through `params.own_mount` (whose root `lower_root` is), and returns it. On error
    /// the super block is left for `kill_sb` to free.
    pub(crate) fn fill(
        self,
        lower_root: &bindings::path,
        params: SuperParams,
        data: T::SbData,
        ops: &'static bindings::super_operations,
        dops: &'static bindings::dentry_operations,
        xattr: &'static super::ops::XattrHandlers,
    ) -> Result<&'static SuperBlock<T>> {
        let sb = self.0;
        // SAFETY: `lower_root` is a valid path; its dentry has an inode (it is a directory).
        let lower_sb = unsafe { (*(*lower_root.dentry).d_inode).i_sb };
        // SAFETY: The lower super block outlives our mount of it.
        let lower_depth = unsafe { (*lower_sb).s_stack_depth };
        if lower_depth + 1 > bindings::FILESYSTEM_MAX_STACK_DEPTH as i32 {
            pr_err!("untorn: maximum stacking depth exceeded\n");
            return Err(EINVAL);
        }
        // SAFETY: `lower_root.mnt` is valid; idmapped lower mounts are not supported, as in
        // ecryptfs: all lower calls pass `nop_mnt_idmap`.
        if unsafe { ext::untorn_helper_is_idmapped_mnt(lower_root.mnt) } {
            pr_err!("untorn: idmapped lower mounts are not supported\n");
            return Err(EINVAL);
        }
        let lower_mnt = match params.own_mount {
            Some(mnt) => mnt,
            None => PrivateMount::clone_from(lower_root)?,
        };
        let info = KBox::new(
            SbInfo::<T> {
                lower_mnt,
                creds: MounterCred::from_current()?,
                data,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: The super block is new and ours (type invariant); setting its fields before
        // it is published is what `fill_super` is for. `kill_sb` frees `s_fs_info`.
        unsafe {
            (*sb).s_fs_info = KBox::into_raw(info).cast();
            (*sb).s_stack_depth = lower_depth + 1;
            (*sb).s_maxbytes = params.max_bytes.unwrap_or((*lower_sb).s_maxbytes);
            (*sb).s_blocksize = (*lower_sb).s_blocksize;
            (*sb).s_blocksize_bits = (*lower_sb).s_blocksize_bits;
            (*sb).s_time_gran = (*lower_sb).s_time_gran;
            (*sb).s_time_min = (*lower_sb).s_time_min;
            (*sb).s_time_max = (*lower_sb).s_time_max;
            (*sb).s_magic = params.magic as usize;
            (*sb).s_op = ops;
            (*sb).s_xattr = xattr.as_ptr();
            // `SB_NOSEC` as overlayfs inherits it: the VFS then marks an inode `S_NOSEC` after a
            // write found no privilege to drop, and clears it when a set-ID mode or a
            // `security.*` xattr is set through us, which lets writes skip that check (and
            // writethrough take the inode lock shared).
            (*sb).s_flags |= (*lower_sb).s_flags & (ext::UNTORN_SB_POSIXACL | ext::UNTORN_SB_NOSEC);
            if (*lower_sb).s_flags & ext::UNTORN_SB_RDONLY != 0 {
                (*sb).s_flags |= ext::UNTORN_SB_RDONLY;
            }
            (*sb).s_iflags |= (*lower_sb).s_iflags & bindings::SB_I_STABLE_WRITES as usize;
            bindings::set_default_d_op(sb, dops);
        }
        // A backing device of our own: an anonymous super block otherwise has
        // `noop_backing_dev_info`, whose dirty folios the flusher never writes back.
        // SAFETY: `sb` is being filled.
        to_result(unsafe { ext::untorn_helper_super_setup_bdi(sb) })?;
        // SAFETY: `s_fs_info` is now set.
        Ok(unsafe { SuperBlock::from_raw(sb) })
    }
}

/// Frees what [`NewSuperBlock::fill`] set up; called from `kill_sb` after the super block is shut
/// down.
///
/// # Safety
///
/// `sb` is an untorn super block that is being destroyed; nothing else uses `s_fs_info`.
pub(crate) unsafe fn free_sb_info<T: StackedFs>(sb: *mut bindings::super_block) {
    // SAFETY: Per the contract.
    let info = unsafe { (*sb).s_fs_info };
    if !info.is_null() {
        // SAFETY: `fill` made it with `KBox::into_raw`; nothing else refers to it any more.
        drop(unsafe { KBox::from_raw(info.cast::<SbInfo<T>>()) });
        // SAFETY: Per the contract.
        unsafe { (*sb).s_fs_info = ptr::null_mut() };
    }
}

use kernel::{alloc::KBox, prelude::*, str::CStrExt};

/// An inode of the lower filesystem.
///
/// # Invariants
///
/// Always a valid `struct inode` with a positive reference count while referenced.
#[repr(transparent)]
pub struct LowerInode(Opaque<bindings::inode>);

// SAFETY: Inodes are reference counted with atomic operations and may be used from any thread.
unsafe impl Send for LowerInode {}
// SAFETY: As above; the accessors read fields with the kernel's rules for them.
unsafe impl Sync for LowerInode {}

// SAFETY: `ihold`/`iput` keep the inode alive, as `AlwaysRefCounted` requires.
unsafe impl AlwaysRefCounted for LowerInode {
    fn inc_ref(&self) {
        // SAFETY: The inode is referenced, so `ihold` is allowed.
        unsafe { bindings::ihold(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { bindings::iput(obj.as_ptr().cast()) };
    }
}

impl LowerInode {
    pub(crate) fn as_ptr(&self) -> *mut bindings::inode {
        self.0.get()
    }

    /// # Safety
    ///
    /// `ptr` is a valid inode for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::inode) -> &'a Self {
        // SAFETY: `repr(transparent)`; valid per the contract.
        unsafe { &*ptr.cast() }
    }

    /// The file type and permission bits.
    pub fn mode(&self) -> u16 {
        // SAFETY: The file type bits never change; permission bits are read as `generic_fillattr`
        // does, without a lock.
        unsafe { (*self.as_ptr()).i_mode }
    }

    /// The size, read consistently.
    pub fn size(&self) -> i64 {
        // SAFETY: `i_size_read` may be called on any live inode.
        unsafe { ext::untorn_helper_i_size_read(self.as_ptr()) }
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        // SAFETY: `i_ino` is set once when the inode is created.
        unsafe { (*self.as_ptr()).i_ino }
    }

    /// The lower super block's logical block size, for direct I/O when `statx` says nothing.
    pub fn block_size(&self) -> u32 {
        // SAFETY: `i_sb` is set at creation and outlives the inode.
        unsafe { ext::untorn_helper_i_blocksize(self.as_ptr()) }
    }
}

/// A dentry of the lower filesystem.
///
/// # Invariants
///
/// A valid dentry with a positive reference count while referenced.
#[repr(transparent)]
pub struct LowerDentry(Opaque<bindings::dentry>);

// SAFETY: Dentries are reference counted and may be used from any thread.
unsafe impl Send for LowerDentry {}
// SAFETY: As above.
unsafe impl Sync for LowerDentry {}

// SAFETY: `dget`/`dput` keep the dentry alive.
unsafe impl AlwaysRefCounted for LowerDentry {
    fn inc_ref(&self) {
        // SAFETY: The dentry is referenced.
        unsafe { ext::untorn_helper_dget(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { bindings::dput(obj.as_ptr().cast()) };
    }
}

impl LowerDentry {
    pub(crate) fn as_ptr(&self) -> *mut bindings::dentry {
        self.0.get()
    }

    /// # Safety
    ///
    /// `ptr` is a valid dentry for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::dentry) -> &'a Self {
        // SAFETY: `repr(transparent)`; valid per the contract.
        unsafe { &*ptr.cast() }
    }

    /// Takes ownership of a reference.
    ///
    /// # Safety
    ///
    /// `ptr` is a valid dentry whose reference the caller gives up.
    pub(crate) unsafe fn from_owned(ptr: *mut bindings::dentry) -> ARef<Self> {
        // SAFETY: Per the contract.
        unsafe { ARef::from_raw(NonNull::new_unchecked(ptr.cast())) }
    }

    /// The inode, or `None` for a negative dentry.
    pub fn inode(&self) -> Option<&LowerInode> {
        // SAFETY: Reading `d_inode` once: a positive dentry we hold stays positive (only
        // `d_delete` of an unused dentry would clear it).
        let inode = unsafe { ptr::read_volatile(&(*self.as_ptr()).d_inode) };
        // SAFETY: A positive dentry holds its inode.
        (!inode.is_null()).then(|| unsafe { LowerInode::from_raw(inode) })
    }

    /// Whether the dentry is unhashed (deleted or never added).
    pub fn is_unhashed(&self) -> bool {
        // SAFETY: `d_unhashed` reads the hash node.
        unsafe { ext::untorn_helper_d_unhashed(self.as_ptr()) }
    }

    /// Dentries that a stacked filesystem must not cross: automount points, and directories
    /// with their own name hashing (casefolded), as overlayfs' `ovl_dentry_weird()`. (Dentries
    /// that the lower revalidates are fine: with `CONFIG_FS_ENCRYPTION` every ext4 dentry is one.)
    pub fn is_weird(&self) -> bool {
        // SAFETY: `d_flags` bits tested here are set when the dentry is set up.
        let flags = unsafe { (*self.as_ptr()).d_flags };
        flags
            & (bindings::dentry_flags_DCACHE_NEED_AUTOMOUNT
                | bindings::dentry_flags_DCACHE_MANAGE_TRANSIT
                | bindings::dentry_flags_DCACHE_OP_HASH
                | bindings::dentry_flags_DCACHE_OP_COMPARE)
            != 0
    }
}

/// Per-inode state that every stacked inode has.
pub struct StackedInodeState {
    /// The lower inode, referenced; set by `iget5_locked`'s `set` callback.
    pub(crate) lower: AtomicPtr<bindings::inode>,
    /// The inode-lifetime lower files for the page cache, read-write and read-only, each set
    /// once (at the first open that needs it) and released at eviction. They cannot be per-open
    /// files: writeback runs after the last close.
    pub(crate) data_rw: AtomicPtr<bindings::file>,
    pub(crate) data_ro: AtomicPtr<bindings::file>,
}

/// The memory of a stacked inode: the VFS inode first, then ours.
#[repr(C)]
pub(crate) struct InodeAlloc<T: StackedFs> {
    pub(crate) vfs: Opaque<bindings::inode>,
    pub(crate) state: StackedInodeState,
    pub(crate) data: T::InodeData,
}

/// An inode of a stacked filesystem.
///
/// # Invariants
///
/// Embedded in an `InodeAlloc<T>` allocated by the filesystem's `alloc_inode`; once the inode
/// is out of `I_NEW`, `state.lower` is set and stays set until eviction.
#[repr(transparent)]
pub struct Inode<T: StackedFs>(Opaque<bindings::inode>, PhantomData<T>);

// SAFETY: Inodes are reference counted and used from any thread; `T::InodeData` is `Sync`.
unsafe impl<T: StackedFs> Send for Inode<T> {}
// SAFETY: As above.
unsafe impl<T: StackedFs> Sync for Inode<T> {}

// SAFETY: `ihold`/`iput` keep the inode alive.
unsafe impl<T: StackedFs> AlwaysRefCounted for Inode<T> {
    fn inc_ref(&self) {
        // SAFETY: The inode is referenced.
        unsafe { bindings::ihold(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { bindings::iput(obj.as_ptr().cast()) };
    }
}

impl<T: StackedFs> Inode<T> {
    /// # Safety
    ///
    /// `ptr` is an inode of a super block of type `T`, valid for `'a`, out of `I_NEW`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::inode) -> &'a Self {
        // SAFETY: `repr(transparent)`; valid per the contract.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::inode {
        self.0.get()
    }

    fn alloc(&self) -> &InodeAlloc<T> {
        // SAFETY: By the type invariants the inode is the first field of an `InodeAlloc<T>`.
        unsafe { &*self.as_ptr().cast::<InodeAlloc<T>>() }
    }

    /// The filesystem's data of this inode.
    pub fn data(&self) -> &T::InodeData {
        &self.alloc().data
    }

    /// The lower inode.
    pub fn lower(&self) -> &LowerInode {
        let lower = self.alloc().state.lower.load(Ordering::Acquire);
        // SAFETY: By the type invariants `lower` is set and referenced until eviction, which
        // cannot run while we are borrowed.
        unsafe { LowerInode::from_raw(lower) }
    }

    /// The super block.
    pub fn super_block(&self) -> &SuperBlock<T> {
        // SAFETY: `i_sb` is set at allocation and is of type `T` (type invariants).
        unsafe { SuperBlock::from_raw((*self.as_ptr()).i_sb) }
    }

    /// The file type and permission bits.
    pub fn mode(&self) -> u16 {
        // SAFETY: Read as `generic_fillattr` does.
        unsafe { (*self.as_ptr()).i_mode }
    }

    /// Whether this is a regular file.
    pub fn is_regular(&self) -> bool {
        u32::from(self.mode()) & bindings::S_IFMT == bindings::S_IFREG
    }

    /// The size, read consistently.
    pub fn size(&self) -> i64 {
        // SAFETY: `i_size_read` may be called on any live inode.
        unsafe { ext::untorn_helper_i_size_read(self.as_ptr()) }
    }

    /// Sets the size; callers hold `i_rwsem` (as every `i_size_write` caller must).
    pub fn set_size(&self, size: i64) {
        // SAFETY: The VFS holds `i_rwsem` in every operation that calls this (write_iter under
        // `inode_lock`, setattr, fallocate, write_end), which serialises `i_size_write`.
        unsafe { ext::untorn_helper_i_size_write(self.as_ptr(), size) };
    }

    /// The lower file for page-cache I/O: the read-write one if open, else the read-only one.
    pub fn data_file(&self) -> Option<&LowerFile> {
        let state = &self.alloc().state;
        [&state.data_rw, &state.data_ro]
            .into_iter()
            .find_map(|slot| {
                let file = slot.load(Ordering::Acquire);
                // SAFETY: Once set, a data file stays until eviction, which cannot run while the
                // inode is borrowed.
                (!file.is_null()).then(|| unsafe { LowerFile::from_raw(file) })
            })
    }

    /// The read-write lower data file, for writeback.
    pub fn data_file_rw(&self) -> Option<&LowerFile> {
        let file = self.alloc().state.data_rw.load(Ordering::Acquire);
        // SAFETY: As in `data_file`.
        (!file.is_null()).then(|| unsafe { LowerFile::from_raw(file) })
    }

    /// Makes sure the data file for `write` (or reading) is open, opening it on `lower_path`
    /// with the mounter's credentials.
    pub fn open_data_file(&self, lower_path: &LowerPath, write: bool) -> Result {
        let state = &self.alloc().state;
        let slot = if write {
            &state.data_rw
        } else {
            &state.data_ro
        };
        if !slot.load(Ordering::Acquire).is_null() || (!write && self.data_file().is_some()) {
            return Ok(());
        }
        let flags = if write {
            bindings::O_RDWR
        } else {
            bindings::O_RDONLY
        } | bindings::O_LARGEFILE
            | bindings::O_NOATIME;
        let file = LowerFile::open_internal(lower_path, flags, &self.super_block().info().creds)?;
        let new = ARef::into_raw(file).as_ptr().cast::<bindings::file>();
        if slot
            .compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another open won the race; its file serves us as well.
            // SAFETY: We own the reference `into_raw` gave us and never published it.
            drop(unsafe { ARef::<LowerFile>::from_raw(NonNull::new_unchecked(new.cast())) });
        }
        Ok(())
    }

    /// Releases the lower inode and data files; called once, at eviction.
    pub(crate) fn release_lower(&self) {
        let state = &self.alloc().state;
        for slot in [&state.data_rw, &state.data_ro] {
            let file = slot.swap(ptr::null_mut(), Ordering::AcqRel);
            if !file.is_null() {
                // SAFETY: The slot owned this reference.
                unsafe { bindings::fput(file) };
            }
        }
        let lower = state.lower.swap(ptr::null_mut(), Ordering::AcqRel);
        if !lower.is_null() {
            // SAFETY: The slot owned this reference, taken in `iget5_locked`'s `set`.
            unsafe { bindings::iput(lower) };
        }
    }
}

/// A path in the lower filesystem: the private lower mount and a lower dentry.
///
/// # Invariants
///
/// Both the mount and the dentry are referenced by this value.
pub struct LowerPath(bindings::path);

impl LowerPath {
    /// The path of `dentry` in the lower mount of `sb`.
    pub fn new<T: StackedFs>(sb: &SuperBlock<T>, dentry: &LowerDentry) -> Self {
        let path = bindings::path {
            mnt: sb.lower_mnt(),
            dentry: dentry.as_ptr(),
        };
        // SAFETY: Both parts are live; `path_get` takes a reference on each.
        unsafe { bindings::path_get(&path) };
        // INVARIANT: `path_get` took the references.
        Self(path)
    }

    pub(crate) fn as_raw(&self) -> &bindings::path {
        &self.0
    }

    /// The dentry.
    pub fn dentry(&self) -> &LowerDentry {
        // SAFETY: Referenced by `self`.
        unsafe { LowerDentry::from_raw(self.0.dentry) }
    }
}

impl Drop for LowerPath {
    fn drop(&mut self) {
        // SAFETY: By the type invariants we own these references.
        unsafe { bindings::path_put(&self.0) };
    }
}

/// An open file of the lower filesystem.
///
/// # Invariants
///
/// A valid `struct file` with a positive reference count while referenced.
#[repr(transparent)]
pub struct LowerFile(Opaque<bindings::file>);

// SAFETY: Files are reference counted and may be used from any thread.
unsafe impl Send for LowerFile {}
// SAFETY: As above.
unsafe impl Sync for LowerFile {}

// SAFETY: `get_file`/`fput` keep the file alive.
unsafe impl AlwaysRefCounted for LowerFile {
    fn inc_ref(&self) {
        // SAFETY: The file is referenced.
        unsafe { bindings::get_file(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { bindings::fput(obj.as_ptr().cast()) };
    }
}

impl LowerFile {
    /// # Safety
    ///
    /// `ptr` is a valid file for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::file) -> &'a Self {
        // SAFETY: `repr(transparent)`; valid per the contract.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::file {
        self.0.get()
    }

    /// Opens an internal file (not in any file table, not counted in `nr_files`), as the page
    /// cache's data file: `kernel_file_open()`.
    pub fn open_internal(path: &LowerPath, flags: u32, creds: &MounterCred) -> Result<ARef<Self>> {
        // SAFETY: `path` is a referenced path and `creds` a valid credential.
        let file = from_err_ptr(unsafe {
            bindings::kernel_file_open(path.as_raw(), flags as i32, creds.as_ptr())
        })?;
        // SAFETY: `kernel_file_open` returned a new reference.
        Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(file.cast())) })
    }

    /// Opens a lower file for an open of the user (`dentry_open()`), e.g. for `O_DIRECT` I/O or
    /// a directory.
    pub fn open(path: &LowerPath, flags: u32, creds: &MounterCred) -> Result<ARef<Self>> {
        // SAFETY: As in `open_internal`.
        let file = from_err_ptr(unsafe {
            bindings::dentry_open(path.as_raw(), flags as i32, creds.as_ptr())
        })?;
        // SAFETY: `dentry_open` returned a new reference.
        Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(file.cast())) })
    }

    /// Creates and opens an unnamed file in the directory `parent` (`kernel_tmpfile_open()`),
    /// owned by the current credentials' fsuid/fsgid.
    pub fn open_tmpfile(
        parent: &LowerPath,
        mode: u16,
        flags: u32,
        creds: &super::cred::CreatorCred,
    ) -> Result<ARef<Self>> {
        // SAFETY: `parent` is referenced; `creds` is a live credential of the caller.
        let file = from_err_ptr(unsafe {
            bindings::kernel_tmpfile_open(
                ptr::addr_of_mut!(bindings::nop_mnt_idmap),
                parent.as_raw(),
                mode,
                flags as i32,
                creds.as_ptr(),
            )
        })?;
        // SAFETY: A new reference.
        Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(file.cast())) })
    }

    /// The dentry the file was opened on.
    pub fn dentry(&self) -> &LowerDentry {
        // SAFETY: The file holds its path.
        unsafe { LowerDentry::from_raw(ext::untorn_helper_file_dentry(self.as_ptr())) }
    }

    fn mode(&self) -> u32 {
        // SAFETY: `f_mode` bits tested here are set at open.
        unsafe { (*self.as_ptr()).f_mode }
    }

    /// Whether the file was opened for writing.
    pub fn can_write(&self) -> bool {
        self.mode() & ext::UNTORN_FMODE_WRITE != 0
    }

    /// Whether the lower filesystem accepts direct I/O on this file.
    pub fn can_direct_io(&self) -> bool {
        self.mode() & ext::UNTORN_FMODE_CAN_ODIRECT != 0
    }

    /// The file position (for directories).
    pub fn pos(&self) -> i64 {
        // SAFETY: Directory operations run under the upper directory's lock, which serialises
        // our use of the lower position.
        unsafe { (*self.as_ptr()).f_pos }
    }

    /// Sets the file position (for directories); see `pos`.
    pub fn set_pos(&self, pos: i64) {
        // SAFETY: See `pos`.
        unsafe { (*self.as_ptr()).f_pos = pos };
    }

    fn rw(
        &self,
        pos: i64,
        iter: &mut bindings::iov_iter,
        direct: bool,
        write: bool,
    ) -> Result<usize> {
        let flags = if direct {
            bindings::IOCB_DIRECT as i32
        } else {
            0
        };
        self.rw_flags(pos, iter, flags, write)
    }

    /// An untorn write: `len` bytes of the pinned bounce buffer `bounce` at `pos`, as one
    /// atomic direct write (`IOCB_DIRECT | IOCB_ATOMIC`) plus `sync_flags` (`IOCB_DSYNC`,
    /// `IOCB_SYNC`). The lower refuses it (`EINVAL`, `EOPNOTSUPP`) unless it can write it
    /// untorn; it never writes part of it.
    pub fn write_atomic(
        &self,
        pos: i64,
        bounce: &super::bounce::UserBounce<'_>,
        sync_flags: i32,
    ) -> Result<usize> {
        let mut iter = core::mem::MaybeUninit::<bindings::iov_iter>::uninit();
        // SAFETY: Initialises the whole iterator over the bounce buffer's user range, which is
        // mapped in the current address space for the duration of this synchronous call.
        let iter = unsafe {
            ext::untorn_helper_iov_iter_ubuf(
                iter.as_mut_ptr(),
                bindings::ITER_SOURCE,
                bounce.user_addr(),
                bounce.size(),
            );
            iter.assume_init_mut()
        };
        let flags = bindings::IOCB_DIRECT as i32 | ext::UNTORN_IOCB_ATOMIC | sync_flags;
        self.rw_flags(pos, iter, flags, true)
    }

    /// A plain write of `len` bytes of the pinned bounce buffer `bounce` from `offset`, at
    /// `pos`, direct if `direct`, plus `sync_flags`; returns the bytes written.
    pub fn write_bounce(
        &self,
        pos: i64,
        bounce: &super::bounce::UserBounce<'_>,
        offset: usize,
        len: usize,
        direct: bool,
        sync_flags: i32,
    ) -> Result<usize> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > bounce.size())
        {
            return Err(EINVAL);
        }
        let mut iter = core::mem::MaybeUninit::<bindings::iov_iter>::uninit();
        // SAFETY: Initialises the whole iterator over a range of the bounce buffer (checked
        // above), mapped in the current address space for this synchronous call.
        let iter = unsafe {
            ext::untorn_helper_iov_iter_ubuf(
                iter.as_mut_ptr(),
                bindings::ITER_SOURCE,
                bounce.user_addr().cast::<u8>().add(offset).cast(),
                len,
            );
            iter.assume_init_mut()
        };
        let direct = if direct {
            bindings::IOCB_DIRECT as i32
        } else {
            0
        };
        self.rw_flags(pos, iter, direct | sync_flags, true)
    }

    /// Writes back and waits for the lower's own page cache of this file in `start..=end`
    /// (`filemap_write_and_wait_range()`).
    pub fn write_and_wait(&self, start: i64, end: i64) -> Result {
        // SAFETY: A live file; its mapping lives as long as the file.
        to_result(unsafe {
            bindings::filemap_write_and_wait_range((*self.as_ptr()).f_mapping, start, end)
        })
    }

    fn rw_flags(
        &self,
        pos: i64,
        iter: &mut bindings::iov_iter,
        flags: i32,
        write: bool,
    ) -> Result<usize> {
        let mut kiocb = core::mem::MaybeUninit::<bindings::kiocb>::uninit();
        // SAFETY: `init_sync_kiocb` initialises the whole kiocb for this file.
        unsafe { ext::untorn_helper_init_sync_kiocb(kiocb.as_mut_ptr(), self.as_ptr()) };
        // SAFETY: Initialised above.
        let kiocb = unsafe { kiocb.assume_init_mut() };
        kiocb.ki_pos = pos;
        kiocb.ki_flags |= flags;
        // SAFETY: `kiocb` and `iter` are valid for the duration of this synchronous call (no
        // `ki_complete`, so the lower completes it before returning).
        let ret = unsafe {
            if write {
                bindings::vfs_iocb_iter_write(self.as_ptr(), kiocb, iter)
            } else {
                bindings::vfs_iocb_iter_read(self.as_ptr(), kiocb, iter)
            }
        };
        if ret < 0 {
            return Err(Error::from_errno(ret as i32));
        }
        Ok(ret as usize)
    }

    fn rw_folio(
        &self,
        folio: &Folio,
        offset: usize,
        len: usize,
        pos: i64,
        direct: bool,
        write: bool,
    ) -> Result<usize> {
        if offset.checked_add(len).is_none_or(|end| end > folio.size()) {
            return Err(EINVAL);
        }
        let mut bvec = core::mem::MaybeUninit::<bindings::bio_vec>::uninit();
        let mut iter = core::mem::MaybeUninit::<bindings::iov_iter>::uninit();
        let direction = if write {
            bindings::ITER_SOURCE
        } else {
            bindings::ITER_DEST
        };
        // SAFETY: `bvec_set_folio` initialises the whole `bio_vec` for a range inside the folio
        // (checked above); `iov_iter_bvec` initialises the iterator over that one segment. Both
        // live on this stack frame, beyond the synchronous I/O.
        let iter = unsafe {
            ext::untorn_helper_bvec_set_folio(
                bvec.as_mut_ptr(),
                folio.as_ptr(),
                len as u32,
                offset,
            );
            bindings::iov_iter_bvec(iter.as_mut_ptr(), direction, bvec.as_ptr(), 1, len);
            iter.assume_init_mut()
        };
        self.rw(pos, iter, direct, write)
    }

    /// Reads `len` bytes at `pos` into the contiguous locked `folios`, from the start of the
    /// first, in one read (with direct I/O if `direct`); returns the bytes read (fewer at end
    /// of file). At most [`IO_FOLIOS_MAX`] folios.
    pub fn read_folios(
        &self,
        folios: &[&dyn FolioLock],
        len: usize,
        pos: i64,
        direct: bool,
    ) -> Result<usize> {
        // SAFETY: The folios are locked by the caller (`FolioLock`) beyond this synchronous
        // read, so nothing else uses their content meanwhile.
        unsafe { self.rw_folios(folios.iter().map(|f| &***f), len, pos, direct, false) }
    }

    /// Writes `len` bytes of the contiguous `folios`, from the start of the first, at `pos` in
    /// one write (with direct I/O if `direct`); returns the bytes written. The folios are
    /// under writeback or locked, so their content is stable where the mapping requires it. At
    /// most [`IO_FOLIOS_MAX`] folios.
    pub fn write_folios(
        &self,
        folios: &[&Folio],
        len: usize,
        pos: i64,
        direct: bool,
    ) -> Result<usize> {
        // SAFETY: The lower only reads the folios, which the caller keeps referenced.
        unsafe { self.rw_folios(folios.iter().copied(), len, pos, direct, true) }
    }

    /// One read into (`write` false) or write from the first `len` bytes of the contiguous
    /// `folios` at `pos`: the I/O of [`Self::read_folios`] and [`Self::write_folios`]. `EINVAL`
    /// if `len` needs more than [`IO_FOLIOS_MAX`] folios or more bytes than they hold.
    ///
    /// # Safety
    ///
    /// For a read, the caller holds the folios locked, so that nothing else uses their
    /// content; for a write, it keeps them referenced.
    unsafe fn rw_folios<'f>(
        &self,
        folios: impl Iterator<Item = &'f Folio>,
        len: usize,
        pos: i64,
        direct: bool,
        write: bool,
    ) -> Result<usize> {
        let mut bvecs =
            [const { core::mem::MaybeUninit::<bindings::bio_vec>::uninit() }; IO_FOLIOS_MAX];
        let mut segments = 0;
        let mut left = len;
        for folio in folios {
            if left == 0 {
                break;
            }
            if segments == IO_FOLIOS_MAX {
                return Err(EINVAL);
            }
            let piece = left.min(folio.size());
            // SAFETY: Initialises the whole `bio_vec` for a range at the start of the folio
            // (inside it, `piece <= size`), which the caller keeps referenced (and for a read,
            // locked) beyond this synchronous I/O.
            unsafe {
                ext::untorn_helper_bvec_set_folio(
                    bvecs[segments].as_mut_ptr(),
                    folio.as_ptr(),
                    piece as u32,
                    0,
                )
            };
            segments += 1;
            left -= piece;
        }
        if left > 0 {
            // Fewer bytes in the folios than asked for.
            return Err(EINVAL);
        }
        let direction = if write {
            bindings::ITER_SOURCE
        } else {
            bindings::ITER_DEST
        };
        let mut iter = core::mem::MaybeUninit::<bindings::iov_iter>::uninit();
        // SAFETY: The first `segments` bio_vecs were initialised above and cover `len` bytes;
        // `iov_iter_bvec` initialises the iterator over them. Both outlive the synchronous
        // I/O.
        let iter = unsafe {
            bindings::iov_iter_bvec(
                iter.as_mut_ptr(),
                direction,
                bvecs.as_ptr().cast(),
                segments as kernel::ffi::c_ulong,
                len,
            );
            iter.assume_init_mut()
        };
        self.rw(pos, iter, direct, write)
    }

    /// Writes `len` bytes of `folio` from `offset` at `pos`, with direct I/O if `direct`;
    /// returns the bytes written. The folio is under writeback or locked, so its content is
    /// stable where the mapping requires it.
    pub fn write_folio(
        &self,
        folio: &Folio,
        offset: usize,
        len: usize,
        pos: i64,
        direct: bool,
    ) -> Result<usize> {
        self.rw_folio(folio, offset, len, pos, direct, true)
    }

    /// `vfs_fsync_range()`.
    pub fn fsync_range(&self, start: i64, end: i64, datasync: bool) -> Result {
        // SAFETY: The file is live.
        to_result(unsafe { bindings::vfs_fsync_range(self.as_ptr(), start, end, datasync.into()) })
    }

    /// `vfs_fallocate()`.
    pub fn fallocate(&self, mode: i32, offset: i64, len: i64) -> Result {
        // SAFETY: The file is live.
        to_result(unsafe { bindings::vfs_fallocate(self.as_ptr(), mode, offset, len) })
    }

    /// `vfs_llseek()`; returns the new position.
    pub fn llseek(&self, offset: i64, whence: i32) -> Result<i64> {
        // SAFETY: The file is live.
        let ret = unsafe { bindings::vfs_llseek(self.as_ptr(), offset, whence) };
        if ret < 0 {
            return Err(Error::from_errno(ret as i32));
        }
        Ok(ret)
    }

    /// Reads directory entries into the caller's context: `iterate_dir()`.
    pub fn iterate_dir(&self, ctx: &mut DirContext) -> Result {
        // SAFETY: The file is a live directory file and `ctx` the VFS's context.
        to_result(unsafe { bindings::iterate_dir(self.as_ptr(), ctx.0) })
    }
}

/// A `readdir` context of the VFS.
pub struct DirContext(pub(crate) *mut bindings::dir_context);

impl DirContext {
    /// The position.
    pub fn pos(&self) -> i64 {
        // SAFETY: The context is valid during the `iterate_shared` call that gave it to us.
        unsafe { (*self.0).pos }
    }
}

/// An upper dentry of a stacked filesystem.
///
/// # Invariants
///
/// `d_fsdata` holds a referenced lower dentry once the dentry is set up by `lookup`, creation
/// or `fill_super`, until `d_release`.
#[repr(transparent)]
pub struct Dentry<T: StackedFs>(Opaque<bindings::dentry>, PhantomData<T>);

impl<T: StackedFs> Dentry<T> {
    /// # Safety
    ///
    /// `ptr` is a dentry of a super block of type `T`, valid for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::dentry) -> &'a Self {
        // SAFETY: `repr(transparent)`; valid per the contract.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::dentry {
        self.0.get()
    }

    /// The lower dentry.
    pub fn lower(&self) -> Result<&LowerDentry> {
        // SAFETY: `d_fsdata` is set before the dentry is used (type invariants), never changed
        // while in use.
        let lower = unsafe { (*self.as_ptr()).d_fsdata };
        if lower.is_null() {
            return Err(EIO);
        }
        // SAFETY: A set `d_fsdata` is a referenced lower dentry.
        Ok(unsafe { LowerDentry::from_raw(lower.cast()) })
    }

    /// The lower path of this dentry.
    pub fn lower_path(&self) -> Result<LowerPath> {
        Ok(LowerPath::new(self.super_block(), self.lower()?))
    }

    /// Gives a new dentry (from lookup, `O_TMPFILE` or the root) its lower dentry. A dentry's
    /// lower never changes afterwards, so references from [`Dentry::lower`] stay valid: a
    /// second call fails with `EEXIST` and drops `lower`.
    pub fn set_lower(&self, lower: ARef<LowerDentry>) -> Result {
        let new = ARef::into_raw(lower).as_ptr();
        let dentry = self.as_ptr();
        // SAFETY: `d_fsdata` is only written here and in `d_release`; the compare-exchange makes
        // the first write win, so no reference from `lower()` is ever invalidated.
        let slot = unsafe { &*(&raw mut (*dentry).d_fsdata).cast::<AtomicPtr<LowerDentry>>() };
        if slot
            .compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: We own the reference `into_raw` gave us and did not publish it.
            drop(unsafe { ARef::from_raw(NonNull::new_unchecked(new)) });
            return Err(EEXIST);
        }
        Ok(())
    }

    /// The super block.
    pub fn super_block(&self) -> &SuperBlock<T> {
        // SAFETY: `d_sb` is set at allocation and outlives the dentry.
        unsafe { SuperBlock::from_raw((*self.as_ptr()).d_sb) }
    }

    /// The parent dentry (referenced while we hold the child).
    pub fn parent(&self) -> &Dentry<T> {
        // SAFETY: A dentry holds a reference on its parent; callers hold the dentry.
        unsafe { Dentry::from_raw((*self.as_ptr()).d_parent) }
    }

    /// The inode, if positive.
    pub fn inode(&self) -> Option<&Inode<T>> {
        // SAFETY: See `LowerDentry::inode`.
        let inode = unsafe { ptr::read_volatile(&(*self.as_ptr()).d_inode) };
        // SAFETY: A positive dentry holds its inode, which is one of ours.
        (!inode.is_null()).then(|| unsafe { Inode::from_raw(inode) })
    }

    /// The name.
    pub(crate) fn name_qstr(&self) -> &bindings::qstr {
        // SAFETY: Called from operations where the name is stable (parent locked or lookup).
        unsafe { &(*self.as_ptr()).__bindgen_anon_1.d_name }
    }

    /// Unhashes the dentry (`d_drop()`).
    pub fn drop_from_cache(&self) {
        // SAFETY: The dentry is live.
        unsafe { bindings::d_drop(self.as_ptr()) };
    }

    /// Makes a negative dentry positive with a new inode (`d_instantiate()`).
    pub fn instantiate(&self, inode: ARef<Inode<T>>) {
        // SAFETY: The caller created the object under the parent's lock; `d_instantiate` takes
        // over our inode reference.
        unsafe { bindings::d_instantiate(self.as_ptr(), ARef::into_raw(inode).as_ptr().cast()) };
    }
}

impl<T: StackedFs> SuperBlock<T> {
    /// Writes the lower filesystem's dirty data and metadata and waits (`sync_filesystem()` under
    /// its `s_umount`, as overlayfs' `ovl_sync_fs()`).
    pub fn sync_lower(&self) -> Result {
        // SAFETY: The private mount pins the lower super block.
        let lower_sb = unsafe { (*self.lower_mnt()).mnt_sb };
        // SAFETY: `s_umount` of a live super block; held shared, as `sync_filesystem` requires.
        unsafe { bindings::down_read(&mut (*lower_sb).s_umount) };
        // SAFETY: As above.
        let result = to_result(unsafe { bindings::sync_filesystem(lower_sb) });
        // SAFETY: Taken above.
        unsafe { bindings::up_read(&mut (*lower_sb).s_umount) };
        result
    }
}

impl<T: StackedFs> Inode<T> {
    fn mapping(&self) -> *mut bindings::address_space {
        // SAFETY: `i_mapping` is set at allocation and never changes for our inodes.
        unsafe { (*self.as_ptr()).i_mapping }
    }

    /// Drops the link count to zero (the object was removed).
    pub fn clear_nlink(&self) {
        // SAFETY: Called under the parent's and the inode's locks by `rmdir`.
        unsafe { bindings::clear_nlink(self.as_ptr()) };
    }

    /// Writes back dirty folios of the byte range `start..=end` and waits for them.
    pub fn write_and_wait(&self, start: i64, end: i64) -> Result {
        // SAFETY: The mapping of a live inode.
        to_result(unsafe { bindings::filemap_write_and_wait_range(self.mapping(), start, end) })
    }

    /// Removes clean folios of the byte range `start..=end` from the page cache so the next read
    /// comes from the lower file; fails with `EBUSY` if one is mapped and dirty again.
    pub fn invalidate(&self, start: i64, end: i64) -> Result {
        let (first, last) = (
            (start >> bindings::PAGE_SHIFT) as usize,
            (end >> bindings::PAGE_SHIFT) as usize,
        );
        // SAFETY: The mapping of a live inode.
        to_result(unsafe { bindings::invalidate_inode_pages2_range(self.mapping(), first, last) })
    }

    /// Updates the lower data file's access time (`touch_atime()`, under the lower's rules) and
    /// takes it for this inode, as overlayfs' `ovl_update_time()`; `false` without a data file.
    pub fn touch_lower_atime(&self) -> bool {
        let Some(lower) = self.data_file() else {
            return false;
        };
        // SAFETY: A live inode and its data file, referenced until eviction.
        unsafe { ext::untorn_helper_touch_atime(self.as_ptr(), lower.as_ptr()) };
        true
    }

    /// Whether setting an ACL of `acl_type` must clear the set-group-ID bit because the caller
    /// is neither in the file's group nor has `CAP_FSETID` (`posix_acl_update_mode()`'s rule).
    pub fn acl_kills_sgid(&self, acl_type: i32) -> bool {
        // SAFETY: A live inode; reads its mode and group with the current credentials.
        unsafe { ext::untorn_helper_acl_kills_sgid(self.as_ptr(), acl_type) }
    }

    /// Sets the size and drops or zeroes the page cache beyond it (`truncate_setsize()`).
    pub fn truncate_setsize(&self, size: i64) {
        // SAFETY: The caller holds `i_rwsem`.
        unsafe { bindings::truncate_setsize(self.as_ptr(), size) };
    }

    /// The caller's permission on this inode, from its own mode, owner and ACLs.
    pub fn generic_permission(&self, mask: i32) -> Result {
        // SAFETY: A live inode; the nop idmap is a static.
        to_result(unsafe {
            bindings::generic_permission(
                ptr::addr_of_mut!(bindings::nop_mnt_idmap),
                self.as_ptr(),
                mask,
            )
        })
    }

    /// Runs `f` with `i_rwsem` held exclusively.
    pub fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: A live inode; unlocked below, on the same thread.
        unsafe { ext::untorn_helper_inode_lock(self.as_ptr()) };
        let r = f();
        // SAFETY: Locked above.
        unsafe { ext::untorn_helper_inode_unlock(self.as_ptr()) };
        r
    }

    /// Runs `f` with the inode lock (`i_rwsem`) held shared.
    pub fn with_lock_shared<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: A live inode; unlocked below, on the same thread.
        unsafe { ext::untorn_helper_inode_lock_shared(self.as_ptr()) };
        let r = f();
        // SAFETY: Locked above.
        unsafe { ext::untorn_helper_inode_unlock_shared(self.as_ptr()) };
        r
    }

    /// Whether a write needs no privilege removal (`IS_NOSEC()`: no set-user-ID bits or
    /// security attributes to drop), so that it may run under a shared inode lock.
    pub fn is_nosec(&self) -> bool {
        // SAFETY: A live inode; reads flags.
        unsafe { ext::untorn_helper_inode_is_nosec(self.as_ptr()) }
    }
}

impl<T: StackedFs> Dentry<T> {
    /// Checks `attr` against the caller's rights and the inode (`setattr_prepare()`).
    pub fn setattr_prepare(&self, attr: &super::ops::Iattr) -> Result {
        // SAFETY: A live dentry and the VFS's attributes.
        to_result(unsafe {
            bindings::setattr_prepare(
                ptr::addr_of_mut!(bindings::nop_mnt_idmap),
                self.as_ptr(),
                attr.as_ptr(),
            )
        })
    }
}

impl<T: StackedFs> Inode<T> {
    /// The folio for a buffered write of `len` bytes at `pos`, locked (`write_begin`).
    pub fn folio_for_write(&self, pos: i64, len: usize) -> Result<OwnedLockedFolio> {
        // SAFETY: The mapping of a live inode.
        unsafe { OwnedLockedFolio::get_for_write(self.mapping(), pos, len) }
    }

    /// The modification and change times.
    pub fn times(&self) -> (bindings::timespec64, bindings::timespec64) {
        let mut mtime = bindings::timespec64::default();
        let mut ctime = bindings::timespec64::default();
        // SAFETY: A live inode; the helper reads the split time fields.
        unsafe { ext::untorn_helper_inode_times(self.as_ptr(), &mut mtime, &mut ctime) };
        (mtime, ctime)
    }
}

impl LowerFile {
    /// Direct I/O between the user's iterator and this file at `pos` (`O_DIRECT` pass-through).
    /// `extra_flags` are kiocb flags of the upper I/O to keep (`IOCB_ATOMIC`).
    pub(crate) fn rw_user(
        &self,
        pos: i64,
        iter: &mut super::ops::UserIter,
        extra_flags: i32,
        write: bool,
    ) -> Result<usize> {
        /// Attempts without faults before the last one, with them.
        const NOFAULT_TRIES: u32 = 8;
        let flags = bindings::IOCB_DIRECT as i32 | extra_flags;
        for _ in 0..NOFAULT_TRIES {
            let count = iter.count();
            // The lower pins the user's pages holding its `i_rwsem`. A fault there, on a
            // mapping of this very file, would fill one of our folios from the lower under that
            // lock, which the lower may hold exclusively (an extending write): a deadlock. So
            // the lower must not fault; the buffer is faulted in without its locks instead, as
            // btrfs and gfs2 do for their own direct I/O.
            let result = {
                // SAFETY: `UserIter` is the VFS's iterator, valid for this synchronous call.
                let raw = unsafe { &mut *iter.as_ptr() };
                raw.nofault = true;
                let result = self.rw_flags(pos, raw, flags, write);
                raw.nofault = false;
                result
            };
            if result != Err(EFAULT) {
                return result;
            }
            // Nothing was done (the lower returns `EFAULT` only then, or after writing bytes
            // that the next attempt writes again): give back what the lower consumed.
            // SAFETY: The lower consumed `count - iter.count()` bytes of `iter`.
            unsafe { iter.revert(count - iter.count()) };
            // SAFETY: The iterator is valid; faulting in takes no lock of ours or the lower's.
            let left = unsafe {
                if write {
                    bindings::fault_in_iov_iter_readable(iter.as_ptr(), count)
                } else {
                    bindings::fault_in_iov_iter_writeable(iter.as_ptr(), count)
                }
            };
            if left != 0 {
                // A page that cannot be faulted in: the last attempt gives its errno.
                break;
            }
        }
        // SAFETY: As above.
        let raw = unsafe { &mut *iter.as_ptr() };
        self.rw_flags(pos, raw, flags, write)
    }
}

impl<T: StackedFs> Inode<T> {
    /// Forgets the ACLs the VFS cached on this inode, after they changed on the lower.
    pub fn forget_cached_acls(&self) {
        // SAFETY: A live inode.
        unsafe { ext::forget_all_cached_acls(self.as_ptr()) };
    }
}

impl<T: StackedFs> Inode<T> {
    /// Zeroes the cached bytes from `old_size` to the end of the folio holding it, before the
    /// size grows past `old_size`: a shared mapping may have written there, past the end of
    /// file, and those bytes must read as zeroes once they are inside the file. (Filesystems do
    /// the same on extension, e.g. XFS's `xfs_zero_range()` from the old size.)
    pub fn zero_beyond_eof(&self, old_size: i64) {
        if old_size < 0 {
            return;
        }
        let index = (old_size >> bindings::PAGE_SHIFT) as usize;
        // SAFETY: The mapping of a live inode; a found folio is locked and referenced for us.
        let folio = unsafe { ext::untorn_helper_filemap_lock_folio(self.mapping(), index) };
        let Ok(folio) = from_err_ptr(folio) else {
            return;
        };
        if folio.is_null() {
            return;
        }
        // SAFETY: Locked and referenced above; unlocked and released below.
        unsafe {
            let start = (old_size - ext::untorn_helper_folio_pos(folio)) as usize;
            let end = ext::untorn_helper_folio_size(folio);
            if start < end {
                ext::untorn_helper_folio_zero_segment(folio, start, end);
            }
            bindings::folio_unlock(folio);
            ext::untorn_helper_folio_put(folio);
        }
    }
}
