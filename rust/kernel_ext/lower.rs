// SPDX-License-Identifier: GPL-2.0

//! Namespace and attribute operations on the lower filesystem.
//!
//! Each function takes the lower parent's lock the way the VFS would (`start_creating_dentry`,
//! `start_removing_dentry`, `start_renaming_two_dentries`), calls the `vfs_*` function with
//! `nop_mnt_idmap`, and unlocks. Callers run them with the mounter's credentials installed.

use core::ptr;

use kernel::ffi::c_char;

use kernel::{
    bindings,
    error::{from_err_ptr, to_result, Error, Result},
    prelude::*,
    sync::aref::ARef,
};

use super::{
    bindings as ext,
    ops::{DelayedCall, InValue, OutBuffer},
    vfs::{LowerDentry, LowerPath},
};

fn idmap() -> *mut bindings::mnt_idmap {
    // `nop_mnt_idmap` is a static of the kernel; we only take its address.
    ptr::addr_of_mut!(bindings::nop_mnt_idmap)
}

/// Looks `name` up in `parent` (`lookup_one_unlocked()`).
pub fn lookup(parent: &LowerDentry, name: &bindings::qstr) -> Result<ARef<LowerDentry>> {
    let mut name = *name;
    // SAFETY: `parent` is a referenced directory dentry; the name is a copy we own for the call.
    let dentry = unsafe { ext::lookup_one_unlocked(idmap(), &mut name, parent.as_ptr()) };
    let dentry = from_err_ptr(dentry)?;
    // SAFETY: `lookup_one_unlocked` returns a referenced dentry.
    Ok(unsafe { LowerDentry::from_owned(dentry) })
}

/// A negative lower dentry locked for creation in its parent; unlocked on drop.
struct Creating(*mut bindings::dentry);

impl Creating {
    fn start(parent: &LowerDentry, child: &LowerDentry) -> Result<Self> {
        // SAFETY: Both dentries are referenced; on success the parent is locked and we own a
        // reference to `child`, both released by `end_creating`.
        let child = unsafe { ext::start_creating_dentry(parent.as_ptr(), child.as_ptr()) };
        Ok(Self(from_err_ptr(child)?))
    }

    fn parent_inode(&self) -> *mut bindings::inode {
        // SAFETY: The parent is locked and holds its inode.
        unsafe { (*(*self.0).d_parent).d_inode }
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `start_creating_dentry` or `vfs_mkdir` (possibly an error
        // pointer, which `end_creating` ignores).
        unsafe { ext::untorn_helper_end_creating(self.0) };
    }
}

/// A positive lower dentry locked for removal; unlocked on drop.
struct Removing(*mut bindings::dentry);

impl Removing {
    fn start(parent: &LowerDentry, child: &LowerDentry) -> Result<Self> {
        // SAFETY: As in `Creating::start`.
        let child = unsafe { ext::start_removing_dentry(parent.as_ptr(), child.as_ptr()) };
        Ok(Self(from_err_ptr(child)?))
    }

    fn parent_inode(&self) -> *mut bindings::inode {
        // SAFETY: The parent is locked and holds its inode.
        unsafe { (*(*self.0).d_parent).d_inode }
    }
}

impl Drop for Removing {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `start_removing_dentry`.
        unsafe { ext::untorn_helper_end_removing(self.0) };
    }
}

/// Creates a regular file `child` in `parent` (`vfs_create()`).
pub fn create(parent: &LowerDentry, child: &LowerDentry, mode: u16) -> Result {
    let c = Creating::start(parent, child)?;
    // SAFETY: `c.0` is a negative dentry whose parent we hold locked.
    to_result(unsafe { bindings::vfs_create(idmap(), c.0, mode, ptr::null_mut()) })
}

