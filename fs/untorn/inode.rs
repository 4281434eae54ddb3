// SPDX-License-Identifier: GPL-2.0

//! Inode operations common to every type: permission, attributes, extended attributes, links.

use kernel::ffi::c_char;

use kernel::{bindings, prelude::*};

use crate::{
    kernel_ext::{
        cred,
        lower::{self, Acl},
        ops::{copy_attributes, DelayedCall, Iattr, InValue, Kstat, OutBuffer},
        vfs::{Dentry, Inode},
    },
    mode,
    untorn_logic::{atomic_write::AtomicWriteLimits, mount_options::is_private_xattr},
    Untorn,
};

/// Checked twice, as overlayfs: the caller against our inode (which mirrors the lower's mode
/// and owner), then the mounter against the lower inode.
pub(crate) fn permission(inode: &Inode<Untorn>, mask: i32) -> Result {
    inode.generic_permission(mask)?;
    inode
        .super_block()
        .as_mounter(|| lower::permission(inode.lower(), mask))
}

/// The lower's attributes, except what untorn leads on: the device, and for regular files the
/// size (which includes data not yet written back) and the newest of both times.
pub(crate) fn getattr(
    dentry: &Dentry<Untorn>,
    stat: &mut Kstat,
    request_mask: u32,
    flags: u32,
) -> Result {
    let path = dentry.lower_path()?;
    let sb = dentry.super_block();
    sb.as_mounter(|| lower::getattr(&path, stat, request_mask, flags))?;
    let lower_atomic = (
        stat.get().atomic_write_unit_min,
        stat.get().atomic_write_unit_max,
        stat.get().atomic_write_unit_max_opt,
        stat.get().attributes & u64::from(bindings::STATX_ATTR_WRITE_ATOMIC) != 0,
    );
    let raw = stat.get();
    raw.dev = sb.dev();
    // The lower's atomic limits are for its direct writes; untorn reports its own.
    raw.result_mask &= !bindings::STATX_WRITE_ATOMIC;
    raw.attributes &= !u64::from(bindings::STATX_ATTR_WRITE_ATOMIC);
    raw.atomic_write_unit_min = 0;
    raw.atomic_write_unit_max = 0;
    raw.atomic_write_unit_max_opt = 0;
    raw.atomic_write_segments_max = 0;
    if let Some(inode) = dentry.inode() {
        if inode.is_regular() && request_mask & bindings::STATX_WRITE_ATOMIC != 0 {
            let backend = sb.info().data.backend();
            let (min, max, max_opt, supported) = match backend.fixed_atomic_limits() {
                Some((min, max, max_opt)) => (min, max, max_opt, min != 0),
                None => lower_atomic,
            };
            let limits = if supported {
                mode::untorn_limits(min, max)
            } else {
                AtomicWriteLimits::NONE
            };
            stat.fill_atomic_write(
                limits.unit_min(),
                limits.unit_max(),
                max_opt.min(limits.unit_max()),
                mode::SEGMENTS_MAX,
            );
        }
        let stat = stat.get();
        if inode.is_regular() {
            stat.size = inode.size();
            let (mtime, ctime) = inode.times();
            stat.mtime = newest(stat.mtime, mtime);
            stat.ctime = newest(stat.ctime, ctime);
        } else {
            copy_attributes(inode);
        }
    }
    Ok(())
}

/// A read through untorn is due to update the access time (`file_accessed()` on our file,
/// under our mount's rules): the lower data file's atime is updated, under the lower's rules,
/// and ours follows it, as overlayfs does. The data files are `O_NOATIME`, so the page cache's
/// own reads of them never update it.
pub(crate) fn update_atime(inode: &Inode<Untorn>) -> bool {
    inode.super_block().as_mounter(|| inode.touch_lower_atime())
}

fn newest(a: bindings::timespec64, b: bindings::timespec64) -> bindings::timespec64 {
    if (b.tv_sec, b.tv_nsec) > (a.tv_sec, a.tv_nsec) {
        b
    } else {
        a
    }
}

/// `chmod`, `chown`, `utimes` and `truncate`: checked for the caller, done by the lower.
pub(crate) fn setattr(dentry: &Dentry<Untorn>, attr: &Iattr) -> Result {
    dentry.setattr_prepare(attr)?;
    let inode = dentry.inode().ok_or(ENOENT)?;
    let mut lower_attr = *attr.get();
    // The lower must not see our file (it would call our operations on it), and it refuses a
    // mode change together with the kill-suid bits, which it derives itself.
    lower_attr.ia_valid &= !bindings::ATTR_FILE;
    if lower_attr.ia_valid & (bindings::ATTR_KILL_SUID | bindings::ATTR_KILL_SGID) != 0 {
        lower_attr.ia_valid &= !bindings::ATTR_MODE;
    }
    let resize = inode.is_regular() && lower_attr.ia_valid & bindings::ATTR_SIZE != 0;
    if resize
        && dentry.super_block().info().data.backend().fixed_size()
        && lower_attr.ia_size != inode.size()
    {
        // The file is a device, whose size does not change.
        return Err(EPERM);
    }
    let set_times =
        lower_attr.ia_valid & (bindings::ATTR_MTIME_SET | bindings::ATTR_ATIME_SET) != 0;
    if inode.is_regular() && set_times {
        // Explicit times (`cp -p`, `touch -d`) must not be overtaken by a later writeback, which
        // updates the lower's mtime: write back first, as NFS and FUSE do.
        inode.write_and_wait(0, i64::MAX)?;
    } else if resize {
        // Dirty data beyond the new size must not be written back after the lower truncate
        // (that would extend the file again); data before it stays cached and dirty.
        inode.write_and_wait(lower_attr.ia_size, i64::MAX)?;
    }
    let lower_dentry = dentry.lower()?;
    let sb = dentry.super_block();
    sb.as_mounter_writing(|| lower::setattr(lower_dentry, &mut lower_attr))?;
    if resize {
        let size = lower_attr.ia_size;
        if size > inode.size() {
            inode.zero_beyond_eof(inode.size());
        }
        inode.truncate_setsize(size);
        // A folio past the new size that a shared mapping dirtied again after the write-back
        // above may have been written back after the lower truncate, with our old size, which
        // extended the lower again. Now none is left or under writeback (`truncate_setsize()`
        // waited for them), and writeback stops at the new size: truncate the lower once more.
        if inode.lower().size() > size {
            sb.as_mounter_writing(|| lower::truncate(lower_dentry, size))?;
        }
    }
    if lower_attr.ia_valid & bindings::ATTR_MODE != 0 {
        // A mode change rewrites the ACL's mask on the lower.
        inode.forget_cached_acls();
    }
    copy_attributes(inode);
    Ok(())
}