/// Creates a directory (`vfs_mkdir()`); returns the new directory's dentry, which may differ
/// from `child`.
pub fn mkdir(parent: &LowerDentry, child: &LowerDentry, mode: u16) -> Result<ARef<LowerDentry>> {
    let mut c = Creating::start(parent, child)?;
    let dir = c.parent_inode();
    // SAFETY: As in `create`; `vfs_mkdir` consumes `c.0` and returns the dentry to end with.
    c.0 = unsafe { bindings::vfs_mkdir(idmap(), dir, c.0, mode, ptr::null_mut()) };
    let made = from_err_ptr(c.0)?;
    // SAFETY: `made` is referenced by `c` until the end of this function; we take our own.
    Ok(unsafe {
        ext::untorn_helper_dget(made);
        LowerDentry::from_owned(made)
    })
}

/// Creates a device node, FIFO or socket (`vfs_mknod()`).
pub fn mknod(parent: &LowerDentry, child: &LowerDentry, mode: u16, dev: u32) -> Result {
    let c = Creating::start(parent, child)?;
    // SAFETY: As in `create`.
    to_result(unsafe {
        bindings::vfs_mknod(idmap(), c.parent_inode(), c.0, mode, dev, ptr::null_mut())
    })
}

/// Creates a symbolic link to `target` (`vfs_symlink()`).
pub fn symlink(parent: &LowerDentry, child: &LowerDentry, target: &CStr) -> Result {
    let c = Creating::start(parent, child)?;
    // SAFETY: As in `create`; `target` is NUL-terminated.
    to_result(unsafe {
        bindings::vfs_symlink(
            idmap(),
            c.parent_inode(),
            c.0,
            target.as_char_ptr(),
            ptr::null_mut(),
        )
    })
}

/// Links `old` as `child` in `parent` (`vfs_link()`).
pub fn link(old: &LowerDentry, parent: &LowerDentry, child: &LowerDentry) -> Result {
    let c = Creating::start(parent, child)?;
    // SAFETY: As in `create`; `old` is a referenced positive dentry.
    to_result(unsafe {
        bindings::vfs_link(
            old.as_ptr(),
            idmap(),
            c.parent_inode(),
            c.0,
            ptr::null_mut(),
        )
    })
}

/// Removes a non-directory (`vfs_unlink()`).
pub fn unlink(parent: &LowerDentry, child: &LowerDentry) -> Result {
    let r = Removing::start(parent, child)?;
    // SAFETY: `r.0` is a positive dentry whose parent we hold locked.
    to_result(unsafe { bindings::vfs_unlink(idmap(), r.parent_inode(), r.0, ptr::null_mut()) })
}

/// Removes an empty directory (`vfs_rmdir()`).
pub fn rmdir(parent: &LowerDentry, child: &LowerDentry) -> Result {
    let r = Removing::start(parent, child)?;
    // SAFETY: As in `unlink`.
    to_result(unsafe { bindings::vfs_rmdir(idmap(), r.parent_inode(), r.0, ptr::null_mut()) })
}

/// Renames `old` in `old_parent` to `new` in `new_parent` with `RENAME_*` `flags`.
pub fn rename(
    old_parent: &LowerDentry,
    old: &LowerDentry,
    new_parent: &LowerDentry,
    new: &LowerDentry,
    flags: u32,
) -> Result {
    let mut rd = bindings::renamedata {
        mnt_idmap: idmap(),
        old_parent: old_parent.as_ptr(),
        old_dentry: ptr::null_mut(),
        new_parent: new_parent.as_ptr(),
        new_dentry: ptr::null_mut(),
        delegated_inode: ptr::null_mut(),
        flags,
    };
    // SAFETY: All dentries are referenced; on success both parents are locked (in the right
    // order) and `rd` holds the dentries, until `end_renaming`.
    to_result(unsafe { ext::start_renaming_two_dentries(&mut rd, old.as_ptr(), new.as_ptr()) })?;
    // SAFETY: Locked for the rename above.
    let result = to_result(unsafe { bindings::vfs_rename(&mut rd) });
    // SAFETY: Ends what `start_renaming_two_dentries` started.
    unsafe { ext::end_renaming(&mut rd) };
    result
}

/// `vfs_getattr()` of a lower path into `stat`.
pub fn getattr(
    path: &LowerPath,
    stat: &mut super::ops::Kstat,
    request_mask: u32,
    flags: u32,
) -> Result {
    // SAFETY: `path` is referenced; `stat` is the caller's buffer.
    to_result(unsafe { bindings::vfs_getattr(path.as_raw(), stat.0, request_mask, flags) })
}

/// The atomic write limits the lower reports for a file (`statx` with `STATX_WRITE_ATOMIC`):
/// `(unit_min, unit_max, unit_max_opt)`, all zero if it cannot write the file atomically.
pub fn atomic_write_limits(path: &LowerPath) -> Result<(u32, u32, u32)> {
    // SAFETY: `struct kstat` holds integers and plain structs of integers, for which all-zero
    // bytes are a valid value.
    let mut stat: bindings::kstat = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
    // SAFETY: `path` is referenced; `stat` is ours.
    to_result(unsafe {
        bindings::vfs_getattr(
            path.as_raw(),
            &mut stat,
            bindings::STATX_WRITE_ATOMIC,
            bindings::AT_STATX_SYNC_AS_STAT,
        )
    })?;
    if stat.result_mask & bindings::STATX_WRITE_ATOMIC == 0
        || stat.attributes & u64::from(bindings::STATX_ATTR_WRITE_ATOMIC) == 0
    {
        return Ok((0, 0, 0));
    }
    Ok((
        stat.atomic_write_unit_min,
        stat.atomic_write_unit_max,
        stat.atomic_write_unit_max_opt,
    ))
}

/// Applies `attr` to a lower dentry (`notify_change()`), locking its inode.
pub fn setattr(dentry: &LowerDentry, attr: &mut bindings::iattr) -> Result {
    let inode = dentry.inode().ok_or(ENOENT)?.as_ptr();
    // SAFETY: `inode` is the positive dentry's inode; `notify_change` needs its lock.
    unsafe { ext::untorn_helper_inode_lock(inode) };
    // SAFETY: Locked above; `attr` is ours.
    let result = to_result(unsafe {
        bindings::notify_change(idmap(), dentry.as_ptr(), attr, ptr::null_mut())
    });
    // SAFETY: Locked above.
    unsafe { ext::untorn_helper_inode_unlock(inode) };
    result
}

/// Clears the set-group-ID bit of a lower dentry (`notify_change()` with `ATTR_KILL_SGID`).
pub fn kill_sgid(dentry: &LowerDentry) -> Result {
    // SAFETY: `iattr` is plain data, for which all zeroes is valid (no attribute set).
    let mut attr: bindings::iattr = unsafe { core::mem::zeroed() };
    attr.ia_valid = bindings::ATTR_KILL_SGID;
    setattr(dentry, &mut attr)
}

/// Truncates a lower dentry to `size` (`notify_change()` with `ATTR_SIZE`).
pub fn truncate(dentry: &LowerDentry, size: i64) -> Result {
    // SAFETY: `iattr` is plain data, for which all zeroes is valid (no attribute set).
    let mut attr: bindings::iattr = unsafe { core::mem::zeroed() };
    attr.ia_valid = bindings::ATTR_SIZE;
    attr.ia_size = size;
    setattr(dentry, &mut attr)
}

/// `inode_permission()` on a lower inode.
pub fn permission(inode: &super::vfs::LowerInode, mask: i32) -> Result {
    // SAFETY: `inode` is referenced.
    to_result(unsafe { bindings::inode_permission(idmap(), inode.as_ptr(), mask) })
}

/// `vfs_listxattr()`.
pub fn listxattr(dentry: &LowerDentry, buf: OutBuffer) -> Result<usize> {
    // SAFETY: `dentry` is referenced; `buf` is the VFS's buffer of `size` bytes (or null).
    let ret = unsafe { bindings::vfs_listxattr(dentry.as_ptr(), buf.ptr.cast(), buf.size) };
    if ret < 0 {
        return Err(Error::from_errno(ret as i32));
    }
    Ok(ret as usize)
}