/// The lower's names, without those untorn keeps to itself (`trusted.untorn.*`), and without
/// `trusted.*` names for a caller without `CAP_SYS_ADMIN`: the lower lists as the mounter, so it
/// would show them (the rule of XFS's and ext4's own `listxattr`, as overlayfs filters them).
pub(crate) fn listxattr(dentry: &Dentry<Untorn>, buf: OutBuffer) -> Result<usize> {
    // The caller's right, checked before the mounter's credentials are installed, and only if
    // a `trusted.*` name is there (no capability use is recorded otherwise).
    let mut may_list_trusted = None;
    let lower_dentry = dentry.lower()?;
    let sb = dentry.super_block();
    // The whole list is needed to filter it, also when the caller only asks for its size.
    let size = sb.as_mounter(|| lower::listxattr(lower_dentry, OutBuffer::none()))?;
    let mut names = KVec::from_elem(0u8, size, GFP_KERNEL)?;
    let size =
        sb.as_mounter(|| lower::listxattr(lower_dentry, OutBuffer::from_slice(&mut names)))?;
    let mut kept = 0;
    let mut start = 0;
    while start < size {
        let end = names[start..size]
            .iter()
            .position(|&b| b == 0)
            .map_or(size, |n| start + n + 1);
        let name = &names[start..end];
        let hidden = is_private_xattr(name)
            || (name.starts_with(b"trusted.")
                && !*may_list_trusted.get_or_insert_with(cred::current_may_list_trusted));
        if !hidden {
            names.copy_within(start..end, kept);
            kept += end - start;
        }
        start = end;
    }
    buf.fill(&names[..kept])
}

pub(crate) fn get_link(dentry: &Dentry<Untorn>, done: DelayedCall) -> Result<*const c_char> {
    let lower_dentry = dentry.lower()?;
    dentry
        .super_block()
        .as_mounter(|| lower::get_link(lower_dentry, done))
}

pub(crate) fn getxattr(dentry: &Dentry<Untorn>, name: &CStr, buf: OutBuffer) -> Result<usize> {
    if is_private_xattr(name.to_bytes()) {
        return Err(ENODATA);
    }
    let lower_dentry = dentry.lower()?;
    dentry
        .super_block()
        .as_mounter(|| lower::getxattr(lower_dentry, name, buf))
}

pub(crate) fn setxattr(dentry: &Dentry<Untorn>, name: &CStr, value: InValue, flags: i32) -> Result {
    if is_private_xattr(name.to_bytes()) {
        // Only the mode ioctl changes them, with its own permission rule.
        return Err(EPERM);
    }
    let lower_dentry = dentry.lower()?;
    dentry
        .super_block()
        .as_mounter_writing(|| lower::setxattr(lower_dentry, name, value, flags))?;
    if let Some(inode) = dentry.inode() {
        copy_attributes(inode);
    }
    Ok(())
}

/// POSIX ACLs are the lower's: read from it for permission checks and `getfacl`, written to it
/// by `setfacl` (which may change the mode too).
pub(crate) fn get_inode_acl(inode: &Inode<Untorn>, acl_type: i32) -> Result<Acl> {
    inode
        .super_block()
        .as_mounter(|| lower::get_inode_acl(inode.lower(), acl_type))
}

pub(crate) fn get_acl(dentry: &Dentry<Untorn>, acl_type: i32) -> Result<Acl> {
    let lower_dentry = dentry.lower()?;
    dentry
        .super_block()
        .as_mounter(|| lower::get_acl(lower_dentry, acl_type))
}

pub(crate) fn set_acl(dentry: &Dentry<Untorn>, acl: Acl, acl_type: i32) -> Result {
    let lower_dentry = dentry.lower()?;
    let sb = dentry.super_block();
    // The lower applies `posix_acl_update_mode()` with the mounter's credentials, which keep
    // the set-group-ID bit: clear it first for a caller outside the file's group without
    // `CAP_FSETID`, as overlayfs' `ovl_set_acl()`.
    if dentry
        .inode()
        .is_some_and(|inode| inode.acl_kills_sgid(acl_type))
    {
        sb.as_mounter_writing(|| lower::kill_sgid(lower_dentry))?;
    }
    sb.as_mounter_writing(|| lower::set_acl(lower_dentry, acl_type, acl))?;
    if let Some(inode) = dentry.inode() {
        inode.forget_cached_acls();
        copy_attributes(inode);
    }
    Ok(())
}