/// `vfs_getxattr()`.
pub fn getxattr(dentry: &LowerDentry, name: &CStr, buf: OutBuffer) -> Result<usize> {
    // SAFETY: As in `listxattr`; `name` is NUL-terminated.
    let ret = unsafe {
        bindings::vfs_getxattr(
            idmap(),
            dentry.as_ptr(),
            name.as_char_ptr(),
            buf.ptr,
            buf.size,
        )
    };
    if ret < 0 {
        return Err(Error::from_errno(ret as i32));
    }
    Ok(ret as usize)
}

/// `vfs_setxattr()`, or `vfs_removexattr()` when `value` is null.
pub fn setxattr(dentry: &LowerDentry, name: &CStr, value: InValue, flags: i32) -> Result {
    let name = name.as_char_ptr();
    // SAFETY: As in `getxattr`; `value` is the VFS's value of `size` bytes.
    to_result(unsafe {
        if value.ptr.is_null() {
            bindings::vfs_removexattr(idmap(), dentry.as_ptr(), name)
        } else {
            bindings::vfs_setxattr(idmap(), dentry.as_ptr(), name, value.ptr, value.size, flags)
        }
    })
}

/// The target of a lower symlink (`vfs_get_link()`); `done` frees it.
pub fn get_link(dentry: &LowerDentry, done: DelayedCall) -> Result<*const c_char> {
    // SAFETY: `dentry` is referenced; `done` is the VFS's delayed call.
    let target = unsafe { bindings::vfs_get_link(dentry.as_ptr(), done.0) };
    from_err_ptr(target.cast_mut()).map(|p| p.cast_const())
}

/// A POSIX ACL of the VFS (`struct posix_acl`), passed through untouched; null means none.
pub struct Acl(pub(crate) *mut bindings::posix_acl);

fn acl_result(acl: *mut bindings::posix_acl) -> Result<Acl> {
    from_err_ptr(acl).map(Acl)
}

fn acl_name(acl_type: i32) -> Result<*const c_char> {
    // SAFETY: A pure function of `acl_type`, returning a static string or null.
    let name = unsafe { ext::untorn_helper_posix_acl_xattr_name(acl_type) };
    if name.is_null() {
        return Err(EINVAL);
    }
    Ok(name)
}

/// The lower inode's ACL of `acl_type` for permission checks (`get_inode_acl()`).
pub fn get_inode_acl(inode: &super::vfs::LowerInode, acl_type: i32) -> Result<Acl> {
    // SAFETY: `inode` is referenced; the returned ACL is referenced for the caller.
    acl_result(unsafe { ext::get_inode_acl(inode.as_ptr(), acl_type) })
}

/// The lower dentry's ACL of `acl_type` (`vfs_get_acl()`).
pub fn get_acl(dentry: &LowerDentry, acl_type: i32) -> Result<Acl> {
    let name = acl_name(acl_type)?;
    // SAFETY: `dentry` is referenced; `name` is a static string.
    acl_result(unsafe { ext::vfs_get_acl(idmap(), dentry.as_ptr(), name) })
}

/// Sets (or, for a null `acl`, removes) the lower dentry's ACL of `acl_type`.
pub fn set_acl(dentry: &LowerDentry, acl_type: i32, acl: Acl) -> Result {
    let name = acl_name(acl_type)?;
    // SAFETY: `dentry` is referenced; `acl` is the VFS's ACL, valid during the call.
    let result = unsafe {
        if acl.0.is_null() {
            ext::vfs_remove_acl(idmap(), dentry.as_ptr(), name)
        } else {
            ext::vfs_set_acl(idmap(), dentry.as_ptr(), name, acl.0)
        }
    };
    match to_result(result) {
        // Removing an ACL that is not there is success for `set_acl`.
        Err(e) if acl.0.is_null() && e == ENODATA => Ok(()),
        r => r,
    }
}
